"""The recipe's ``data:`` section, defined beside the loaders it configures.

The recipe (:mod:`edgecnn.config`) composes it; code in the data layer and below reads it from here,
so that no layer under the pipeline imports the recipe.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgecnn._strict import Strict


class AugmentConfig(Strict):
    """Keras preprocessing layers applied to training batches only."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "horizontal_and_vertical"
    rotation: float = Field(0.05, ge=0, le=0.5, description="fraction of a full turn")
    zoom: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)


class DataConfig(Strict):
    path: str = "data/defects"
    generate: Literal["defects"] | None = Field(
        None, description="generate the bundled defect set at `path` when it does not exist")
    generate_seed: int = 0
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    split_seed: int = 0
    min_images_per_class: int = Field(10, ge=2)
    skip_bad_images: bool = False
    batch_size: int = Field(32, ge=1, le=4096)
    channels: Literal[1, 3] = Field(3, description="model input channels: 3 (RGB) or 1 (grey, e.g. an MCU camera)")
    augment: AugmentConfig = AugmentConfig()
    cache: Literal["auto", "memory", "disk", "none"] = Field("auto", description=(
        "where training keeps decoded images after the first epoch: memory (uint8 when the images are "
        "already at the input size, else float32), disk (a tf.data file cache under the run directory), "
        "none (decode every epoch); auto: memory when the split fits cache_memory_mb, else disk"))
    cache_memory_mb: float = Field(1024, ge=0, description="auto: the most memory one split's cache may take")


__all__ = ["AugmentConfig", "DataConfig"]

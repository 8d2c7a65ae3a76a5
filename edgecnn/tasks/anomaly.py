"""``task: anomaly``: defect detection trained on good images only (``edgecnn.anomaly``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from edgecnn._strict import Strict
from edgecnn.errors import did_you_mean
from edgecnn.tasks import TaskSpec, check_int8_routes, register_task

__all__ = ["AnomalyConfig", "BACKBONES", "Backbone", "INT8_ROUTES", "INT8_RUNTIMES"]


@dataclass(frozen=True)
class Backbone:
    """One backbone an anomaly model may use: a zoo model with offline ImageNet weights, and its two taps.

    The taps are feature maps at strides 4 and 8 of the input: the papers take strides 8 and 16 of a
    WideResNet at 224-256 px; at this project's 128 px a stride-4 grid (32 x 32) is what resolves a
    1-2 px scratch. They are the last block output at each stride (the residual sums): narrow, so the
    distances are cheap, and on the bundled set as good as the 6x wider expansion activations (PatchCore
    on a random bank: image AUROC 0.84 both, pixel AUROC 0.94 both).
    """

    model: str
    taps: tuple[str, str]
    channels: int  # the two taps' channels together


BACKBONES: dict[str, Backbone] = {b.model: b for b in (
    Backbone("mobilenet_v2", ("block3_add", "block6_add"), 24 + 32),
    Backbone("efficientnet_lite0", ("block2b_add", "block3b_add"), 24 + 40),
)}
"""The one list of anomaly backbones (plain data here, so the recipe validates against it without TF)."""

INT8_RUNTIMES = ("litert", "onnxruntime")
"""The runtimes an anomaly run chooses int8 files for (OpenVINO runs the ONNX one)."""
INT8_ROUTES = ("tflite-int8", "tflite-int8-percentile", "tflite-int8-float-head",
               "onnx-int8-minmax-pc", "onnx-int8-percentile", "onnx-int8-float-head")
"""anomaly.int8_routes' default: per-channel PTQ, percentile calibration, then the head (distances, map, score)
float. Entropy calibration is left out: on the tiny fixture it collapsed every score to one value (AUROC 0.5)."""


class AnomalyConfig(Strict):
    """The recipe's ``anomaly:`` section (read when ``task: anomaly``).

    ``method``: ``patchcore`` (Roth et al. 2022, nearest neighbour in a coreset memory bank) or
    ``padim`` (Defard et al. 2020, a Gaussian per feature-map position). See docs/anomaly.md.
    """

    method: Literal["patchcore", "padim"] = "patchcore"
    backbone: str = Field("mobilenet_v2", description="a key of BACKBONES (above)")
    input_size: int = Field(128, ge=32, le=512, description="square input side; multiple of 16")
    normal: str = Field("good", min_length=1, description="the class folder of defect-free images")
    max_train_images: int = Field(300, ge=2, description="good images fitted (the first N of the train split)")
    coreset_fraction: float = Field(0.02, gt=0, le=1, description="patchcore: share of train patches kept")
    padim_dims: int = Field(100, ge=2, description="padim: random channel subset size (the paper's d)")
    blur_sigma: float = Field(4.0, ge=0, description="Gaussian blur of the map in pixels (0: none)")
    score_margin: int = Field(8, ge=0, description="border pixels left out of the image score (not of the map)")
    threshold: Literal["auto", "quantile", "f1"] = Field(
        "auto", description="quantile of good val scores, best F1 on val (needs defects there); auto: f1 if "
                            "val has defects, else quantile")
    quantile: float = Field(0.99, gt=0.5, lt=1, description="the good-score quantile for threshold=quantile")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="share of good images held out for the threshold "
                                                              "where the layout has no val split")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="class-folder layout: share held out for testing")
    int8: bool = Field(True, description="choose int8 artifacts (model.int8.tflite, model.int8.onnx) through the "
                                         "shared chooser, held to max_int8_auroc_drop and "
                                         "min_int8_score_correlation on val")
    max_int8_auroc_drop: float = Field(0.01, ge=0, le=1, description="val AUROC the int8 pick may lose")
    min_int8_score_correlation: float = Field(0.9, ge=0, le=1, description=(
        "Spearman rank correlation of the int8 pick's val scores with the float model's it must keep (the "
        "test budget min_score_correlation, held at the choice; AUROC alone let a pick that reorders the "
        "good images through)"))
    int8_routes: list[str] = Field(
        default_factory=lambda: list(INT8_ROUTES), min_length=1,
        description="the chooser's routes tried for anomaly, per runtime in escalation order (LiteRT: "
                    "model.int8.tflite; onnxruntime: model.int8.onnx, which OpenVINO also runs)")
    seed: int = 0

    @field_validator("int8_routes")
    @classmethod
    def _known_routes(cls, v: list[str]) -> list[str]:
        return check_int8_routes("anomaly", v, INT8_RUNTIMES)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if v not in BACKBONES:
            raise ValueError(f"anomaly.backbone must be one of {list(BACKBONES)} (offline ImageNet weights); "
                             f"received {v!r}.{did_you_mean(v, BACKBONES)}")
        return v

    @field_validator("input_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"anomaly.input_size must be a multiple of 16 (the backbone's stride-8 map is upsampled "
                             f"onto its stride-4 grid); received {v}; use {max(32, round(v / 16) * 16)}.")
        return v


_STAGES = "edgecnn.anomaly.pipeline"

register_task(TaskSpec("anomaly", "anomaly detection from good images only: an image score and an anomaly map",
                       f"{_STAGES}:anomaly_dataset",
                       # train fits the memory bank or the Gaussians; the int8 choice runs inside export
                       stages=(("train", f"{_STAGES}:fit_stage"), ("export", f"{_STAGES}:export_stage"),
                               ("evaluate", "edgecnn.anomaly.evaluate:evaluate_stage")),
                       image_handler="edgecnn.anomaly.serve:answer_image",
                       headline=(("image AUROC", "auroc"), ("pixel AUROC", "pixel_auroc"),
                                 ("score rank correlation", "score_correlation")),
                       use="Flag surface images that differ from the good ones it was fitted on (any defect kind, "
                           "new ones included) and show where",
                       output="an anomaly score (N, 1) normalised so that 0.5 is the threshold, and an anomaly map "
                              "(N, M, M, 1) on the same scale"))

"""``task: segment``: per-pixel defect classes from image + mask pairs (``edgecnn.segment``)."""
from __future__ import annotations

from pydantic import Field, field_validator

from edgecnn._strict import Strict
from edgecnn.tasks import TaskSpec, register_task


class SegmentConfig(Strict):
    """The recipe's ``segment:`` section (read when ``task: segment``)."""

    classes: list[str] | None = Field(None, description=(
        "names of the mask values 0..K-1 of an images/ + masks/ folder pair (0 = background); "
        "folder layouts name their classes after the folders"))
    palette: dict[str, tuple[int, int, int]] | None = Field(None, description=(
        "colour masks: {class: [r, g, b]} in class-id order (the first is the background)"))
    class_weight_power: float = Field(0.5, ge=0, le=2, description=(
        "loss weight per pixel class = (median frequency / frequency) ** power; 0 = unweighted"))
    dice_weight: float = Field(0.0, ge=0, le=10, description="adds dice_weight x (1 - mean soft Dice) to the loss")
    max_miou_drop: float = Field(0.01, ge=0, le=1, description=(
        "int8 choice: the first calibration whose validation mIoU is within this of the float model's"))
    int8_calibrations: list[str] = Field(["minmax", "percentile", "entropy"], min_length=1, description=(
        "calibration methods the int8 choice tries in order (each int8 format uses those it knows)"))
    int8_val_images: int = Field(120, ge=8, description="validation images the int8 choice scores candidates on")
    examples: int = Field(3, ge=1, le=12, description="best and worst test images drawn in the report")

    @field_validator("palette")
    @classmethod
    def _colours(cls, v):
        if v is not None:
            bad = {k: c for k, c in v.items() if not all(0 <= x <= 255 for x in c)}
            if bad or len(v) < 2:
                raise ValueError(f"palette needs >= 2 classes with [r, g, b] values 0-255; received {v}")
        return v

    @field_validator("int8_calibrations")
    @classmethod
    def _methods(cls, v):
        from edgecnn.quantize import ONNX_CALIBRATION_METHODS, TFLITE_CALIBRATION_METHODS

        known = sorted(set(ONNX_CALIBRATION_METHODS) | set(TFLITE_CALIBRATION_METHODS))
        bad = [m for m in v if m not in known]
        if bad:
            raise ValueError(f"unknown calibration method(s) {bad}; known: {known}")
        return v


_STAGES = "edgecnn.segment.pipeline"

register_task(TaskSpec("segment", "semantic segmentation: a class per pixel, trained on masks",
                       f"{_STAGES}:segment_data",
                       stages=(("train", f"{_STAGES}:train_stage"), ("export", f"{_STAGES}:export_stage"),
                               ("evaluate", f"{_STAGES}:evaluate_stage")),
                       image_handler="edgecnn.segment.serve:answer_image",
                       headline=(("mIoU", "miou"), ("pixel accuracy", "pixel_accuracy"),
                                 ("pixel agreement", "pixel_agreement")),
                       use="Label every pixel of a surface image as one of {classes}, to measure a defect's area, "
                           "length and position",
                       output="per-pixel class probabilities (N, H, W, K), classes in the order of `labels.txt` "
                              "(the service answers per-class areas, or the mask as PNG)"))

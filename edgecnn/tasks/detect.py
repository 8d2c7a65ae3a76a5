"""``task: detect``: object detection, boxes and classes for every object (``edgecnn.detect``)."""
from __future__ import annotations

from pydantic import Field, field_validator

from edgecnn._strict import Strict
from edgecnn.tasks import TaskSpec, check_int8_routes, register_task

__all__ = ["DetectConfig", "INT8_ROUTES", "INT8_RUNTIMES"]

INT8_RUNTIMES = ("litert", "onnxruntime")
"""The runtimes a detection run chooses int8 files for (OpenVINO runs the ONNX one)."""
INT8_ROUTES = ("tflite-int8", "tflite-int8-percentile", "tflite-int8-float-head",
               "onnx-int8-minmax-pc", "onnx-int8-percentile", "onnx-int8-float-head")
"""detect.int8_routes' default: per-channel PTQ, percentile calibration, then the box decoding kept float."""


class DetectConfig(Strict):
    """The recipe's ``detect:`` section (read when ``task: detect``). See docs/detection.md."""

    classes: list[str] | None = Field(None, description=(
        "the object classes in output order (default: the data's own names; the bundled set: its defect kinds)"))
    mosaic: float = Field(0.5, ge=0, le=1, description=(
        "share of training samples made of a 2x2 mosaic of four images (several objects per image)"))
    score_threshold: float = Field(0.05, ge=0, lt=1, description=(
        "the lowest score a detection keeps (COCO mAP is measured over every kept detection)"))
    iou_threshold: float = Field(0.5, gt=0, le=1, description="class-wise NMS: boxes overlapping more are one object")
    max_detections: int = Field(100, ge=1, le=1000, description="detections per image at most (COCO's 100)")
    report_threshold: float = Field(0.3, gt=0, lt=1, description=(
        "the score at which precision, recall, box agreement and the service's answer count a detection"))
    max_int8_map_drop: float = Field(0.02, ge=0, le=1, description="val mAP@0.5 the int8 pick may lose")
    min_int8_box_agreement: float = Field(0.9, ge=0, le=1, description=(
        "val box agreement with the float model the int8 pick must keep (detections matched at IoU >= 0.5)"))
    int8: bool = Field(True, description="choose int8 artifacts (model.int8.tflite, model.int8.onnx) through the "
                                         "shared chooser, held to max_int8_map_drop and min_int8_box_agreement")
    int8_routes: list[str] = Field(default_factory=lambda: list(INT8_ROUTES), min_length=1, description=(
        "the chooser's routes tried for detection, per runtime in escalation order"))
    int8_val_images: int = Field(120, ge=8, description="validation images the int8 choice scores candidates on")

    @field_validator("int8_routes")
    @classmethod
    def _known_routes(cls, v: list[str]) -> list[str]:
        return check_int8_routes("detect", v, INT8_RUNTIMES)


_STAGES = "edgecnn.detect.pipeline"

register_task(TaskSpec("detect", "object detection: a box, a class and a score for every object",
                       f"{_STAGES}:detect_data",
                       stages=(("train", f"{_STAGES}:train_stage"), ("export", f"{_STAGES}:export_stage"),
                               ("evaluate", f"{_STAGES}:evaluate_stage")),
                       image_handler="edgecnn.detect.serve:answer_image",
                       headline=(("mAP@0.5", "map50"), ("mAP@0.5:0.95", "map"), ("box agreement", "box_agreement")),
                       use="Find and box every {classes} on a surface image (where, which kind, how many)",
                       output="one tensor (N, A, 4 + K): per anchor or cell a box [x0, y0, x1, y1] as a fraction of "
                              "the input side and K class probabilities; class-wise NMS runs after the graph "
                              "(edgecnn.detect.boxes.postprocess), the service answers the boxes in pixels"))

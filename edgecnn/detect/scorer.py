"""detect's half of the int8 choice: the chooser (:func:`edgecnn.compress.chooser.choose_with`) builds the candidate
artifacts, this scorer holds them to mAP@0.5 on the val images and to box agreement with the float model."""
from __future__ import annotations

import numpy as np

from edgecnn.compress.scorers import Score, Scorer
from edgecnn.detect.metrics import box_agreement, coco_map
from edgecnn.detect.outputs import detections_of

__all__ = ["MapScorer"]


class MapScorer(Scorer):
    """detect: COCO mAP@0.5 on the val images (drop = the float model's minus the artifact's) and box agreement
    with the float model's detections at ``report_threshold`` (matched at IoU >= 0.5, same class).

    Args:
        images: (N, H, W, C) val images 0-255 (an array, or a sequence decoding each slice).
        truth: per image ``(boxes (K, 4) in input pixels, classes (K,))``.
        num_classes: object classes.
        max_drop, min_agreement: the budget (``detect.max_int8_map_drop``, ``detect.min_int8_box_agreement``).
        nms: ``score_threshold``, ``iou_threshold``, ``max_detections`` of the post-processing.
        report_threshold: the score at which a detection counts for the agreement.
        head_layers: name fragments of the layers a float-head route keeps float (the box decoding).
    """

    task = "detect"
    metric_name = "mAP@0.5"
    agreement_name = "box agreement"
    fixes = "raise detect.max_int8_map_drop, lower detect.min_int8_box_agreement, add calibration images, or " \
            "keep the float model for this target"

    def __init__(self, images, truth, num_classes: int, *, max_drop: float, min_agreement: float | None = None,
                 nms: dict | None = None, report_threshold: float = 0.3, head_layers: tuple[str, ...] = (),
                 batch: int = 16):
        super().__init__(images, max_drop=max_drop, min_agreement=min_agreement)
        if len(truth) != len(images):
            raise ValueError(f"MapScorer: {len(images)} images but {len(truth)} ground truths.")
        self.truth, self.num_classes = list(truth), num_classes
        self.nms, self.report_threshold = dict(nms or {}), report_threshold
        self.head_layers, self.batch = tuple(head_layers), batch
        self.size = int(images.shape[1])
        self.ref_dets = None

    def detections(self, runner) -> list:
        """The runner's detections over the val images, a batch at a time."""
        out = []
        for i in range(0, len(self.images), self.batch):
            out += detections_of(runner(np.asarray(self.images[i:i + self.batch], np.float32)), self.size, **self.nms)
        return out

    def _map(self, dets) -> float:
        return float(max(coco_map(self.truth, dets, self.num_classes)["map50"], 0.0))

    def _reference(self, float_model) -> float:
        self.ref_dets = self.detections(float_model)
        return self._map(self.ref_dets)

    def score(self, runner) -> Score:
        dets = self.detections(runner)
        metric = self._map(dets)
        if self.ref_dets is None:   # a float reference measured against itself
            return Score(metric, float((metric if self.reference is None else self.reference) - metric), 1.0, dets)
        agree = box_agreement(self.ref_dets, dets, iou=0.5, score_threshold=self.report_threshold)
        return Score(metric, float(self.reference - metric), float(agree), dets)

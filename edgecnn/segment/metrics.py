"""The lecture's segmentation metrics, from a confusion matrix of pixels (numpy only).

* pixel accuracy = correctly classified pixels / all pixels = trace(C) / sum(C);
* Jaccard index (IoU) of class c = |pred_c ∩ true_c| / |pred_c ∪ true_c| = C[c,c] / (row_c + col_c - C[c,c]);
* mIoU = the mean of the per-class IoU over the classes present in truth or prediction (a class
  absent from both has no IoU, not 1);
* pixel agreement of two masks (int8 artifact vs the float model) = pixels with the same class / all.
* the int8 choice's scorer (:class:`MiouScorer`): mIoU on val pairs, its drop below the float model's, and the
  pixel agreement with the float model's masks.

``C[t, p]`` counts pixels of true class ``t`` predicted as ``p``.
"""
from __future__ import annotations

import numpy as np

from edgecnn.compress.scorers import Score, Scorer

__all__ = ["MiouScorer", "confusion_matrix", "pixel_accuracy", "class_iou", "mean_iou", "pixel_agreement",
           "predict_masks", "segment_metrics"]


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 pixel counts, rows = true class, columns = predicted class."""
    t = np.asarray(truth, np.int64).ravel()
    p = np.asarray(pred, np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction differ in size: {np.shape(truth)} vs {np.shape(pred)}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def pixel_accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / max(cm.sum(), 1))


def class_iou(cm: np.ndarray) -> np.ndarray:
    """Per-class Jaccard index; NaN for a class that is neither in the truth nor in the prediction."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(cm: np.ndarray) -> float:
    iou = class_iou(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels where two class-id masks agree."""
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def segment_metrics(cm: np.ndarray, classes: list[str]) -> dict:
    """pixel_accuracy, miou, per-class iou (by name), and the defect pixels' IoU (classes 1.., pooled)."""
    iou = class_iou(cm)
    defect = cm[1:, 1:].sum()  # defect predicted as any defect class counts as found
    union = cm[1:, :].sum() + cm[:, 1:].sum() - defect
    return {"pixel_accuracy": pixel_accuracy(cm), "miou": mean_iou(cm),
            "iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, iou)},
            "defect_iou": float(defect / union) if union else None,
            "pixels": int(cm.sum())}


def predict_masks(runner, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Class-id masks (N, H, W) uint8: the argmax of a runner's (N, H, W, K) probabilities, a batch at a time."""
    return np.concatenate([np.argmax(runner(np.asarray(images[i:i + batch], np.float32)), axis=-1).astype(np.uint8)
                           for i in range(0, len(images), batch)])


class MiouScorer(Scorer):
    """segment's int8 scorer: mIoU on the val pairs (drop = the float model's minus the artifact's) and the pixel
    agreement of the artifact's masks with the float model's.

    Args:
        images: (N, H, W, C) val images 0-255.
        masks: (N, H, W) true class ids.
        num_classes: K.
        max_drop: the mIoU the pick may lose (``segment.max_miou_drop``).
        min_agreement: a pixel agreement the pick must keep (None: mIoU alone).
    """

    task = "segment"
    metric_name = "mIoU"
    agreement_name = "pixel agreement"
    fixes = "raise segment.max_miou_drop, add calibration images or calibration methods " \
            "(segment.int8_calibrations), or keep the float model for this target"

    def __init__(self, images: np.ndarray, masks: np.ndarray, num_classes: int, *, max_drop: float,
                 min_agreement: float | None = None):
        super().__init__(images, max_drop=max_drop, min_agreement=min_agreement)
        self.masks, self.num_classes = np.asarray(masks), int(num_classes)
        if len(self.masks) != len(images):
            raise ValueError(f"MiouScorer: {len(images)} images but {len(self.masks)} masks.")
        self.float_masks: np.ndarray | None = None

    @property
    def resolution(self) -> float:
        """One pixel of one class's IoU, roughly: a pixel over the val pixels."""
        return 1.0 / self.masks.size

    def miou(self, masks: np.ndarray) -> float:
        return mean_iou(confusion_matrix(self.masks, masks, self.num_classes))

    def _reference(self, float_model) -> float:
        self.float_masks = predict_masks(float_model, self.images)
        return self.miou(self.float_masks)

    def score(self, runner) -> Score:
        masks = predict_masks(runner, self.images)
        miou = self.miou(masks)
        return Score(miou, float(self.reference - miou), pixel_agreement(masks, self.float_masks), masks)

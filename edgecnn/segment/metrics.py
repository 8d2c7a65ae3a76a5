"""The lecture's segmentation metrics, from a confusion matrix of pixels (numpy only).

* pixel accuracy = correctly classified pixels / all pixels = trace(C) / sum(C);
* Jaccard index (IoU) of class c = |pred_c ∩ true_c| / |pred_c ∪ true_c| = C[c,c] / (row_c + col_c - C[c,c]);
* mIoU = the mean of the per-class IoU over the classes present in truth or prediction (a class
  absent from both has no IoU, not 1);
* pixel agreement of two masks (int8 artifact vs the float model) = pixels with the same class / all.

``C[t, p]`` counts pixels of true class ``t`` predicted as ``p``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["confusion_matrix", "pixel_accuracy", "class_iou", "mean_iou", "pixel_agreement", "segment_metrics"]


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

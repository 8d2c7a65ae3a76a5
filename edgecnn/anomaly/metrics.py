"""Image- and pixel-level figures of an anomaly model (numpy and scikit-learn; no TensorFlow).

Scores and maps are the model's normalised outputs, so the threshold is 0.5 everywhere.

* image AUROC; F1, precision and recall at the threshold; the recall of every defect kind and the share
  of good images passed;
* where masks exist: pixel AUROC; PRO (Bergmann et al. 2020, "Uninformed Students"): the mean share of
  each ground-truth region's pixels above a threshold, as a function of the false-positive rate on good
  pixels, integrated from 0 to 0.3 and divided by 0.3; IoU of the map thresholded at 0.5 with the masks.
"""
from __future__ import annotations

import numpy as np

__all__ = ["THRESHOLD", "image_metrics", "pixel_metrics", "pro_score", "rank_correlation", "roc_points"]

THRESHOLD = 0.5
PRO_MAX_FPR = 0.3


def image_metrics(scores: np.ndarray, defect: np.ndarray, kinds: list[str], normal: str) -> dict:
    """AUROC, F1/precision/recall at 0.5, per-kind recall (good: the share passed)."""
    from sklearn.metrics import roc_auc_score

    scores, defect = np.asarray(scores, np.float64), np.asarray(defect, bool)
    pred = scores > THRESHOLD
    tp, fp, fn = int((pred & defect).sum()), int((pred & ~defect).sum()), int((~pred & defect).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    kinds_arr = np.asarray(kinds)
    per_kind = {k: float(pred[kinds_arr == k].mean()) for k in sorted(set(kinds)) if k != normal}
    return {"auroc": float(roc_auc_score(defect, scores)), "f1": 2 * precision * recall / (precision + recall)
            if precision + recall else 0.0, "precision": precision, "recall": recall,
            "good_pass_rate": float((~pred[~defect]).mean()), "recall_per_defect": per_kind,
            "images": len(scores)}


def pro_score(maps: np.ndarray, masks: np.ndarray, max_fpr: float = PRO_MAX_FPR, steps: int = 200) -> float:
    """Normalised area under the per-region-overlap curve up to ``max_fpr`` (1.0 = every region found
    before any good pixel is flagged)."""
    from scipy.ndimage import label

    neg = np.sort(maps[~masks].ravel())
    fprs = np.linspace(0.0, max_fpr, steps)
    # the threshold at which a share `fpr` of good pixels lies above it
    thresholds = neg[np.clip(np.ceil((1 - fprs) * len(neg)).astype(int) - 1, 0, len(neg) - 1)]
    overlaps = []
    for m, gt in zip(maps, masks):
        if not gt.any():
            continue
        regions, n = label(gt)
        for r in range(1, n + 1):
            vals = np.sort(m[regions == r])
            overlaps.append(1.0 - np.searchsorted(vals, thresholds, side="right") / len(vals))
    if not overlaps:
        return float("nan")
    pro = np.mean(overlaps, axis=0)
    return float(np.trapezoid(pro, fprs) / max_fpr)


def pixel_metrics(maps: np.ndarray, masks: np.ndarray) -> dict:
    """Pixel AUROC, PRO and IoU at 0.5 over images whose masks are known (good images and masked defects)."""
    from sklearn.metrics import roc_auc_score

    maps = np.asarray(maps, np.float32).reshape(masks.shape)
    if not masks.any():
        return {}
    pred = maps > THRESHOLD
    union = int((pred | masks).sum())
    return {"pixel_auroc": float(roc_auc_score(masks.ravel(), maps.ravel())), "pro": pro_score(maps, masks),
            "iou": float((pred & masks).sum() / union) if union else 0.0}


def roc_points(scores: np.ndarray, defect: np.ndarray, max_points: int = 200) -> dict:
    """The ROC curve (false/true positive rates), at most ``max_points`` points, for the report."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(defect, bool), np.asarray(scores, np.float64))
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).astype(int))
    return {"fpr": [round(float(v), 5) for v in fpr[keep]], "tpr": [round(float(v), 5) for v in tpr[keep]]}


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score vectors (how well an artifact keeps the float model's order)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a, np.float64), np.asarray(b, np.float64)).statistic)

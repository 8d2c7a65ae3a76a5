"""Image- and pixel-level figures of an anomaly model (numpy and scikit-learn; no TensorFlow).

Scores and maps are the model's normalised outputs, so the threshold is 0.5 everywhere.

* image AUROC; F1, precision and recall at the threshold; the recall of every defect kind and the share
  of good images passed;
* where masks exist: pixel AUROC; PRO (Bergmann et al. 2020, "Uninformed Students"): the mean share of
  each ground-truth region's pixels above a threshold, as a function of the false-positive rate on good
  pixels, integrated from 0 to 0.3 and divided by 0.3; IoU of the map thresholded at 0.5 with the masks.
  Accumulated batch by batch (:class:`PixelAccumulator`), so a test split larger than memory is fine.
* the int8 choice's scorer (:class:`AurocScorer`): image AUROC on val, its drop below the float model's, and
  the rank correlation of the scores with the float model's.
"""
from __future__ import annotations

import numpy as np

from edgecnn.compress.scorers import Score, Scorer

__all__ = ["AurocScorer", "PixelAccumulator", "THRESHOLD", "image_auroc", "image_metrics", "pixel_metrics", "pro_score",
           "rank_correlation", "roc_points"]

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


def _keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving 16-bit keys of the values rounded to float16 (sign-magnitude bits -> unsigned order)."""
    u = np.asarray(values, np.float16).view(np.uint16).astype(np.int32)
    return np.where(u & 0x8000, 0xFFFF - u, u | 0x8000)


class PixelAccumulator:
    """Pixel AUROC, PRO and IoU at 0.5, accumulated batch by batch (:meth:`update`, then :meth:`result`).

    Memory does not grow with the number of pixels: the map values are counted in one histogram per
    class over every float16 value (65,536 bins, scale-free: relative resolution 2^-11, so two pixels
    closer than 0.05 % count as a tie), which gives the Mann-Whitney AUROC exactly up to that rounding.
    PRO needs each ground-truth region's values against thresholds known only at the end (those at
    which a share ``fpr`` of good pixels lies above): each region keeps its sorted float16 values, at
    most ``region_points`` of them (evenly spaced quantiles beyond that, overlap error <= 1/region_points),
    so memory grows with the number of defect regions, 2 KB each at the default 1,024, not with pixels.
    """

    def __init__(self, max_fpr: float = PRO_MAX_FPR, steps: int = 200, region_points: int = 1024):
        self.max_fpr, self.steps, self.region_points = max_fpr, steps, region_points
        self.pos = np.zeros(1 << 16, np.int64)
        self.neg = np.zeros(1 << 16, np.int64)
        self.regions: list[np.ndarray] = []
        self.inter = self.union = 0

    def update(self, maps: np.ndarray, masks: np.ndarray) -> None:
        """Add a batch: ``maps`` (N, M, M) normalised (0.5 = threshold), ``masks`` (N, M, M) bool."""
        from scipy.ndimage import label

        masks = np.asarray(masks, bool)
        maps = np.asarray(maps, np.float32).reshape(masks.shape)
        pred = maps > THRESHOLD
        self.inter += int((pred & masks).sum())
        self.union += int((pred | masks).sum())
        keys = _keys(maps)
        self.pos += np.bincount(keys[masks], minlength=1 << 16)
        self.neg += np.bincount(keys[~masks], minlength=1 << 16)
        for k, gt in zip(keys, masks):
            if not gt.any():
                continue
            regions, n = label(gt)
            for r in range(1, n + 1):
                vals = np.sort(k[regions == r])
                if len(vals) > self.region_points:
                    vals = vals[np.round(np.linspace(0, len(vals) - 1, self.region_points)).astype(int)]
                self.regions.append(vals.astype(np.uint16))

    def pro(self) -> float:
        """Normalised area under the per-region-overlap curve up to ``max_fpr`` (Bergmann et al. 2020;
        1.0 = every region found before any good pixel is flagged)."""
        n_neg = int(self.neg.sum())
        if not self.regions or not n_neg:
            return float("nan")
        fprs = np.linspace(0.0, self.max_fpr, self.steps)
        # the key of the good pixel at ascending rank ceil((1 - fpr) * N) - 1: a share fpr lies above it
        rank = np.clip(np.ceil((1 - fprs) * n_neg).astype(np.int64) - 1, 0, n_neg - 1)
        thresholds = np.searchsorted(np.cumsum(self.neg), rank, side="right")
        overlaps = [1.0 - np.searchsorted(v, thresholds, side="right") / len(v) for v in self.regions]
        return float(np.trapezoid(np.mean(overlaps, axis=0), fprs) / self.max_fpr)

    def result(self) -> dict:
        """``{pixel_auroc, pro, iou}``; empty when no pixel was a defect."""
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if not n_pos:
            return {}
        below = np.cumsum(self.neg) - self.neg
        auroc = float((self.pos * (below + 0.5 * self.neg)).sum() / (n_pos * n_neg)) if n_neg else float("nan")
        return {"pixel_auroc": auroc, "pro": self.pro(),
                "iou": self.inter / self.union if self.union else 0.0}


def pro_score(maps: np.ndarray, masks: np.ndarray, max_fpr: float = PRO_MAX_FPR, steps: int = 200) -> float:
    """PRO of whole arrays (see :class:`PixelAccumulator`)."""
    acc = PixelAccumulator(max_fpr, steps)
    acc.update(maps, masks)
    return acc.pro()


def pixel_metrics(maps: np.ndarray, masks: np.ndarray) -> dict:
    """Pixel AUROC, PRO and IoU at 0.5 of whole arrays (images whose masks are known: good images and
    masked defects); the evaluate stage feeds a :class:`PixelAccumulator` batch by batch instead."""
    acc = PixelAccumulator()
    acc.update(maps, masks)
    return acc.result()


def roc_points(scores: np.ndarray, defect: np.ndarray, max_points: int = 200) -> dict:
    """The ROC curve (false/true positive rates), at most ``max_points`` points, for the report."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(defect, bool), np.asarray(scores, np.float64))
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).astype(int))
    return {"fpr": [round(float(v), 5) for v in fpr[keep]], "tpr": [round(float(v), 5) for v in tpr[keep]]}


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score vectors (how well an artifact keeps the float model's order);
    0.0 where it is undefined (one of them constant: an artifact whose scores collapsed keeps no order)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def image_auroc(scores: np.ndarray, defect: np.ndarray) -> float:
    """Image AUROC of ``scores`` (higher = more anomalous) against ``defect`` (both classes needed)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(defect, bool), np.asarray(scores, np.float64)))


class AurocScorer(Scorer):
    """anomaly's int8 scorer: image AUROC on the val images (drop = the float model's minus the artifact's)
    and Spearman's rank correlation of the artifact's scores with the float model's (the agreement).

    A val split without defects has no AUROC: the float model's ranking is held instead (metric and drop
    0, rank correlation >= ``GOOD_ONLY_CORRELATION``).

    Args:
        images: the val images, anything sliced into (B, H, W, 3) float 0-255 batches (an array, or a sequence
            that decodes each slice: memory holds one batch).
        defect: (N,) bool, True for a defective image.
        max_drop: the AUROC the pick may lose (``anomaly.max_int8_auroc_drop``).
        min_agreement: a rank correlation the pick must keep (None: AUROC alone).
        head_layers: name fragments of the distance / map / score layers the float-head routes keep float.

    Example:
        >>> s = AurocScorer(val_images, defect, max_drop=0.01)  # doctest: +SKIP
        >>> s.prepare(lambda: float_runner); s.score(int8_runner)  # doctest: +SKIP
    """

    task = "anomaly"
    metric_name = "image AUROC"
    agreement_name = "score rank correlation"
    fixes = "raise anomaly.max_int8_auroc_drop or lower anomaly.min_int8_score_correlation, fit on more good " \
            "images (they are the calibration set), or keep the float model for this target"
    GOOD_ONLY_CORRELATION = 0.99

    def __init__(self, images, defect, *, max_drop: float, min_agreement: float | None = None,
                 head_layers: tuple[str, ...] = (), batch: int = 16):
        super().__init__(images, max_drop=max_drop, min_agreement=min_agreement)
        self.defect = np.asarray(defect, bool).ravel()
        if len(self.defect) != len(images):
            raise ValueError(f"AurocScorer: {len(images)} images but {len(self.defect)} defect flags.")
        self.ranked = bool(self.defect.any() and (~self.defect).any())
        if not self.ranked:
            self.metric_name = "image AUROC (not measurable: val has no defects; the float ranking is held)"
            self.min_agreement = max(min_agreement or 0.0, self.GOOD_ONLY_CORRELATION)
        self.head_layers, self.batch = tuple(head_layers), batch
        self.ref_scores: np.ndarray | None = None

    @property
    def resolution(self) -> float:
        """One (defect, good) pair of AUROC."""
        pairs = int(self.defect.sum()) * int((~self.defect).sum())
        return 1.0 / pairs if pairs else 1.0

    def scores(self, runner) -> np.ndarray:
        """Image scores (N,) of ``runner`` over the val images, a batch at a time (its score output, told from
        the map by :func:`edgecnn.anomaly.serve.split_outputs`)."""
        from edgecnn.anomaly.serve import split_outputs

        return np.concatenate([split_outputs(runner.predict_outputs(np.asarray(self.images[i:i + self.batch],
                                                                               np.float32)))[0]
                               for i in range(0, len(self.images), self.batch)])

    def _auroc(self, scores: np.ndarray) -> float:
        return image_auroc(scores, self.defect) if self.ranked else 0.0

    def _reference(self, float_model) -> float:
        self.ref_scores = self.scores(float_model)
        return self._auroc(self.ref_scores)

    def score(self, runner) -> Score:
        scores = self.scores(runner)
        auroc = self._auroc(scores)
        return Score(auroc, float(self.reference - auroc), rank_correlation(self.ref_scores, scores), scores)

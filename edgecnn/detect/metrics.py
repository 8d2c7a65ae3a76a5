"""Detection metrics: COCO mAP exactly as pycocotools computes it, and box agreement between two models.

numpy only. :func:`coco_map` follows ``pycocotools/cocoeval.py`` (``COCOeval(iouType="bbox")`` with
its default parameters, area range "all", ``maxDets`` 100) step by step, and a test holds it equal to
pycocotools within 1e-4 on the same detections:

- IoU of boxes as COCO's ``bbIou`` counts it: widths ``x1 - x0`` (no ``+ 1``); against a crowd truth
  box the union is the detection's own area.
- per image and class, detections sorted by score (a stable sort: equal scores keep their order)
  and cut to the best 100;
- per IoU threshold 0.50:0.05:0.95, each detection in turn takes the free truth box of its class with
  the highest IoU >= the threshold (equal IoUs: the later truth box); a crowd box may be taken again,
  and a detection on an ignored (crowd) box is neither a true nor a false positive;
- per class, all images' detections sorted by score (stable, image order), precision made monotone
  and read at the 101 recall points 0, 0.01, ..., 1 (0 beyond the highest recall reached);
- mAP is the mean over IoU thresholds, recall points and the classes that have a (non-crowd) truth
  box; classes without one are left out, and with none at all the mean is -1, as pycocotools says.

Example:
    >>> import numpy as np
    >>> from edgecnn.detect.boxes import Detections
    >>> truth = [(np.array([[0, 0, 10, 10]]), np.array([0]))]
    >>> dets = [Detections(np.array([[0, 0, 10, 10]]), np.array([0.9]), np.array([0]))]
    >>> round(coco_map(truth, dets, num_classes=1)["map"], 6)  # precision tp / (tp + fp + eps), as in COCO
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgecnn.detect.boxes import Detections, iou_matrix

__all__ = ["IOU_THRESHOLDS", "RECALL_POINTS", "box_agreement", "coco_map"]

# pycocotools' Params.setDetParams, built the same way so the floats are the same.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETECTIONS = 100  # per image and class, COCO's maxDets[-1]
_AREA_ALL = (0.0, 1e5**2)  # COCO's area range "all"
_IOU50, _IOU75 = 0, 5  # indices of 0.5 and 0.75 in IOU_THRESHOLDS


# ---------------------------------------------------------------------------------------------------------
# COCO mAP
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _ImageClassResult:
    """cocoeval's evaluateImg for one image and one class, area "all"."""

    scores: np.ndarray  # (D,) detection scores, sorted
    matched: np.ndarray  # (T, D) bool: the detection matched a truth box at threshold t
    ignored: np.ndarray  # (T, D) bool: matched an ignored (crowd) box, or unmatched and out of the area range
    num_truth: int  # truth boxes not ignored


def _coco_iou(dt_xyxy: np.ndarray, gt_xyxy: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(D, G) IoUs as pycocotools' ``maskUtils.iou`` computes them from ``[x, y, w, h]`` boxes (``bbIou``)."""
    d = np.concatenate([dt_xyxy[:, :2], dt_xyxy[:, 2:] - dt_xyxy[:, :2]], axis=1)  # the xywh pycocotools sees
    g = np.concatenate([gt_xyxy[:, :2], gt_xyxy[:, 2:] - gt_xyxy[:, :2]], axis=1)
    d_end, g_end = d[:, None, :2] + d[:, None, 2:], g[None, :, :2] + g[None, :, 2:]  # x + w, not x1 (bit-exact)
    overlap = np.minimum(d_end, g_end) - np.maximum(d[:, None, :2], g[None, :, :2])  # (D, G, 2): w, h
    w, h = overlap[..., 0], overlap[..., 1]
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    d_area = (d[:, 2] * d[:, 3])[:, None]
    union = np.where(crowd[None, :], d_area, d_area + (g[:, 2] * g[:, 3])[None, :] - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def _last_best(values: np.ndarray) -> np.ndarray:
    """Per row the index of the largest value, the last one among equals (cocoeval's ``<`` test); -1 if none >= 0."""
    flipped = values[:, ::-1]
    index = values.shape[1] - 1 - np.argmax(flipped, axis=1)
    return np.where(flipped.max(axis=1) >= 0, index, -1)


def _evaluate_image_class(dt_boxes: np.ndarray, dt_scores: np.ndarray, gt_boxes: np.ndarray,
                          gt_crowd: np.ndarray) -> _ImageClassResult:
    """cocoeval's ``computeIoU`` + ``evaluateImg`` for one image and class (area "all", maxDet 100)."""
    order = np.argsort(-dt_scores, kind="mergesort")[:MAX_DETECTIONS]
    dt_boxes, dt_scores = dt_boxes[order], dt_scores[order]
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    gt_ignore = gt_crowd | (gt_area < _AREA_ALL[0]) | (gt_area > _AREA_ALL[1])
    gt_order = np.argsort(gt_ignore, kind="mergesort")  # truth boxes that count first
    gt_boxes, gt_crowd, gt_ignore = gt_boxes[gt_order], gt_crowd[gt_order], gt_ignore[gt_order]
    n_thr, n_dt, n_gt = len(IOU_THRESHOLDS), len(dt_scores), len(gt_boxes)
    matched = np.zeros((n_thr, n_dt), bool)
    ignored = np.zeros((n_thr, n_dt), bool)
    if n_dt and n_gt:
        ious = _coco_iou(dt_boxes, gt_boxes, gt_crowd)
        thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
        gt_taken = np.zeros((n_thr, n_gt), bool)
        rows = np.arange(n_thr)
        for d in range(n_dt):
            iou = np.broadcast_to(ious[d], (n_thr, n_gt))
            free = (~gt_taken | gt_crowd) & (iou >= thresholds)
            best = _last_best(np.where(free & ~gt_ignore, iou, -1.0))  # a counted truth box wins outright
            best = np.where(best >= 0, best, _last_best(np.where(free & gt_ignore, iou, -1.0)))
            hit = best >= 0
            matched[hit, d] = True
            ignored[hit, d] = gt_ignore[best[hit]]
            gt_taken[rows[hit], best[hit]] = True
    dt_area = (dt_boxes[:, 2] - dt_boxes[:, 0]) * (dt_boxes[:, 3] - dt_boxes[:, 1])
    out_of_range = (dt_area < _AREA_ALL[0]) | (dt_area > _AREA_ALL[1])
    ignored |= ~matched & out_of_range[None, :]
    return _ImageClassResult(dt_scores, matched, ignored, int(np.count_nonzero(~gt_ignore)))


def _accumulate_class(results: list[_ImageClassResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cocoeval's ``accumulate`` for one class: precision (T, R), recall (T,) and the sorted per-detection
    true/false-positive flags at IoU 0.5 with their scores (for precision/recall at a score threshold)."""
    num_truth = sum(r.num_truth for r in results)
    scores = np.concatenate([r.scores for r in results])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([r.matched for r in results], axis=1)[:, order]
    ignored = np.concatenate([r.ignored for r in results], axis=1)[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1).astype(float)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(float)
    precision = np.zeros((len(IOU_THRESHOLDS), len(RECALL_POINTS)))
    recall = np.zeros(len(IOU_THRESHOLDS))
    n_dt = len(scores)
    for t in range(len(IOU_THRESHOLDS)):
        rc = tp[t] / num_truth
        pr = tp[t] / (fp[t] + tp[t] + np.spacing(1))
        if n_dt:
            recall[t] = rc[-1]
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # the precision envelope
        at = np.searchsorted(rc, RECALL_POINTS, side="left")
        precision[t, at < n_dt] = pr[at[at < n_dt]]
    # matched and ignored are in score order already (indexed by ``order`` above)
    return precision, recall, np.stack([scores[order], matched[_IOU50], ignored[_IOU50]])


def _check_inputs(truth: Sequence, detections: Sequence[Detections], num_classes: int,
                  iscrowd: Sequence | None) -> list[np.ndarray]:
    if len(truth) != len(detections):
        raise ValueError("coco_map needs one detections entry per truth image. "
                         f"Received {len(truth)} truth images and {len(detections)} detections.")
    if iscrowd is not None and len(iscrowd) != len(truth):
        raise ValueError(f"iscrowd should have one entry per image. Received {len(iscrowd)} for {len(truth)} images.")
    crowd = []
    for i, ((boxes, classes), dets) in enumerate(zip(truth, detections)):
        classes = np.asarray(classes).reshape(-1)
        if np.asarray(boxes).reshape(-1, 4).shape[0] != len(classes):
            raise ValueError(f"truth[{i}] needs one class per box. Received {np.shape(boxes)} boxes, "
                             f"{len(classes)} classes.")
        for name, cls in (("truth", classes), ("detections", dets.classes)):
            bad = cls[(cls < 0) | (cls >= num_classes)]
            if bad.size:
                raise ValueError(f"{name}[{i}] has class {int(bad[0])}; classes should be in [0, {num_classes}) "
                                 f"(num_classes={num_classes}).")
        flags = np.zeros(len(classes), bool) if iscrowd is None else np.asarray(iscrowd[i], bool).reshape(-1)
        if len(flags) != len(classes):
            raise ValueError(f"iscrowd[{i}] should have one flag per truth box. Received {len(flags)} for "
                             f"{len(classes)} boxes.")
        crowd.append(flags)
    return crowd


def coco_map(truth: Sequence[tuple[np.ndarray, np.ndarray]], detections: Sequence[Detections], num_classes: int,
             *, iscrowd: Sequence[np.ndarray] | None = None, score_threshold: float = 0.25) -> dict:
    """COCO bbox mAP as pycocotools computes it, plus precision and recall at one score threshold.

    Args:
        truth: per image ``(boxes (K, 4) [x0, y0, x1, y1], classes (K,))``; an image without objects
            has ``K = 0`` and still counts (its detections are false positives).
        detections: per image, in the same order, the model's :class:`Detections`.
        num_classes: classes are ``0 .. num_classes - 1``.
        iscrowd: per image a (K,) flag per truth box: crowd boxes are ignored (COCO's ``iscrowd``).
        score_threshold: the score at or above which a detection counts for ``precision`` / ``recall``.

    Returns:
        A dict:
        ``map`` (AP averaged over IoU 0.50:0.05:0.95, pycocotools' ``stats[0]``), ``map50``
        (``stats[1]``), ``map75`` (``stats[2]``): means over the classes with truth, -1 when none has any;
        ``per_class``: ``{class: {"ap", "ap50", "ap75", "num_truth", "precision", "recall"}}`` for each
        class with truth; ``precision``, ``recall``, ``f1``: over all classes at IoU 0.5 for the
        detections scoring at least ``score_threshold`` (0 when there is nothing to divide by);
        ``pr_curves``: ``{class: 101 interpolated precisions at IoU 0.5}`` over ``recall_points``;
        ``score_threshold``, ``num_images``, ``num_truth``.

    Raises:
        ValueError: the lists differ in length, a box has no class, or a class is outside ``[0, num_classes)``.
    """
    crowd = _check_inputs(truth, detections, num_classes, iscrowd)
    per_image_class: dict[int, list[_ImageClassResult]] = {}
    for (gt_boxes, gt_classes), dets, gt_crowd in zip(truth, detections, crowd):
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        gt_classes = np.asarray(gt_classes).reshape(-1)
        dt_boxes, dt_scores = dets.boxes.astype(np.float64), dets.scores.astype(np.float64)
        for c in np.union1d(gt_classes, dets.classes):
            g, d = gt_classes == c, dets.classes == c
            result = _evaluate_image_class(dt_boxes[d], dt_scores[d], gt_boxes[g], gt_crowd[g])
            per_image_class.setdefault(int(c), []).append(result)

    precision, per_class, pr_curves = [], {}, {}
    totals = np.zeros(3)  # true positives, detections counted, truth boxes at the score threshold
    for c in sorted(per_image_class):
        results = per_image_class[c]
        num_truth = sum(r.num_truth for r in results)
        if num_truth == 0:
            continue  # pycocotools leaves a class without truth at -1 and out of the mean
        class_precision, _, flags = _accumulate_class(results)
        scores, is_match, is_ignored = flags[0], flags[1].astype(bool), flags[2].astype(bool)
        counted = (scores >= score_threshold) & ~is_ignored
        tp, n_det = int(np.count_nonzero(counted & is_match)), int(np.count_nonzero(counted))
        totals += (tp, n_det, num_truth)
        precision.append(class_precision)
        per_class[c] = {"ap": float(class_precision.mean()), "ap50": float(class_precision[_IOU50].mean()),
                        "ap75": float(class_precision[_IOU75].mean()), "num_truth": num_truth,
                        "precision": tp / n_det if n_det else 0.0, "recall": tp / num_truth}
        pr_curves[c] = class_precision[_IOU50].tolist()

    stacked = np.stack(precision, axis=-1) if precision else None  # (T, R, classes)
    tp, n_det, n_truth = totals
    p = tp / n_det if n_det else 0.0
    r = tp / n_truth if n_truth else 0.0
    return {
        "map": float(stacked.mean()) if precision else -1.0,
        "map50": float(stacked[_IOU50].mean()) if precision else -1.0,
        "map75": float(stacked[_IOU75].mean()) if precision else -1.0,
        "per_class": per_class,
        "precision": float(p), "recall": float(r), "f1": float(2 * p * r / (p + r)) if p + r else 0.0,
        "score_threshold": float(score_threshold),
        "pr_curves": pr_curves, "recall_points": RECALL_POINTS.tolist(),
        "num_images": len(truth), "num_truth": int(n_truth),
    }


# ---------------------------------------------------------------------------------------------------------
# Box agreement
# ---------------------------------------------------------------------------------------------------------
def _count_matches(reference: Detections, other: Detections, iou: float) -> int:
    """One-to-one matches: each reference detection, best score first (equal scores in index order),
    takes the free ``other`` detection of its class with the highest IoU >= ``iou`` (equal IoUs: the first)."""
    if not reference.count or not other.count:
        return 0
    ious = iou_matrix(reference.boxes, other.boxes)
    ious[reference.classes[:, None] != other.classes[None, :]] = -1.0
    taken = np.zeros(other.count, bool)
    for r in np.argsort(-reference.scores, kind="stable"):
        candidates = np.where(taken, -1.0, ious[r])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou:
            taken[best] = True
    return int(np.count_nonzero(taken))


def box_agreement(reference: Sequence[Detections], other: Sequence[Detections], *, iou: float = 0.5,
                  score_threshold: float = 0.25) -> float:
    """How far two models' detections agree: the Jaccard index of their detection sets.

    On each image, the detections of both scoring at least ``score_threshold`` are matched one to one
    (same class, IoU >= ``iou``; greedily, the reference's best score first, each taking the free other
    detection with the highest IoU). Over all images, with ``M`` matches, ``R`` reference detections and
    ``O`` other detections::

        agreement = M / (R + O - M)

    so a reference detection the other misses and an extra detection of the other both count against
    it. Identical inputs give 1.0, inputs with no match give 0.0, and two empty sets agree (1.0).

    Args:
        reference: per image, the reference (float) model's detections.
        other: per image, in the same order, the detections of the artifact compared with it.
        iou: the IoU at or above which two boxes of one class are the same detection.
        score_threshold: the score at or above which a detection counts.

    Returns:
        The agreement in [0, 1].

    Raises:
        ValueError: the two lists differ in length.

    Example:
        >>> import numpy as np
        >>> a = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0.9, 0.8]), np.array([0, 0]))
        >>> b = Detections(np.array([[0, 0, 10, 11]]), np.array([0.7]), np.array([0]))
        >>> box_agreement([a], [b])
        0.5
    """
    if len(reference) != len(other):
        raise ValueError("box_agreement needs one detections entry per image in both lists. "
                         f"Received {len(reference)} and {len(other)}.")
    matches = total = 0
    for ref, oth in zip(reference, other):
        ref, oth = ref.above(score_threshold), oth.above(score_threshold)
        m = _count_matches(ref, oth, iou)
        matches += m
        total += ref.count + oth.count - m
    return matches / total if total else 1.0

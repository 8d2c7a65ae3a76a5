"""Boxes: conversions, IoU, non-maximum suppression, SSD anchor coding and the one post-processing function.

Everything here is numpy only (no TensorFlow), so a runtime-only install evaluates, predicts and serves
with it. A box is ``[x0, y0, x1, y1]`` in pixels of the model's input unless a name says otherwise;
widths are ``x1 - x0`` (no ``+ 1``), as COCO's bbox evaluation counts them.

:func:`postprocess` is the one function that turns a detector's raw outputs (per-anchor class
probabilities and decoded boxes) into :class:`Detections`. Evaluation, ``edgecnn predict`` and the
service all call it, so every runtime's raw outputs give the same boxes.

Example:
    >>> import numpy as np
    >>> boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    >>> scores = np.array([[0.9], [0.8], [0.7]], np.float32)
    >>> postprocess(scores, boxes).count
    2
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Detections",
    "batched_nms",
    "cxcywh_to_xyxy",
    "decode_anchors",
    "encode_anchors",
    "iou_matrix",
    "nms",
    "postprocess",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]

# SSD's box-coding variances (Liu et al. 2016): centre offsets are divided by 0.1, log sizes by 0.2.
SSD_VARIANCES = (0.1, 0.1, 0.2, 0.2)
# The largest log size change decode_anchors applies (torchvision's clamp, log(1000 / 16)): exp() never overflows.
_MAX_LOG_SCALE = float(np.log(1000.0 / 16))


# ---------------------------------------------------------------------------------------------------------
# Conversions and IoU
# ---------------------------------------------------------------------------------------------------------
def _as_boxes(boxes: np.ndarray, name: str = "boxes") -> np.ndarray:
    """``boxes`` as a floating array of shape (..., 4) (integers become float64)."""
    arr = np.asarray(boxes)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.shape[-1:] != (4,):
        raise ValueError(f"{name} should have shape (..., 4). Received shape {arr.shape}.")
    return arr


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``[x, y, w, h]`` (top-left corner and size, COCO's bbox) to ``[x0, y0, x1, y1]``."""
    b = _as_boxes(boxes)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``[x0, y0, x1, y1]`` to ``[x, y, w, h]`` (COCO's bbox: width ``x1 - x0``, no ``+ 1``)."""
    b = _as_boxes(boxes)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``[cx, cy, w, h]`` (centre and size, YOLO's and the anchors' form) to ``[x0, y0, x1, y1]``."""
    b = _as_boxes(boxes)
    half = b[..., 2:] / 2
    return np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)


def _xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    b = _as_boxes(boxes)
    return np.concatenate([(b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]], axis=-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` with every box in ``b``.

    Args:
        a: (N, 4) boxes ``[x0, y0, x1, y1]``.
        b: (M, 4) boxes ``[x0, y0, x1, y1]``.

    Returns:
        (N, M) float64 IoUs in [0, 1]; a pair whose union is empty (two zero-size boxes) has IoU 0.

    Example:
        >>> iou_matrix(np.array([[0, 0, 2, 2]]), np.array([[1, 0, 3, 2], [5, 5, 6, 6]]))
        array([[0.33333333, 0.        ]])
    """
    a = _as_boxes(a, "a").reshape(-1, 4).astype(np.float64)
    b = _as_boxes(b, "b").reshape(-1, 4).astype(np.float64)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# ---------------------------------------------------------------------------------------------------------
# Non-maximum suppression
# ---------------------------------------------------------------------------------------------------------
def _score_order(scores: np.ndarray) -> np.ndarray:
    """Indices by score, highest first; equal scores keep index order (a stable sort: deterministic)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    The highest-scoring box is kept and every box overlapping it with IoU strictly above
    ``iou_threshold`` is dropped; repeat on what is left. Equal scores are taken in index order.

    Args:
        boxes: (N, 4) boxes ``[x0, y0, x1, y1]``.
        scores: (N,) scores.
        iou_threshold: the IoU above which a lower-scoring box is suppressed, in [0, 1].

    Returns:
        The kept indices (int64), highest score first.

    Example:
        >>> nms(np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]]), np.array([0.5, 0.9, 0.1]), 0.5)
        array([1, 2])
    """
    boxes = _as_boxes(boxes).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"nms needs one score per box. Received {len(boxes)} boxes and {len(scores)} scores.")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold should be in [0, 1]. Received iou_threshold={iou_threshold}.")
    order = _score_order(scores)
    keep: list[int] = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        rest = order[1:]
        if rest.size:
            rest = rest[iou_matrix(boxes[best : best + 1], boxes[rest])[0] <= iou_threshold]
        order = rest
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
                max_detections: int | None = 100) -> np.ndarray:
    """Class-wise non-maximum suppression: boxes of different classes never suppress each other.

    Args:
        boxes: (N, 4) boxes ``[x0, y0, x1, y1]``.
        scores: (N,) scores.
        classes: (N,) integer class of each box.
        iou_threshold: see :func:`nms`.
        max_detections: keep at most this many (the highest scores over all classes); ``None`` keeps all.

    Returns:
        The kept indices (int64), highest score first, equal scores in index order.

    Example:
        >>> b = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
        >>> batched_nms(b, np.array([0.9, 0.8]), np.array([0, 1]), 0.5)
        array([0, 1])
    """
    boxes = _as_boxes(boxes).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError("batched_nms needs one score and one class per box. Received "
                         f"{len(boxes)} boxes, {len(scores)} scores and {len(classes)} classes.")
    if max_detections is not None and max_detections < 0:
        raise ValueError(f"max_detections should be >= 0 or None. Received max_detections={max_detections}.")
    kept = [np.flatnonzero(classes == c)[nms(boxes[classes == c], scores[classes == c], iou_threshold)]
            for c in np.unique(classes)]
    keep = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)  # index order, then by score
    keep = keep[_score_order(scores[keep])]
    return keep[:max_detections].astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# Detections
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Detections:
    """One image's detections: what post-processing returns and what every metric reads.

    Attributes:
        boxes: (N, 4) float32 ``[x0, y0, x1, y1]`` in pixels of the model's input.
        scores: (N,) float32 confidences.
        classes: (N,) int64 class indices (into the run's ``labels.txt``).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = _as_boxes(self.boxes).reshape(-1, 4).astype(np.float32)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.classes = np.asarray(self.classes).reshape(-1).astype(np.int64)
        if not len(self.boxes) == len(self.scores) == len(self.classes):
            raise ValueError("Detections needs one score and one class per box. Received "
                             f"{len(self.boxes)} boxes, {len(self.scores)} scores and {len(self.classes)} classes.")

    @property
    def count(self) -> int:
        """How many detections."""
        return int(len(self.scores))

    @classmethod
    def empty(cls) -> Detections:
        """No detections (an image with nothing found)."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def select(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (integer indices or a boolean mask), in that order."""
        return Detections(self.boxes[index], self.scores[index], self.classes[index])

    def above(self, score_threshold: float) -> Detections:
        """The detections whose score is at least ``score_threshold``."""
        return self.select(self.scores >= score_threshold)

    def to_json(self, labels: list[str] | None = None) -> dict:
        """A JSON-ready dict: ``count``, ``boxes`` (``[x0, y0, x1, y1]``), ``scores``, ``classes``.

        Args:
            labels: class names; when given, a ``labels`` list names each detection's class.

        Returns:
            Plain Python lists and numbers (``json.dumps`` takes it as is).
        """
        out = {"count": self.count,
               "boxes": [[float(v) for v in box] for box in self.boxes],
               "scores": [float(s) for s in self.scores],
               "classes": [int(c) for c in self.classes]}
        if labels is not None:
            out["labels"] = [labels[c] for c in out["classes"]]
        return out

    @classmethod
    def from_json(cls, data: dict) -> Detections:
        """The inverse of :meth:`to_json` (``labels`` and ``count`` are not needed)."""
        return cls(np.asarray(data["boxes"], np.float32).reshape(-1, 4), data["scores"], data["classes"])


# ---------------------------------------------------------------------------------------------------------
# SSD anchor coding
# ---------------------------------------------------------------------------------------------------------
def _check_anchor_pair(values: np.ndarray, anchors: np.ndarray, variances: tuple[float, ...], name: str
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = _as_boxes(values, name).reshape(-1, 4).astype(np.float64)
    anchors = _as_boxes(anchors, "anchors").reshape(-1, 4).astype(np.float64)
    if len(values) != len(anchors):
        raise ValueError(f"{name} and anchors should have the same length. "
                         f"Received {len(values)} {name} and {len(anchors)} anchors.")
    var = np.asarray(variances, np.float64)
    if var.shape != (4,) or np.any(var <= 0):
        raise ValueError(f"variances should be four positive numbers. Received variances={variances}.")
    return values, anchors, var


def decode_anchors(deltas: np.ndarray, anchors: np.ndarray,
                   variances: tuple[float, float, float, float] = SSD_VARIANCES) -> np.ndarray:
    """SSD box decoding (Liu et al. 2016, "SSD: Single Shot MultiBox Detector", eq. 2).

    ``cx = a_cx + d0 * v0 * a_w``, ``cy = a_cy + d1 * v1 * a_h``, ``w = a_w * exp(d2 * v2)``,
    ``h = a_h * exp(d3 * v3)``. The log-size term is clamped at ``log(1000 / 16)`` so a wild
    output never overflows. (TFLite's ``TFLite_Detection_PostProcess`` op codes the same boxes
    in the order ``y, x, h, w`` with scales ``1 / variance``: 10, 10, 5, 5.)

    Args:
        deltas: (A, 4) regression outputs ``[dx, dy, dw, dh]``, one row per anchor.
        anchors: (A, 4) anchors ``[cx, cy, w, h]`` in input pixels.
        variances: the four divisors of the coding (SSD's 0.1, 0.1, 0.2, 0.2).

    Returns:
        (A, 4) float32 boxes ``[x0, y0, x1, y1]`` in input pixels.
    """
    d, a, v = _check_anchor_pair(deltas, anchors, variances, "deltas")
    centre = a[:, :2] + d[:, :2] * v[:2] * a[:, 2:]
    size = a[:, 2:] * np.exp(np.minimum(d[:, 2:] * v[2:], _MAX_LOG_SCALE))
    return cxcywh_to_xyxy(np.concatenate([centre, size], axis=1)).astype(np.float32)


def encode_anchors(boxes_xyxy: np.ndarray, anchors: np.ndarray,
                   variances: tuple[float, float, float, float] = SSD_VARIANCES) -> np.ndarray:
    """SSD box encoding, the inverse of :func:`decode_anchors`: the regression targets of training.

    Args:
        boxes_xyxy: (A, 4) boxes ``[x0, y0, x1, y1]`` (each anchor's assigned ground truth), positive size.
        anchors: (A, 4) anchors ``[cx, cy, w, h]``.
        variances: as in :func:`decode_anchors`.

    Returns:
        (A, 4) float32 targets ``[dx, dy, dw, dh]``.

    Raises:
        ValueError: a box or an anchor has zero or negative width or height (its log size is undefined).
    """
    b, a, v = _check_anchor_pair(boxes_xyxy, anchors, variances, "boxes_xyxy")
    b = _xyxy_to_cxcywh(b)
    if np.any(b[:, 2:] <= 0) or np.any(a[:, 2:] <= 0):
        raise ValueError("encode_anchors needs boxes and anchors of positive width and height; "
                         "drop or fix zero-size boxes before assigning them to anchors.")
    offset = (b[:, :2] - a[:, :2]) / (a[:, 2:] * v[:2])
    scale = np.log(b[:, 2:] / a[:, 2:]) / v[2:]
    return np.concatenate([offset, scale], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------------------------------------
def postprocess(class_scores: np.ndarray, boxes: np.ndarray, *, score_threshold: float = 0.05,
                iou_threshold: float = 0.5, max_detections: int = 100, pre_nms_top_k: int | None = 1000,
                image_size: tuple[int, int] | None = None) -> Detections:
    """A detector's raw outputs for one image to its :class:`Detections` (the one shared post-processing).

    Every (box, class) pair whose probability is at least ``score_threshold`` is a candidate (a box may
    be kept for two classes, as in SSD and RetinaNet); per class the ``pre_nms_top_k`` best candidates
    go through NMS, and the ``max_detections`` best survivors over all classes are returned, highest
    score first. Ties are broken by anchor index, then class index, so every runtime's outputs give
    the same detections.

    Args:
        class_scores: (A, K) per-anchor class probabilities (sigmoid or softmax already applied; no
            background column: slice it off first, e.g. ``probs[:, 1:]``).
        boxes: (A, 4) decoded boxes ``[x0, y0, x1, y1]`` in input pixels (see :func:`decode_anchors`).
        score_threshold: the lowest probability a detection may have.
        iou_threshold: class-wise NMS threshold (see :func:`nms`).
        max_detections: the most detections returned (COCO evaluates at most 100 per image).
        pre_nms_top_k: per class, the most candidates NMS sees (bounds the work on an untrained model);
            ``None`` for all.
        image_size: ``(width, height)``; when given, boxes are clipped to the image.

    Returns:
        The image's detections (float32 boxes in input pixels, float32 scores, int64 classes).

    Example:
        >>> probs = np.array([[0.9, 0.0], [0.6, 0.7]], np.float32)
        >>> dets = postprocess(probs, np.array([[0, 0, 8, 8], [1, 1, 8, 8]], np.float32))
        >>> dets.classes.tolist(), [round(float(s), 2) for s in dets.scores]
        ([0, 1], [0.9, 0.7])
    """
    class_scores = np.asarray(class_scores)
    if class_scores.ndim == 1:
        class_scores = class_scores[:, None]
    boxes = _as_boxes(boxes).reshape(-1, 4)
    if class_scores.ndim != 2 or len(class_scores) != len(boxes):
        raise ValueError("postprocess needs class_scores of shape (A, K) and boxes of shape (A, 4). "
                         f"Received {class_scores.shape} and {boxes.shape}.")
    anchor, cls = np.nonzero(class_scores >= score_threshold)  # row-major: anchor order, then class order
    scores = class_scores[anchor, cls]
    if pre_nms_top_k is not None:
        top = [np.flatnonzero(cls == c)[_score_order(scores[cls == c])[:pre_nms_top_k]] for c in np.unique(cls)]
        top = np.sort(np.concatenate(top)) if top else np.zeros(0, np.int64)
        anchor, cls, scores = anchor[top], cls[top], scores[top]
    candidates = boxes[anchor].astype(np.float32)
    if image_size is not None:
        width, height = image_size
        candidates = np.clip(candidates, 0, [width, height, width, height]).astype(np.float32)
    keep = batched_nms(candidates, scores, cls, iou_threshold, max_detections)
    return Detections(candidates[keep], scores[keep], cls[keep])

"""FOMO's centroid detection (``fomo_*`` builders, ``DetectionOutput(kind="centroid")``): targets, loss, metrics.

FOMO ("Faster Objects, More Objects", Edge Impulse; docs.edgeimpulse.com, "FOMO: Object detection for
constrained devices") answers, per cell of a grid at 1/8 of the input, which object's centre lies in it:

* targets (:func:`centroid_targets`): each cell holds the class id + 1 of the box whose centre falls in it,
  0 (background) elsewhere; where two centres share a cell the smaller box wins (the larger one usually
  spills its centre into a neighbour's view anyway, the small one has only this cell).
* loss (:func:`centroid_loss`): softmax cross-entropy per cell, object cells weighted :data:`OBJECT_WEIGHT`
  (100) times the background's, averaged over the cells. Edge Impulse documents ``object_weight=100`` "as a
  way of balancing what is usually a majority of background", and 1000 where objects are rare.
* detections (:func:`centroids`): a cell fires when its best class's probability reaches the threshold;
  8-connected firing cells of one class are one object, at the mean of their cell centres (Edge Impulse's
  post-processing likewise merges neighbouring cells into one centroid).
* metrics (:func:`centroid_metrics`): a detection is a true positive when its centre falls in a true box of
  its class that no better-scoring detection took (each box matched at most once; of several such boxes,
  the one whose centre is nearest); precision, recall and F1 over the split. :func:`cell_agreement` is the
  share of cells two models give the same answer: the check that TFLite Micro answers like LiteRT, cell by
  cell. A cell's answer is either the argmax over background and the K classes (threshold-free), or, with a
  threshold, what the firmware acts on: its best class where that fires, else background.

numpy only, but for :func:`centroid_loss`.

Example:
    >>> import numpy as np
    >>> centroid_targets(np.array([[8., 0., 24., 16.]]), np.array([1]), 2, 32).reshape(4, 4)[1].tolist()
    [0, 0, 2, 0]
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgecnn.errors import EdgecnnError

__all__ = ["CENTROID_FAMILY", "OBJECT_WEIGHT", "OutputRecorder", "cell_agreement", "cell_classes",
           "centroid_figures", "centroid_loss", "centroid_metrics", "centroid_targets", "centroids",
           "is_centroid"]

OBJECT_WEIGHT = 100.0   # Edge Impulse's FOMO default: object cells count 100x a background cell
CENTROID_FAMILY = "fomo"   # the registry family (module edgecnn/arch/fomo.py) whose heads are centroid heads


def is_centroid(manifest: dict) -> bool:
    """Whether a run's model is a centroid (FOMO) detector: its manifest's model family is :data:`CENTROID_FAMILY`."""
    return (manifest.get("model") or {}).get("family") == CENTROID_FAMILY


def _grid(cells: int) -> int:
    g = int(round(cells ** 0.5))
    if g * g != cells:
        raise EdgecnnError(f"a centroid detector's output has one row per cell of a square grid; received {cells} "
                           "rows, not a square. Is this a `fomo_*` model's output?")
    return g


# ------------------------------------------------------------------------------------------- targets and loss
def centroid_targets(boxes: np.ndarray, classes: np.ndarray, num_classes: int, input_size: int,
                     stride: int = 8) -> np.ndarray:
    """(G * G,) int32: per cell (row-major) the class id + 1 of the box whose centre falls in it, else 0.

    Args:
        boxes: (B, 4) boxes [x0, y0, x1, y1] in input pixels; ``classes``: (B,) class ids in [0, num_classes).
        num_classes: object classes (no background).
        input_size: the input side in pixels; ``stride``: pixels per cell (G = ceil(input_size / stride)).
    """
    g = -(-int(input_size) // int(stride))
    out = np.zeros((g, g), np.int32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if len(classes) != len(boxes):
        raise EdgecnnError(f"centroid_targets: {len(boxes)} boxes but {len(classes)} classes.")
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise EdgecnnError(f"centroid_targets: class ids must be in [0, {num_classes}); received {classes.tolist()}.")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for b in np.argsort(-area, kind="stable"):   # largest first: a smaller box's centre overwrites it
        cx, cy = (boxes[b, 0] + boxes[b, 2]) / 2, (boxes[b, 1] + boxes[b, 3]) / 2
        i, j = min(max(int(cy // stride), 0), g - 1), min(max(int(cx // stride), 0), g - 1)
        out[i, j] = classes[b] + 1
    return out.reshape(g * g)


def centroid_loss(num_classes: int, object_weight: float = OBJECT_WEIGHT):
    """FOMO's weighted softmax cross-entropy on the raw head (N, G * G, K + 1) against :func:`centroid_targets`."""
    from edgecnn._tf import tf

    def loss(y_true, raw):
        label = tf.reshape(tf.cast(y_true, tf.int32), tf.shape(raw)[:-1])
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=label, logits=raw[..., :num_classes + 1])
        weight = tf.where(label > 0, float(object_weight), 1.0)
        return tf.reduce_mean(ce * weight)

    return loss


# ------------------------------------------------------------------------------------------- detections
def cell_classes(output: np.ndarray, score_threshold: float | None = None) -> np.ndarray:
    """(N, G * G) per cell: 0 (background) or the class id + 1.

    ``output`` is the ``detections`` output (N, G * G, 4 + K). Without ``score_threshold`` the argmax over
    background (probability 1 - sum(K)) and the K classes; with it, the best class where its probability
    reaches the threshold (the cell fires, as :func:`centroids` reads it), else background."""
    out = np.asarray(output, np.float32)
    out = out[None] if out.ndim == 2 else out
    probs = out[..., 4:]
    if score_threshold is not None:
        return np.where(probs.max(-1) >= score_threshold, probs.argmax(-1) + 1, 0)
    return np.concatenate([1.0 - probs.sum(-1, keepdims=True), probs], -1).argmax(-1)


def centroids(output: np.ndarray, input_size: int,
              score_threshold: float = 0.5) -> list[tuple[float, float, int, float]]:
    """One image's objects ``(cx, cy, class, score)`` in input pixels from its output (G * G, 4 + K): firing cells
    (best class probability >= ``score_threshold``) merged with their 8-connected neighbours of the same class;
    the centre is the mean of the cells' centres, the score their highest."""
    out = np.asarray(output, np.float32)
    g = _grid(out.shape[0])
    probs = out[:, 4:].reshape(g, g, -1)
    cls, score = probs.argmax(-1), probs.max(-1)
    fire = score >= score_threshold
    cell = float(input_size) / g
    seen = np.zeros_like(fire)
    found = []
    for i0, j0 in zip(*np.nonzero(fire)):
        if seen[i0, j0]:
            continue
        seen[i0, j0] = True
        stack, members = [(i0, j0)], []
        while stack:
            i, j = stack.pop()
            members.append((i, j))
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    a, b = i + di, j + dj
                    if 0 <= a < g and 0 <= b < g and fire[a, b] and not seen[a, b] and cls[a, b] == cls[i0, j0]:
                        seen[a, b] = True
                        stack.append((a, b))
        rows, cols = np.array(members).T
        found.append((float((cols.mean() + 0.5) * cell), float((rows.mean() + 0.5) * cell), int(cls[i0, j0]),
                      float(score[rows, cols].max())))
    return found


# ------------------------------------------------------------------------------------------- metrics
def centroid_metrics(truth: Sequence[tuple[np.ndarray, np.ndarray]], outputs: np.ndarray, input_size: int, *,
                     score_threshold: float = 0.5) -> dict[str, float]:
    """Centroid precision, recall and F1 over a split.

    Args:
        truth: per image ``(boxes (B, 4) in input pixels, classes (B,))``.
        outputs: the ``detections`` outputs (N, G * G, 4 + K), one row per image of ``truth``.
        input_size: the input side in pixels.
        score_threshold: the probability at which a cell fires (:func:`centroids`).

    Returns:
        ``centroid_precision``, ``centroid_recall``, ``centroid_f1`` (0 where undefined), and the counts
        ``centroid_tp``, ``centroid_fp``, ``centroid_fn``.
    """
    outputs = np.asarray(outputs, np.float32)
    if len(outputs) != len(truth):
        raise EdgecnnError(f"centroid_metrics: {len(outputs)} outputs but {len(truth)} ground truths.")
    tp = fp = fn = 0
    for (boxes, classes), out in zip(truth, outputs):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        classes = np.asarray(classes).reshape(-1)
        free = np.ones(len(boxes), bool)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        for cx, cy, c, _ in sorted(centroids(out, input_size, score_threshold), key=lambda d: -d[3]):
            inside = free & (classes == c) & (boxes[:, 0] <= cx) & (cx <= boxes[:, 2]) & (boxes[:, 1] <= cy) \
                & (cy <= boxes[:, 3])
            if not inside.any():
                fp += 1
                continue
            dist = np.where(inside, np.hypot(centres[:, 0] - cx, centres[:, 1] - cy), np.inf)
            free[int(dist.argmin())] = False
            tp += 1
        fn += int(free.sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"centroid_precision": p, "centroid_recall": r, "centroid_f1": 2 * p * r / (p + r) if p + r else 0.0,
            "centroid_tp": tp, "centroid_fp": fp, "centroid_fn": fn}


def cell_agreement(a: np.ndarray, b: np.ndarray, score_threshold: float | None = None) -> float:
    """Share of cells (over all images) where two models' outputs (N, G * G, 4 + K) give the same
    :func:`cell_classes` answer (at ``score_threshold``; None: the argmax)."""
    ca, cb = cell_classes(a, score_threshold), cell_classes(b, score_threshold)
    if ca.shape != cb.shape:
        raise EdgecnnError(f"cell_agreement: outputs of different shapes {ca.shape} and {cb.shape}.")
    return float((ca == cb).mean()) if ca.size else 1.0


def centroid_figures(output: np.ndarray, truth, input_size: int, score_threshold: float, *,
                     reference: np.ndarray, own_runtime: np.ndarray | None = None) -> dict[str, float]:
    """An artifact's centroid figures for report.json: :func:`centroid_metrics`; ``cell_agreement`` (the fired
    cells at ``score_threshold``) and ``cell_argmax_agreement`` with the float ``reference``; for a file run in a
    further runtime (TFLite Micro), ``runtime_cell_agreement`` and ``runtime_cell_argmax_agreement`` with the same
    file in its own runtime (LiteRT)."""
    figures: dict[str, float] = {**centroid_metrics(truth, output, input_size, score_threshold=score_threshold)}
    for prefix, other in (("", reference), ("runtime_", own_runtime)):
        if other is not None:
            figures[f"{prefix}cell_agreement"] = cell_agreement(other, output, score_threshold)
            figures[f"{prefix}cell_argmax_agreement"] = cell_agreement(other, output)
    return figures


class OutputRecorder:
    """A runner that keeps every output it returns (the evaluation's one pass gives detections and cells)."""

    def __init__(self, runner):
        self.runner, self.outputs = runner, []

    def __call__(self, images):
        out = self.runner(images)
        self.outputs.append(np.asarray(out, np.float32))
        return out

    def output(self) -> np.ndarray:
        """Every recorded output, concatenated along the batch."""
        return np.concatenate(self.outputs) if self.outputs else np.zeros((0, 0, 0), np.float32)

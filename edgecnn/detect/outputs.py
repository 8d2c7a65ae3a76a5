"""A detector's one output, (N, A, 4 + K), to :class:`~edgecnn.detect.boxes.Detections`: the step every runtime's
answer goes through (evaluation, the int8 chooser, ``predict``, the service), so they all give the same boxes.

The graph's boxes are fractions of the input side (see ``edgecnn.arch.detection``); here they become input
pixels, then class-wise NMS (:func:`edgecnn.detect.boxes.postprocess`). numpy only: no TensorFlow.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgecnn.detect.boxes import Detections, postprocess
from edgecnn.errors import EdgecnnError

__all__ = ["detections_of", "split_output"]


def split_output(output: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, A, 4) in input pixels, scores (N, A, K)) from the ``detections`` output (N, A, 4 + K)."""
    out = np.asarray(output, np.float32)
    if out.ndim == 2:
        out = out[None]
    if out.ndim != 3 or out.shape[-1] < 5:
        raise EdgecnnError(f"not a detector's output: expected (N, anchors, 4 + classes), received shape "
                           f"{out.shape}; export the model with `task: detect`.")
    return out[..., :4] * float(input_size), out[..., 4:]


def detections_of(output: np.ndarray, input_size: int, *, score_threshold: float = 0.05,
                  iou_threshold: float = 0.5, max_detections: int = 100) -> list[Detections]:
    """Each image's detections (boxes in input pixels) from a batch of the ``detections`` output."""
    boxes, scores = split_output(output, input_size)
    return [postprocess(s, b, score_threshold=score_threshold, iou_threshold=iou_threshold,
                        max_detections=max_detections, image_size=(input_size, input_size))
            for b, s in zip(boxes, scores)]


def predict_detections(runner, batches: Iterable[np.ndarray], input_size: int, **nms) -> list[Detections]:
    """A runner's detections over image batches (the images never held all at once)."""
    out: list[Detections] = []
    for images in batches:
        out += detections_of(runner(images), input_size, **nms)
    return out

"""Calibration images: the one minimum, the one check, and the feeders each quantiser wants.

    cal = check_calibration(images, what="TFLite int8")     # float32 (N, H, W, 3) RGB 0-255, N >= MIN_CALIBRATION
    converter.representative_dataset = representative_dataset(cal)
    quantize_static(..., calibration_data_reader=CalibrationReader(cal, "image"))

No TensorFlow or onnxruntime import here: the recipe config reads :data:`MIN_CALIBRATION`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from edgecnn.errors import EdgecnnError

MIN_CALIBRATION = 10
"""Fewest calibration images any int8 quantiser accepts (a few hundred across classes is typical)."""

CALIBRATION_STRIDE = 16
"""Images per onnxruntime calibration pass: its calibrators hold every intermediate tensor of every
image they are fed (200 images of MobileNetV2 at 128 px: ~4 GB), so they are fed this many at a time."""


def check_calibration(calibration, minimum: int = MIN_CALIBRATION, what: str = "int8") -> np.ndarray:
    """The calibration images as float32 NHWC RGB (or grey) 0-255, or one EdgecnnError when there are too few.

    Args:
        calibration: an (N, H, W, 3) array of RGB pixels 0-255 (N, H, W, 1 for a grey model), or None.
        minimum: the fewest images accepted (:data:`MIN_CALIBRATION` for quantisation).
        what: the operation that needs them, named in the error.

    Returns:
        ``calibration`` as a float32 array.

    Raises:
        EdgecnnError: fewer than ``minimum`` images, or not (N, H, W, 3) / (N, H, W, 1).
    """
    n = 0 if calibration is None else len(calibration)
    if n < minimum:
        raise EdgecnnError(f"{what} needs at least {minimum} calibration images; received {n}. "
                           "Pass more training images (export.calibration_images in a recipe).")
    cal = np.asarray(calibration, np.float32)
    if cal.ndim != 4 or cal.shape[-1] not in (1, 3):
        raise EdgecnnError(f"calibration images must be (N, H, W, 3) RGB or (N, H, W, 1) grey, 0-255; received shape "
                           f"{cal.shape}.")
    return cal


def representative_dataset(images: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The TFLite converter's ``representative_dataset``: batch-1 float32 0-255 samples."""

    def gen():
        for img in images:
            yield [img[None].astype(np.float32)]

    return gen


class CalibrationReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over an in-memory image array, batch 1, rewindable."""

    def __init__(self, images: np.ndarray, input_name: str):
        self.images, self.input_name = images, input_name
        self._i, self._end = 0, len(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= self._end:
            return None
        x = self.images[self._i][None].astype(np.float32)
        self._i += 1
        return {self.input_name: x}

    def rewind(self) -> None:
        self._i, self._end = 0, len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Feed images ``[start_index, end_index)`` only: onnxruntime's ``CalibStridedMinMax`` calibrates
        one stride at a time and merges, so it never holds every activation of every image."""
        self._i, self._end = start_index, min(end_index, len(self.images))

    def stride(self) -> int:
        """The largest stride <= :data:`CALIBRATION_STRIDE` that divides the image count (onnxruntime
        requires it)."""
        n = len(self.images)
        return next(d for d in range(min(CALIBRATION_STRIDE, n), 0, -1) if n % d == 0)

    def __iter__(self):  # qdq_loss_debug.collect_activations iterates over the reader
        self.rewind()
        return iter(self.get_next, None)


__all__ = ["MIN_CALIBRATION", "CalibrationReader", "check_calibration", "representative_dataset"]

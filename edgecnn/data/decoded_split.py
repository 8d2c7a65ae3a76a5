"""A split decoded once into a file of the run directory and read back a batch at a time.

Evaluation, the int8 chooser and the report's findings go over a split many times (once per artifact,
runtime and candidate). Holding it as one float32 array costs ``N x size x size x channels x 4``
bytes (20,000 images at 224 px: 12 GB), so memory grew with the data set. Here a split is decoded
once, by :func:`edgecnn.data.preprocess.load_image` (the pixels training, ``edgecnn predict`` and the
service see), into ``RUN_DIR/splits/<split>-<size>px-<digest>.npy``; :class:`DecodedSplit` reads it
back with plain file reads (not ``np.memmap``: the pages of a map that were touched count in the
process's RSS), so at most one batch is in memory.

The file holds uint8 only where that is exact, when every file already has the input size (no
resize: whole grey levels, checked batch by batch), else float32. Its name carries a digest of the
dataset fingerprint, split, size and channels: a split of other data is never read, and older files
of the same split are deleted when a new one is written. Writes are atomic.

Example:
    >>> split = decoded_split(ds, "test", 128, "export/run/splits")      # doctest: +SKIP
    >>> probs = predict_in_batches(runner, split)                         # doctest: +SKIP
    >>> (probs.argmax(1) == split.labels).mean()                          # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import atomic_path
from edgecnn.data.preprocess import load_image
from edgecnn.errors import EdgecnnError

__all__ = ["DecodedSplit", "decoded_split", "decode_images", "predict_in_batches", "at_input_size",
           "SPLITS_DIR", "BATCH"]

log = logging.getLogger("edgecnn.data")
SPLITS_DIR = "splits"
"""The run directory's folder of decoded splits."""
BATCH = 64
"""Images per read and per prediction call: the batch the Keras and onnxruntime runners use themselves,
so predicting batch by batch gives the same numbers as one call on the whole split."""
_VERSION = 1  # bumped when the file layout changes


def at_input_size(paths: list[str], size: int) -> bool:
    """True when every file's header says size x size (no resize: whole grey levels). Reads headers only."""
    from PIL import Image

    for p in paths:
        with Image.open(p) as im:
            if im.size != (size, size):
                return False
    return True


def decode_images(paths: list[str], size: int, channels: int = 3) -> np.ndarray:
    """Files as one (N, size, size, channels) float32 0-255 array, by ``load_image``, decoded in threads.

    For a batch: of a split being written (:func:`decoded_split`, which a whole split goes through), or the
    few images a caller shows (Grad-CAM, a gallery, the anomaly stages' batches).
    """
    if not paths:
        return np.zeros((0, size, size, channels), np.float32)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return np.stack(list(pool.map(lambda p: load_image(p, size, channels), paths)))


class DecodedSplit:
    """A decoded split on disk: ``(N, size, size, channels)`` float32 0-255 images, read on demand.

    Reads like a read-only numpy array where evaluation needs one: ``len``, ``shape``, ``split[i]``,
    ``split[a:b]`` and ``split[[i, j]]`` return float32 arrays read from the file; iterating yields one
    image at a time (read a batch at a time); :meth:`batches` yields batches. ``np.asarray(split)``
    reads the whole split into memory, which is what this class is there to avoid: only for small
    splits.

    Attributes:
        path: the ``.npy`` file.
        labels: (N,) int64 labels.
        paths: the image files, in the file's order.
    """

    def __init__(self, path: str | os.PathLike, labels: np.ndarray, paths: list[str] | None = None):
        self.path = Path(path)
        self.labels = np.asarray(labels, np.int64)
        self.paths = list(paths or [])
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self._offset = f.tell()
        if fortran or len(shape) != 4 or shape[0] != len(self.labels):
            raise EdgecnnError(f"{self.path} is not a decoded split of {len(self.labels)} images (shape {shape}); "
                               f"delete it and it is decoded again.")
        self._shape = tuple(int(s) for s in shape)
        self.stored_dtype = np.dtype(dtype)
        self._row = int(np.prod(self._shape[1:])) * self.stored_dtype.itemsize
        if self.path.stat().st_size != self._offset + len(self.labels) * self._row:
            raise EdgecnnError(f"{self.path} is truncated or too long; delete it and it is decoded again.")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return f"DecodedSplit({str(self.path)!r}, shape={self._shape}, stored as {self.stored_dtype})"

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as float32 (one seek and one read)."""
        n = max(0, stop - start)
        with open(self.path, "rb") as f:
            f.seek(self._offset + start * self._row)
            data = f.read(n * self._row)
        if len(data) != n * self._row:
            raise EdgecnnError(f"{self.path} is truncated; delete it and it is decoded again.")
        return np.frombuffer(data, self.stored_dtype).reshape((n, *self._shape[1:])).astype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"index {key} is out of range for a split of {n} images")
            return self._read(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._read(start, stop)
            key = np.arange(start, stop, step)
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).ravel()
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((len(idx), *self._shape[1:]), np.float32)
        for k, i in enumerate(idx):
            out[k] = self[int(i)]
        return out

    def batches(self, batch_size: int = BATCH) -> Iterator[np.ndarray]:
        """Consecutive float32 batches of ``batch_size`` images (the last one shorter)."""
        for start in range(0, len(self), batch_size):
            yield self._read(start, min(start + batch_size, len(self)))

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in self.batches():
            yield from batch

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self._read(0, len(self))
        return whole if dtype is None else whole.astype(dtype)


Images = np.ndarray | DecodedSplit
"""What evaluation and the chooser take: an in-memory array or a decoded split on disk."""


def predict_in_batches(predict: Callable[[np.ndarray], np.ndarray], images: Images,
                       batch_size: int = BATCH) -> np.ndarray:
    """``predict`` on consecutive batches of ``images``, outputs concatenated: the outputs of the whole split
    (N x classes, small) while only one batch of images is in memory.

    With a runner that splits a call into batches of ``batch_size`` itself (Keras, onnxruntime) or runs
    one image at a time (LiteRT, OpenVINO, TFLite Micro), the outputs equal one call on the whole array.
    """
    if len(images) == 0:
        raise EdgecnnError("predict_in_batches: no images to predict (an empty split).")
    parts = images.batches(batch_size) if isinstance(images, DecodedSplit) else \
        (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    return np.concatenate([np.asarray(predict(b)) for b in parts])


def split_key(ds, split: str, size: int) -> str:
    """The digest in a decoded split's file name: dataset fingerprint, split, size, channels, layout version."""
    text = f"{ds.fingerprint()}|{split}|{size}|{ds.channels}|{_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def decoded_split(ds, split: str, size: int, folder: str | os.PathLike, *,
                  batch_size: int = BATCH) -> DecodedSplit:
    """The split ``split`` of ``ds`` decoded at ``size`` into ``folder`` (reused when current), opened for reading.

    Args:
        ds: an :class:`edgecnn.data.folders.Dataset`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: the model's input side.
        folder: where the file lives (the run directory's :data:`SPLITS_DIR`).
        batch_size: images decoded (in threads) and written per step; memory holds one such batch.

    Raises:
        EdgecnnError: the split has no images, or an image cannot be read (the message names it).
    """
    paths, labels = ds.paths(split), ds.labels(split)
    if not paths:
        raise EdgecnnError(f"the {split} split of {ds.root} has no images; give the data set a {split} split "
                           "(data.val_fraction / data.test_fraction) with at least one image per class.")
    folder = Path(folder)
    tag = f"{split}-{size}px"
    path = folder / f"{tag}-{split_key(ds, split, size)}.npy"
    if path.is_file():
        try:
            return DecodedSplit(path, labels, paths)
        except (EdgecnnError, ValueError, OSError) as e:
            log.warning("decoded %s split %s is unreadable (%s); decoding it again", split, path, e)
    folder.mkdir(parents=True, exist_ok=True)
    # other data's decodes of this split, and the temp file of a decode that was killed (atomic_path's ".<stem>.*")
    for old in [*folder.glob(f"{tag}-*.npy"), *folder.glob(f".{tag}-*.npy")]:
        old.unlink(missing_ok=True)
    try:
        _write(path, paths, size, ds.channels, np.uint8 if at_input_size(paths, size) else np.float32, batch_size)
    except _NotExact:
        _write(path, paths, size, ds.channels, np.float32, batch_size)
    out = DecodedSplit(path, labels, paths)
    log.info("decoded the %s split: %d images at %d px, %s, %.0f MB (%s)", split, len(out), size,
             out.stored_dtype, path.stat().st_size / 2**20, path)
    return out


def _write(path: Path, paths: list[str], size: int, channels: int, dtype, batch_size: int) -> None:
    """Decode ``paths`` into ``path`` as ``dtype``, a batch at a time (atomically).

    Raises:
        _NotExact: (nothing written) a uint8 file would not hold the pixels exactly.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": (len(paths), size, size, channels)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, len(paths), batch_size):
            batch = decode_images(paths[start:start + batch_size], size, channels)
            stored = batch.astype(dtype)
            if dtype is np.uint8 and not np.array_equal(stored, batch):
                raise _NotExact
            f.write(stored.tobytes())


class _NotExact(Exception):
    """A batch with fractional grey levels: the split is stored as float32 instead."""

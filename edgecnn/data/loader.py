"""tf.data input pipelines: parallel decode, resize, cache, (train-only) augmentation, prefetch.

Decoding and resizing are :func:`edgecnn.data.preprocess.load_image`, the function ``edgecnn
predict`` and the service call too, run inside the pipeline with ``tf.numpy_function``: images
stream from disk one file at a time (nothing forces a data set into memory), and a cache keeps the
decoded pixels after the first epoch: in memory (uint8 when that is exact) when the split fits the
recipe's budget, else in a tf.data file cache in the run directory, or nowhere (:func:`cache_plan`).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecnn._tf import keras, tf
from edgecnn.data.config import AugmentConfig
from edgecnn.data.decoded_split import DecodedSplit, at_input_size
from edgecnn.data.folders import Dataset
from edgecnn.data.preprocess import load_image
from edgecnn.errors import EdgecnnError

AUTOTUNE = tf.data.AUTOTUNE
log = logging.getLogger("edgecnn.data")


def _decode(path: tf.Tensor, size: int, channels: int = 3) -> tf.Tensor:
    """One file path (string tensor) -> (size, size, channels) float32 pixels 0-255, by ``load_image``."""
    img = tf.numpy_function(lambda p: load_image(os.fsdecode(p), size, channels), [path], tf.float32,
                            stateful=False, name="load_image")
    img.set_shape((size, size, channels))
    return img


def augmenter(cfg: AugmentConfig, seed: int) -> keras.Sequential:
    """The Keras preprocessing layers used on training batches (never part of the exported graph)."""
    aug = []
    if cfg.flip != "none":
        aug.append(keras.layers.RandomFlip(cfg.flip, seed=seed))
    if cfg.rotation:
        aug.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed + 1))
    if cfg.zoom:
        aug.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed + 2))
    if cfg.contrast:
        aug.append(keras.layers.RandomContrast(cfg.contrast, seed=seed + 3))
    return keras.Sequential(aug, name="augment")


CACHE_CHOICES = ("auto", "memory", "disk", "none")


@dataclass(frozen=True)
class CachePlan:
    """Where a split's decoded images are kept after the first epoch, and why.

    ``dtype`` is uint8 only when every file already has the input size: then ``load_image`` returns
    whole grey levels and uint8 holds them exactly (4x smaller). A resized image has fractional
    levels, and rounding them would move each pixel by up to half a grey level from what evaluation
    and ``edgecnn predict`` see, so those are cached as float32.
    """

    kind: str           # "memory", "disk" or "none"
    dtype: str          # "uint8" or "float32"
    mbytes: float       # the decoded split's size
    path: Path | None   # the tf.data file cache (kind "disk")


def shard_paths(paths: list[str], labels: np.ndarray, shard: tuple[int, int] | None) -> tuple[list[str], np.ndarray]:
    """Worker ``index``'s share of a file list, ``shard = (workers, index)``: every workers-th file from
    ``index``, topped up from the start of its own share so that every worker gets ``ceil(n / workers)``
    files (and runs the same number of steps; at most one image is seen twice an epoch).

    Example:
        >>> shard_paths(["a", "b", "c"], np.array([0, 1, 2]), (2, 1))
        (['b', 'b'], array([1, 1]))
    """
    if shard is None or shard[0] == 1:
        return list(paths), np.asarray(labels)
    workers, index = shard
    idx = list(range(index, len(paths), workers))
    want = -(-len(paths) // workers)
    idx += idx[: want - len(idx)]
    return [paths[i] for i in idx], np.asarray(labels)[idx]


def cache_plan(ds: Dataset, split: str, size: int, *, cache: str = "auto", memory_mb: float = 1024,
               cache_dir: str | os.PathLike | None = None, shard: tuple[int, int] | None = None) -> CachePlan:
    """Decide where ``make_dataset`` caches a split: the recipe's ``data.cache`` against its budget.

    ``auto`` keeps the split in memory when its decoded size fits ``memory_mb``, else in a tf.data
    file cache under ``cache_dir`` (none without one). The file name carries a digest of the dataset
    fingerprint, split, size, channels, dtype and shard, so a cache of other data is never read; older
    caches of the same split are deleted when a new one is planned.

    Raises:
        EdgecnnError: an unknown ``cache``, or ``disk`` without a ``cache_dir``.
    """
    if cache not in CACHE_CHOICES:
        raise EdgecnnError(f"data.cache must be one of {list(CACHE_CHOICES)}. Received cache={cache!r}.")
    paths, _ = shard_paths(ds.paths(split), ds.labels(split), shard)
    if cache == "none":
        return CachePlan("none", "float32", 0.0, None)
    dtype = "uint8" if at_input_size(paths, size) else "float32"
    mbytes = len(paths) * size * size * ds.channels * (1 if dtype == "uint8" else 4) / 2**20
    kind = cache if cache != "auto" else ("memory" if mbytes <= memory_mb else "disk" if cache_dir else "none")
    if kind == "disk" and cache_dir is None:
        raise EdgecnnError("data.cache: disk needs a folder for the cache files (the run directory); "
                           "use data.cache: memory or none here.")
    path = None
    if kind == "disk":
        tag = f"{split}-{shard[0]}.{shard[1]}" if shard else split
        key = hashlib.sha256(f"{ds.fingerprint()}|{split}|{size}|{ds.channels}|{dtype}|{shard}".encode())
        path = Path(cache_dir) / f"{tag}-{key.hexdigest()[:16]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob(f"{tag}-*"):
            # Other data's caches, and a lockfile left by a process killed while it wrote this one
            # (tf.data refuses to start a cache whose lockfile exists; one process owns one tag).
            if not old.name.startswith(path.name) or old.name.endswith(".lockfile"):
                old.unlink()
    return CachePlan(kind, dtype, mbytes, path)


def make_dataset(ds: Dataset, split: str, size: int, batch_size: int, *, training: bool = False,
                 augment: AugmentConfig | None = None, seed: int = 0, cache: str = "auto",
                 cache_memory_mb: float = 1024, cache_dir: str | os.PathLike | None = None,
                 shard: tuple[int, int] | None = None, repeat: bool = False) -> tf.data.Dataset:
    """Batched (images float32 0-255, ``ds.channels`` of them, labels int) for one split; shuffled and augmented
    when training.

    Args:
        ds, split, size, batch_size: the data set, its split, the input side and the batch.
        training: shuffle (``seed``) and augment (``augment``).
        cache, cache_memory_mb, cache_dir: where decoded images are kept after the first epoch
            (:func:`cache_plan`); batches are the same whatever the choice.
        shard: ``(workers, index)``: only this worker's share of the file list (:func:`shard_paths`),
            taken before anything is decoded.
        repeat: repeat the epochs forever (a distributed fit counts its steps itself).
    """
    plan = cache_plan(ds, split, size, cache=cache, memory_mb=cache_memory_mb, cache_dir=cache_dir, shard=shard)
    if plan.kind != "none":
        log.info("%s cache: %s, %s, %.0f MB%s", split, plan.kind, plan.dtype, plan.mbytes,
                 f" ({plan.path})" if plan.path else "")
    paths, labels = shard_paths(ds.paths(split), ds.labels(split), shard)
    n = len(paths)
    data = tf.data.Dataset.from_tensor_slices((paths, labels))
    # A shuffle's order depends only on its seed and the element count, so shuffling the paths (no
    # cache: nothing decoded waits in a buffer) or the cached images gives the same batches.
    if training and plan.kind == "none":
        data = data.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    data = data.map(lambda p, y: (_decode(p, size, ds.channels), y), num_parallel_calls=AUTOTUNE,
                    deterministic=True)
    if plan.kind != "none":
        if plan.dtype == "uint8":  # whole grey levels: the cast is exact, and undone after the shuffle buffer
            data = data.map(lambda x, y: (tf.cast(x, tf.uint8), y))
        data = data.cache(str(plan.path) if plan.path else "")
        if training:
            # The buffer holds cached images: all of them in memory; from a file cache, as many as the
            # memory budget holds (the whole split, and the same batches, when it fits).
            per_image = plan.mbytes / max(n, 1)
            buffer = n if plan.kind == "memory" else min(n, max(16, int(cache_memory_mb / max(per_image, 1e-9))))
            data = data.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if plan.dtype == "uint8":
            data = data.map(lambda x, y: (tf.cast(x, tf.float32), y))
    data = data.batch(batch_size)
    if repeat:
        data = data.repeat()
    if training and augment is not None:
        aug = augmenter(augment, seed)
        data = data.map(lambda x, y: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y),
                        num_parallel_calls=AUTOTUNE, deterministic=True)
    return data.prefetch(AUTOTUNE)


def without_autotune(data):
    """``data`` with tf.data's autotuning off, for a dataset Keras iterates once an epoch (``fit``'s training
    and validation data); anything else (arrays, a distributed dataset) passes through unchanged.

    Keras makes a new iterator each epoch and deletes the last one, and in TensorFlow 2.21 the deletion can
    wait seconds for that iterator's autotune thread: the default job sat idle 5 to 8 s between 3 of its 5
    fine-tuning epochs (gdb in a gap: the main thread in ``~RootDataset::Iterator``, the autotune thread in
    ``Model::OptimizeLoop``'s timed wait, whose period doubles each round; docs/speed.md). Untuned, an
    AUTOTUNE parallelism is its initial value, the core count (at most 16), and the step, not the input,
    bounds training here (benchmarks/train_throughput.py).
    """
    if not isinstance(data, tf.data.Dataset):
        return data
    options = tf.data.Options()
    options.autotune.enabled = False
    return data.with_options(options)


def load_arrays(ds: Dataset, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as numpy (N, size, size, ds.channels) float32 0-255 and (N,) labels.

    Memory grows with the split: the stages read splits batch by batch from
    :func:`edgecnn.data.decoded_split.decoded_split` (same pixels); this is for small splits and tests.
    """
    data = make_dataset(ds, split, size, batch_size=64, cache="none")  # no second copy in a tf.data cache
    xs, ys = [], []
    for x, y in data:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def decoded_split_dataset(split: DecodedSplit, batch_size: int = 32) -> tf.data.Dataset:
    """A decoded split as a tf.data.Dataset of (images float32, labels int64) batches, read from its file a
    batch at a time: what a Keras ``fit(validation_data=...)`` takes without the split in memory; the
    batches equal ``from_tensor_slices((images, labels)).batch(batch_size)`` of the whole array."""
    def batches():
        for start, x in zip(range(0, len(split), batch_size), split.batches(batch_size)):
            yield x, split.labels[start:start + batch_size]

    h, w, c = split.shape[1:]
    return tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec((None, h, w, c), tf.float32), tf.TensorSpec((None,), tf.int64)))


def calibration_arrays(ds: Dataset, size: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training images drawn across classes (round-robin per class), for int8 calibration."""
    labels = ds.labels("train")
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in range(len(ds.classes))]
    chosen: list[int] = []
    while len(chosen) < min(n, len(labels)):
        for idx in per_class:
            if idx and len(chosen) < n:
                chosen.append(idx.pop())
    paths = [ds.paths("train")[i] for i in sorted(chosen)]
    data = tf.data.Dataset.from_tensor_slices(paths).map(lambda p: _decode(p, size, ds.channels),
                                                         num_parallel_calls=AUTOTUNE)
    return np.stack([x.numpy() for x in data])

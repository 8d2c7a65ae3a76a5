"""tf.data input pipelines: parallel decode, resize, cache, (train-only) augmentation, prefetch.

Decoding and resizing are :func:`edgecnn.data.preprocess.load_image`, the function ``edgecnn
predict`` and the service call too, run inside the pipeline with ``tf.numpy_function``: images
stream from disk one file at a time (nothing forces a data set into memory), and ``.cache()``
keeps the decoded pixels after the first epoch.
"""
from __future__ import annotations

import os

import numpy as np

from edgecnn._tf import keras, tf
from edgecnn.data.config import AugmentConfig
from edgecnn.data.folders import Dataset
from edgecnn.data.preprocess import load_image

AUTOTUNE = tf.data.AUTOTUNE


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


def make_dataset(ds: Dataset, split: str, size: int, batch_size: int, *, training: bool = False,
                 augment: AugmentConfig | None = None, seed: int = 0) -> tf.data.Dataset:
    """Batched (images float32 0-255, ``ds.channels`` of them, labels int) for one split; shuffled and augmented
    when training."""
    paths, labels = ds.paths(split), ds.labels(split)
    data = tf.data.Dataset.from_tensor_slices((paths, labels))
    data = data.map(lambda p, y: (_decode(p, size, ds.channels), y), num_parallel_calls=AUTOTUNE,
                    deterministic=True).cache()
    if training:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size)
    if training and augment is not None:
        aug = augmenter(augment, seed)
        data = data.map(lambda x, y: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y),
                        num_parallel_calls=AUTOTUNE, deterministic=True)
    return data.prefetch(AUTOTUNE)


def load_arrays(ds: Dataset, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as numpy (N, size, size, ds.channels) float32 0-255 and (N,) labels, for evaluation."""
    data = make_dataset(ds, split, size, batch_size=64)
    xs, ys = [], []
    for x, y in data:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


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

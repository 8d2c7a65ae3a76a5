"""The short fine-tuning every compression verb needs (pruning, clustering, QAT), in one place."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecnn._tf import keras, tf
from edgecnn.errors import EdgecnnError

log = logging.getLogger("edgecnn.compress")


def as_dataset(data: Any, batch_size: int = 32, *, shuffle: bool = False, seed: int = 0):
    """Accept a batched ``tf.data.Dataset`` of (images, labels) or an ``(images, labels)`` tuple of arrays."""
    if data is None:
        return None
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0], np.float32), np.asarray(data[1])
        if len(x) != len(y) or len(x) == 0:
            raise EdgecnnError(f"training data: images and labels must be non-empty and of equal length; "
                               f"received {len(x)} images and {len(y)} labels.")
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed)
        return ds.batch(batch_size)
    raise EdgecnnError("training data must be a batched tf.data.Dataset of (images, labels) or a tuple "
                       f"(images, labels) of numpy arrays; received {type(data).__name__}.")


def freeze_batchnorm(model) -> list:
    """Put every BatchNormalization (bare or inside a tfmot wrapper) in inference mode; returns those changed.

    A non-trainable BN layer in tf.keras normalises with its moving statistics and never updates
    them. Compression fine-tuning runs a few epochs at a tiny learning rate on a trained model: with
    BN in training mode the batch statistics of small batches replace the trained ones and top-1
    collapses (seen on MobileNetV2: QAT at lr 1e-5 fell from 0.89 to 0.71 in two epochs).
    Undo with :func:`unfreeze` after fitting: a frozen BN inside tfmot's QuantizeWrapperV2 lists
    gamma/beta twice in ``weights``, which breaks ``get_weights``/HDF5 saving.
    """
    changed = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization) and inner.trainable:
            inner.trainable = False
            changed.append(inner)
    return changed


def unfreeze(layers: Sequence) -> None:
    for layer in layers:
        layer.trainable = True


def fit(model, train: Any, val: Any = None, *, epochs: int, lr: float, callbacks: Sequence = (),
        batch_size: int = 32, seed: int = 0, train_batchnorm: bool = False) -> dict[str, list[float]]:
    """Compile ``model`` (Adam, sparse categorical cross-entropy on probabilities) and fit it; returns history.

    BatchNorm stays in inference mode unless ``train_batchnorm`` (see :func:`freeze_batchnorm`).
    """
    if epochs < 0:
        raise EdgecnnError(f"epochs must be >= 0; received epochs={epochs}.")
    if lr <= 0:
        raise EdgecnnError(f"lr must be > 0; received lr={lr}.")
    if epochs == 0:
        return {}
    keras.utils.set_random_seed(seed)
    frozen = [] if train_batchnorm else freeze_batchnorm(model)
    try:
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=["accuracy"])
        hist = model.fit(as_dataset(train, batch_size, shuffle=True, seed=seed),
                         validation_data=as_dataset(val, batch_size),
                         epochs=epochs, callbacks=list(callbacks), verbose=0)
    finally:
        unfreeze(frozen)
    out = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    log.info("fine-tuned %d epoch(s): %s", epochs, {k: round(v[-1], 4) for k, v in out.items()})
    return out


def copy_model(model):
    """An independent copy (same architecture and weights), so verbs never mutate their argument."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone

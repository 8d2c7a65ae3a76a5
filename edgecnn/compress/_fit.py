"""The short fine-tuning every compression verb needs (pruning, clustering, QAT), in one place."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecnn._tf import keras, tf
from edgecnn.data.loader import without_autotune
from edgecnn.errors import EdgecnnError

log = logging.getLogger("edgecnn.compress")

ADAPT_IMAGES = 960  # BatchNorm adaptation: 30 batches of 32 (NNCF's default is 2000 images)


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


def sample_images(data: Any, limit: int, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` images (float32, 0-255) from an ``(images, labels)`` tuple or a batched dataset.

    A tuple is sampled at random: arrays are often ordered by class, and statistics from the
    first ``limit`` images would miss the last classes. A dataset is read in its own order
    (the pipeline's is shuffled).
    """
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x = data[0]
        pick = np.random.default_rng(seed).permutation(len(x))[:limit]
        return np.asarray(x[pick], np.float32)
    out, n = [], 0
    for x, _ in data:
        out.append(np.asarray(x, np.float32))
        n += len(out[-1])
        if n >= limit:
            break
    if not out:
        raise EdgecnnError("BatchNorm adaptation needs images; the training data is empty.")
    return np.concatenate(out)[:limit]


def adapt_batchnorm(model, images: np.ndarray, *, batch_size: int = 32) -> int:
    """Re-estimate every BatchNorm's moving mean and variance on ``images``; returns how many layers.

    Pruning and clustering change the weights under the BatchNorm layers, but compression fine-tuning
    keeps BN frozen (see :func:`freeze_batchnorm`), so the layers go on normalising with the dense
    model's statistics. Re-estimating them with the weights fixed (NNCF's "BatchNorm adaptation")
    is what lets a pruned model recover: on the default recipe, one-shot 50 % magnitude pruning
    gives top-1 0.31 before and 0.92 after, with no training. The statistics are the plain average
    over the batches (momentum ``i / (i + 1)`` for batch ``i``); the other weights do not change.
    """
    layers = [inner for layer in model.layers
              if isinstance(inner := getattr(layer, "layer", layer), keras.layers.BatchNormalization)]
    if not layers or len(images) == 0:
        return 0
    saved = [(bn.trainable, bn.momentum) for bn in layers]
    try:
        for bn in layers:
            bn.trainable = True  # a non-trainable BN ignores training=True and would not update
        for i, start in enumerate(range(0, max(1, len(images) - batch_size + 1), batch_size)):
            for bn in layers:
                bn.momentum = i / (i + 1)
            model(images[start:start + batch_size], training=True)
    finally:
        for bn, (trainable, momentum) in zip(layers, saved):
            bn.trainable, bn.momentum = trainable, momentum
    return len(layers)


class AdaptBatchNorm(keras.callbacks.Callback):
    """Re-estimate BatchNorm statistics (:func:`adapt_batchnorm`) after every epoch.

    List it after tfmot's ``UpdatePruningStep``: a pruning wrapper refuses a training-mode call
    before that callback has set its step.
    """

    def __init__(self, images: np.ndarray, batch_size: int = 32):
        super().__init__()
        self.images, self.batch_size = images, batch_size

    def on_epoch_end(self, epoch, logs=None):
        adapt_batchnorm(self.model, self.images, batch_size=self.batch_size)


class StopAfter(keras.callbacks.Callback):
    """End training at the first batch that finishes after ``seconds`` (the chooser's time limit of a slow route);
    ``stopped_at`` records the epoch and batch, None when the limit was not reached."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.stopped_at = float(seconds), None

    def on_train_begin(self, logs=None):
        import time

        self._t0 = time.perf_counter()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        import time

        if time.perf_counter() - self._t0 > self.seconds:
            self.model.stop_training = True
            self.stopped_at = (self._epoch, batch)


def distilled(data, teacher):
    """``(images, labels)`` batches -> ``(images, teacher probabilities)``: the float model as the target.

    Compression fine-tuning is there to make the compressed model *agree with the float one*, not
    to re-learn the labels: soft targets keep the float model's margins on the hard images, which
    is what top-1 agreement measures (QAT of the default recipe, 2 epochs at lr 1e-4: agreement
    0.981 with soft targets; see benchmarks/results/qat_distill.json).
    """
    return data.map(lambda x, y: (x, teacher(x, training=False)), num_parallel_calls=tf.data.AUTOTUNE)


def fit(model, train: Any, val: Any = None, *, epochs: int, lr: float, callbacks: Sequence = (),
        batch_size: int = 32, seed: int = 0, train_batchnorm: bool = False, teacher=None,
        schedule: str = "constant", adapt_bn: bool = False) -> dict[str, list[float]]:
    """Compile ``model`` (Adam) and fit it; returns the history.

    The loss is sparse categorical cross-entropy on the labels, or with ``teacher`` (the float
    model) the KL divergence to its probabilities (:func:`distilled`). ``schedule='cosine'`` decays
    the learning rate to zero over the run. BatchNorm stays in inference mode unless
    ``train_batchnorm`` (see :func:`freeze_batchnorm`); with ``adapt_bn`` its statistics are
    re-estimated after every epoch instead (:func:`adapt_batchnorm`: pruning needs it).
    """
    if epochs < 0:
        raise EdgecnnError(f"epochs must be >= 0; received epochs={epochs}.")
    if lr <= 0:
        raise EdgecnnError(f"lr must be > 0; received lr={lr}.")
    if epochs == 0:
        return {}
    if schedule not in ("constant", "cosine"):
        raise EdgecnnError(f"schedule must be 'constant' or 'cosine'; received {schedule!r}.")
    keras.utils.set_random_seed(seed)
    train_ds = as_dataset(train, batch_size, shuffle=True, seed=seed)
    val_ds = as_dataset(val, batch_size)
    if teacher is not None:
        train_ds, val_ds = distilled(train_ds, teacher), (distilled(val_ds, teacher) if val_ds is not None else None)
        loss, metrics = keras.losses.KLDivergence(), [keras.metrics.CategoricalAccuracy(name="agreement")]
    else:
        loss, metrics = keras.losses.SparseCategoricalCrossentropy(), ["accuracy"]
    rate = lr
    if schedule == "cosine":
        steps = int(train_ds.cardinality())
        if steps > 0:
            rate = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * steps)
    callbacks = list(callbacks)
    if adapt_bn and not train_batchnorm:
        callbacks.append(AdaptBatchNorm(sample_images(train, ADAPT_IMAGES, seed), batch_size))
    frozen = [] if train_batchnorm else freeze_batchnorm(model)
    try:
        model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=metrics)
        hist = model.fit(without_autotune(train_ds.prefetch(tf.data.AUTOTUNE)),
                         validation_data=without_autotune(val_ds), epochs=epochs, callbacks=callbacks, verbose=0)
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

"""Training a segmentation model: per-pixel cross-entropy with class weights (+ optional Dice), two phases.

Phase 1 trains the decoder (every layer named ``dec_...``, see :mod:`edgecnn.arch.segmentation`)
on the frozen pretrained encoder; phase 2 also unfreezes the top ``train.finetune.blocks`` encoder
blocks at ``lr x lr_factor`` with the recipe's schedule and layer-wise decay -- the classifier's
recipe (:mod:`edgecnn.train`), whose optimizer, schedules, logging and block grouping are reused.
Each phase keeps the epoch with the best validation mIoU and checkpoints every epoch, so a killed
run resumes.

Defect pixels are rare (about 1 % of the bundled set's pixels), so plain cross-entropy learns
"everything is background". Class weights ``(median frequency / frequency) ** power`` (power 0.5 by
default, capped) raise the loss on defect pixels; Dice (``segment.dice_weight``) adds a term that
scores each class's overlap regardless of its area -- useful for thin scratches.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import atomic_path, write_json
from edgecnn._tf import keras, tf
from edgecnn.arch.segmentation import DECODER_PREFIX
from edgecnn.train import block_of, fit_phase, layerwise_lr_scales, lr_schedule, make_optimizer, variable_lr_scales

log = logging.getLogger("edgecnn.segment")
MAX_CLASS_WEIGHT = 50.0


def pixel_class_weights(masks: np.ndarray, num_classes: int, power: float = 0.5) -> np.ndarray:
    """``(median frequency / frequency) ** power`` per class, normalised so background gets 1, capped at 50.

    Example:
        >>> pixel_class_weights(np.array([[0, 0, 0, 1]]), 2, power=1.0).tolist()
        [1.0, 3.0]
    """
    counts = np.bincount(masks.ravel(), minlength=num_classes).astype(np.float64)
    freq = counts / max(counts.sum(), 1)
    present = freq[freq > 0]
    w = np.where(freq > 0, (np.median(present) / np.maximum(freq, 1e-12)) ** power, 0.0)
    w = w / w[0] if w[0] > 0 else w
    return np.minimum(w, MAX_CLASS_WEIGHT).astype(np.float32)


class SegmentLoss(keras.losses.Loss):
    """Mean of ``w[y] * -log p_y`` over pixels, plus ``dice_weight * (1 - mean soft Dice)`` over classes."""

    def __init__(self, class_weights, dice_weight: float = 0.0, name: str = "segment_loss", **kw):
        super().__init__(name=name, **kw)
        self.class_weights = [float(w) for w in class_weights]
        self.dice_weight = float(dice_weight)

    def call(self, y_true, y_pred):
        k = len(self.class_weights)
        y = tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:-1]), tf.int32)
        p = tf.clip_by_value(y_pred, 1e-7, 1.0)
        ce = -tf.math.log(tf.gather(tf.reshape(p, [-1, k]), tf.reshape(y, [-1]), batch_dims=1))
        w = tf.gather(tf.constant(self.class_weights), tf.reshape(y, [-1]))
        loss = tf.reduce_sum(w * ce) / tf.maximum(tf.reduce_sum(w), 1e-6)
        if self.dice_weight:
            onehot = tf.one_hot(y, k)
            inter = tf.reduce_sum(onehot * y_pred, axis=[0, 1, 2])
            total = tf.reduce_sum(onehot + y_pred, axis=[0, 1, 2])
            dice = (2 * inter + 1.0) / (total + 1.0)
            loss += self.dice_weight * (1.0 - tf.reduce_mean(dice))
        return loss

    def get_config(self) -> dict:
        return {**super().get_config(), "class_weights": self.class_weights, "dice_weight": self.dice_weight}


class _MeanIoU(keras.metrics.MeanIoU):
    """mIoU of the argmax masks (tf_keras' MeanIoU over probabilities)."""

    def __init__(self, num_classes: int, name: str = "miou", **kw):
        super().__init__(num_classes=num_classes, name=name, sparse_y_pred=False, **kw)


def is_decoder(layer_name: str) -> bool:
    return layer_name.startswith(DECODER_PREFIX) or layer_name == "probs"


def encoder_blocks(model) -> list[str]:
    """The encoder's blocks with weights, input to output (``stem``, ``block1``, ...)."""
    seen: list[str] = []
    for layer in model.layers:
        if layer.weights and not is_decoder(layer.name) and layer.name != "normalize":
            b = block_of(layer.name)
            if b not in seen:
                seen.append(b)
    return seen


def set_trainable(model, blocks: set[str] | None, train_batchnorm: bool = False) -> None:
    """Freeze the encoder except ``blocks`` (None = all trainable); the decoder always trains."""
    for layer in model.layers:
        if blocks is None or is_decoder(layer.name):
            layer.trainable = True
        else:
            layer.trainable = block_of(layer.name) in blocks and (
                train_batchnorm or not isinstance(layer, keras.layers.BatchNormalization))


def make_batches(images: np.ndarray, masks: np.ndarray, batch_size: int, *, training: bool = False,
                 flip: str = "none", seed: int = 0):
    """tf.data of (float32 pixels 0-255, uint8 masks); training: shuffled, the same flips on image and mask.
    Memory-mapped images (a split larger than ``data.cache_memory_mb``) are read a pair at a time, in a new
    seeded order each epoch; arrays in memory are sliced as they are."""
    if isinstance(images, np.memmap):
        epoch = [0]

        def pairs():
            order = np.arange(len(images))
            if training:
                np.random.default_rng([seed, epoch[0]]).shuffle(order)
                epoch[0] += 1
            for i in order:
                yield np.asarray(images[i]), masks[i]

        data = tf.data.Dataset.from_generator(pairs, output_signature=(
            tf.TensorSpec(images.shape[1:], tf.float32), tf.TensorSpec(masks.shape[1:], tf.uint8)))
    else:
        data = tf.data.Dataset.from_tensor_slices((images, masks))
        if training:
            data = data.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if training:
        horizontal, vertical = "horizontal" in flip, "vertical" in flip

        def augment(x, y):
            both = tf.concat([tf.cast(x, tf.float32), tf.cast(y[..., None], tf.float32)], axis=-1)
            if horizontal:
                both = tf.image.random_flip_left_right(both)
            if vertical:
                both = tf.image.random_flip_up_down(both)
            return both[..., :-1], tf.cast(both[..., -1], tf.uint8)

        data = data.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = data.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _fit_phase(model, phase: str, epochs: int, lr, train: Any, loss, num_classes: int, train_ds, val_ds,
               ckpt_dir: Path, steps: int, lr_scales: dict[str, float] | None = None) -> tuple[dict, bool]:
    """One phase of the segmenter (:func:`edgecnn.train.fit_phase`), keeping the epoch with the best val mIoU."""
    optimizer = make_optimizer(train.optimizer, lr, train.momentum, variable_lr_scales(model, lr_scales))
    return fit_phase(model, phase, epochs, optimizer=optimizer, loss=loss,
                     metrics=["accuracy", _MeanIoU(num_classes)], train_ds=train_ds, val_ds=val_ds,
                     ckpt_dir=ckpt_dir, steps=steps, patience=train.early_stopping_patience,
                     monitor="val_miou", mode="max")


def build_model(model_cfg: Any, num_classes: int, size: int):
    """The recipe's registered segmentation builder with ``num_classes`` outputs at ``size`` px."""
    from edgecnn.arch import create_task_model

    return create_task_model(model_cfg.name, "segment", model_cfg.args, num_classes=num_classes, input_size=size)


def train_segmenter(recipe: Any, data: Any, size: int, run_dir: Path, *, train_arrays, val_arrays) -> dict:
    """Build and train the recipe's segmentation model; writes model.keras and history.json.

    Args:
        recipe: the validated recipe (``model``, ``train``, ``data``, ``segment`` sections).
        data: the :class:`edgecnn.segment.data.SegmentData`.
        size: input side in pixels.
        run_dir: the run directory (checkpoints/ and outputs).
        train_arrays, val_arrays: (images float32, masks uint8) of the train and val splits.

    Returns:
        The history (``phases``, ``class_weights``).
    """
    started = time.perf_counter()
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    t, s = recipe.train, recipe.segment
    keras.utils.set_random_seed(t.seed)
    k = len(data.classes)
    model = build_model(recipe.model, k, size)
    weights = (pixel_class_weights(train_arrays[1], k, s.class_weight_power) if s.class_weight_power
               else np.ones(k, np.float32))
    log.info("pixel class weights: %s", dict(zip(data.classes, np.round(weights, 2).tolist())))
    loss = SegmentLoss(weights, s.dice_weight)
    bs = recipe.data.batch_size
    train_ds = make_batches(*train_arrays, bs, training=True, flip=recipe.data.augment.flip, seed=t.seed)
    val_ds = make_batches(*val_arrays, bs)
    steps = math.ceil(len(train_arrays[0]) / bs)
    pretrained = recipe.model.args.get("weights") not in (None, "")
    freeze = {"auto": pretrained, "yes": True, "no": False}[t.freeze_backbone]
    history: dict[str, Any] = {"phases": [], "class_weights": dict(zip(data.classes, map(float, weights)))}

    phase1_done = ckpt_dir / "phase1.h5"  # legacy h5 both ways (a ".weights.h5" name is read as Keras 3's format)
    if phase1_done.exists():
        model.load_weights(str(phase1_done))
        history = json.loads((ckpt_dir / "phase1.history.json").read_text())
        log.info("phase 1 already finished; loaded %s", phase1_done)
    elif t.head.epochs:
        set_trainable(model, set() if freeze else None)
        h, _ = _fit_phase(model, "phase1", t.head.epochs, t.head.lr, t, loss, k, train_ds, val_ds, ckpt_dir, steps)
        history["phases"].append({"name": "decoder" if freeze else "full", "trainable": "decoder" if freeze else "all",
                                  "lr": t.head.lr, **h})
        with atomic_path(phase1_done) as tmp:
            model.save_weights(str(tmp))
        write_json(ckpt_dir / "phase1.history.json", history)

    ft = t.finetune
    if freeze and ft.blocks and ft.epochs:
        blocks = encoder_blocks(model)
        top = set(blocks[-ft.blocks:])
        set_trainable(model, top, ft.train_batchnorm)
        lr = lr_schedule(ft.schedule, t.head.lr * ft.lr_factor, ft.epochs * steps)
        scales = layerwise_lr_scales(blocks, top, ft.lr_decay) if ft.lr_decay != 1.0 else None
        h, _ = _fit_phase(model, "phase2", ft.epochs, lr, t, loss, k, train_ds, val_ds, ckpt_dir, steps, scales)
        history["phases"].append({"name": "finetune", "trainable": sorted(top, key=blocks.index),
                                  "lr": t.head.lr * ft.lr_factor, "schedule": ft.schedule, "lr_decay": ft.lr_decay,
                                  "block_lr_factors": scales or {}, **h})

    set_trainable(model, None)
    clean = keras.models.clone_model(model)  # without optimizer state or the custom loss
    clean.set_weights(model.get_weights())
    with atomic_path(run_dir / "model.keras") as tmp:
        clean.save(str(tmp))
    history["wall_s"] = round(time.perf_counter() - started, 1)  # this invocation's (a resumed run: the rest)
    write_json(run_dir / "history.json", history)
    return history

"""Transfer learning as the course teaches it.

Phase 1 trains only the new head on a frozen backbone (BatchNorm in inference mode): a linear
model on pretrained features. Phase 2 unfreezes the top N backbone blocks and trains them with a
smaller learning rate (cosine or step decay), smaller still the closer a block is to the input with
``finetune.lr_decay`` < 1 (layer-wise decay: the head keeps the phase-2 rate, the top unfrozen block
gets rate x decay, the next rate x decay^2, ...). Blocks are the prefixes of the layer names before
the first '_' (MobileNetV2: ``stem``, ``block1`` ... ``block17``, ``head``; EfficientNet-Lite:
``stem``, ``block1a`` ... ``block7a``, ``top`` -- one per MBConv block). Early stopping on
validation loss restores the best weights. Each phase checkpoints every epoch (Keras
BackupAndRestore), so a killed run resumes.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import atomic_path, write_json
from edgecnn._tf import keras, tf
from edgecnn.config import Recipe
from edgecnn.data.folders import Dataset
from edgecnn.data.loader import make_dataset
from edgecnn.errors import EdgecnnError
from edgecnn.progress import progress

log = logging.getLogger("edgecnn.train")
HEAD_LAYERS = ("pool", "dropout", "classifier", "probs")


def with_input_channels(model, channels: int):
    """The same network taking ``channels`` input channels (1: grey) instead of the builders' RGB.

    Rebuilt layer by layer from its config (so the first convolution really has one input channel,
    not a grey image tiled to three); a ``Normalization`` layer keeps the mean of its per-channel mean
    and variance. Weights carry over where shapes agree; a kernel that read three channels gets their
    sum, which is exact for a grey image repeated over RGB when every channel is normalised alike
    (and close for ImageNet's mean/std), so pretrained backbones still start from their features.
    """
    if int(model.input_shape[-1]) == channels:
        return model

    def clone(layer):
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.Normalization) and cfg.get("mean") is not None:
            cfg["mean"] = [float(np.mean(cfg["mean"]))]
            cfg["variance"] = [float(np.mean(cfg["variance"]))]
        return layer.__class__.from_config(cfg)

    inp = keras.Input((*model.input_shape[1:-1], channels), name=model.inputs[0].name.split(":")[0])
    new = keras.models.clone_model(model, input_tensors=inp, clone_function=clone)
    for old_layer, layer in zip(model.layers, new.layers):
        weights = [w if w.shape == n.shape else w.sum(axis=2, keepdims=True)
                   for w, n in zip(old_layer.get_weights(), layer.get_weights())]
        if weights and all(w.shape == n.shape for w, n in zip(weights, layer.get_weights())):
            layer.set_weights(weights)
    return new


@dataclass
class TrainResult:
    model: Any
    history: dict[str, list]
    resumed: bool


def block_of(layer_name: str) -> str:
    """The backbone block a layer belongs to: the part before the first '_' (``block3_dw_bn`` -> ``block3``)."""
    return layer_name.split("_", 1)[0]


def backbone_blocks(model) -> list[str]:
    """Backbone blocks (with weights) in input-to-output order."""
    seen: list[str] = []
    for layer in model.layers:
        if layer.name in HEAD_LAYERS or layer.name == "normalize" or not layer.weights:
            continue
        b = block_of(layer.name)
        if b not in seen:
            seen.append(b)
    return seen


def set_trainable(model, blocks: set[str] | None, train_batchnorm: bool = False) -> None:
    """Freeze the backbone except ``blocks`` (None = everything trainable); the head always trains.

    Frozen BatchNorm layers run in inference mode in tf.keras, so their statistics stay pretrained.
    """
    for layer in model.layers:
        if layer.name in HEAD_LAYERS:
            layer.trainable = True
        elif blocks is None:
            layer.trainable = True
        else:
            trainable = block_of(layer.name) in blocks
            if isinstance(layer, keras.layers.BatchNormalization) and not train_batchnorm:
                trainable = False
            layer.trainable = trainable


def layerwise_lr_scales(blocks: list[str], top: set[str], decay: float) -> dict[str, float]:
    """Learning-rate factor per unfrozen block: ``decay ** k`` for the k-th unfrozen block from the top (k >= 1).

    Example:
        >>> layerwise_lr_scales(["stem", "block1", "block2", "top"], {"block2", "top"}, 0.5)
        {'top': 0.5, 'block2': 0.25}
    """
    ordered = [b for b in reversed(blocks) if b in top]
    return {b: decay ** (k + 1) for k, b in enumerate(ordered)}


class _LayerwiseLr:
    """Optimizer mixin: each variable's step is multiplied by its block's factor (``lr_scales``: name -> factor).

    The optimizer's own update runs unchanged, then the variable moves only ``factor`` of the way: for
    SGD (with momentum), Adam and RMSprop that is exactly the update with learning rate x factor.
    """

    lr_scales: dict[str, float] = {}

    def update_step(self, gradient, variable):
        scale = self.lr_scales.get(variable.name, 1.0)
        if scale == 1.0:
            return super().update_step(gradient, variable)
        before = tf.identity(variable)
        super().update_step(gradient, variable)
        return variable.assign(before + scale * (variable - before))


_OPTIMIZERS = {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}
_LAYERWISE = {k: type(f"Layerwise{c.__name__}", (_LayerwiseLr, c), {}) for k, c in _OPTIMIZERS.items()}


def _optimizer(name: str, lr, momentum: float, lr_scales: dict[str, float] | None = None):
    """The recipe's optimizer; with ``lr_scales`` (variable name -> factor) a layer-wise-lr variant of it."""
    table = _LAYERWISE if lr_scales else _OPTIMIZERS
    cls = table.get(name, table["adam"])
    if name == "sgd":
        opt = cls(lr, momentum=momentum, nesterov=True)
    elif name == "rmsprop":
        opt = cls(lr, momentum=momentum if momentum < 0.5 else 0.0)
    else:
        opt = cls(lr)
    if lr_scales:
        opt.lr_scales = dict(lr_scales)
    return opt


def _schedule(kind: str, lr: float, steps: int):
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps), alpha=0.05)
    if kind == "step":
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=max(1, steps // 3), decay_rate=0.3,
                                                           staircase=True)
    return lr


class _LrLogger(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = opt.learning_rate
        value = lr(opt.iterations) if callable(lr) else lr
        logs["lr"] = float(tf.keras.backend.get_value(value) if not hasattr(value, "numpy") else value.numpy())


class _EpochLog(keras.callbacks.Callback):
    """A progress bar over the phase's batches (terminal) and one log line per epoch (always)."""

    def __init__(self, phase: str, epochs: int, steps: int):
        super().__init__()
        self.phase, self.epochs, self.steps = phase, epochs, steps
        self._ctx = None

    def on_train_begin(self, logs=None):
        self._ctx = progress(f"training {self.phase}", self.epochs * self.steps, log_every_s=1e9)
        self._update = self._ctx.__enter__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._update(self._epoch * self.steps + batch + 1, f"epoch {self._epoch + 1}/{self.epochs}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        msg = " ".join(f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, (int, float)))
        log.info("%s epoch %d/%d %s", self.phase, epoch + 1, self.epochs, msg)

    def on_train_end(self, logs=None):
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    return {i: float(len(labels) / (n_classes * c)) if c else 0.0 for i, c in enumerate(counts)}


def _fit_phase(model, phase: str, cfg_epochs: int, lr, recipe: Recipe, train_ds, val_ds,
               ckpt_dir: Path, cw, steps: int, lr_scales: dict[str, float] | None = None) -> tuple[dict, bool]:
    """Compile and fit one phase with per-epoch backup; returns (history, resumed).

    ``lr_scales`` maps a block to its learning-rate factor (layer-wise decay); blocks not named get 1.
    """
    t = recipe.train
    var_scales = None
    if lr_scales:
        var_scales = {v.name: lr_scales[block_of(layer.name)] for layer in model.layers
                      if block_of(layer.name) in lr_scales for v in layer.trainable_weights}
    model.compile(optimizer=_optimizer(t.optimizer, lr, t.momentum, var_scales),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    backup = ckpt_dir / f"{phase}-backup"
    best = ckpt_dir / f"{phase}-best.weights.h5"
    resumed = backup.exists()
    if resumed:
        log.info("%s: resuming from the last completed epoch in %s", phase, backup)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup)),
        keras.callbacks.ModelCheckpoint(str(best), monitor="val_loss", save_best_only=True, save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=t.early_stopping_patience),
        _LrLogger(),
        _EpochLog(phase, cfg_epochs, steps),
    ]
    hist = model.fit(train_ds, validation_data=val_ds, epochs=cfg_epochs, callbacks=callbacks,
                     class_weight=cw, verbose=0)
    if best.exists():
        model.load_weights(str(best))
    shutil.rmtree(backup, ignore_errors=True)
    return {k: [float(x) for x in v] for k, v in hist.history.items()}, resumed


def train(recipe: Recipe, ds: Dataset, run_dir: str | os.PathLike) -> TrainResult:
    """Build the recipe's model and train it in one or two phases; writes model.keras and history.json.

    Args:
        recipe: the validated recipe.
        ds: the discovered dataset.
        run_dir: the run directory (checkpoints/ and the outputs go here).
    """
    from edgecnn.arch import create_model, get_model_entry

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    t = recipe.train
    keras.utils.set_random_seed(t.seed)
    tf.config.experimental.enable_op_determinism()

    entry = get_model_entry(recipe.model.name)
    size = recipe.model.input_size or entry.default_input_size
    args = {**recipe.model.args, "num_classes": len(ds.classes)}
    if "input_size" in entry.defaults:
        args["input_size"] = size
    try:
        model = create_model(recipe.model.name, **args)
    except TypeError as e:  # a stray key in model.args
        raise EdgecnnError(f"model.args of the recipe: {e}") from None
    model = with_input_channels(model, ds.channels)

    bs = recipe.data.batch_size
    train_ds = make_dataset(ds, "train", size, bs, training=True, augment=recipe.data.augment, seed=t.seed)
    val_ds = make_dataset(ds, "val", size, bs)
    steps = math.ceil(len(ds.paths("train")) / bs)
    cw = class_weights(ds.labels("train"), len(ds.classes)) if t.class_weights else None

    pretrained = args.get("weights") not in (None, "")
    freeze = {"auto": pretrained, "yes": True, "no": False}[t.freeze_backbone]
    history: dict[str, Any] = {"phases": []}
    resumed_any = False

    phase1_done = ckpt_dir / "phase1.weights.h5"
    if phase1_done.exists():
        model.load_weights(str(phase1_done))
        history = json.loads((ckpt_dir / "phase1.history.json").read_text())
        resumed_any = True
        log.info("phase 1 already finished; loaded %s", phase1_done)
    elif t.head.epochs:
        set_trainable(model, set() if freeze else None)
        h, resumed = _fit_phase(model, "phase1", t.head.epochs, t.head.lr, recipe, train_ds, val_ds,
                                ckpt_dir, cw, steps)
        resumed_any |= resumed
        history["phases"].append({"name": "head" if freeze else "full", "trainable": "head" if freeze else "all",
                                  "lr": t.head.lr, **h})
        with atomic_path(phase1_done) as tmp:
            model.save_weights(str(tmp))
        write_json(ckpt_dir / "phase1.history.json", history)

    ft = t.finetune
    if freeze and ft.blocks and ft.epochs:
        blocks = backbone_blocks(model)
        top = set(blocks[-ft.blocks:])
        set_trainable(model, top, ft.train_batchnorm)
        lr = _schedule(ft.schedule, t.head.lr * ft.lr_factor, ft.epochs * steps)
        scales = layerwise_lr_scales(blocks, top, ft.lr_decay) if ft.lr_decay != 1.0 else None
        h, resumed = _fit_phase(model, "phase2", ft.epochs, lr, recipe, train_ds, val_ds, ckpt_dir, cw,
                                steps, scales)
        resumed_any |= resumed
        history["phases"].append({"name": "finetune", "trainable": sorted(top, key=blocks.index),
                                  "lr": t.head.lr * ft.lr_factor, "schedule": ft.schedule, "lr_decay": ft.lr_decay,
                                  "block_lr_factors": scales or {}, **h})

    set_trainable(model, None)  # saved model is plainly trainable for later compression stages
    clean = keras.models.clone_model(model)  # without optimizer state: a third of the size
    clean.set_weights(model.get_weights())
    with atomic_path(run_dir / "model.keras") as tmp:
        clean.save(str(tmp))
    write_json(run_dir / "history.json", history)
    return TrainResult(model=model, history=history, resumed=resumed_any)

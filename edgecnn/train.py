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

``train.distribute`` runs the same fit under a ``tf.distribute`` strategy: ``mirrored`` (every local
device) or ``multi_worker`` (``MultiWorkerMirroredStrategy``, the cluster from ``TF_CONFIG``). Each
worker reads only its share of the file list, the global batch is ``data.batch_size`` x replicas,
and only the chief writes the run directory (docs/distributed.md).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import atomic_path, write_json
from edgecnn._tf import keras, tf
from edgecnn.config import DistributeConfig, Recipe
from edgecnn.data.folders import Dataset
from edgecnn.data.loader import make_dataset, without_autotune
from edgecnn.distill import indexed
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
    chief: bool = True   # False on a multi_worker task that is not the chief: it wrote nothing to the run directory


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
    """Optimizer mixin: each variable's step is multiplied by its block's factor.

    ``lr_scales`` maps a variable to its factor, keyed by ``variable.ref()`` or by the variable's name.
    :meth:`build` matches the keys against the variables the optimizer trains and records the factor for
    each of them and for each of its per-device copies under ``tf.distribute``: the optimizer updates
    the copies one by one, and only the first bears the variable's name (the others are
    ``.../replica_1``, ...), so a lookup by the updated variable's name would step them at the full
    learning rate and the replicas would drift apart.

    The optimizer's own update runs unchanged, then the variable moves only ``factor`` of the way: for
    SGD (with momentum), Adam and RMSprop that is exactly the update with learning rate x factor.
    """

    lr_scales: dict = {}
    _factors: dict = {}   # ref() of every variable updated, replica copies included -> factor

    def build(self, var_list):
        super().build(var_list)
        factors = {}
        for v in var_list:
            scale = self.lr_scales.get(v.ref(), self.lr_scales.get(v.name))
            if scale is not None:
                factors |= {copy.ref(): scale for copy in _replica_copies(v)}
        self._factors = factors

    def update_step(self, gradient, variable):
        scale = self._factors.get(variable.ref(), 1.0)
        if scale == 1.0:
            return super().update_step(gradient, variable)
        before = tf.identity(variable)
        super().update_step(gradient, variable)
        return variable.assign(before + scale * (variable - before))


def _replica_copies(variable) -> tuple:
    """``variable`` and, for a ``tf.distribute`` variable, its per-device copies (the optimizer updates those)."""
    strategy = getattr(variable, "distribute_strategy", None)
    return (variable, *(strategy.experimental_local_results(variable) if strategy is not None else ()))


_OPTIMIZERS = {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}
_LAYERWISE = {k: type(f"Layerwise{c.__name__}", (_LayerwiseLr, c), {}) for k, c in _OPTIMIZERS.items()}


def make_optimizer(name: str, lr, momentum: float, lr_scales: dict | None = None):
    """The recipe's optimizer; with ``lr_scales`` (``variable.ref()`` or variable name -> factor, as
    :func:`variable_lr_scales` gives) a layer-wise-lr variant of it."""
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


def lr_schedule(kind: str, lr: float, steps: int, warmup: float = 0.15):
    """Phase 2's learning rate over its ``steps``: ``lr`` decayed by cosine or in steps, constant, or one cycle
    (``onecycle``: from lr / 10 up to ``lr`` over the first ``warmup`` of the steps, then cosine decay), which lets
    the newly unfrozen blocks start gently and then train at a higher rate than a plain decay could start at."""
    if kind == "onecycle":
        ramp = int(round(warmup * steps))
        return keras.optimizers.schedules.CosineDecay(lr / 10, decay_steps=max(1, steps - ramp), alpha=0.05,
                                                      warmup_target=lr, warmup_steps=ramp)
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps), alpha=0.05)
    if kind == "step":
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=max(1, steps // 3), decay_rate=0.3,
                                                           staircase=True)
    return lr


class LrLogger(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = opt.learning_rate
        value = lr(opt.iterations) if callable(lr) else lr
        logs["lr"] = float(tf.keras.backend.get_value(value) if not hasattr(value, "numpy") else value.numpy())


class RestoreBest(keras.callbacks.Callback):
    """Keep the weights of the epoch with the best ``monitor`` (``mode`` min or max) and put them back when the
    fit ends.

    In memory, on every worker alike: the validation figures are the same all-reduced values on each, so
    they pick the same epoch (reading BatchNorm statistics is a collective op, so all must read).
    After a resume it compares only the epochs run since, as a restarted ModelCheckpoint would.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "min"):
        super().__init__()
        self.monitor, self.sign = monitor, (1.0 if mode == "min" else -1.0)

    def on_train_begin(self, logs=None):
        self.best, self.weights = math.inf, None

    def on_epoch_end(self, epoch, logs=None):
        value = self.sign * (logs or {}).get(self.monitor, self.sign * math.inf)
        if value < self.best:
            self.best, self.weights = value, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.weights is not None:
            self.model.set_weights(self.weights)


class EpochLog(keras.callbacks.Callback):
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


def variable_lr_scales(model, lr_scales: dict[str, float] | None) -> dict | None:
    """Block factors (:func:`layerwise_lr_scales`) as the optimizer takes them: per trainable variable,
    keyed by ``variable.ref()``."""
    if not lr_scales:
        return None
    return {v.ref(): lr_scales[block_of(layer.name)] for layer in model.layers
            if block_of(layer.name) in lr_scales for v in layer.trainable_weights}


def fit_phase(model, phase: str, epochs: int, *, optimizer, loss, metrics: list, train_ds, val_ds, ckpt_dir: Path,
              steps: int, patience: int, monitor: str = "val_loss", mode: str = "min", class_weight=None,
              val_steps: int | None = None, chief: bool = True) -> tuple[dict, bool]:
    """Compile and fit one training phase; returns (history, resumed). Every task's trainer uses it.

    Keras ``BackupAndRestore`` checkpoints every epoch under ``ckpt_dir/<phase>-backup`` (a killed run
    resumes there); the epoch with the best ``monitor`` (``mode`` min or max) is restored at the end;
    early stopping after ``patience`` epochs without improvement. ``val_steps`` (distributed: the
    datasets repeat, so Keras needs both counts) fits ``steps`` per epoch.
    """
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    backup = ckpt_dir / f"{phase}-backup"   # under multi_worker: the chief's, read by all (shared storage)
    resumed = backup.exists()
    if resumed:
        log.info("%s: resuming from the last completed epoch in %s", phase, backup)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup)),   # a non-chief writes a temporary copy, Keras removes it
        RestoreBest(monitor, mode),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience),
        LrLogger(),
        EpochLog(phase, epochs, steps),
    ]
    counts = {"steps_per_epoch": steps, "validation_steps": val_steps} if val_steps else {}
    hist = model.fit(without_autotune(train_ds), validation_data=without_autotune(val_ds), epochs=epochs,
                     callbacks=callbacks, class_weight=class_weight, verbose=0, **counts)
    if chief:
        shutil.rmtree(backup, ignore_errors=True)
    return {k: [float(x) for x in v] for k, v in hist.history.items()}, resumed


def _fit_phase(model, phase: str, cfg_epochs: int, lr, recipe: Recipe, train_ds, val_ds,
               ckpt_dir: Path, cw, steps: int, lr_scales: dict[str, float] | None = None,
               val_steps: int | None = None, chief: bool = True,
               distill: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[dict, bool]:
    """One phase of the classifier (:func:`fit_phase` with cross-entropy and accuracy).

    ``lr_scales`` maps a block to its learning-rate factor (layer-wise decay); blocks not named get 1.
    With ``distill`` (the teacher's soft targets and the labels per training image; the training batches
    label each image by its row) the model learns from both (:class:`edgecnn.distill.Distiller`).
    """
    t = recipe.train
    optimizer = make_optimizer(t.optimizer, lr, t.momentum, variable_lr_scales(model, lr_scales))
    if distill is not None:
        from edgecnn.distill import Distiller

        model = Distiller(model, *distill, alpha=t.distill.alpha, temperature=t.distill.temperature)
    # A distilled student fits the teacher's soft targets: its label loss stays near chance while its top-1
    # rises (MCU run: val loss lowest at epoch 16 of 80, val top-1 0.36 there, 0.43 at the end), so its best
    # epoch is the best val top-1.
    monitor, mode = ("val_accuracy", "max") if distill is not None else ("val_loss", "min")
    return fit_phase(model, phase, cfg_epochs, optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(),
                     metrics=["accuracy"], train_ds=train_ds, val_ds=val_ds, ckpt_dir=ckpt_dir, steps=steps,
                     patience=t.early_stopping_patience, monitor=monitor, mode=mode, class_weight=cw,
                     val_steps=val_steps, chief=chief)


def _fit_head_on_features(model, recipe: Recipe, ds: Dataset, size: int, lr: float, val_ds, ckpt_dir: Path,
                          cw) -> tuple[dict, bool]:
    """Phase 1 on a frozen backbone as a linear model on its features: the backbone runs once over the training and
    validation images (un-augmented; frozen BatchNorm is in inference mode, so a feature is the same every epoch)
    and the head layers (dropout, classifier, softmax: ``model``'s own, so their weights are the model's) train on
    the pooled features. An epoch then costs the head's arithmetic, not the backbone's forward pass. ``val_ds`` is
    the fit's validation batches (read in order, filling their cache for phase 2)."""
    t = recipe.train
    pool = model.get_layer("pool")
    backbone = keras.Model(model.inputs, pool.output)
    feats = {"train": backbone.predict(make_dataset(ds, "train", size, 64, cache="none"), verbose=0),
             "val": backbone.predict(val_ds, verbose=0)}
    inp = keras.Input(pool.output.shape[1:], name="features")
    x = inp
    for layer in model.layers[model.layers.index(pool) + 1:]:
        x = layer(x)
    head = keras.Model(inp, x, name="head")
    bs = recipe.data.batch_size
    train = (tf.data.Dataset.from_tensor_slices((feats["train"], ds.labels("train")))
             .shuffle(len(feats["train"]), seed=t.seed, reshuffle_each_iteration=True).batch(bs))
    val = tf.data.Dataset.from_tensor_slices((feats["val"], ds.labels("val"))).batch(bs)
    log.info("phase1: the head trains on the frozen backbone's features of %d training images, computed once",
             len(feats["train"]))
    optimizer = make_optimizer(t.optimizer, lr, t.momentum)
    return fit_phase(head, "phase1", t.head.epochs, optimizer=optimizer,
                     loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"], train_ds=train,
                     val_ds=val, ckpt_dir=ckpt_dir, steps=math.ceil(len(feats["train"]) / bs),
                     patience=t.early_stopping_patience, class_weight=cw)


def _soft_targets(t, ds: Dataset) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """The teacher's soft targets at temperature T for every training image, the labels, and what the history
    records of the teacher (its top-1 on train and val at its own input)."""
    from edgecnn.distill import load_teacher, teacher_logits

    teacher = load_teacher(t.distill.teacher, ds.classes)
    logits = {s: teacher_logits(teacher, ds, s) for s in ("train", "val")}
    acc = {s: float(np.mean(np.argmax(z, -1) == ds.labels(s))) for s, z in logits.items()}
    z = logits["train"] / t.distill.temperature
    soft = np.exp(z - z.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    log.info("distill: teacher %s (%d px) top-1 train %.4f, val %.4f; alpha %g, T %g", t.distill.teacher,
             teacher.input_shape[1], acc["train"], acc["val"], t.distill.alpha, t.distill.temperature)
    info = {"teacher": str(t.distill.teacher), "teacher_input_size": int(teacher.input_shape[1]),
            "alpha": t.distill.alpha, "temperature": t.distill.temperature,
            "teacher_train_accuracy": acc["train"], "teacher_val_accuracy": acc["val"]}
    return (soft.astype(np.float32), ds.labels("train")), info


def make_strategy(cfg: DistributeConfig):
    """The recipe's ``tf.distribute`` strategy, or None for ``strategy: none``.

    A MultiWorkerMirroredStrategy starts the worker's gRPC server and waits for the whole cluster
    (``TF_CONFIG``), so it must be made before TensorFlow runs anything in the process.

    Raises:
        EdgecnnError: TF_CONFIG is malformed, or TensorFlow already ran in this process.
    """
    if cfg.strategy == "none":
        return None
    if cfg.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    _, _, workers, _ = cfg.task()
    if workers == 1:
        log.warning("train.distribute: multi_worker without a TF_CONFIG cluster: training as one worker")
    else:
        _heartbeat_timeout(cfg.heartbeat_timeout_s)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as e:
        raise EdgecnnError(f"train.distribute: multi_worker could not start ({e}). Start each worker in a fresh "
                           "process (e.g. `edgecnn train RUN` with TF_CONFIG set), before anything else runs "
                           "TensorFlow; see docs/distributed.md.") from None


def _heartbeat_timeout(seconds: int) -> None:
    """Configure TF's coordination service as MultiWorkerMirroredStrategy would, with a longer heartbeat
    timeout: TF's 10 s declares a busy worker on a loaded machine dead. TF has no public knob for it."""
    try:
        from tensorflow.compiler.xla.tsl.protobuf.coordination_config_pb2 import CoordinatedJob
        from tensorflow.python.eager import context
    except ImportError:  # another TF layout: keep its default
        return
    cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    jobs = [CoordinatedJob(name=j, num_tasks=len(cluster[j])) for j in ("chief", "worker") if j in cluster]
    leader = "chief" if "chief" in cluster else "worker"
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=f"/job:{leader}/replica:0/task:0", coordinated_jobs=jobs,
        heartbeat_timeout_in_ms=seconds * 1000)


def _with_class_weights(data, cw: dict[int, float] | None):
    """(x, y) -> (x, y, class weight of y): ``class_weight`` of a distributed fit, which Keras cannot apply."""
    if not cw:
        return data
    table = tf.constant([cw[i] for i in range(len(cw))], tf.float32)
    return data.map(lambda x, y: (x, y, tf.gather(table, y)))


def _arrays_sha256(arrays: list[np.ndarray]) -> str:
    """sha256 of the arrays' values, in order: equal exactly when every array is bit for bit the same."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def train(recipe: Recipe, ds: Dataset, run_dir: str | os.PathLike) -> TrainResult:
    """Build the recipe's model and train it in one or two phases; writes model.keras and history.json.

    Under ``train.distribute`` every worker runs this same function (each step is a collective op);
    a non-chief reads the run directory's checkpoints but writes only to a temporary folder.

    Args:
        recipe: the validated recipe.
        ds: the discovered dataset.
        run_dir: the run directory (checkpoints/ and the outputs go here).
    """
    dist = recipe.train.distribute
    strategy = make_strategy(dist)   # first: nothing may run TensorFlow before a multi-worker strategy
    _, _, workers, chief = dist.task()
    run_dir = Path(run_dir)
    with contextlib.ExitStack() as stack:
        out_dir = run_dir if chief else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgecnn-worker")))
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        if strategy is not None:
            stack.enter_context(strategy.scope())
        return _train(recipe, ds, run_dir, out_dir, strategy, workers, chief)


def _train(recipe: Recipe, ds: Dataset, run_dir: Path, out_dir: Path, strategy, workers: int,
           chief: bool) -> TrainResult:
    """:func:`train` inside the strategy's scope: reads checkpoints from ``run_dir``, writes to ``out_dir``."""
    from edgecnn.arch import create_model, get_model_entry

    t = recipe.train
    ckpt_dir, out_ckpt = run_dir / "checkpoints", out_dir / "checkpoints"
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
    history: dict[str, Any] = {"phases": []}
    distill, train_view = None, ds
    if t.distill.teacher is not None:
        distill, history["distill"] = _soft_targets(t, ds)
        train_view = indexed(ds)   # training batches carry each image's row of the soft-target table

    d = recipe.data
    bs = d.batch_size
    cw = class_weights(ds.labels("train"), len(ds.classes)) if t.class_weights else None
    if cw and distill is not None:   # by row, as the batches are labelled
        cw = {i: cw[int(y)] for i, y in enumerate(distill[1])}
    cache = {"cache": d.cache, "cache_memory_mb": d.cache_memory_mb, "cache_dir": out_dir / "cache"}
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    lr_factor = replicas if t.distribute.lr_scaling == "linear" else 1
    if strategy is None:
        train_ds = make_dataset(train_view, "train", size, bs, training=True, augment=d.augment, seed=t.seed,
                                **cache)
        val_ds = make_dataset(ds, "val", size, bs, **cache)
        steps, val_steps = math.ceil(len(ds.paths("train")) / bs), None
    else:
        # Each worker decodes only its share of each split (ceil(n / workers) files, so all run the same
        # number of steps) in batches of data.batch_size per replica; the datasets repeat and Keras counts.
        local = replicas // workers

        def steps_of(split: str) -> int:
            return math.ceil(math.ceil(math.ceil(len(ds.paths(split)) / workers) / bs) / local)

        def inputs(split: str, training: bool):
            def fn(ctx):
                data = make_dataset(train_view if training else ds, split, size,
                                    ctx.get_per_replica_batch_size(bs * replicas),
                                    training=training, augment=d.augment if training else None, seed=t.seed,
                                    shard=(ctx.num_input_pipelines, ctx.input_pipeline_id), repeat=True, **cache)
                return _with_class_weights(data, cw) if training else data
            return strategy.distribute_datasets_from_function(fn)

        train_ds, val_ds = inputs("train", True), inputs("val", False)
        steps, val_steps = steps_of("train"), steps_of("val")
        log.info("train.distribute: %s, %d worker(s), %d replica(s), global batch %d, lr x %g",
                 t.distribute.strategy, workers, replicas, bs * replicas, lr_factor)
        cw = None   # applied as sample weights above
    pretrained = args.get("weights") not in (None, "")
    freeze = {"auto": pretrained, "yes": True, "no": False}[t.freeze_backbone]
    resumed_any = False

    phase1_done = ckpt_dir / "phase1.weights.h5"
    head_lr = t.head.lr * lr_factor
    if phase1_done.exists():
        model.load_weights(str(phase1_done))
        history = json.loads((ckpt_dir / "phase1.history.json").read_text())
        resumed_any = True
        log.info("phase 1 already finished; loaded %s", phase1_done)
    elif t.head.epochs:
        set_trainable(model, set() if freeze else None)
        cached = (freeze and t.head.features == "cached" and strategy is None and distill is None
                  and "pool" in {layer.name for layer in model.layers})
        if cached:
            h, resumed = _fit_head_on_features(model, recipe, ds, size, head_lr, val_ds, ckpt_dir, cw)
        else:
            h, resumed = _fit_phase(model, "phase1", t.head.epochs, head_lr, recipe, train_ds, val_ds,
                                    ckpt_dir, cw, steps, val_steps=val_steps, chief=chief, distill=distill)
        resumed_any |= resumed
        history["phases"].append({"name": "head" if freeze else "full", "trainable": "head" if freeze else "all",
                                  "lr": head_lr, **({"features": "cached"} if cached else {}), **h})
        # The temp name must end in .weights.h5 too: Keras picks the format by it (legacy h5 for a bare .h5,
        # which load_weights of a *.weights.h5 path cannot read). Every worker saves: reading BatchNorm
        # statistics is a collective op.
        with atomic_path(out_ckpt / "phase1.weights.h5", suffix=".weights.h5") as tmp:
            model.save_weights(str(tmp))
        write_json(out_ckpt / "phase1.history.json", history)

    ft = t.finetune
    if freeze and ft.blocks and ft.epochs:
        blocks = backbone_blocks(model)
        top = set(blocks[-ft.blocks:])
        set_trainable(model, top, ft.train_batchnorm)
        lr = lr_schedule(ft.schedule, head_lr * ft.lr_factor, ft.epochs * steps, ft.warmup)
        scales = layerwise_lr_scales(blocks, top, ft.lr_decay) if ft.lr_decay != 1.0 else None
        h, resumed = _fit_phase(model, "phase2", ft.epochs, lr, recipe, train_ds, val_ds, ckpt_dir, cw,
                                steps, scales, val_steps=val_steps, chief=chief, distill=distill)
        resumed_any |= resumed
        history["phases"].append({"name": "finetune", "trainable": sorted(top, key=blocks.index),
                                  "lr": head_lr * ft.lr_factor, "schedule": ft.schedule, "lr_decay": ft.lr_decay,
                                  "block_lr_factors": scales or {}, **h})
    if strategy is not None:
        history["distribute"] = {"strategy": t.distribute.strategy, "workers": workers, "replicas": replicas,
                                 "batch_per_replica": bs, "global_batch": bs * replicas,
                                 "lr_scaling": t.distribute.lr_scaling, "lr_factor": lr_factor}

    set_trainable(model, None)  # saved model is plainly trainable for later compression stages
    clean = keras.models.clone_model(model)  # without optimizer state: a third of the size
    final = model.get_weights()
    clean.set_weights(final)
    if strategy is not None:   # all-reduced steps leave every worker's weights equal; their logs can show it
        log.info("train.distribute: final weights sha256 %s", _arrays_sha256(final))
    with atomic_path(out_dir / "model.keras") as tmp:
        clean.save(str(tmp))
    write_json(out_dir / "history.json", history)
    shutil.rmtree(out_dir / "cache", ignore_errors=True)   # a file cache is for the epochs of this fit only
    return TrainResult(model=model, history=history, resumed=resumed_any, chief=chief)

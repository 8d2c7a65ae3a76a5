"""Magnitude pruning (tfmot ``prune_low_magnitude``): prune, fine-tune, strip, report, measure.

    pruned = prune(model, target_sparsity=0.5, end_step=steps_per_epoch * epochs)
    fine_tune_pruned(pruned, train, val, epochs=2, lr=1e-4)     # UpdatePruningStep runs the schedule
    plain = strip(pruned)                                       # ordinary layers, zeros in the kernels
    sparsity_report(plain)                                      # {"block1_project": 0.5, ...}
    gzipped_size(tflite_bytes)                                  # what the zeros buy on disk

Only layers tfmot can prune are wrapped (Conv2D, Dense; tfmot has no prunable weights in
DepthwiseConv2D); the ``normalize`` layer, BatchNorm and the rest pass through. ``layers='pointwise'``
restricts pruning to 1x1 Conv2D, the layers XNNPACK's sparse kernels accelerate (on ARM; see
docs/compression.md for why x86 with AVX does not benefit).
"""
from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot  # noqa: E402  (after edgecnn._tf)

from edgecnn._tf import keras
from edgecnn.compress import _fit
from edgecnn.compress._flatten import flatten
from edgecnn.errors import EdgecnnError, did_you_mean

_S = tfmot.sparsity.keras
LAYER_SETS = ("all", "pointwise")
# Layer types tfmot prunes (DepthwiseConv2D is registered with no prunable weights, so it is left alone).
PRUNABLE = (keras.layers.Conv2D, keras.layers.Dense)


def _kernel_weights(layer) -> list:
    return [w for w in layer.weights if "kernel" in w.name and "depthwise" not in w.name and w.shape.rank >= 2]


def prunable_layers(model, layers: str = "all", exclude: Iterable[str] = ()) -> list[str]:
    """Names of the layers :func:`prune` would wrap."""
    if layers not in LAYER_SETS:
        raise EdgecnnError(f"layers must be one of {list(LAYER_SETS)}; received {layers!r}."
                           f"{did_you_mean(layers, LAYER_SETS)}")
    exclude = set(exclude)
    out = []
    for layer in model.layers:
        if layer.name in exclude or type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
            continue
        is_1x1 = isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)
        if layers == "pointwise" and not is_1x1:
            continue
        out.append(layer.name)
    return out


def prune(model, *, target_sparsity: float = 0.5, end_step: int, begin_step: int = 0, frequency: int = 100,
          initial_sparsity: float = 0.0, structured_2_4: bool = False, layers: str = "all",
          exclude: Iterable[str] = ()):
    """A new model whose Conv2D/Dense layers are wrapped for magnitude pruning; the argument is not modified.

    Sparsity ramps from ``initial_sparsity`` to ``target_sparsity`` over ``begin_step..end_step``
    (tfmot ``PolynomialDecay``, applied every ``frequency`` steps by ``UpdatePruningStep`` during
    :func:`fine_tune_pruned`). With ``structured_2_4`` every 4 consecutive input-channel weights
    keep 2 (tfmot ``sparsity_m_by_n=(2, 4)``; sparsity is exactly 50 %, the schedule is ignored).

    Args:
        model: a functional ``tf_keras`` model (nested backbones are flattened first).
        target_sparsity: fraction of zeros per pruned kernel at ``end_step``, in (0, 1).
        end_step: optimizer step at which the target is reached (steps per epoch x epochs, say).
        begin_step: step at which pruning starts.
        frequency: prune every this many steps.
        initial_sparsity: sparsity at ``begin_step``.
        structured_2_4: 2:4 structured sparsity instead of unstructured magnitude pruning.
        layers: ``'all'`` Conv2D + Dense, or ``'pointwise'`` 1x1 Conv2D only (XNNPACK sparse inference).
        exclude: layer names to leave dense (e.g. the classifier).

    Returns:
        The model with ``PruneLowMagnitude`` wrappers (uncompiled).

    Raises:
        EdgecnnError: a value out of range, an unknown layer name, or nothing to prune.

    Example:
        >>> pruned = prune(create_model("dsconv", input_size=32), target_sparsity=0.5, end_step=100)  # doctest: +SKIP
    """
    if not 0.0 < target_sparsity < 1.0:
        raise EdgecnnError(f"target_sparsity must be in (0, 1); received target_sparsity={target_sparsity!r}.")
    if not 0.0 <= initial_sparsity <= target_sparsity:
        raise EdgecnnError(f"initial_sparsity must be in [0, target_sparsity={target_sparsity}]; "
                           f"received initial_sparsity={initial_sparsity!r}.")
    if not 0 <= begin_step < end_step:
        raise EdgecnnError(f"need 0 <= begin_step < end_step; received begin_step={begin_step}, end_step={end_step}.")
    if frequency < 1:
        raise EdgecnnError(f"frequency must be >= 1; received frequency={frequency!r}.")
    flat = flatten(model)
    names = {layer.name for layer in flat.layers}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise EdgecnnError(f"exclude names layer(s) {unknown} not in model {flat.name!r}."
                           f"{did_you_mean(unknown[0], names)}")
    targets = set(prunable_layers(flat, layers, exclude))
    if not targets:
        raise EdgecnnError(f"prune: model {flat.name!r} has no {layers!r} Conv2D/Dense layers to prune.")
    schedule = _S.PolynomialDecay(initial_sparsity=initial_sparsity, final_sparsity=target_sparsity,
                                  begin_step=begin_step, end_step=end_step, frequency=frequency)
    base = _fit.copy_model(flat)

    def wrap(layer):
        if layer.name not in targets:
            return layer
        if structured_2_4:
            return _S.prune_low_magnitude(layer, sparsity_m_by_n=(2, 4))
        return _S.prune_low_magnitude(layer, pruning_schedule=schedule)

    with _S.prune_scope():
        return keras.models.clone_model(base, clone_function=wrap)


def fine_tune_pruned(model, train: Any, val: Any = None, *, epochs: int = 2, lr: float = 1e-4,
                     batch_size: int = 32, seed: int = 0,
                     train_batchnorm: bool = False, teacher=None, adapt_bn: bool = True) -> dict[str, list[float]]:
    """Fine-tune a :func:`prune`-d (or PQAT) model with ``UpdatePruningStep``; returns the Keras history.

    Args:
        model: the model from :func:`prune`.
        train: a batched ``tf.data.Dataset`` of (images 0-255, labels) or an ``(images, labels)`` tuple.
        val: the same for validation, or None.
        epochs: epochs of fine-tuning (the schedule's ``end_step`` should fall inside them).
        lr: Adam learning rate (small: the model is already trained).
        teacher: the float model, to fit its probabilities instead of the labels (see ``_fit.distilled``).
        adapt_bn: re-estimate the BatchNorm statistics after every epoch (``_fit.adapt_batchnorm``);
            without it the frozen BN layers keep the dense model's statistics and a pruned
            MobileNetV2 does not recover (75 % sparsity: chance-level top-1 after 10 epochs).
    """
    return _fit.fit(model, train, val, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                    callbacks=[_S.UpdatePruningStep()], train_batchnorm=train_batchnorm, teacher=teacher,
                    adapt_bn=adapt_bn)


def strip(model):
    """Remove the pruning wrappers: a plain model of ordinary layers whose kernels hold the zeros."""
    return _S.strip_pruning(model)


def sparsity_report(model) -> dict[str, float]:
    """Fraction of zeros in each Conv2D/Dense kernel (after :func:`strip`), keyed by layer name.

    Wrapped (unstripped) models are reported through their inner layers.
    """
    out: dict[str, float] = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if not isinstance(inner, PRUNABLE) or isinstance(inner, keras.layers.DepthwiseConv2D):
            continue
        kernels = _kernel_weights(inner)
        if kernels:
            k = kernels[0].numpy()
            if hasattr(layer, "pruning_vars") and layer is not inner:  # unstripped: apply the mask
                masks = [m for (_, m, _) in layer.pruning_vars]
                k = k * masks[0].numpy()
            out[inner.name] = float(np.mean(k == 0))
    return out


def overall_sparsity(model) -> float:
    """Zeros over all Conv2D/Dense kernel weights together (weighted by size)."""
    zeros = total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, PRUNABLE) and not isinstance(inner, keras.layers.DepthwiseConv2D):
            for k in _kernel_weights(inner):
                v = k.numpy()
                zeros, total = zeros + int((v == 0).sum()), total + v.size
    return zeros / total if total else 0.0


def gzipped_size(data: bytes | str | os.PathLike) -> int:
    """Bytes of ``data`` (or of the file at that path) after gzip -9: how pruning/clustering shows on disk."""
    if not isinstance(data, (bytes, bytearray)):
        data = Path(data).read_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(data)
    return len(buf.getvalue())


def sparse_tflite(model) -> bytes:
    """float32 TFLite with sparse weight storage (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``) from a stripped model.

    Kernels are stored compressed and expanded by ``DENSIFY`` ops; XNNPACK then runs eligible 1x1
    convolutions with sparse kernels where it can (see :func:`xnnpack_sparse_inference`), elsewhere
    the weights are densified once at load. The file shrinks either way.
    """
    from edgecnn._tf import tf

    conv = tf.lite.TFLiteConverter.from_keras_model(strip(model) if _has_wrappers(model) else model)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return bytes(conv.convert())


def _has_wrappers(model) -> bool:
    return any(type(layer).__name__ == "PruneLowMagnitude" for layer in model.layers)


def xnnpack_sparse_inference() -> tuple[bool, str]:
    """Whether XNNPACK's sparse (NCHW SpMM) kernels can run on this CPU, and why.

    XNNPACK rewrites a sparse subgraph to NCHW only where its CHW kernels exist: ARM/ARM64, WebAssembly,
    and x86 *without* AVX (its x86 sparse kernels are SSE-only and it assumes dense AVX is faster).
    The subgraph must start with a 3x3 stride-2 conv on 3 channels and end at a spatial MEAN, and at
    least 2/3 of the 1x1 conv weights must be zero (XNNPACK's TFLite delegate README).
    """
    import platform

    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        if " avx" in flags:
            return False, ("x86 CPU with AVX: XNNPACK's sparse kernels target SSE only and it runs dense on AVX "
                           "machines, so a sparse model runs at dense speed here (it still loads smaller). "
                           "Measure on the ARM target.")
        return True, "x86 CPU without AVX: XNNPACK may use its SSE sparse kernels"
    return True, f"{machine}: XNNPACK sparse kernels available (needs >= 2/3 zeros in the 1x1 convolutions)"


__all__ = ["prune", "fine_tune_pruned", "strip", "sparsity_report", "overall_sparsity", "gzipped_size",
           "prunable_layers", "sparse_tflite", "xnnpack_sparse_inference"]

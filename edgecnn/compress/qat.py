"""Quantisation-aware training (tfmot): annotate, apply, fine-tune, convert to full-int8 TFLite.

    report = unsupported_layers(model)          # up front, before any training: [(name, type, reason)]
    qat = quantize_aware(model)                 # flattened, annotated, fake-quant wrappers inserted
    fine_tune_qat(qat, train, val, epochs=2, lr=1e-5)
    tflite_bytes = to_tflite_int8(qat, calibration_images)

Schemes: ``'default'`` (8-bit), ``'pqat'`` (keeps a pruned model's zeros), ``'cqat'`` (keeps a
clustered model's centroids and zeros); feed PQAT a :func:`~edgecnn.compress.strip`-ped pruned
model and CQAT a :func:`~edgecnn.compress.strip_clusters`-ped clustered one.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot  # noqa: E402  (after edgecnn._tf)

from edgecnn._tf import keras
from edgecnn._trust import load_keras
from edgecnn.compress import _fit
from edgecnn.compress._flatten import flatten
from edgecnn.compress._quantize_configs import (
    LayerPlan,
    NoOpQuantizeConfig,
    OutputQuantizeConfig,
    plan_layer,
)
from edgecnn.errors import EdgecnnError, did_you_mean
from edgecnn.quantize import quantize_scope, tflite_int8

log = logging.getLogger("edgecnn.compress")
_Q = tfmot.quantization.keras
SCHEMES = ("default", "pqat", "cqat")


def _scheme(name: str):
    if name == "default":
        return _Q.default_8bit.Default8BitQuantizeScheme()
    if name == "pqat":
        return tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    if name == "cqat":
        return tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    raise EdgecnnError(f"scheme must be one of {list(SCHEMES)}; received scheme={name!r}.{did_you_mean(name, SCHEMES)}")


def plan(model, *, float_layers: Iterable[str] = (),
         quantize_configs: Mapping[str, Any] | None = None) -> list[LayerPlan]:
    """How QAT will treat every layer of (the flattened) ``model``: default / output / float / skip."""
    float_layers = set(float_layers)
    quantize_configs = dict(quantize_configs or {})
    names = {layer.name for layer in model.layers}
    unknown = sorted((float_layers | set(quantize_configs)) - names)
    if unknown:
        raise EdgecnnError(f"float_layers/quantize_configs name layer(s) {unknown} that are not in the model "
                           f"{model.name!r}.{did_you_mean(unknown[0], names)}")
    registry = _Q.default_8bit.Default8BitQuantizeRegistry()
    out = []
    for layer in model.layers:
        if layer.name in quantize_configs:
            out.append(LayerPlan(layer.name, type(layer).__name__, "custom", "QuantizeConfig given by the caller"))
        elif layer.name in float_layers and not isinstance(layer, keras.layers.InputLayer):
            out.append(LayerPlan(layer.name, type(layer).__name__, "float", "kept float on request"))
        else:
            out.append(plan_layer(layer, registry))
    return out


def unsupported_layers(model, *, quantize_configs: Mapping[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """Layers QAT cannot quantise, found up front: ``[(name, type, reason with the fix)]``; empty when all are fine.

    Nested models are flattened first (their inner layers are what is checked).

    Example:
        >>> for name, kind, why in unsupported_layers(model):     # doctest: +SKIP
        ...     print(f"{name} ({kind}): {why}")
    """
    flat = flatten(model)
    return [(p.name, p.type, p.reason) for p in plan(flat, quantize_configs=quantize_configs) if p.action == "float"]


def quantize_aware(model, *, scheme: str = "default", float_layers: Iterable[str] = (),
                   quantize_configs: Mapping[str, Any] | None = None, on_unsupported: str = "float"):
    """A new model with fake-quantisation (QAT) wrappers; the argument is not modified.

    Nested backbones are flattened first. Layers tfmot does not know get the QuantizeConfigs of
    :mod:`edgecnn.compress._quantize_configs` (Normalization/Rescaling/Multiply/hard-swish...);
    what still cannot be wrapped (TF-op layers, Lambda, unknown custom layers) stays float in the
    QAT graph and is quantised from the representative dataset at conversion.

    Args:
        model: a functional ``tf_keras`` model (float, or a stripped pruned/clustered one for pqat/cqat).
        scheme: ``'default'``, ``'pqat'`` (pruning-preserving) or ``'cqat'`` (cluster-preserving).
        float_layers: layer names to keep float (e.g. the most sensitive ones).
        quantize_configs: ``{layer name: tfmot QuantizeConfig}`` for custom layers.
        on_unsupported: ``'float'`` (log a warning listing them and keep them float) or ``'error'``.

    Returns:
        The QAT model (uncompiled). Fine-tune it with :func:`fine_tune_qat`, convert with :func:`to_tflite_int8`.

    Raises:
        EdgecnnError: unknown scheme, unknown layer names, or unsupported layers with ``on_unsupported='error'``.
    """
    if on_unsupported not in ("float", "error"):
        raise EdgecnnError(f"on_unsupported must be 'float' or 'error'; received {on_unsupported!r}.")
    qscheme = _scheme(scheme)
    flat = flatten(model)
    plans = plan(flat, float_layers=float_layers, quantize_configs=quantize_configs)
    bad = [p for p in plans if p.action == "float" and p.reason != "kept float on request"]
    if bad:
        listing = "; ".join(f"{p.name} ({p.type}): {p.reason}" for p in bad)
        if on_unsupported == "error":
            raise EdgecnnError(f"quantize_aware: {len(bad)} layer(s) cannot be quantised by tfmot: {listing}")
        log.warning("QAT leaves %d layer(s) float: %s", len(bad), listing)
    by_name = {p.name: p for p in plans}
    configs = dict(quantize_configs or {})
    base = _fit.copy_model(flat)

    def annotate(layer):
        p = by_name[layer.name]
        if p.action == "default":
            return _Q.quantize_annotate_layer(layer)
        if p.action == "output":
            return _Q.quantize_annotate_layer(layer, OutputQuantizeConfig())
        if p.action == "same-scale":
            return _Q.quantize_annotate_layer(layer, NoOpQuantizeConfig())
        if p.action == "custom":
            return _Q.quantize_annotate_layer(layer, configs[layer.name])
        return layer

    annotated = keras.models.clone_model(base, clone_function=annotate)
    custom = {type(c).__name__: type(c) for c in configs.values()}
    with quantize_scope(custom):
        try:
            qat = _Q.quantize_apply(annotated, qscheme)
        except (ValueError, RuntimeError, TypeError) as e:
            raise EdgecnnError(f"quantize_aware({model.name!r}, scheme={scheme!r}) failed in tfmot: {e}") from e
    return qat


def fine_tune_qat(model, train: Any, val: Any = None, *, epochs: int = 2, lr: float = 1e-5,
                  batch_size: int = 32, seed: int = 0, train_batchnorm: bool = False, teacher=None,
                  schedule: str = "constant", callbacks=()) -> dict[str, list[float]]:
    """Fine-tune a QAT model a few epochs with a small learning rate (1e-5 .. 1e-4). Returns the history.

    Pass the float model as ``teacher`` to fit its probabilities instead of the labels (self-distillation):
    the int8 model then learns to *agree* with the float one, which is what the budgets measure.
    ``callbacks`` (e.g. :class:`edgecnn.compress._fit.StopAfter`, the chooser's time limit) go to ``fit``.
    """
    return _fit.fit(model, train, val, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                    train_batchnorm=train_batchnorm, teacher=teacher, schedule=schedule, callbacks=callbacks)


def to_tflite_int8(model, calibration: np.ndarray, *, denylisted_nodes: Iterable[str] = (),
                   int8_io: bool = True) -> bytes:
    """Full-integer TFLite (int8 input/output) from a QAT model; returns the flatbuffer.

    The representative dataset fills the ranges QAT did not learn (layers left float, the input).
    Same as :func:`edgecnn.quantize.tflite_int8`, which also takes float and pruned models.
    """
    return tflite_int8(model, calibration, denylisted_nodes=denylisted_nodes, int8_io=int8_io)


def save_qat(model, path) -> Path:
    """Save a QAT model. Only HDF5 (``.h5``) round-trips tfmot's quantize wrappers in tf_keras 2.21.

    The ``.keras`` format drops the wrappers' variables on load ("Layer 'quantize_layer' expected 5
    variables, but received 3"), so a ``.keras`` path is refused with that fix. Written atomically.
    """
    from edgecnn._io import atomic_path

    path = Path(path)
    if path.suffix != ".h5":
        raise EdgecnnError(f"save_qat: QAT models must be saved as .h5 (the .keras format loses tfmot's quantize "
                           f"wrapper state); received {path.name!r}. Use e.g. 'model.qat.h5'.")
    with atomic_path(path) as tmp, quantize_scope():
        model.save(str(tmp), include_optimizer=False)  # optimizer slots can clash by name in HDF5
    return path


def load_qat(path):
    """Load a model saved by :func:`save_qat` (with the quantize configs in scope)."""
    with quantize_scope():
        return load_keras(path)


__all__ = ["save_qat", "load_qat", "SCHEMES", "quantize_aware", "unsupported_layers", "fine_tune_qat", "to_tflite_int8",
           "plan", "NoOpQuantizeConfig", "OutputQuantizeConfig"]

"""Keras to TFLite / ONNX: the one converter factory, and the scope QAT models need to be converted.

A QAT model's tfmot wrappers name their ``QuantizeConfig`` classes; cloning, saving, loading or
converting such a model needs those classes in scope. Whoever defines a config registers it here
(:func:`register_quantize_config`, used by :mod:`edgecnn.compress`), so this layer knows them
without importing the layers above it.

    conv = tflite_converter(model)                   # float, pruned or QAT model
    with quantize_scope():
        data = conv.convert()
    keras_to_onnx(model, "model.onnx", opset=17)
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgecnn._io import atomic_path

ONNX_INPUT_NAME = "image"
_QUANTIZE_CONFIGS: dict[str, type] = {}


def register_quantize_config(cls: type) -> type:
    """Class decorator: make a tfmot ``QuantizeConfig`` known (by class name) to every QAT clone, load and
    conversion."""
    _QUANTIZE_CONFIGS[cls.__name__] = cls
    return cls


def quantize_scope(extra: Mapping[str, type] | None = None) -> contextlib.AbstractContextManager:
    """tfmot's ``quantize_scope`` with every registered QuantizeConfig (and ``extra``, e.g. a caller's own).

    When tfmot was never imported no model in this process holds its wrappers, so this is a no-op
    then, and float-only conversions do not pay for importing tfmot.
    """
    if "tensorflow_model_optimization" not in sys.modules and not extra:
        return contextlib.nullcontext()
    # TF_USE_LEGACY_KERAS is already set: importing any edgecnn module runs edgecnn/__init__.py first
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_scope({**_QUANTIZE_CONFIGS, **(extra or {})})


def tflite_converter(model) -> Any:
    """A ``tf.lite.TFLiteConverter`` for a float, pruned or QAT ``tf_keras`` model; call ``convert()`` in
    :func:`quantize_scope` when the model may be a QAT one."""
    from edgecnn._tf import tf

    with quantize_scope():
        return tf.lite.TFLiteConverter.from_keras_model(model)


def keras_to_onnx(model, path: str | os.PathLike, *, opset: int = 17) -> Path:
    """Float32 ONNX (tf2onnx) with a dynamic batch and input ``"image"``, checked by ``onnx.checker``; atomic write.

    Args:
        model: a ``tf_keras`` model taking NHWC RGB 0-255.
        path: where to write the ``.onnx`` file.
        opset: the ONNX opset (17 or later).

    Returns:
        ``path`` as a Path.
    """
    import onnx
    import tf2onnx

    from edgecnn._tf import tf

    path = Path(path)
    spec = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=ONNX_INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    proto.graph.output[0].name  # noqa: B018  (touch: fails early on an empty graph)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


__all__ = ["ONNX_INPUT_NAME", "keras_to_onnx", "quantize_scope", "register_quantize_config", "tflite_converter"]

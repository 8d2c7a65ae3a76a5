"""Keras to TFLite / ONNX: the one converter factory, and the scope QAT models need to be converted.

A QAT model's tfmot wrappers name their ``QuantizeConfig`` classes; cloning, saving, loading or
converting such a model needs those classes in scope. Whoever defines a config registers it here
(:func:`register_quantize_config`, used by :mod:`edgecnn.compress`), so this layer knows them
without importing the layers above it.

    conv = tflite_converter(model)                   # float, pruned or QAT model
    with quantize_scope():
        data = conv.convert()
    keras_to_onnx(model, "model.onnx", opset=17)
    conv = tflite_converter("saved_model_dir")      # a SavedModel folder (Keras 3 export, plain TF)
    saved_model_to_onnx("saved_model_dir", "model.onnx", input_size=96)
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgecnn._io import atomic_path
from edgecnn.errors import EdgecnnError

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
    """A ``tf.lite.TFLiteConverter`` for a float, pruned or QAT ``tf_keras`` model, or for a SavedModel folder
    (a path: its ``serving_default`` signature); call ``convert()`` in :func:`quantize_scope` when the model may
    be a QAT one. A ``tf_keras`` model is saved once and every later conversion of it reuses that folder
    (:func:`edgecnn.quantize.tflite_source.converter_source`)."""
    from edgecnn._tf import tf
    from edgecnn.quantize.tflite_source import converter_source

    model = converter_source(model)
    if isinstance(model, (str, os.PathLike)):  # so tflite_int8 (minmax, percentile) takes SavedModels too
        return tf.lite.TFLiteConverter.from_saved_model(str(model))
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
    from edgecnn.quantize.onnx_fold import fold_input_normalisation

    path = Path(path)
    spec = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=ONNX_INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    proto.graph.output[0].name  # noqa: B018  (touch: fails early on an empty graph)
    fold_input_normalisation(proto)   # the in-graph normalisation into the first conv (same function, faster)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def saved_model_signature(saved_dir: str | os.PathLike, signature: str = "serving_default"):
    """``(loaded, function, {input name: TensorSpec}, [output names])`` of one SavedModel signature.

    Raises:
        KeyError: the SavedModel has no such signature (the caller words the error for its context).
    """
    from edgecnn._tf import tf

    loaded = tf.saved_model.load(str(saved_dir))
    fn = loaded.signatures[signature]
    inputs = dict(fn.structured_input_signature[1])
    return loaded, fn, inputs, sorted(fn.structured_outputs)


def saved_model_to_onnx(saved_dir: str | os.PathLike, path: str | os.PathLike, *, input_size: int | None = None,
                        opset: int = 17, signature: str = "serving_default") -> Path:
    """Float32 ONNX of a single-input, single-output SavedModel signature, input ``"image"`` with the explicit
    shape ``(N, H, W, C)`` (``input_size`` fills a free H/W), checked by ``onnx.checker``; atomic write.

    tf2onnx's SavedModel loader freezes the signature's variables (``from_function`` on a restored
    signature leaves them as graph inputs); it works where ``from_keras`` does not (Keras 3, plain TF).

    Returns:
        ``path`` as a Path.
    """
    import onnx
    import tf2onnx
    from tf2onnx import tf_loader

    path = Path(path)
    _, _, inputs, outputs = saved_model_signature(saved_dir, signature)
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgecnnError(f"{str(saved_dir)!r}: signature {signature!r} must have one input and one output to "
                           f"convert to ONNX; received inputs {sorted(inputs)} and outputs {outputs}.")
    graph_def, names_in, names_out, renames = tf_loader.from_saved_model(
        str(saved_dir), None, None, tag="serve", signatures=[signature], return_tensors_to_rename=True)
    renames[names_in[0]] = ONNX_INPUT_NAME
    spec = next(iter(inputs.values()))
    shape = [None] + [input_size if d is None else d for d in spec.shape[1:]]
    proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=names_in, output_names=names_out, opset=opset,
                                              shape_override={names_in[0]: shape}, tensors_to_rename=renames)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


__all__ = ["ONNX_INPUT_NAME", "keras_to_onnx", "quantize_scope", "register_quantize_config", "saved_model_signature",
           "saved_model_to_onnx", "tflite_converter"]

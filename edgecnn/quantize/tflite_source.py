"""The TFLite converter's input, made once per model: one SavedModel folder every TFLite conversion reuses.

``tf.lite.TFLiteConverter.from_keras_model(model).convert()`` first saves the ``tf_keras`` model as a
SavedModel in a temporary folder, then converts that folder, and deletes it: on every call. Keras
saves a traced function per layer beside the serving one (for reloading as Keras), which is most of
the cost: a QAT MobileNetV3-Small at 32 px took 72 s per conversion. A run converts the same model
for fp32, fp16, dynamic range and int8, and the chooser again for each calibration route.
:func:`converter_source` saves it once, and only what the converter reads: the variables and one
``serving_default`` signature (the model called in inference mode, inputs named as the model's,
outputs keyed by its output names, as Keras's own signature is). The same QAT model then saves in
11 s and converts in 9 s; the flatbuffers compute what ``from_keras_model``'s do (tested).

The folder is keyed by the model object and a digest of its weights, so a model trained further
(new weights) is saved again; it is deleted when the model is freed or the process exits.

    src = converter_source(model)                 # a folder, or the model itself when it cannot be saved
    fp32 = tflite_converter(src).convert()
    int8 = tflite_int8(src, calibration)          # tflite_int8 calls converter_source itself
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import weakref
from typing import Any

from edgecnn.quantize.converters import quantize_scope

__all__ = ["converter_source"]

log = logging.getLogger("edgecnn.quantize")
_SAVED: dict[int, tuple[weakref.ref, str, str]] = {}   # id(model) -> (the model, weights digest, folder)


def _weights_digest(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(str(w.shape).encode())
        h.update(w.tobytes())
    return h.hexdigest()


def _forget(key: int, folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if key in _SAVED and _SAVED[key][2] == folder:
        del _SAVED[key]


def converter_source(model) -> Any:
    """A SavedModel folder of a ``tf_keras`` model for ``tflite_converter`` (saved once per model and weights),
    or ``model`` itself when it is a folder already, not a tf_keras model (Keras 3: the converter exports it its
    own way), or cannot be saved (the converter then freezes it, as ``from_keras_model`` does).
    """
    from edgecnn._tf import keras

    if not isinstance(model, keras.Model):
        return model
    key, digest = id(model), _weights_digest(model)
    hit = _SAVED.get(key)
    if hit is not None and hit[0]() is model and hit[1] == digest:
        return hit[2]
    if hit is not None:
        _forget(key, hit[2])
    folder = tempfile.mkdtemp(prefix="edgecnn-tflite-src-")
    try:
        _save_serving(model, folder)
    except Exception as e:  # what from_keras_model does then too: convert the frozen model instead
        log.info("TFLite: %s cannot be saved as a SavedModel (%s: %s); converting it directly", model.name,
                 type(e).__name__, e)
        shutil.rmtree(folder, ignore_errors=True)
        return model
    _SAVED[key] = (weakref.ref(model), digest, folder)
    weakref.finalize(model, _forget, key, folder)
    return folder


def _save_serving(model, folder: str) -> None:
    """Save ``model``'s variables and one ``serving_default`` signature (inference mode), nothing per layer."""
    from edgecnn._tf import tf

    if not model.inputs:
        raise ValueError("the model has no symbolic inputs (subclassed and not built from keras.Input)")
    specs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    names = list(model.output_names)

    @tf.function(input_signature=specs)
    def serve(*inputs):
        out = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return dict(zip(names, out if isinstance(out, (list, tuple)) else [out], strict=True))

    module = tf.Module()
    module.variables_ = model.variables      # tracked, so the signature's variables are saved with it
    with quantize_scope():   # a QAT model's wrappers name their QuantizeConfig classes
        tf.saved_model.save(module, folder, signatures={"serving_default": serve.get_concrete_function()},
                            options=tf.saved_model.SaveOptions(save_debug_info=True))

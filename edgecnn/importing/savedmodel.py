"""SavedModel sources without Keras: a plain TensorFlow ``tf.Module`` (or any SavedModel without
``keras_metadata.pb``) served through its ``serving_default`` signature, and the post-training artifacts
that such a model, and a Keras 3 model tf_keras cannot rebuild, get from a SavedModel.

The source's signature is wrapped in a new SavedModel whose one input ``image`` is RGB 0-255
(N, size, size, 3) (channel flip and ``(x - mean) / std`` in front, as every edgecnn artifact takes);
the TFLite converter and tf2onnx then work from that folder (:mod:`edgecnn.quantize.converters`).
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.importing._preprocess import Preprocess
from edgecnn.importing.keras2 import check_classes, image_input_size

SIGNATURE = "serving_default"


def is_keras_saved_model(path: Path) -> bool:
    """A SavedModel folder tf_keras wrote (it carries ``keras_metadata.pb``); plain TF ones do not."""
    return (path / "keras_metadata.pb").is_file()


def load_signature(path: Path, source: str, num_classes: int, input_size: int | None):
    """``(loaded, signature, input name, side)`` of a plain SavedModel, after checking it is one image in,
    one ``(N, classes)`` out."""
    from edgecnn.quantize.converters import saved_model_signature

    try:
        loaded, fn, inputs, outputs = saved_model_signature(path, SIGNATURE)
    except KeyError:
        from edgecnn._tf import tf

        names = sorted(tf.saved_model.load(str(path)).signatures)
        raise EdgecnnError(f"{source}: the SavedModel has no {SIGNATURE!r} signature (received signatures {names}); "
                           "save it with tf.saved_model.save(module, path, signatures={'serving_default': "
                           "module.f.get_concrete_function(tf.TensorSpec((None, H, W, 3), tf.float32))}).") from None
    except Exception as e:  # noqa: BLE001  (TF raises many types for a broken folder)
        raise EdgecnnError(f"{source}: the SavedModel could not be loaded ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}).") from e
    if len(inputs) != 1:
        raise EdgecnnError(f"{source}: the {SIGNATURE!r} signature has {len(inputs)} inputs ({sorted(inputs)}); "
                           "edgecnn imports image classifiers with exactly one image input (N, H, W, 3).")
    (name, spec), = inputs.items()
    if spec.dtype.name != "float32" or spec.shape.rank != 4:
        raise EdgecnnError(f"{source}: the input must be a float32 image batch (N, H, W, 3); received {name!r} "
                           f"{spec.dtype.name} with shape {spec.shape.as_list() if spec.shape.rank else None}.")
    side = image_input_size([None, *spec.shape.as_list()[1:]], source, input_size)
    shapes = {k: fn.structured_outputs[k].shape.as_list() for k in outputs}
    if len(outputs) != 1 or len(shapes[outputs[0]]) != 2 or shapes[outputs[0]][1] is None:
        raise EdgecnnError(f"{source}: the model must have one (N, classes) output; received outputs {shapes}.")
    check_classes(int(shapes[outputs[0]][1]), num_classes, source)
    return loaded, fn, name, side


def wrap_saved_model(loaded, fn, input_name: str, size: int, pre: Preprocess, out_dir: Path) -> Callable:
    """Save a SavedModel at ``out_dir`` taking RGB 0-255 ``image`` (N, size, size, 3): [BGR] -> (x-mean)/std
    -> the source signature; returns its ``serving_default`` function (``image -> probabilities``)."""
    from edgecnn._tf import tf
    from edgecnn.quantize.converters import ONNX_INPUT_NAME

    output = sorted(fn.structured_outputs)[0]
    scale = tf.constant(1.0 / np.array(pre.std, dtype=np.float32))
    shift = tf.constant(-np.array(pre.mean, dtype=np.float32) / np.array(pre.std, dtype=np.float32))
    module = tf.Module()
    module.source = loaded  # tracked, so the source's variables are saved with the wrapper

    @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name=ONNX_INPUT_NAME)])
    def serve(image):
        x = tf.reverse(image, axis=[-1]) if pre.bgr else image
        if not (pre.mean == (0.0, 0.0, 0.0) and pre.std == (1.0, 1.0, 1.0)):
            x = x * scale + shift
        return {"probs": fn(**{input_name: x})[output]}

    module.serve = serve
    tf.saved_model.save(module, str(out_dir), signatures={SIGNATURE: serve})
    return lambda images: serve(tf.constant(images, tf.float32))["probs"].numpy()


def ptq_artifacts(saved: Path, run_dir: Path, calibration: np.ndarray, reference: Callable[[np.ndarray], np.ndarray],
                  parent: str, *, opset: int = 17, onnx_calibration: str = "minmax",
                  onnx_per_channel: bool = True) -> tuple[dict[str, dict], float]:
    """model.fp32.tflite, model.int8.tflite, model.onnx and model.int8.onnx from a SavedModel taking RGB 0-255.

    Returns ``({file: manifest fields}, max |model.onnx - reference| on calibration images)``.
    """
    import onnxruntime as ort

    from edgecnn._io import write_bytes
    from edgecnn.quantize import ONNX_INPUT_NAME, quantize_onnx, tflite_int8
    from edgecnn.quantize.converters import saved_model_to_onnx, tflite_converter

    write_bytes(run_dir / "model.fp32.tflite", tflite_converter(saved).convert())
    write_bytes(run_dir / "model.int8.tflite", tflite_int8(saved, calibration))
    saved_model_to_onnx(saved, run_dir / "model.onnx", opset=opset)
    quantize_onnx(run_dir / "model.onnx", run_dir / "model.int8.onnx", calibration, method=onnx_calibration,
                  per_channel=onnx_per_channel)
    probe = calibration[:8].astype("float32")
    got = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {ONNX_INPUT_NAME: probe})[0]
    diff = float(np.max(np.abs(got - reference(probe))))
    return ({"model.fp32.tflite": {"format": "tflite-fp32", "precision": "fp32", "runtime": "litert", "parent": parent},
             "model.int8.tflite": {"format": "tflite-int8", "precision": "int8", "runtime": "litert", "parent": parent},
             "model.onnx": {"format": "onnx", "precision": "fp32", "runtime": "onnxruntime", "parent": parent},
             "model.int8.onnx": {"format": "onnx-int8", "precision": "int8", "runtime": "onnxruntime",
                                 "parent": "model.onnx"}}, diff)


def export_saved_model(path: Path, source: str, run_dir: Path, num_classes: int, input_size: int | None,
                       pre: Preprocess, calibration: Callable[[int], np.ndarray],
                       **options) -> tuple[int, dict[str, dict], float]:
    """A plain SavedModel's post-training artifacts: ``(side, {file: manifest fields}, max |Δprob| of
    model.onnx vs the source run through TensorFlow)``."""
    loaded, fn, name, side = load_signature(path, source, num_classes, input_size)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "wrapped"
        reference = wrap_saved_model(loaded, fn, name, side, pre, saved)
        artifacts, diff = ptq_artifacts(saved, run_dir, calibration(side), reference, f"{path.name} (SavedModel)",
                                        **options)
    return side, artifacts, diff

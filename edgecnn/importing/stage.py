"""The import stage: turn a model file made elsewhere into the files a run directory starts from.

tf_keras sources (and Keras 3 ones rebuilt in tf_keras) become ``model.keras`` and go through the
normal compress/export path; ONNX and TFLite sources become their artifacts directly, and the
source (wrapped, if its preprocessing needed it) is the float reference the others are compared to.
Plain TensorFlow SavedModels and Keras 3 models tf_keras cannot rebuild get post-training artifacts
from a SavedModel (:mod:`edgecnn.importing.savedmodel`), ``model.onnx`` their reference.
"""
from __future__ import annotations

import logging
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecnn._io import atomic_path
from edgecnn.errors import EdgecnnError
from edgecnn.importing._preprocess import get_preprocess
from edgecnn.importing.savedmodel import is_keras_saved_model

log = logging.getLogger("edgecnn.importing")
SOURCE_FORMATS = ("tf_keras", "keras3", "savedmodel", "onnx", "tflite")


@dataclass
class ImportResult:
    """What the import stage wrote and how: ``route`` says which path the rest of the pipeline takes."""

    source_format: str
    route: str                # "keras" (model.keras, every stage) | "onnx" | "tflite" | "keras3-ptq" | "savedmodel-ptq"
    input_size: int
    preprocessing: dict
    reference: str            # the float model every artifact's agreement is measured against
    artifacts: dict[str, dict] = field(default_factory=dict)   # file -> {format, precision, runtime, parent}
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"source_format": self.source_format, "route": self.route, "input_size": self.input_size,
                "reference": self.reference, "notes": self.notes, "post_training_only": self.route != "keras"}


def detect_source(path: str | Path) -> str:
    """The source format of ``path`` (one of :data:`SOURCE_FORMATS`), by content as much as by suffix."""
    path = Path(path)
    if not path.exists():
        raise EdgecnnError(f"model not found: {str(path)!r}. Pass a .keras, .h5, .onnx or .tflite file or a "
                           "SavedModel folder.")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise EdgecnnError(f"{str(path)!r} is a folder without saved_model.pb, so not a SavedModel; pass a "
                           ".keras, .h5, .onnx or .tflite file or a SavedModel folder.")
    head = path.read_bytes()[:8]
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith(b"\x89HDF"):
        return "tf_keras"
    if zipfile.is_zipfile(path):
        from edgecnn.importing.keras2 import describe

        version = str(describe(path).get("keras_version", ""))
        if version.startswith("3"):
            return "keras3"
        if version or path.suffix == ".keras":
            return "tf_keras"
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ModelProto starts with ir_version (field 1)
        return "onnx"
    raise EdgecnnError(f"{str(path)!r} is not a model file edgecnn can import (received {head[:8]!r} at its "
                       "start). Supported: tf_keras .h5/.keras, Keras 3 .keras, a SavedModel folder, .onnx, "
                       ".tflite.")


def import_source(path: str | Path, run_dir: Path, *, classes: list[str], input_size: int | None = None,
                  preprocess: str = "raw", bgr: bool = False, trust_code: bool = False,
                  calibration: Callable[[int], np.ndarray], opset: int = 17,
                  onnx_calibration: str = "minmax", onnx_per_channel: bool = True) -> ImportResult:
    """Write the imported model into ``run_dir`` (model.keras, or the artifacts themselves).

    Args:
        path: the model file or SavedModel folder.
        run_dir: the (new) run directory.
        classes: class names, in the model's output order.
        input_size: the square side, required when the model's is dynamic.
        preprocess: what the model expects of its input (``raw``, ``unit``, ``symmetric``, ``imagenet``,
            ``caffe``); ignored when a Rescaling/Normalization layer shows it is already in the graph.
        bgr: the model expects BGR channel order.
        trust_code: allow Lambda layers / code in Keras files.
        calibration: ``side -> (N, side, side, 3)`` RGB 0-255 images for int8 artifacts.

    Returns:
        An :class:`ImportResult`.
    """
    path = Path(path)
    fmt = detect_source(path)
    pre = get_preprocess(preprocess, bgr)
    source = f"{path.name} ({fmt})"
    options = {"opset": opset, "onnx_calibration": onnx_calibration, "onnx_per_channel": onnx_per_channel}
    if fmt == "savedmodel" and not is_keras_saved_model(path):
        from edgecnn.importing.savedmodel import export_saved_model

        size, artifacts, diff = export_saved_model(path, source, run_dir, len(classes), input_size, pre, calibration,
                                                   **options)
        notes = ["plain TensorFlow SavedModel (no Keras metadata): its serving_default signature wrapped in a "
                 "SavedModel taking RGB 0-255, then the TFLite converter and tf2onnx; post-training routes only",
                 f"model.onnx vs the SavedModel run in TensorFlow: max |Δprob| {diff:.1e} on calibration images"]
        return ImportResult(fmt, "savedmodel-ptq", size, pre.to_json(in_graph=True), "model.onnx", artifacts, notes)
    if fmt in ("tf_keras", "savedmodel", "keras3"):
        return _import_keras(path, fmt, run_dir, source, classes, input_size, pre, trust_code, calibration, **options)
    if fmt == "onnx":
        from edgecnn.importing.onnx import inspect_onnx, load_onnx, wrap_onnx
        from edgecnn.quantize import quantize_onnx

        model = load_onnx(path)
        layout, size = inspect_onnx(model, source, len(classes), input_size)
        wrapped = wrap_onnx(model, layout, size, pre)
        import onnx

        with atomic_path(run_dir / "model.onnx") as tmp:
            onnx.save(wrapped, str(tmp))
        quantize_onnx(run_dir / "model.onnx", run_dir / "model.int8.onnx", calibration(size),
                      method=onnx_calibration, per_channel=onnx_per_channel)
        notes = [f"ONNX input {layout}" + (", transposed from NHWC in the graph" if layout == "NCHW" else "")]
        return ImportResult(fmt, "onnx", size, pre.to_json(in_graph=True, layout=layout), "model.onnx",
                            {"model.onnx": {"format": "onnx", "precision": "fp32", "runtime": "onnxruntime",
                                            "parent": path.name},
                             "model.int8.onnx": {"format": "onnx-int8", "precision": "int8",
                                                 "runtime": "onnxruntime", "parent": "model.onnx"}}, notes)
    from edgecnn.importing.tflite import inspect_tflite

    precision, size = inspect_tflite(path, source, len(classes), input_size, pre)
    name = "model.int8.tflite" if precision == "int8" else "model.fp32.tflite"
    with atomic_path(run_dir / name) as tmp:
        shutil.copyfile(path, tmp)
    return ImportResult(fmt, "tflite", size, pre.to_json(in_graph=False), name,
                        {name: {"format": "tflite-int8" if precision == "int8" else "tflite-fp32",
                                "precision": precision, "runtime": "litert", "parent": path.name}},
                        [f"TFLite {precision} copied unchanged; it is its own reference"])


def _import_keras(path: Path, fmt: str, run_dir: Path, source: str, classes: list[str], input_size: int | None,
                  pre, trust_code: bool, calibration: Callable[[int], np.ndarray], **export_options) -> ImportResult:
    from edgecnn.importing.keras2 import IN_GRAPH_LAYERS, check_io, first_layer_class, load_tf_keras, wrap_tf_keras

    notes = []
    k3 = None
    if fmt == "keras3":
        from edgecnn.importing.keras3 import NotRebuildable, load_keras3, rebuild_in_tf_keras, same_outputs

        k3 = load_keras3(path, trust_code)
        size = check_io(k3, source, len(classes), input_size)
        try:
            model = rebuild_in_tf_keras(k3)
            diff = same_outputs(k3, model, size)
            notes.append(f"Keras 3 model rebuilt in tf_keras with the same weights (max |Δ| {diff:.1e} on random "
                         "inputs): pruning, clustering and QAT apply")
        except NotRebuildable as e:
            model = None
            notes.append(f"Keras 3 model not rebuilt in tf_keras ({e}): exported through Keras 3's own "
                         "model.export (SavedModel); post-training routes only")
    else:
        model = load_tf_keras(path, trust_code)
        size = check_io(model, source, len(classes), input_size)
    detected = first_layer_class(model if model is not None else k3)
    if detected in IN_GRAPH_LAYERS:
        from edgecnn.importing._preprocess import PRESETS

        if pre.name != "raw" or pre.bgr:
            log.warning("%s starts with a %s layer: its preprocessing is in the graph; --preprocess %s ignored",
                        source, detected, pre.name)
        notes.append(f"preprocessing detected: the model starts with a {detected} layer (inside the graph)")
        pre = PRESETS["raw"]
    record = pre.to_json(in_graph=True, detected=detected if detected in IN_GRAPH_LAYERS else None)
    if model is None:
        from edgecnn.importing.keras3 import export_keras3

        artifacts, diff = export_keras3(k3, size, pre, run_dir, calibration(size), **export_options)
        notes.append(f"model.onnx vs the Keras 3 model: max |Δprob| {diff:.1e} on calibration images")
        return ImportResult(fmt, "keras3-ptq", size, record, "model.onnx", artifacts, notes)
    from edgecnn._tf import keras

    wrapped = wrap_tf_keras(model, size, pre)
    with atomic_path(run_dir / "model.keras") as tmp:
        wrapped.save(str(tmp))
    keras.backend.clear_session()
    return ImportResult(fmt, "keras", size, record, "model.keras", {}, notes)

"""Every registered format round-trips: the exported file runs in its runtime and agrees with Keras."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgecnn._io import artifact_bytes
from edgecnn.arch import create_model
from edgecnn.errors import EdgecnnError
from edgecnn.export import ExportContext, export, list_formats
from edgecnn.export.manifest import add_artifact, init_manifest, read_manifest, verify_artifact
from edgecnn.runtime import load_runner

# Max |delta probability| allowed against Keras, per precision (documented in README "Formats").
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-3, "dynamic-int8": 0.05, "int8": 0.08}


@pytest.fixture(scope="module")
def model_and_data():
    rng = np.random.default_rng(0)
    model = create_model("dsconv", num_classes=3, input_size=32, alpha=0.25, depth=3)
    # Make the head confident enough that argmax comparisons mean something.
    w, b = model.get_layer("classifier").get_weights()
    model.get_layer("classifier").set_weights([w * 8, b])
    calib = rng.uniform(0, 255, (40, 32, 32, 3)).astype(np.float32)
    test = rng.uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    return model, calib, test


@pytest.mark.parametrize("fmt", [f.name for f in list_formats()])
def test_format_roundtrip(fmt, tmp_path, model_and_data):
    model, calib, test = model_and_data
    spec = next(f for f in list_formats() if f.name == fmt)
    path = export(fmt, model, ExportContext(tmp_path, calibration=calib))
    assert path.name == spec.filename and artifact_bytes(path) > 0
    runner = load_runner(path, threads=1)
    probs = runner(test)
    ref = model(test).numpy()
    assert probs.shape == ref.shape and probs.dtype == np.float32
    assert np.abs(probs - ref).max() <= TOLERANCE[spec.precision], fmt
    if fmt == "tflite-int8":
        assert runner.input.dtype == "int8" and runner.output.dtype == "int8"
    if fmt == "onnx":
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        assert proto.opset_import[0].version >= 17
        dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
        assert dim0.dim_param or dim0.dim_value == 0  # dynamic batch
        assert runner(test[:5]).shape == (5, 3)


def test_int8_needs_calibration(tmp_path, model_and_data):
    model, _, _ = model_and_data
    with pytest.raises(EdgecnnError, match="needs at least 10 calibration images; received 3"):
        export("tflite-int8", model, ExportContext(tmp_path, calibration=np.zeros((3, 32, 32, 3), np.float32)))
    assert not list(tmp_path.glob("*.tflite"))  # nothing half-written


def test_unknown_format(tmp_path, model_and_data):
    with pytest.raises(EdgecnnError, match="Did you mean 'onnx-int8'"):
        export("onnx_int8", model_and_data[0], ExportContext(tmp_path))


def test_manifest_hash_check(tmp_path, model_and_data):
    model, calib, _ = model_and_data
    export("tflite-fp32", model, ExportContext(tmp_path))
    init_manifest(tmp_path, name="t", labels=["a", "b", "c"])
    entry = add_artifact(tmp_path, "model.fp32.tflite", format="tflite-fp32", precision="fp32")
    assert verify_artifact(tmp_path, "model.fp32.tflite")["sha256"] == entry["sha256"]
    assert read_manifest(tmp_path)["versions"]["tensorflow"].startswith("2.21")
    with open(tmp_path / "model.fp32.tflite", "ab") as f:
        f.write(b"\0")
    with pytest.raises(EdgecnnError, match="does not match manifest.json"):
        verify_artifact(tmp_path, "model.fp32.tflite")


@pytest.mark.parametrize("int8_io", [True, False])
def test_shared_quantization_vectors_are_smaller_and_bit_identical(int8_io, model_and_data, tmp_path):
    from edgecnn._tf import tf
    from edgecnn.quantize import representative_dataset, share_quantization_vectors

    model, calib, test = model_and_data
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative_dataset(calib)
    if int8_io:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    raw = bytes(conv.convert())
    packed = share_quantization_vectors(raw)
    assert len(packed) < len(raw)
    (tmp_path / "raw.tflite").write_bytes(raw)
    (tmp_path / "packed.tflite").write_bytes(packed)
    a, b = load_runner(tmp_path / "raw.tflite", threads=1), load_runner(tmp_path / "packed.tflite", threads=1)
    assert np.array_equal(a(test), b(test))


def test_sharing_leaves_a_float_model_alone(model_and_data):
    from edgecnn._tf import tf
    from edgecnn.quantize import share_quantization_vectors

    raw = bytes(tf.lite.TFLiteConverter.from_keras_model(model_and_data[0]).convert())
    assert share_quantization_vectors(raw) == raw


def test_folder_artifact_is_hashed_file_by_file(tmp_path, model_and_data):
    """OpenVINO IR is a folder (model.xml + model.bin): the manifest hashes both and names the one that changed."""
    pytest.importorskip("openvino")
    model, calib, _ = model_and_data
    path = export("openvino", model, ExportContext(tmp_path, calibration=calib))
    init_manifest(tmp_path, name="t")
    entry = add_artifact(tmp_path, path.name, format="openvino", precision="fp32", runtime="openvino")
    assert set(entry["files"]) == {"model.xml", "model.bin"} and entry["bytes"] == artifact_bytes(path)
    assert verify_artifact(tmp_path, path.name)["sha256"] == entry["sha256"]
    (path / "model.bin").write_bytes((path / "model.bin").read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(EdgecnnError, match="model.bin is missing or changed"):
        verify_artifact(tmp_path, path.name, read_manifest(tmp_path))


def test_formats_export_after_their_parents():
    from edgecnn.export import format_depth, get_format

    assert format_depth(get_format("onnx")) == 0 < format_depth(get_format("onnx-int8"))
    assert format_depth(get_format("onnx-int8")) < format_depth(get_format("openvino-int8"))

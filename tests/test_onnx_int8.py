"""ONNX int8 that holds accuracy (issue 16): the graph passes, the ONNX-only chooser, and the digit acceptance run.

The fast tests build a small float ONNX by hand (NHWC RGB input -> Transpose -> Conv/Relu x2 -> pool
-> Gemm -> Softmax, as tf2onnx lays out edgecnn's models) so no TensorFlow is loaded; the slow one runs
the pipeline on scikit-learn's real handwritten digits with the default recipe's chooser and budgets.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))


def _float_onnx(path: Path, size: int = 12, classes: int = 4, seed: int = 0) -> Path:
    """A float32 ONNX classifier with edgecnn's input contract (NHWC RGB 0-255, input 'image')."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.02, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)
    wf = rng.normal(0, 0.5, (8, classes)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w1, "w1"), (np.zeros(8, np.float32), "b1"), (w2, "w2"), (np.zeros(8, np.float32), "b2"),
        (wf, "wf"), (np.zeros(classes, np.float32), "bf"), (np.array([0.0], np.float32), "lo"),
        (np.array([6.0], np.float32), "hi")]]
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6_1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gp"], name="pool"),
        helper.make_node("Flatten", ["gp"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="classifier"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            ["N", size, size, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """(float ONNX, calibration, val images, val labels = the float model's own top-1 on half, shuffled on half)."""
    import onnxruntime as ort

    path = _float_onnx(tmp_path_factory.mktemp("onnx") / "model.onnx")
    rng = np.random.default_rng(1)
    # smooth images (blobs) rather than white noise, so classes are not decided by one pixel
    base = rng.uniform(0, 255, (100, 3, 3, 3)).astype(np.float32)
    images = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)
    probs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": images[60:]})[0]
    labels = probs.argmax(1)
    return path, images[:60], images[60:], labels


def test_onnx_float_ops_counts_heavy_ops_left_float(tiny_onnx, tmp_path):
    from edgecnn.quantize import quantize_onnx
    from edgecnn.quantize.onnx_graph import onnx_end_nodes, onnx_float_ops

    src, cal, _, _ = tiny_onnx
    fp = onnx_float_ops(src)
    assert fp["heavy_float"] == 3 and fp["heavy_int8"] == 0  # 2 Conv + Gemm
    q = quantize_onnx(src, tmp_path / "q.onnx", cal, per_channel=True)
    ops = onnx_float_ops(q)
    assert ops["heavy_float"] == 0 and ops["heavy_int8"] == 3, ops
    assert onnx_end_nodes(src) == ["to_nchw", "conv1", "relu6_1", "classifier", "softmax"]
    ends = quantize_onnx(src, tmp_path / "e.onnx", cal, exclude_nodes=onnx_end_nodes(src))
    assert onnx_float_ops(ends)["heavy_float"] == 2  # the first conv and the classifier stay float


@pytest.mark.parametrize("method, rtol", [("minmax", 0.0), ("percentile", 0.05)])
def test_calibration_in_strides_matches_one_pass(tiny_onnx, tmp_path, monkeypatch, method, rtol):
    """onnxruntime is fed CALIBRATION_STRIDE images at a time (its calibrators hold every tensor of every
    image fed at once) and merges: min/max ranges are exactly those of one pass, percentile ones close."""
    import onnx
    from onnx import numpy_helper

    from edgecnn.quantize import calibration, quantize_onnx

    src, cal, _, _ = tiny_onnx
    assert calibration.CalibrationReader(cal, "image").stride() == 15       # 60 images: 4 passes of 15

    def scales(path):
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
                if i.name.endswith("_scale")}

    strided = scales(quantize_onnx(src, tmp_path / "strided.onnx", cal, method=method))
    monkeypatch.setattr(calibration, "CALIBRATION_STRIDE", len(cal))
    assert calibration.CalibrationReader(cal, "image").stride() == len(cal)
    whole = scales(quantize_onnx(src, tmp_path / "whole.onnx", cal, method=method))
    assert strided.keys() == whole.keys() and len(whole) > 4
    for name in whole:
        np.testing.assert_allclose(strided[name], whole[name], rtol=rtol, err_msg=name)


def test_drop_clips_before_quantize_only_where_the_range_is_inside(tmp_path):
    import onnx
    from onnx import helper, numpy_helper

    from edgecnn.quantize.onnx_graph import drop_clips_before_quantize

    def graph(scale: float):
        inits = [numpy_helper.from_array(np.array(v, dt), n) for v, dt, n in [
            (0.0, np.float32, "lo"), (6.0, np.float32, "hi"), (scale, np.float32, "s"), (0, np.uint8, "zp")]]
        nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["c"], name="clip"),
                 helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["q"], name="q"),
                 helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")]
        vi = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [4])  # noqa: E731
        return helper.make_model(helper.make_graph(nodes, "g", [vi("x")], [vi("y")], inits))

    inside = graph(6.0 / 255)  # the quantiser covers [0, 6]: the Clip adds nothing
    assert drop_clips_before_quantize(inside) == 1
    assert [n.op_type for n in inside.graph.node] == ["QuantizeLinear", "DequantizeLinear"]
    wider = graph(12.0 / 255)  # the quantiser reaches 12: the Clip at 6 still changes values
    assert drop_clips_before_quantize(wider) == 0


def test_strip_qdq_recovers_the_encoded_ranges():
    import onnx
    from onnx import helper, numpy_helper

    from edgecnn.quantize.onnx_qat import strip_qdq

    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(10, np.uint8), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
             helper.make_node("Relu", ["dq"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s", "zp"], ["y"])]
    vi = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [4])  # noqa: E731
    model, ranges = strip_qdq(helper.make_model(helper.make_graph(nodes, "g", [vi("x")], [vi("y")], inits)))
    ops = [(n.op_type, list(n.input)) for n in model.graph.node]
    assert ops == [("Relu", ["x"]), ("Identity", ["r"])]  # the output keeps its name through an Identity
    assert ranges["x"] == pytest.approx((-0.5, 12.25))
    # after a Relu the range starts at 0: onnxruntime drops the Relu before a QuantizeLinear, trusting the range
    assert ranges["r"] == pytest.approx((0.0, 12.25))
    assert not model.graph.initializer  # the pairs' scales and zero points went with them


def test_choose_onnx_runs_the_onnx_routes_on_a_file_alone(tiny_onnx, tmp_path):
    from edgecnn.compress.chooser import choose_onnx

    src, cal, vx, vy = tiny_onnx
    r = choose_onnx(src, vx, vy, cal, tmp_path / "work", routes=["onnx-int8-minmax", "onnx-int8-ends-float",
                                                                   "onnx-int8-mixed"],
                    exhaustive=True, runs=2, warmup=1, max_accuracy_drop=0.05)
    by = {c.route: c for c in r.candidates}
    assert set(by) == {"onnx-int8-minmax", "onnx-int8-ends-float", "onnx-int8-mixed"}, r.skipped
    assert all(c.error is None and c.agreement is not None for c in by.values())
    assert by["onnx-int8-minmax"].float_heavy_ops == 0
    assert by["onnx-int8-ends-float"].float_heavy_ops == 2
    assert by["onnx-int8-mixed"].notes["rounds"]  # the greedy rounds are recorded
    assert r.float_accuracy == 1.0  # drops are measured against the float ONNX's own predictions
    assert r.chosen is None or r.chosen.within_budget
    js = r.to_json()["candidates"][0]
    assert "float_heavy_ops" in js and "ops" in js["notes"]
    with pytest.raises(EdgecnnError, match="need the Keras model"):
        choose_onnx(src, vx, vy, cal, tmp_path / "w2", routes=["tflite-int8"])
    with pytest.raises(EdgecnnError, match="not found"):
        choose_onnx(tmp_path / "missing.onnx", vx, vy, cal, tmp_path / "w3")


def test_nncf_accuracy_control_route_keeps_the_budget(tiny_onnx, tmp_path):
    from edgecnn.compress.chooser import choose_onnx

    src, cal, vx, vy = tiny_onnx
    r = choose_onnx(src, vx, vy, cal, tmp_path / "work", routes=["onnx-int8-nncf"], runs=0,
                    max_accuracy_drop=0.0)
    (c,) = r.candidates
    assert c.error is None, c.error
    assert c.drop <= 0.0 + 1e-9 and c.notes["max_drop"] == 0.0
    assert c.float_heavy_ops is not None


@pytest.mark.slow
def test_digits_int8_tflite_and_onnx_meet_the_default_budgets(tmp_path):
    """Issue 16's acceptance, small: real grayscale digits through the default recipe's chooser settings."""
    from digits import make_digits_folder

    data = make_digits_folder(tmp_path / "digits", split=True, per_class=180)
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "edgecnn.cli", "run", str(ROOT / "tests/recipes/digits.yaml"),
                        "--data", str(data), "--output", str(out)], capture_output=True, text=True, timeout=1500,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    report = json.loads((out / "report.json").read_text())
    checks = [c for c in report["budgets"]["checks"] if c["artifact"] in ("model.int8.tflite", "model.int8.onnx")]
    assert {c["artifact"] for c in checks} == {"model.int8.tflite", "model.int8.onnx"}
    assert all(c["ok"] for c in checks), [c["title"] + f" measured {c['measured']}" for c in checks if not c["ok"]]
    compress = json.loads((out / "compress.json").read_text())
    picks = compress["picks"]
    assert picks["tflite-int8"]["within_budget"] and picks["onnx-int8"]["within_budget"], picks
    onnx_cands = compress["runtimes"]["onnxruntime"]["candidates"]
    assert all("float_heavy_ops" in c for c in onnx_cands)

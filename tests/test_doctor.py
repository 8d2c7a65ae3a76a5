"""`edgecnn doctor`: where int8 error enters (per layer), where int8 time goes (per op), and the CLI's errors.

The model is built with onnx.helper in a second, no training: a small conv net whose middle conv has
one output channel with huge weights (on an input channel that is always 0, so the float model does
not care). Per-tensor int8 weights give every channel that channel's step, the others round to 0,
and agreement collapses; keeping that one conv float restores it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError

ROOT = Path(__file__).resolve().parents[1]
SIZE, CLASSES = 64, 4


def _collapse_model(path: Path, images: np.ndarray | None = None, seed: int = 0) -> None:
    """NHWC 0-255 -> conv1 -> relu -> conv2 (one huge channel) -> relu -> conv3 -> GAP -> Gemm -> softmax.

    With ``images``, the classifier reads the four most varying pooled features, standardised over
    them, so every class wins on some images (a random classifier picks one class for all).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c1, c2 = 16, 32
    w1, b1 = rng.normal(0, 0.3, (c1, 3, 3, 3)), rng.normal(0, 0.1, c1)
    w1[0], b1[0] = 0.0, -1.0                       # input channel 0 of conv2 is always 0 after the Relu
    w2, b2 = rng.normal(0, 1 / np.sqrt(c1 * 9), (c2, c1, 3, 3)), rng.normal(0, 0.1, c2)
    w2[0, 0] = 1000.0                              # the huge channel, reading that dead input
    w3, b3 = rng.normal(0, 1 / np.sqrt(c2 * 9), (c2, c2, 3, 3)), rng.normal(0, 0.1, c2)
    wg, bg = np.zeros((c2, CLASSES)), np.zeros(CLASSES)
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, CLASSES])]
    if images is None:
        outputs.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, [None, c2]))
    else:
        import onnxruntime as ort

        _collapse_model(path, None, seed)
        feat = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["flat"], {"image": images})[0]
        mu, sd = feat.mean(0).astype(np.float64), feat.std(0).astype(np.float64)
        live = mu > 0.1 * mu.max()
        for k, c in enumerate(np.argsort(-np.where(live, sd / (np.abs(mu) + 1e-9), -1))[:CLASSES]):
            wg[c, k], bg[k] = 1.0 / sd[c], -mu[c] / sd[c]
    node = helper.make_node
    nodes = [node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
             node("Mul", ["nchw", "inv255"], ["x"], name="scale"),
             node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             node("Relu", ["c1"], ["r1"], name="relu1"),
             node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             node("Relu", ["c2"], ["r2"], name="relu2"),
             node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], name="conv3"),
             node("Relu", ["c3"], ["r3"], name="relu3"),
             node("GlobalAveragePool", ["r3"], ["gap"], name="gap"),
             node("Flatten", ["gap"], ["flat"], name="flatten"),
             node("Gemm", ["flat", "wg", "bg"], ["logits"], name="classifier"),
             node("Softmax", ["logits"], ["probs"], axis=1, name="softmax")]
    inits = [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in
             (("inv255", 1 / 255), ("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2), ("w3", w3), ("b3", b3),
              ("wg", wg), ("bg", bg))]
    graph = helper.make_graph(nodes, "collapse", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                [None, SIZE, SIZE, 3])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _images(n: int, seed: int = 1) -> np.ndarray:
    """Stripes of random frequency, angle and colour: pooled features that differ from image to image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    out = np.empty((n, SIZE, SIZE, 3), np.float32)
    for i in range(n):
        f, a = rng.uniform(0.05, 0.8), rng.uniform(0, np.pi)
        wave = 0.5 + 0.5 * np.sin(f * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6.3))
        img = rng.dirichlet([0.3, 0.3, 0.3]) * 255 * (0.3 + 0.7 * wave[..., None])
        out[i] = np.clip(img + rng.normal(0, 8, img.shape), 0, 255)
    return out


@pytest.fixture(scope="module")
def collapse_run(tmp_path_factory):
    """A run directory with model.onnx and its per-tensor model.int8.onnx (min/max, 8-bit weights)."""
    from edgecnn.quantize import quantize_onnx

    run = tmp_path_factory.mktemp("doctor") / "run"
    run.mkdir()
    images = _images(64)
    _collapse_model(run / "model.onnx", images)
    quantize_onnx(run / "model.onnx", run / "model.int8.onnx", images[:32], per_channel=False, reduce_range=False)
    (run / "manifest.json").write_text(json.dumps({"name": "collapse", "artifacts": {}}))
    return run, images


def _agreement(a: Path, b: Path, images: np.ndarray, disabled: tuple[str, ...] = ()) -> float:
    import onnxruntime as ort

    def run(p: Path) -> np.ndarray:
        s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled))
        return s.run(None, {"image": images})[0]

    return float(np.mean(run(a).argmax(1) == run(b).argmax(1)))


@pytest.fixture(scope="module")
def diagnosis(collapse_run):
    """The doctor's per-layer diagnosis of the collapse (no profile), which writes RUN/doctor.json."""
    from edgecnn.evaluate.doctor import diagnose

    run, images = collapse_run
    return diagnose(run, "model.int8.onnx", runtime="onnxruntime", images=images, profile=False)


def test_the_doctor_names_the_layer_whose_repair_restores_agreement(collapse_run, diagnosis, tmp_path):
    from edgecnn.evaluate.doctor import DOCTOR_JSON, format_diagnosis
    from edgecnn.quantize import quantize_onnx

    run, images = collapse_run
    d = diagnosis
    art = d["artifacts"]["model.int8.onnx"]
    assert art["runtimes"]["onnxruntime"]["agreement"] < 0.6           # the collapse
    top3 = art["top_layers"][:3]
    assert "conv2" in [r["node"] for r in top3]
    culprit = next(r for r in top3 if r["node"] == "conv2")
    assert culprit["weights"] == "per-tensor" and culprit["weight_sqnr_db"] < 20 and culprit["weight_dead_channels"]
    assert art["cause"]["node"] == "conv2"
    assert "enters at conv2" in art["verdicts"][0] and "per-channel" in art["verdicts"][0]
    text = format_diagnosis(d)
    assert "conv2" in text and "per-tensor" in text
    assert json.loads((run / DOCTOR_JSON).read_text())["artifacts"]["model.int8.onnx"]["top_layers"]

    # the repair the doctor points at: that layer float, everything else as before
    fixed = tmp_path / "model.int8-fixed.onnx"
    quantize_onnx(run / "model.onnx", fixed, images[:32], per_channel=False, reduce_range=False,
                  exclude_nodes=culprit["nodes"])
    # onnxruntime's WeightBiasQuantization would quantise the float conv again (per-tensor) at load
    assert _agreement(run / "model.onnx", fixed, images, disabled=("WeightBiasQuantization",)) >= 0.99
    from edgecnn.evaluate.doctor import ort_requantised

    assert ort_requantised(fixed) == ["conv2"]
    assert ort_requantised(run / "model.int8.onnx") == []


def test_per_op_times_add_up_to_the_end_to_end_time(collapse_run):
    """onnxruntime's per-op kernel times sum to within 15 % of the wall-clock time of the same runs."""
    from edgecnn.evaluate.doctor import diagnose

    run, images = collapse_run
    d = diagnose(run, "model.int8.onnx", runtime="onnxruntime", images=images[:16], write=False)
    m = d["artifacts"]["model.int8.onnx"]["runtimes"]["onnxruntime"]
    for prec in ("int8", "float"):
        p = m["profile"][prec]
        assert abs(p["total_us"] / p["end_to_end_us"] - 1) <= 0.15, (prec, p["total_us"], p["end_to_end_us"])
        assert p["op_types"] and set(p["precision_share"]) <= {"int8", "float", "qdq", "layout"}
    assert m["profile"]["int8"]["precision_share"].get("int8", 0) > 0.5     # QLinearConv ran
    assert m["latency"]["int8_p50_ms"] > 0 and m["latency"]["ratio"] > 0
    assert any("at 1 thread" in v for v in d["artifacts"]["model.int8.onnx"]["verdicts"])


def test_doctor_errors(collapse_run, tmp_path):
    from edgecnn.evaluate.doctor import diagnose

    run, images = collapse_run
    with pytest.raises(EdgecnnError, match="not a run directory"):
        diagnose(tmp_path, images=images)
    with pytest.raises(EdgecnnError, match="float artifact"):
        diagnose(run, "model.onnx", images=images)
    with pytest.raises(EdgecnnError, match="unknown artifact.*model.int8.onnx"):
        diagnose(run, "model.int8.onxx", images=images)
    with pytest.raises(EdgecnnError, match="does not run"):
        diagnose(run, "model.int8.onnx", runtime="litert", images=images)


@pytest.mark.parametrize("args, message", [
    (["doctor", "{tmp}"], "is not a run directory"),
    (["doctor", "{run}", "model.onnx"], "is a float artifact"),
])
def test_cli_errors_are_one_line_and_exit_2(collapse_run, tmp_path, args, message):
    run, _ = collapse_run
    argv = [a.format(tmp=tmp_path, run=run) for a in args]
    p = subprocess.run([sys.executable, "-m", "edgecnn.cli", *argv], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
    assert len([line for line in p.stderr.splitlines() if line.startswith("error:")]) == 1


def test_report_section_renders_doctor_json(collapse_run, diagnosis, tmp_path):
    from edgecnn.report import ReportContext, RunFiles
    from edgecnn.report.task_sections.doctor import doctor_section

    run, _ = collapse_run
    html = doctor_section(ReportContext(RunFiles(dir=run, report={"artifacts": {}}), tmp_path))
    assert html and "conv2" in html and "per-tensor" in html
    assert doctor_section(ReportContext(RunFiles(dir=tmp_path, report={"artifacts": {}}), tmp_path)) is None

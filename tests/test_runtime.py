"""The runtime registry and the OpenVINO runtime: every runtime listed, cheap to list, and OpenVINO
agreeing with onnxruntime on the same ONNX file (or skipped with the reason it cannot run here)."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgecnn.runtime as runtime_pkg
from edgecnn.errors import EdgecnnError
from edgecnn.runtime import get_runtime, list_runtimes, load_runner, registry, runtime_names, runtimes_for

HWC = (16, 16, 3)
CLASSES = 5


def _tiny_onnx(path: Path, seed: int = 0) -> Path:
    """NHWC pixels -> Transpose -> Conv 3x3 -> ReLU -> GlobalAveragePool -> Flatten -> Gemm -> Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.05).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b")
    fc = numpy_helper.from_array((rng.standard_normal((8, CLASSES)) * 0.5).astype(np.float32), "fc")
    fcb = numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fcb")
    scale = numpy_helper.from_array(np.array(1 / 255, np.float32), "scale")
    nodes = [
        helper.make_node("Mul", ["image", "scale"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *HWC])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=[w, b, fc, fcb, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 255, (n, *HWC)).astype(np.float32)


def _require(name: str) -> None:
    ok, why = get_runtime(name).available()
    if not ok:
        pytest.skip(f"{name} cannot run here: {why}")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    return _tiny_onnx(tmp_path_factory.mktemp("rt") / "model.onnx")


# ------------------------------------------------------------------ the registry


def test_every_runtime_module_is_registered():
    modules = {m.name for m in pkgutil.iter_modules(runtime_pkg.__path__) if m.name.endswith("_runner")}
    specs = list_runtimes()
    assert {s.runner.__module__.rsplit(".", 1)[1] for s in specs} == modules
    assert {"keras", "litert", "onnxruntime", "openvino"} <= set(runtime_names())
    assert runtime_names() == tuple(s.name for s in specs)
    for s in specs:
        assert s.runner.backend == s.name
        assert s.suffixes and set(s.default_for) <= set(s.suffixes)
        assert s.version() is not None, f"{s.package} should be installed in the test environment"


def test_each_suffix_has_exactly_one_default():
    for suffix in {x for s in list_runtimes() for x in s.suffixes}:
        defaults = [s.name for s in list_runtimes() if suffix in s.default_for]
        assert len(defaults) == 1, (suffix, defaults)
        assert runtimes_for(f"model{suffix}")[0].name == defaults[0]


def test_runtimes_for_puts_the_default_first():
    # the arm64 runtimes (emulated, opt-in) and tflm run int8 files only
    assert [r.name for r in runtimes_for("model.int8.onnx")] == ["onnxruntime", "onnxruntime-arm64", "openvino"]
    assert [r.name for r in runtimes_for("model.int8.tflite")] == ["litert", "litert-arm64", "tflm"]
    assert [r.name for r in runtimes_for("model.openvino/model.xml")] == ["openvino"]
    assert runtimes_for("model.pt") == []


def test_listing_runtimes_imports_no_runtime_package():
    code = ("import sys; import edgecnn.runtime as r; names = r.runtime_names(); "
            "[s.version() for s in r.list_runtimes()]; "
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'onnxruntime', 'openvino', 'ai_edge_litert') "
            "if m in sys.modules]; print(','.join(names)); assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ",".join(runtime_names())


def test_unknown_runtime_suggests_the_closest_name():
    with pytest.raises(EdgecnnError, match=r"unknown runtime 'openvnio'\. Did you mean 'openvino'\?"):
        get_runtime("openvnio")


def test_a_runtime_that_does_not_run_the_file_is_one_clear_error(tmp_path):
    path = tmp_path / "model.int8.tflite"
    path.write_bytes(b"TFL3")
    with pytest.raises(EdgecnnError) as e:
        load_runner(path, runtime="onnxruntime")
    msg = str(e.value)
    assert "runtime 'onnxruntime' cannot run 'model.int8.tflite'" in msg and "Runtimes for this file: litert" in msg


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(EdgecnnError, match="artifact not found"):
        load_runner(tmp_path / "nope.onnx")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(EdgecnnError, match=r"no runtime runs 'model.pt'.*\.onnx"):
        load_runner(tmp_path / "model.pt")


def test_unknown_option_is_refused(tiny_onnx):
    with pytest.raises(EdgecnnError, match=r"runtime 'onnxruntime' has no option 'num_streams'"):
        load_runner(tiny_onnx, runtime="onnxruntime", options={"num_streams": 2})


def test_an_unavailable_runtime_is_refused_with_its_reason(tiny_onnx, monkeypatch):
    monkeypatch.setitem(registry._availability, "openvino", (False, "no CPU plugin here"))
    assert get_runtime("openvino").available() == (False, "no CPU plugin here")
    with pytest.raises(EdgecnnError, match="runtime 'openvino' is not available on this machine: no CPU plugin here"):
        load_runner(tiny_onnx, runtime="openvino")


def test_a_missing_package_is_unavailable_not_an_import_error():
    spec = get_runtime("onnxruntime")
    fake = registry.RuntimeSpec(name="fake", suffixes=(".fake",), default_for=(".fake",), package="no-such-pkg",
                                module="no_such_module_xyz", runner=spec.runner)
    ok, why = fake._probe()
    assert not ok and "no-such-pkg is not installed" in why


# ------------------------------------------------------------------ OpenVINO


def test_openvino_agrees_with_onnxruntime(tiny_onnx):
    _require("openvino")
    x = _images()
    ort = load_runner(tiny_onnx, threads=1)
    ov = load_runner(tiny_onnx, threads=1, runtime="openvino")
    assert ort.backend == "onnxruntime" and ov.backend == "openvino"
    assert ov.input.shape == (None, *HWC) and ov.output.shape == (None, CLASSES)
    assert ov.config["PERFORMANCE_HINT"] == "LATENCY" and ov.config["INFERENCE_NUM_THREADS"] == 1
    got, want = ov(x), ort(x)
    assert got.shape == (len(x), CLASSES) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(ov(x[0]), want[:1], atol=1e-4)    # one HWC image is a batch of one
    with pytest.raises(EdgecnnError, match="input must have shape"):
        ov(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(EdgecnnError, match="input must have shape"):  # every output: the same check
        ort.predict_outputs(np.zeros((1, 8, 8, 3), np.float32))


def _two_output_onnx(path: Path) -> Path:
    """NHWC pixels -> ``map`` (N, H, W, 1), the mean over channels / 255, then ``score`` (N, 1), the map's max:
    an anomaly model's outputs, the map first (converters do not keep a model's own order)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Mul", ["image", "scale"], ["scaled"]),
        helper.make_node("ReduceMean", ["scaled"], ["map"], axes=[3], keepdims=1),
        helper.make_node("ReduceMax", ["map"], ["score"], axes=[1, 2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *HWC])],
        [helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", *HWC[:2], 1]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=[numpy_helper.from_array(np.array(1 / 255, np.float32), "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_runner_declares_every_output_in_the_order_it_returns_them(tmp_path, runtime):
    _require(runtime)
    runner = load_runner(_two_output_onnx(tmp_path / "two.onnx"), threads=1, runtime=runtime)
    assert [(o.name, o.shape, o.dtype) for o in runner.outputs] == [
        ("map", (None, *HWC[:2], 1), "float32"), ("score", (None, 1), "float32")]
    assert runner.output == runner.outputs[0] and runner.inputs == (runner.input,)
    x = _images(3)
    amap, score = runner.predict_outputs(x)
    want = x.mean(-1, keepdims=True) / 255
    np.testing.assert_allclose(amap, want, atol=1e-5)
    np.testing.assert_allclose(score, want.max(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(runner(x), amap, atol=1e-6)            # __call__: the primary, the first
    with pytest.raises(EdgecnnError, match="input must have shape"):
        runner.predict_outputs(np.zeros((1, 8, 8, 3), np.float32))


def test_a_runner_that_declares_only_input_and_output_still_has_inputs_and_outputs():
    """The base class's defaults: a runner written before ``outputs`` existed keeps working."""
    from edgecnn.runtime import Runner, TensorSpec

    class Old(Runner):
        def __init__(self):
            super().__init__("old.bin")
            self.input = TensorSpec("image", (None, *HWC), "float32")
            self.output = TensorSpec("probs", (None, CLASSES), "float32")

        def _predict(self, images):
            return np.full((len(images), CLASSES), 1 / CLASSES, np.float32)

    old = Old()
    assert old.inputs == (old.input,) and old.outputs == (old.output,)
    [probs] = old.predict_outputs(_images(2))
    assert probs.shape == (2, CLASSES)


def test_openvino_runs_the_qdq_int8_onnx(tiny_onnx, tmp_path):
    _require("openvino")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": img[None]} for img in _images(16)])

        def get_next(self):
            return next(self.batches, None)

    int8 = tmp_path / "model.int8.onnx"
    quantize_static(str(tiny_onnx), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
    x = _images(8)
    ref = load_runner(tiny_onnx, threads=1)(x)
    got = load_runner(int8, threads=1, runtime="openvino")(x)
    ort_int8 = load_runner(int8, threads=1)(x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=0.02)    # the output is quantised in steps of 1/255
    # int8 kernels differ between runtimes; both must stay close to the float model.
    assert np.abs(got - ref).max() < 0.05 and np.abs(ort_int8 - ref).max() < 0.05


def test_openvino_ir_folder_and_xml(tiny_onnx, tmp_path):
    _require("openvino")
    from edgecnn.export.openvino import onnx_to_openvino_ir

    folder = onnx_to_openvino_ir(tiny_onnx, tmp_path / "model.openvino")
    xml = folder / "model.xml"
    assert folder == tmp_path / "model.openvino" and xml.with_suffix(".bin").is_file()
    x = _images(3)
    want = load_runner(tiny_onnx, threads=1)(x)
    by_folder = load_runner(tmp_path / "model.openvino", threads=1)      # the IR's default runtime is OpenVINO
    assert by_folder.backend == "openvino"
    np.testing.assert_allclose(by_folder(x), want, atol=1e-4)
    np.testing.assert_allclose(load_runner(xml, threads=1)(x), want, atol=1e-4)
    (tmp_path / "empty.openvino").mkdir()
    with pytest.raises(EdgecnnError, match="holds no model.xml"):
        load_runner(tmp_path / "empty.openvino")


def test_server_options_apply_only_to_servers(tiny_onnx):
    spec = get_runtime("onnxruntime")
    assert spec.options["spinning"] is True and spec.server_options["spinning"] is False
    assert spec.platform == "onnxruntime_onnx" and spec.thread_safe
    assert not get_runtime("litert").thread_safe and get_runtime("keras").platform is None
    assert load_runner(tiny_onnx, threads=1, server=True).backend == "onnxruntime"


# ------------------------------------------------------------------ evaluation in every runtime


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from serve_fixtures import build_run

    return build_run(tmp_path_factory.mktemp("evalrun"))


def _evaluate(run_dir: Path, **evaluate) -> dict:
    from edgecnn.config import EvaluateConfig, Recipe
    from edgecnn.evaluate.run import evaluate_artifacts
    from serve_fixtures import LABELS

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (12, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, len(LABELS), 12)
    recipe = Recipe(name="tiny", evaluate=EvaluateConfig(warmup=1, runs=10, threads=[1], top_k=2, **evaluate))
    return evaluate_artifacts(recipe, run_dir, images, labels, LABELS)


def test_every_artifact_is_evaluated_in_every_runtime_that_runs_it(tiny_run):
    report = _evaluate(tiny_run)
    arts = report["artifacts"]
    expected = {"model.keras", "model.onnx", "model.fp32.tflite"} | {
        f"model.onnx@{r.name}" for r in runtimes_for("model.onnx")[1:]}
    assert set(arts) == expected
    assert arts["model.onnx"]["runtime"] == "onnxruntime" and arts["model.fp32.tflite"]["runtime"] == "litert"
    for key, a in arts.items():
        assert a["file"] == key.split("@")[0]
    ov = arts["model.onnx@openvino"]
    assert ov["runtime"] == "openvino" and ov["file"] == "model.onnx"
    if get_runtime("openvino").available()[0]:
        assert ov["sha256"] == arts["model.onnx"]["sha256"] and set(ov["latency"]) == {"1"}
        assert ov["metrics"]["agreement"] == 1.0 and ov["metrics"]["max_abs_prob_delta"] < 1e-4
    else:
        assert ov["skipped"] and "metrics" not in ov
    assert set(report["runtimes"]) == set(runtime_names())


def test_evaluate_runtimes_selects_the_further_runtimes(tiny_run):
    assert not any("@" in k for k in _evaluate(tiny_run, runtimes=[])["artifacts"])
    assert not any("@" in k for k in _evaluate(tiny_run, runtimes=["litert"])["artifacts"])


def test_a_runtime_that_cannot_run_here_is_skipped_with_its_reason(tiny_run, monkeypatch):
    monkeypatch.setitem(registry._availability, "openvino", (False, "OpenVINO failed its smoke test"))
    arts = _evaluate(tiny_run, runtimes=["openvino"])["artifacts"]
    assert arts["model.onnx@openvino"] == {"file": "model.onnx", "runtime": "openvino", "format": "onnx",
                                           "precision": "fp32", "skipped": "OpenVINO failed its smoke test"}
    assert "metrics" in arts["model.onnx"]


def test_an_unknown_runtime_in_the_recipe_is_refused():
    from pydantic import ValidationError

    from edgecnn.config import EvaluateConfig

    with pytest.raises(ValidationError, match=r"unknown runtime\(s\) \['openvnio'\]"):
        EvaluateConfig(runtimes=["openvnio"])


def test_serving_and_gating_run_artifacts_without_importing_tensorflow(tiny_run):
    """What a runtime-only install (`pip install edgecnn[serve]`) runs must not import TensorFlow."""
    code = f"""
import sys
import edgecnn.cli, edgecnn.serve, edgecnn.evaluate.check, edgecnn.predict
from edgecnn.serve.repository import Repository
repo = Repository({str(tiny_run)!r}, threads=1)
state = repo.state("tiny")
assert sorted(state.versions) == ["model.fp32.tflite", "model.onnx"], state.versions
heavy = [m for m in ("tensorflow", "tf_keras", "keras", "tf2onnx", "tensorflow_model_optimization",
                     "matplotlib", "skimage") if m in sys.modules]
assert not heavy, heavy
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_crash_in_a_further_runtime_is_a_failure_not_a_skip(tiny_run, monkeypatch):
    """Only a RuntimeRefusal (cannot run here) is 'skipped'; an exception while running fails the run."""
    from edgecnn.evaluate.budgets import check_budgets
    from edgecnn.runtime.openvino_runner import OpenVINORunner

    if not get_runtime("openvino").available()[0]:
        pytest.skip("OpenVINO cannot run on this CPU")

    def broken(self, images):
        raise RuntimeError("simulated kernel crash")

    monkeypatch.setattr(OpenVINORunner, "_predict", broken)
    report = _evaluate(tiny_run, runtimes=["openvino"])
    ov = report["artifacts"]["model.onnx@openvino"]
    assert "skipped" not in ov and "metrics" not in ov
    assert ov["error"] == "RuntimeError: simulated kernel crash"
    assert report["errors"] == [{"artifact": "model.onnx@openvino", "runtime": "openvino",
                                 "error": "RuntimeError: simulated kernel crash"}]
    from edgecnn.budget_schema import parse_budget_targets

    targets = parse_budget_targets([{"name": "ov", "runtime": "openvino", "budgets": {"min_accuracy": 0.0}}])
    _, failing = check_budgets(report, targets)   # the budget on the failed runtime: not measured, failing
    assert [(f.artifact, f.verdict, f.ok) for f in failing] == [("model.onnx@openvino", "not measured", False)]

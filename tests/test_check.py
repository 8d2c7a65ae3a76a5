"""`edgecnn check`: exit codes 0/1/2, a slowed artifact caught against its baseline, JUnit/summary/JSON,
the noise-tolerant measurement protocol, and the gate end to end on a trained tiny run.

Most tests use run directories of small ONNX conv nets built with onnx.helper (no training, no
TensorFlow), so they run in seconds; the end-to-end test on a trained run is marked slow.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgecnn._io import sha256_file
from edgecnn.evaluate import check as check_mod
from edgecnn.evaluate.check import check
from edgecnn.evaluate.measure_protocol import (
    Measurement,
    MeasureOptions,
    Subject,
    build_conv_net,
    measure_group,
    paired_ratio,
    quantile_ci,
    spread_pct,
)
from edgecnn.export.manifest import add_artifact, init_manifest

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "recipes" / "tiny.yaml"

# Short windows: these tests check the logic, never a machine's speed (budgets are far from the figures).
QUICK = "measurement: {warmup_runs: 3, warmup_s: 0.02, window_runs: 10, window_s: 0.04, max_time_s: 2, min_rounds: 4}\n"


def make_run(path: Path, depth: int = 2, names=("model.onnx", "model.int8.onnx"), report: bool = True) -> Path:
    """A run directory of ONNX conv nets (``depth`` 3x3 convs at 16 channels, 24 px) with manifest.json
    and, optionally, a report.json whose accuracy figures are made up but hash-matched."""
    path.mkdir(parents=True, exist_ok=True)
    labels = ["crack", "good", "scratch", "spot"]
    init_manifest(path, name=path.name, model={"name": "conv_net", "input_size": 24, "num_classes": 4},
                  labels=labels, preprocessing={"input_range": [0, 255], "resize": [24, 24]})
    spec = {"name": "image", "shape": [None, 24, 24, 3], "dtype": "float32", "quantization": None}
    arts = {}
    for i, n in enumerate(names):
        build_conv_net(path / n, depth=depth, channels=16, size=24, seed=0)
        e = add_artifact(path, n, format="onnx", precision="fp32", runtime="onnxruntime", stage="export",
                         parent="model.keras", input=spec, output={**spec, "shape": [None, 4]})
        arts[n] = {"bytes": e["bytes"], "sha256": e["sha256"], "runtime": "onnxruntime",
                   "metrics": {"accuracy": 0.90 - 0.01 * i, "accuracy_ci95": [0.85, 0.94], "agreement": 0.99,
                               "n": 360}}
    if report:
        (path / "report.json").write_text(json.dumps({"artifacts": arts, "reference_accuracy": 0.905}))
    return path


def budgets(tmp_path: Path, body: str, name: str = "budgets.yaml") -> Path:
    p = tmp_path / name
    p.write_text("version: 1\n" + QUICK + "targets:\n" + body)
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "candidate")


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory) -> Path:
    """The same artifact names, each with 4x the convolutions: a measurably slower model."""
    return make_run(tmp_path_factory.mktemp("runs") / "slow", depth=8, names=("model.onnx",))


@pytest.fixture(scope="module")
def same_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "baseline")


def junit_of(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    cases = [c for s in suites for c in s.findall("testcase")]
    # counts agree on both levels and with the testcases (what CI systems read)
    for s in suites:
        tc = s.findall("testcase")
        assert int(s.get("tests")) == len(tc)
        assert int(s.get("failures")) == sum(c.find("failure") is not None for c in tc)
        assert int(s.get("errors")) == sum(c.find("error") is not None for c in tc)
        assert s.get("name") and float(s.get("time")) >= 0 and s.get("timestamp")
        for c in tc:
            assert c.get("classname") and c.get("name") and c.get("time") is not None
            for f in c.findall("failure") + c.findall("error"):
                assert f.get("message") and f.get("type")
    assert int(root.get("tests")) == len(cases)
    assert int(root.get("failures")) == sum(c.find("failure") is not None for c in cases)
    assert int(root.get("errors")) == sum(c.find("error") is not None for c in cases)
    return root


# ----------------------------------------------------------------------------------------------
# exit codes
def test_all_budgets_hold_exit_0(tmp_path, run):
    b = budgets(tmp_path, """\
  - name: pc-1thread
    artifacts: "model.*onnx"
    runtime: onnxruntime
    threads: 1
    budgets: {p50_ms: 5000, p95_ms: 5000, p99_ms: 5000, min_accuracy: 0.5, max_accuracy_drop: 0.2,
              min_agreement: 0.9, max_size_kb: 10000, max_peak_memory_mb: 100000}
  - name: batch4
    artifacts: model.onnx
    threads: 0
    batch: 4
    budgets: {p95_ms: 5000}
""")
    out = tmp_path / "out"
    result = check(run, b, junit=out / "check.xml", summary=out / "summary.md", json_out=out / "check.json")
    assert result.exit_code == 0 and result.verdict == "pass", result.error or [r.title for r in result.broken]
    assert len(result.results) == 2 * 8 + 1
    root = junit_of(out / "check.xml")
    assert root.get("tests") == "17" and root.get("failures") == "0" and root.get("errors") == "0"
    assert [s.get("name") for s in root] == ["edgecnn.check.pc-1thread", "edgecnn.check.batch4"]
    names = [c.get("name") for c in root.iter("testcase")]
    assert "model.onnx @1t: p95_ms" in names and "model.int8.onnx: min_accuracy" in names
    summary = (out / "summary.md").read_text()
    assert summary.startswith("## edgecnn check: ✅ PASS") and "17 of 17 budgets hold" in summary
    assert "| ✅ | `model.onnx` @1t | p95_ms |" in summary and "<details><summary>Measurements" in summary
    data = json.loads((out / "check.json").read_text())
    assert data["verdict"] == "pass" and data["exit_code"] == 0 and data["counts"]["budgets"] == 17
    # each artifact was measured in its own process, with threads, affinity and peak memory recorded
    ms = data["measurements"]
    assert len(ms) == 3 and len({m["pid"] for m in ms}) == 3
    assert {(m["threads"], m["batch"]) for m in ms} == {(1, 1), (os.cpu_count() and len(os.sched_getaffinity(0)), 4)}
    for m in ms:
        assert m["affinity"] and m["peak_rss_mb"] > 10 and len(m["windows"]) >= 3
        lo, hi = m["ci"]["p95_ms"]
        assert lo <= m["stats"]["p95_ms"] <= hi
    acc = next(r for r in data["results"] if r["budget"] == "max_accuracy_drop" and r["artifact"] == "model.int8.onnx")
    assert acc["measured"] == pytest.approx(0.905 - 0.89) and acc["line"] == 8


def test_broken_budget_exit_1_names_the_line(tmp_path, run):
    b = budgets(tmp_path, """\
  - name: size
    artifacts: "*"
    budgets:
      max_size_kb: 0.5
      min_accuracy: 0.895
""")
    result = check(run, b, junit=tmp_path / "c.xml", summary=tmp_path / "s.md")
    assert result.exit_code == 1 and result.verdict == "fail"
    broken = sorted((r.artifact, r.budget) for r in result.broken)
    assert broken == [("model.int8.onnx", "max_size_kb"), ("model.int8.onnx", "min_accuracy"),
                      ("model.onnx", "max_size_kb")]
    assert not result.measurements  # nothing needed timing: nothing was timed
    root = junit_of(tmp_path / "c.xml")
    assert root.get("tests") == "4" and root.get("failures") == "3"
    fail = next(c for c in root.iter("testcase") if c.get("name") == "model.int8.onnx: min_accuracy")
    msg = fail.find("failure").text
    assert msg.startswith(f"{b}:8: [size] model.int8.onnx: min_accuracy >= 0.895: BROKEN, measured 0.89")
    assert "❌ FAIL" in (tmp_path / "s.md").read_text() and "**3 broken**" in (tmp_path / "s.md").read_text()
    text = check_mod.format_text(result, github=True)
    assert f"::error file={b},line=7,title=budget broken::model.onnx: max_size_kb <= 0.5 KiB" in text
    assert text.endswith("check: FAIL, 3 of 4 budgets broken (exit 1)")


def test_slowed_artifact_is_caught_against_its_baseline(tmp_path, run, slow_run, same_run):
    body = """\
  - name: vs-main
    artifacts: model.onnx
    threads: 1
    budgets:
      max_slowdown_vs: {max_ratio: 1.5}
"""
    b = budgets(tmp_path, body)
    slow = check(slow_run, b, baseline=run, json_out=tmp_path / "slow.json")
    assert slow.exit_code == 1, slow.error
    [r] = slow.results
    assert r.budget == "max_slowdown_vs" and not r.ok and r.measured > 1.5 and r.ci[0] <= r.measured <= r.ci[1]
    same = check(same_run, b, baseline=run)
    assert same.exit_code == 0, same.error or same.results[0].message("b")
    assert 0.67 < same.results[0].measured < 1.5
    # interleaved: candidate and baseline each in their own long-lived process, same number of windows
    ms = json.loads((tmp_path / "slow.json").read_text())["measurements"]
    assert [m["role"].split(":")[0] for m in ms] == ["candidate", "baseline"]
    assert len(ms[0]["windows"]) == len(ms[1]["windows"]) >= 4 and ms[0]["pid"] != ms[1]["pid"]


def test_reference_units_and_baseline_path_in_the_file(tmp_path, run, same_run):
    rel = os.path.relpath(same_run, tmp_path)
    b = budgets(tmp_path, f"""\
  - name: ref
    artifacts: model.onnx
    budgets:
      p95_ref: 1000
      p50_ref: 0.000001
      max_slowdown_vs: {{baseline: {rel}, max_ratio: 2}}
""")
    result = check(run, b)
    assert result.exit_code == 1, result.error
    by = {r.budget: r for r in result.results}
    assert by["p95_ref"].ok and not by["p50_ref"].ok and by["max_slowdown_vs"].ok
    assert 0 < by["p50_ref"].measured < by["p95_ref"].measured < 1000
    assert "reference p50" in by["p95_ref"].detail
    roles = [m["role"].split(":")[0] for m in result.measurements]
    assert roles == ["candidate", "baseline", "reference"]  # one interleaved group, three processes


def broken_run(tmp_path: Path, run: Path, how: str) -> Path:
    r = tmp_path / "run"
    shutil.copytree(run, r)
    if how == "hash":
        data = bytearray((r / "model.onnx").read_bytes())
        data[-1] ^= 1
        (r / "model.onnx").write_bytes(bytes(data))
    elif how == "missing-artifact":
        (r / "model.onnx").unlink()
    elif how == "no-manifest":
        (r / "manifest.json").unlink()
    elif how == "no-report":
        (r / "report.json").unlink()
    elif how == "stale-report":
        rep = json.loads((r / "report.json").read_text())
        rep["artifacts"]["model.onnx"]["sha256"] = "0" * 64
        (r / "report.json").write_text(json.dumps(rep))
    return r


@pytest.mark.parametrize("how, body, fragment", [
    ("hash", "  - {name: a, artifacts: model.onnx, budgets: {max_size_kb: 100}}\n", "does not match manifest.json"),
    ("missing-artifact", "  - {name: a, budgets: {max_size_kb: 100}}\n", "listed in the manifest but missing"),
    ("no-manifest", "  - {name: a, budgets: {max_size_kb: 100}}\n", "no manifest.json in"),
    ("no-report", "  - {name: a, budgets: {min_accuracy: 0.5}}\n",
     "accuracy budgets need {run}/report.json, which does not exist. Run `edgecnn evaluate {run}` first"),
    ("stale-report", "  - {name: a, budgets: {min_agreement: 0.5}}\n", "report.json does not match the artifacts"),
    ("", "  - {name: a, artifacts: model.int8.tflite, budgets: {max_size_kb: 100}}\n",
     "budgets.yaml:4: target 'a' (artifacts ['model.int8.tflite'], runtime any) matches no artifact"),
    ("", "  - {name: a, runtime: litert, budgets: {max_size_kb: 100}}\n", "matches no artifact"),
    ("", "  - {name: a, budgets: {max_slowdown_vs: {max_ratio: 1.1}}}\n",
     "budgets.yaml:4: max_slowdown_vs has no baseline; add `baseline: DIR` to it or pass --baseline DIR"),
    ("", "  - {name: a, budgets: {max_slowdown_vs: {baseline: nowhere, max_ratio: 1.1}}}\n",
     "baseline run directory not found"),
    ("", "  - {name: a, budgets: {p95: 1}}\n", "budgets.yaml:4: unknown key 'p95'"),
])
def test_check_could_not_run_exit_2(tmp_path, run, how, body, fragment):
    r = broken_run(tmp_path, run, how)
    b = budgets(tmp_path, body)
    result = check(r, b, junit=tmp_path / "c.xml", summary=tmp_path / "s.md", json_out=tmp_path / "c.json")
    assert result.exit_code == 2 and result.verdict == "error"
    assert fragment.format(run=r) in result.error, result.error
    root = junit_of(tmp_path / "c.xml")
    assert root.get("errors") == "1"
    err = next(root.iter("error"))
    assert fragment.format(run=r) in err.text
    assert "⚠️ ERROR: the check could not run" in (tmp_path / "s.md").read_text()
    assert json.loads((tmp_path / "c.json").read_text())["exit_code"] == 2


def test_baseline_without_the_artifact_is_exit_2(tmp_path, run, slow_run):
    b = budgets(tmp_path, "  - {name: a, budgets: {max_slowdown_vs: {max_ratio: 1.1}}}\n")
    result = check(run, b, baseline=slow_run)  # slow_run has model.onnx only
    assert result.exit_code == 2 and "has no 'model.int8.onnx' to compare with" in result.error


def test_internal_error_is_exit_2_not_1(tmp_path, run, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(check_mod, "measure_group", boom)
    b = budgets(tmp_path, "  - {name: a, budgets: {p95_ms: 100}}\n")
    result = check(run, b)
    assert result.exit_code == 2 and "internal error in edgecnn check: RuntimeError: simulated bug" in result.error


def test_unstable_is_flagged_or_an_error(tmp_path, run):
    body = "  - {name: a, artifacts: model.onnx, budgets: {p95_ms: 5000}}\n"
    b = budgets(tmp_path, body)
    # a tolerance no real machine meets: the time cap ends the measurement, the verdict is still given
    impossible = {"tolerance_pct": 1e-9, "max_time_s": 0.3}
    result = check(run, b, measurement=impossible)
    assert result.exit_code == 0 and result.results[0].unstable
    assert any("did not stabilise" in w for w in result.warnings)  # beside a tail warning on a loaded machine
    result = check(run, b, measurement={**impossible, "unstable": "error"})
    assert result.exit_code == 2 and "too noisy for a verdict" in result.error
    assert check(run, b, measurement={"windows": 3}).exit_code == 2  # unknown override


def test_cli_exit_codes(tmp_path, run):
    """The process exit code itself (what CI sees), via `edgecnn check` (`python -m edgecnn.cli check`)."""
    env = {**os.environ, "GITHUB_ACTIONS": "false"}

    def run_check(b: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgecnn.cli", "check", str(run), "--budgets", str(b),
                               "--junit", str(tmp_path / "c.xml")], capture_output=True, text=True, env=env,
                              timeout=120)

    p = run_check(budgets(tmp_path, "  - {name: a, budgets: {max_size_kb: 1000}}\n", "ok.yaml"))
    assert p.returncode == 0 and "check: PASS, 2 budgets hold (exit 0)" in p.stdout, p.stdout + p.stderr
    p = run_check(budgets(tmp_path, "  - {name: a, budgets: {max_size_kb: 0.1}}\n", "bad.yaml"))
    assert p.returncode == 1 and "BROKEN" in p.stdout, p.stdout + p.stderr
    p = run_check(budgets(tmp_path, "  - {name: a, budgets: {max_size_kb: 2MB}}\n", "err.yaml"))
    assert p.returncode == 2 and "write max_size_kb: 2048" in p.stdout and "Traceback" not in p.stdout + p.stderr


# ----------------------------------------------------------------------------------------------
# the measurement protocol
def test_quantile_ci_and_spread():
    rng = np.random.default_rng(0)
    x = rng.exponential(1.0, 4000)
    lo, hi = quantile_ci(x, 95)
    assert lo < np.percentile(x, 95) < hi and lo < -np.log(0.05) < hi  # true p95 of Exp(1) is 2.996
    lo50, hi50 = quantile_ci(x, 50)
    assert (hi50 - lo50) < (hi - lo)  # the median is known better than the tail
    assert spread_pct([10, 10.5, 11]) == pytest.approx(10.0)


def _fake(windows: list[np.ndarray]) -> Measurement:
    return Measurement("x", "x", "onnxruntime", 1, 1, {}, {}, True, {}, [], len(windows), 0, 0, [], 0, 0, 0,
                       window_samples=windows)


def test_paired_ratio_cancels_drift():
    rng = np.random.default_rng(0)
    drift = [1.0, 1.3, 0.9, 1.6, 1.1, 1.0]  # the machine's speed changes between rounds
    a = _fake([rng.gamma(50, 0.02, 500) * 1.2 * d for d in drift])
    b = _fake([rng.gamma(50, 0.02, 500) * d for d in drift])
    r = paired_ratio(a, b)
    assert r["ratio"] == pytest.approx(1.2, rel=0.05) and r["ci"][0] < 1.2 < r["ci"][1] and r["ci"][0] > 1.1
    assert r["rounds"] == 6 and all(x == pytest.approx(1.2, rel=0.05) for x in r["per_round"])


def test_measuring_process_is_isolated_and_tf_free(tmp_path):
    path = build_conv_net(tmp_path / "m.onnx", depth=1, channels=8, size=16)
    opts = MeasureOptions(warmup_runs=2, warmup_s=0.01, window_runs=5, window_s=0.02, max_time_s=1, processes=1)
    [m] = measure_group([Subject("m", path, threads=1, batch=2)], opts)
    assert m.backend == "onnxruntime" and m.batch == 2 and m.threads == 1 and m.pid != os.getpid()
    assert m.peak_rss_mb >= m.load_rss_mb > 10 and m.used_windows == 3 and len(m.windows) >= 3
    assert all(w["runs"] >= 5 for w in m.windows)
    from edgecnn.evaluate.measure_protocol import MeasureProcess

    p = MeasureProcess(Subject("m", path), opts)
    try:
        assert p.info["tensorflow"] is False  # the child never imports TensorFlow
    finally:
        p.close()


def test_measuring_process_opens_the_named_runtime(tmp_path):
    path = build_conv_net(tmp_path / "m.onnx", depth=1, channels=8, size=16)
    with pytest.raises(check_mod.EdgecnnError, match="runtime 'litert' cannot run 'm.onnx'"):
        measure_group([Subject("m", path, runtime="litert")], MeasureOptions(max_time_s=1, processes=1))


def test_repetitions_in_fresh_processes_are_pooled(tmp_path):
    path = build_conv_net(tmp_path / "m.onnx", depth=1, channels=8, size=16)
    opts = MeasureOptions(warmup_runs=2, warmup_s=0.01, window_runs=5, window_s=0.02, max_time_s=1, processes=3)
    [m] = measure_group([Subject("m", path)], opts)
    assert m.used_windows == 9 and len(m.window_samples) == 9  # 3 windows from each of 3 processes
    assert m.stats["runs"] == sum(len(w) for w in m.window_samples)
    lo, hi = m.ci["p95_ms"]
    assert lo <= m.stats["p95_ms"] <= hi


def test_broken_artifact_in_child_is_an_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(check_mod.EdgecnnError, match="measuring bad"):
        measure_group([Subject("bad", bad)], MeasureOptions(max_time_s=1))


# ----------------------------------------------------------------------------------------------
# end to end on a trained tiny run (TFLite + ONNX, report.json from `edgecnn run`)
@pytest.mark.slow
def test_gate_end_to_end_on_a_tiny_run(tmp_path, tiny_run):
    out = tmp_path / "tiny"  # the budgets' relative baseline ("tiny") resolves beside budgets.yaml
    shutil.copytree(tiny_run, out)
    b = budgets(tmp_path, """\
  - name: litert-1thread
    artifacts: "*.tflite"
    runtime: litert
    threads: 1
    budgets: {p95_ms: 1000, p95_ref: 100, min_accuracy: 0.0, max_accuracy_drop: 0.5, min_agreement: 0.5,
              max_size_kb: 5000, max_peak_memory_mb: 4000}
  - name: ort-int8
    artifacts: model.int8.onnx
    runtime: onnxruntime
    budgets: {p99_ms: 1000, max_slowdown_vs: {baseline: tiny, max_ratio: 1.5}}
""")
    junit, summary, js = tmp_path / "check.xml", tmp_path / "summary.md", tmp_path / "check.json"
    cmd = [sys.executable, "-m", "edgecnn.cli", "check", str(out), "--budgets", str(b), "--junit", str(junit),
           "--summary", str(summary), "--json", str(js)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(js.read_text())
    tflites = sorted(n for n in (out / "manifest.json").read_text().split('"') if n.endswith(".tflite"))
    assert {r["artifact"] for r in data["results"] if r["target"] == "litert-1thread"} == set(tflites)
    assert {m["backend"] for m in data["measurements"]} == {"litert", "onnxruntime"}
    report = json.loads((out / "report.json").read_text())
    r = next(r for r in data["results"] if r["budget"] == "min_accuracy" and r["artifact"] == "model.int8.tflite")
    assert r["measured"] == report["artifacts"]["model.int8.tflite"]["metrics"]["accuracy"]
    root = junit_of(junit)
    assert int(root.get("tests")) == len(data["results"]) == 7 * len(tflites) + 2
    # the artifact changes after the evaluation: the accuracy figures no longer apply -> exit 2
    shutil.copy(out / "model.fp32.tflite", out / "model.int8.tflite")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "does not match manifest.json" in p.stdout, p.stdout
    assert sha256_file(out / "model.int8.tflite") != json.loads((out / "manifest.json").read_text())[
        "artifacts"]["model.int8.tflite"]["sha256"]


def test_an_artifact_whose_runtime_is_missing_is_left_out_with_a_warning(tmp_path, monkeypatch):
    """A serving install has no Keras: a target matching "*" checks the rest and says what it left out."""
    from edgecnn.runtime import registry

    run = make_run(tmp_path / "run", names=("model.onnx",))
    (run / "model.keras").write_bytes(b"stands in for the float model")
    add_artifact(run, "model.keras", format="keras", precision="fp32", runtime="keras", stage="train")
    monkeypatch.setitem(registry._availability, "keras", (False, "tf-keras is not installed"))
    b = budgets(tmp_path, """\
  - name: all
    artifacts: "*"
    budgets: {p95_ms: 10000}
""")
    result = check(run, b)
    assert result.exit_code == 0, result.error
    assert {r.artifact for r in result.results} == {"model.onnx"}
    assert any("model.keras" in w and "tf-keras is not installed" in w for w in result.warnings)
    only = budgets(tmp_path, """\
  - name: keras
    artifacts: model.keras
    budgets: {p95_ms: 10000}
""", name="only.yaml")
    result = check(run, only)
    assert result.exit_code == 2 and "whose runtime cannot run on this machine" in result.error


def test_a_figure_nothing_measured_fails_unless_the_target_is_optional(tmp_path, run):
    """One rule with the evaluate stage: a budget on a figure nothing measured (here the TFLite Micro arena of
    an ONNX file) is "not measured" and fails with exit 1, unless its target says optional: true."""
    body = """\
  - name: mcu
    artifacts: model.onnx
{optional}    budgets: {{max_arena_kb: 100, max_size_kb: 10000}}
"""
    result = check(run, budgets(tmp_path, body.format(optional="")), junit=tmp_path / "c.xml")
    assert result.exit_code == 1 and result.error is None
    [missing] = result.broken
    assert missing.budget == "max_arena_kb" and missing.verdict == "not measured" and "mark the target optional" \
        in missing.detail
    assert "not measured" in check_mod.format_text(result) and junit_of(tmp_path / "c.xml").get("failures") == "1"
    result = check(run, budgets(tmp_path, body.format(optional="    optional: true\n"), name="opt.yaml"))
    assert result.exit_code == 0 and [r.verdict for r in result.results] == ["not measured", "holds"]

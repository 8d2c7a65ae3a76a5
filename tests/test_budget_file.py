"""budgets.yaml validation: every problem is reported as file:line with the allowed values and the fix."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgecnn.budget_schema import BudgetError, runtime_names
from edgecnn.evaluate.budget_file import load_budget_file, parse_budget_text
from edgecnn.evaluate.measure_protocol import MeasureOptions

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
version: 1
measurement:
  window_s: 0.25
  tolerance_pct: 5%
  unstable: error
targets:
  - name: linux-x86-1thread
    artifacts: "model.int8.*"
    runtime: any
    threads: 1
    budgets:
      p95_ms: 20
      p50_ms: 12 ms
      p95_ref: 3.5
      min_accuracy: 0.95
      max_size_kb: 3000
      max_peak_memory_mb: 400
      max_slowdown_vs: {baseline: ../baseline_run, max_ratio: 1.10}
  - name: board-4threads
    artifacts: [model.onnx, "*.tflite"]
    runtime: litert
    threads: 4
    batch: 8
    budgets: {p99_ms: 80, max_slowdown_vs: {max_ratio: 1.2, metric: p95}}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(BudgetError) as e:
        parse_budget_text(text, source="budgets.yaml", base_dir="/ci/job")
    return e.value.problems


def test_valid_file_keeps_lines_units_and_paths():
    bf = parse_budget_text(GOOD, source="budgets.yaml", base_dir="/ci/job")
    t1, t2 = bf.targets
    assert (t1.name, t1.artifacts, t1.runtime, t1.threads, t1.batch, t1.line) == \
        ("linux-x86-1thread", ("model.int8.*",), "any", 1, 1, 7)
    limits = {limit.key: limit for limit in t1.limits}
    assert limits["p95_ms"].value == 20 and limits["p95_ms"].line == 12
    assert limits["p50_ms"].value == 12  # the key's own unit is accepted
    assert limits["min_accuracy"].upper is False and limits["max_size_kb"].upper is True
    assert limits["max_slowdown_vs"].baseline == Path("/ci/baseline_run")  # relative to the file's folder
    assert limits["max_slowdown_vs"].value == pytest.approx(1.10) and limits["max_slowdown_vs"].metric == "p50"
    assert t2.artifacts == ("model.onnx", "*.tflite") and t2.batch == 8 and t2.threads == 4
    assert t2.limits[1].baseline is None and t2.limits[1].metric == "p95"
    assert t2.matches("model.int8.tflite", "litert") and not t2.matches("model.onnx", "onnxruntime")
    assert bf.measurement.window_s == 0.25 and bf.measurement.tolerance_pct == 5 and bf.measurement.unstable == "error"
    assert bf.measurement.window_runs == MeasureOptions().window_runs  # the rest keep their defaults


@pytest.mark.parametrize("edit, line, fragment", [
    (("p95_ms: 20", "p95: 20"), 12,
     "unknown key 'p95' in budgets of target 'linux-x86-1thread'; allowed: p50_ms, p95_ms"),
    (("p95_ms: 20", "p95: 20"), 12, "Did you mean 'p95_ms'?"),
    (("p95_ms: 20", "p95_ms: 5s"), 12, "wrong unit in p95_ms: '5s'; p95_ms is in milliseconds (the unit is part of "
                                       "the key's name): write p95_ms: 5000"),
    (("max_size_kb: 3000", "max_size_kb: 2MB"), 16, "wrong unit in max_size_kb: '2MB'; max_size_kb is in KiB "
                                                   "(1024 bytes) (the unit is part of the key's name): "
                                                   "write max_size_kb: 2048"),
    (("max_peak_memory_mb: 400", "max_peak_memory_mb: 1GB"), 17, "write max_peak_memory_mb: 1024"),
    (("min_accuracy: 0.95", "min_accuracy: 95%"), 15, "min_accuracy is a fraction 0..1: write min_accuracy: 0.95"),
    (("max_ratio: 1.10", "max_ratio: 10%"), 18, "write max_ratio: 1.1 for 10 % slower"),
    (("min_accuracy: 0.95", "min_accuracy: 1.5"), 15, "impossible value min_accuracy: 1.5; it must be >= 0 and <= 1"),
    (("p95_ms: 20", "p95_ms: -20"), 12, "impossible value p95_ms: -20; it must be > 0 (milliseconds)"),
    (("p95_ms: 20", "p95_ms: 0"), 12, "impossible value p95_ms: 0"),
    (("p95_ms: 20", "p95_ms:"), 12, "p95_ms has no value"),
    (("p95_ms: 20", "p95_ms: yes"), 12, "p95_ms must be a number (milliseconds); received 'yes'"),
    (("p95_ms: 20", "p95_ms: fast"), 12, "p95_ms must be a number (milliseconds); received 'fast'"),
    (("batch: 8", "batch: 0"), 23, "impossible value batch: 0; it must be >= 1"),
    (("threads: 4", "threads: 2.5"), 22, "threads must be a whole number"),
    (("runtime: litert", "runtime: tflite"), 21,
     f"runtime must be one of {', '.join(('any', *runtime_names()))}; received 'tflite'"),
    (("runtime: any", "runtime: onnxruntme"), 9, "Did you mean 'onnxruntime'?"),
    (("max_ratio: 1.10", "max_ratio: 0"), 18, "impossible value max_ratio: 0"),
    (("metric: p95", "metric: p90"), 24, "metric must be one of p50, p95, p99; received 'p90'"),
    (("max_slowdown_vs: {max_ratio: 1.2, metric: p95}", "max_slowdown_vs: {metric: p95}"), 24,
     "max_slowdown_vs needs max_ratio"),
    (("  window_s: 0.25", "  window_s: 250ms"), 3, "write window_s: 0.25"),
    (("  unstable: error", "  unstable: fail"), 5, "unstable must be one of warn, error"),
    (("  window_s: 0.25", "  windows: 3"), 3, "unknown key 'windows' in measurement"),
    (("    threads: 1\n", "    threads: 1\n    thread: 2\n"), 11, "unknown key 'thread' in target 'linux-x86-1thread'"),
    (("version: 1", "version: 2"), 1, "unsupported version '2'; this edgecnn reads version 1"),
    (("name: board-4threads", "name: linux-x86-1thread"), 19,
     "duplicate target name 'linux-x86-1thread' (first at line 7)"),
    (("name: board-4threads", "name: board 4 threads"), 19, "target name must match"),
    (("      p50_ms: 12 ms", "      p95_ms: 12"), 13, "duplicate key 'p95_ms' in budgets of target 'linux-x86-1thread' "
                                                  "(first at line 12)"),
    (("artifacts: \"model.int8.*\"", "artifacts: 3"), 8, "artifacts must be a glob or a list of globs"),
    (("budgets: {p99_ms: 80", "budgets: {p99_ms: 80,"), 24, "not valid YAML"),
])
def test_problem_is_reported_on_its_line(edit, line, fragment):
    old, new = edit
    assert old in GOOD
    found = problems(GOOD.replace(old, new, 1))
    assert any(p.startswith(f"budgets.yaml:{line}: ") and fragment in p for p in found), found


def test_every_problem_is_listed_at_once():
    text = GOOD.replace("p95_ms: 20", "p95: 20").replace("max_size_kb: 3000", "max_size_kb: 2MB") \
        .replace("batch: 8", "batch: -1")
    found = problems(text)
    assert [p.split(":")[1] for p in found] == ["12", "16", "23"]
    with pytest.raises(BudgetError, match=r"^3 problems in the budgets:\n  budgets.yaml:12: "):
        parse_budget_text(text, source="budgets.yaml")


@pytest.mark.parametrize("text, fragment", [
    ("", "budgets.yaml:1: the budget file is empty"),
    ("targets:\n  - {name: a, budgets: {p95_ms: 1}}\n", "budgets.yaml:1: missing key 'version'"),
    ("version: 1\n", "budgets.yaml:1: missing key 'targets'"),
    ("version: 1\ntargets: []\n", "budgets.yaml:2: targets must be a non-empty list"),
    ("version: 1\ntargets:\n  - name: a\n", "budgets.yaml:3: target 'a' has no 'budgets'"),
    ("version: 1\ntargets:\n  - name: a\n    budgets: {}\n", "budgets.yaml:4: target 'a': budgets is empty"),
    ("version: 1\ntargets:\n  - budgets: {p95_ms: 1}\n", "budgets.yaml:3: target #1 has no 'name'"),
    ("- 1\n- 2\n", "budgets.yaml:1: the top level must be a mapping"),
    ("version: 1\nbudget: {}\ntargets:\n  - {name: a, budgets: {p95_ms: 1}}\n",
     "budgets.yaml:2: unknown key 'budget' in the top level; allowed: version, measurement, targets"),
    ("version: 1\nmeasurement: {cpus: [99999]}\ntargets:\n  - {name: a, budgets: {p95_ms: 1}}\n",
     "budgets.yaml:2: cpus [99999] are not available to this job"),
    ("version: 1\ntargets:\n  - name: a\n    budgets: {p95_ms: [1, 2]}\n", "budgets.yaml:4: p95_ms must be a number"),
])
def test_structural_problems(text, fragment):
    assert any(fragment in p for p in problems(text)), problems(text)


def test_file_errors(tmp_path):
    with pytest.raises(BudgetError, match="budget file not found"):
        load_budget_file(tmp_path / "nope.yaml")
    p = tmp_path / "budgets.yaml"
    p.write_text("version: 1\ntargets:\n  - name: a\n    budgets: {p95: 1}\n")
    with pytest.raises(BudgetError) as e:
        load_budget_file(p)
    assert str(e.value).startswith(f"{p}:4: unknown key 'p95'")


def test_bundled_budget_files_are_valid():
    files = sorted((ROOT / "models").glob("*.budgets.yaml"))
    assert files, "models/smoke.budgets.yaml is missing"
    for path in files:
        bf = load_budget_file(path)
        assert bf.targets and all(t.limits for t in bf.targets)

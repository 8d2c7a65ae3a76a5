"""One budget schema, one checker: a recipe's ``budgets:`` and a budgets.yaml give the same verdicts.

The run directories are small ONNX conv nets built with onnx.helper and a made-up (hash-matched)
report.json, so nothing here trains or needs TensorFlow; ``edgecnn check``'s measuring processes
are replaced by figures equal to report.json's, so both paths judge the same numbers.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgecnn.budget_schema import BUDGET_KEYS, BudgetError, parse_budget_targets, runtime_names, targets_to_json
from edgecnn.config import dump_recipe, recipe_from_dict
from edgecnn.errors import EdgecnnError
from edgecnn.evaluate import check as check_mod
from edgecnn.evaluate.budgets import (
    ArtifactFigures,
    BudgetResult,
    Figure,
    check_budgets,
    check_http_result,
    check_targets,
    report_figures,
)
from edgecnn.evaluate.check import check
from edgecnn.evaluate.measure_protocol import Measurement, build_conv_net
from edgecnn.export.manifest import add_artifact, init_manifest

# One target, written once: the recipe holds it under `budgets:`, the budgets.yaml under `targets:`.
TARGET = {"name": "pc-1thread", "artifacts": "model.*", "runtime": "any", "threads": 1,
          "budgets": {"min_accuracy": 0.895, "max_accuracy_drop": 0.01, "min_agreement": 0.95,
                      "max_size_kb": 40, "p95_ms": 2.5, "p50_ms": 5}}    # model.onnx 11.6 KiB, int8 48.2 KiB
LATENCY = {"model.onnx": {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 2.2, "runs": 200},
           "model.int8.onnx": {"p50_ms": 1.5, "p95_ms": 3.0, "p99_ms": 3.5, "runs": 200}}


def make_run(path: Path) -> Path:
    """Two ONNX artifacts with manifest.json and a report.json as the evaluate stage writes it."""
    path.mkdir(parents=True, exist_ok=True)
    init_manifest(path, name=path.name, model={"name": "conv_net", "input_size": 24, "num_classes": 4},
                  labels=["a", "b", "c", "d"], preprocessing={"input_range": [0, 255], "resize": [24, 24]})
    spec = {"name": "image", "shape": [None, 24, 24, 3], "dtype": "float32", "quantization": None}
    arts = {}
    for i, (name, depth) in enumerate((("model.onnx", 2), ("model.int8.onnx", 6))):
        build_conv_net(path / name, depth=depth, channels=16, size=24, seed=0)
        e = add_artifact(path, name, format="onnx", precision="fp32", runtime="onnxruntime", stage="export",
                         parent="model.keras", input=spec, output={**spec, "shape": [None, 4]})
        arts[name] = {"bytes": e["bytes"], "sha256": e["sha256"], "runtime": "onnxruntime",
                      "metrics": {"accuracy": 0.90 - 0.01 * i, "agreement": 0.99 - 0.05 * i, "n": 360},
                      "latency": {"1": LATENCY[name]}}
    (path / "report.json").write_text(json.dumps({"artifacts": arts, "reference_accuracy": 0.905}))
    return path


def fake_measurement(stats: dict) -> Measurement:
    """A settled measurement whose percentiles are exactly ``stats`` (no process, no clock)."""
    samples = [np.full(10, stats["p50_ms"])] * 3
    return Measurement("x", "x", "onnxruntime", 1, 1, dict(stats), {k: (stats[k], stats[k]) for k in
                       ("p50_ms", "p95_ms", "p99_ms")}, True, {"p50": 0.0, "p95": 0.0},
                       [{"p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "runs": 10, "seconds": 0.01}] * 3,
                       3, 50.0, 40.0, [0], 1, 1.0, 0.1, window_samples=samples)


def verdicts(results: list[BudgetResult]) -> list[tuple]:
    return sorted((r.target, r.artifact, r.budget, r.threads, r.allowed, r.unit, r.measured, r.ok)
                  for r in results)


def test_same_budget_in_a_recipe_and_a_budget_file_gives_the_same_verdicts(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    report = json.loads((run / "report.json").read_text())
    # the recipe's path: the evaluate stage judges report.json's figures
    recipe = recipe_from_dict({"name": "r", "budgets": [TARGET]})
    checks, broken = check_budgets(report, recipe.budgets)
    # the budget file's path: `edgecnn check`, its measuring processes returning the same figures
    path = tmp_path / "budgets.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "targets": [TARGET]}, sort_keys=False))
    monkeypatch.setattr(check_mod, "measure_group",
                        lambda subjects, options: [fake_measurement(LATENCY[Path(s.path).name]) for s in subjects])
    result = check(run, path)
    assert result.error is None, result.error
    assert verdicts(result.results) == verdicts(broken + [r for r in check_targets(recipe.budgets,
                                                                                     report_figures(report)) if r.ok])
    assert len(checks) == len(result.results) == 2 * len(TARGET["budgets"])
    # the verdicts themselves, and one unit per key in both
    assert sorted((r.artifact, r.budget) for r in result.broken) == sorted((r.artifact, r.budget) for r in broken) == [
        ("model.int8.onnx", "max_accuracy_drop"), ("model.int8.onnx", "max_size_kb"),
        ("model.int8.onnx", "min_accuracy"), ("model.int8.onnx", "min_agreement"), ("model.int8.onnx", "p95_ms")]
    assert result.exit_code == 1
    assert {c["budget"]: c["unit"] for c in checks} == {r.budget: r.to_json()["unit"] for r in result.results} == \
        {"min_accuracy": "", "max_accuracy_drop": "", "min_agreement": "", "max_size_kb": "KiB", "p95_ms": "ms",
         "p50_ms": "ms"}
    size = next(c for c in checks if c["budget"] == "max_size_kb" and c["artifact"] == "model.onnx")
    assert size["measured"] == pytest.approx(report["artifacts"]["model.onnx"]["bytes"] / 1024)  # KiB, 1024 bytes


def test_the_recipe_reads_the_budget_file_schema_and_its_messages():
    with pytest.raises(EdgecnnError) as e:
        recipe_from_dict({"name": "r", "budgets": [{"name": "a", "budgets": {"p95": 20}}]})
    assert "unknown key 'p95' in budgets of target 'a'" in str(e.value) and "Did you mean 'p95_ms'?" in str(e.value)
    with pytest.raises(EdgecnnError, match="write max_size_kb: 2048"):
        recipe_from_dict({"name": "r", "budgets": [{"name": "a", "budgets": {"max_size_kb": "2MB"}}]})
    with pytest.raises(EdgecnnError, match="impossible value min_accuracy: 95"):
        recipe_from_dict({"name": "r", "budgets": [{"name": "a", "budgets": {"min_accuracy": 95}}]})
    with pytest.raises(EdgecnnError, match="duplicate target name 'a'"):
        recipe_from_dict({"name": "r", "budgets": [{"name": "a", "budgets": {"p50_ms": 1}}] * 2})
    with pytest.raises(EdgecnnError, match="runtime must be one of any, " + ", ".join(runtime_names())):
        recipe_from_dict({"name": "r", "budgets": [{"name": "a", "runtime": "tflite", "budgets": {"p50_ms": 1}}]})
    # every key of the schema is accepted in a recipe, in the key's own unit
    every = {k: ({"max_ratio": 1.1, "baseline": "/tmp/base"} if k == "max_slowdown_vs" else 0.5)
             for k in BUDGET_KEYS}
    [t] = recipe_from_dict({"name": "r", "budgets": [{"name": "all", "budgets": every}]}).budgets
    assert [limit.key for limit in t.limits] == list(BUDGET_KEYS)


def test_the_recipe_budgets_survive_recipe_yaml():
    recipe = recipe_from_dict({"name": "r", "budgets": [TARGET, {"name": "b", "artifacts": ["*.onnx", "*.tflite"],
                                                                  "runtime": "onnxruntime", "threads": 0, "batch": 4,
                                                                  "budgets": {"p99_ms": "80 ms"}}]})
    again = recipe_from_dict(yaml.safe_load(dump_recipe(recipe)))
    assert again.budgets.targets == recipe.budgets.targets
    assert targets_to_json(again.budgets.targets)[1]["budgets"] == {"p99_ms": 80.0}


def test_old_recipe_form_is_migrated_with_a_note(caplog):
    old = {"default": {"min_accuracy": 0.9, "p95_ms": 100, "threads": 1},
           "artifacts": {"*.tflite": {"max_size_kb": 100}, "model.int8.tflite": {"max_size_kb": 50}}}
    with caplog.at_level(logging.WARNING, logger="edgecnn.budgets"):
        targets = recipe_from_dict({"name": "r", "budgets": old}).budgets.targets
    assert [(t.name, t.artifacts, t.threads, {limit.key: limit.value for limit in t.limits}) for t in targets] == [
        ("default", ("*",), 1, {"min_accuracy": 0.9, "p95_ms": 100}),
        ("artifacts-1", ("*.tflite",), 1, {"max_size_kb": 100}),
        ("artifacts-2", ("model.int8.tflite",), 1, {"max_size_kb": 50})]
    [note] = [r.getMessage() for r in caplog.records]
    assert "deprecated" in note and "\n" not in note and "name: default" in note
    # the old override semantics (the last matching glob wins) give the same verdicts here
    figs = [ArtifactFigures(n, runtime="litert", figures={"size_kb": Figure(kb), "accuracy": Figure(0.95)})
            for n, kb in (("model.fp32.tflite", 90), ("model.int8.tflite", 60))]
    assert [(r.artifact, r.budget, r.allowed) for r in check_targets(targets, figs)
            if r.measured is not None and not r.ok] == [("model.int8.tflite", "max_size_kb", 50)]
    assert recipe_from_dict({"name": "r", "budgets": {}}).budgets.targets == ()


def test_old_recipe_form_that_cannot_be_migrated_shows_the_new_form():
    loosened = {"default": {"min_agreement": 0.98}, "artifacts": {"model.fp16.tflite": {"min_agreement": 0.9}}}
    with pytest.raises(EdgecnnError) as e:
        recipe_from_dict({"name": "r", "budgets": loosened})
    msg = str(e.value)
    assert "cannot be converted exactly" in msg and "loosens min_agreement to 0.9" in msg
    assert "- name: default" in msg and "artifacts: model.fp16.tflite" in msg  # the new form, to edit
    with pytest.raises(BudgetError, match="unknown key"):
        parse_budget_targets({"defaults": {"p95_ms": 1}})


def test_runtime_and_file_select_report_entries():
    """One file measured in two runtimes: globs match the entry's `file`, `runtime:` filters the runtime."""
    report = {"reference_accuracy": 0.9, "artifacts": {
        "model.onnx": {"bytes": 2048, "runtime": "onnxruntime", "metrics": {"accuracy": 0.9}},
        "model.onnx@openvino": {"file": "model.onnx", "bytes": 2048, "runtime": "openvino",
                                "metrics": {"accuracy": 0.8}},
        "model.tflite": {"bytes": 1024, "metrics": {"accuracy": 0.9}}}}   # no runtime: from the suffix
    figs = {a.name: a for a in report_figures(report)}
    assert figs["model.onnx@openvino"].file == "model.onnx" and figs["model.tflite"].runtime == "litert"
    targets = parse_budget_targets([
        {"name": "ov", "artifacts": "model.onnx", "runtime": "openvino", "budgets": {"min_accuracy": 0.85}},
        {"name": "all-onnx", "artifacts": "*.onnx", "budgets": {"max_size_kb": 2}},
        {"name": "lite", "runtime": "litert", "budgets": {"max_size_kb": 0.5}}])
    results = check_targets(targets, figs.values())
    assert [(r.target, r.artifact, r.ok) for r in results] == [
        ("ov", "model.onnx@openvino", False), ("all-onnx", "model.onnx", True),
        ("all-onnx", "model.onnx@openvino", True), ("lite", "model.tflite", False)]
    assert results[0].runtime == "openvino"


def test_figures_the_evaluate_stage_does_not_measure_are_not_a_silent_pass(caplog):
    report = {"reference_accuracy": 0.9, "artifacts": {
        "model.onnx": {"bytes": 2048, "runtime": "onnxruntime", "metrics": {"accuracy": 0.9},
                       "latency": {"1": {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0}}}}}
    targets = parse_budget_targets([{"name": "t", "threads": 1, "budgets": {"p95_ref": 3, "p95_ms": 1,
                                                                            "max_peak_memory_mb": 100}},
                                    {"name": "t4", "threads": 4, "budgets": {"p95_ms": 1}}])
    with caplog.at_level(logging.INFO, logger="edgecnn.budgets"):
        checks, broken = check_budgets(report, targets)
    # one broken, three nothing measured: each of the four fails the run
    assert [(c["budget"], c["verdict"], c["ok"]) for c in checks] == [
        ("p95_ref", "not measured", False), ("p95_ms", "BROKEN", False), ("max_peak_memory_mb", "not measured", False),
        ("p95_ms", "not measured", False)]
    assert len(broken) == 4
    assert "t: p95_ref" in caplog.text and "t4: p95_ms @4t" in caplog.text
    not_measured = [r for r in check_targets(targets, report_figures(report)) if r.measured is None]
    assert {r.verdict for r in not_measured} == {"not measured"} and len(not_measured) == 3
    assert "p95_ms broken: measured 2 ms, allowed <= 1 ms (target t)" in str(broken[1])
    assert "p95_ref not measured (nothing measured it here)" in str(broken[0])
    assert broken[1].to_json()["verdict"] == "BROKEN"


def test_not_measured_passes_only_where_the_target_is_optional_or_excused():
    """optional: true; a runtime that cannot run here under `runtime: any` (not one a target names); the float
    reference (timed at all cores only) -- every other budget nothing measured fails."""
    report = {"reference": "model.keras", "reference_accuracy": 0.9, "artifacts": {
        "model.keras": {"runtime": "keras", "metrics": {"accuracy": 0.9}, "latency": {"2": {"p95_ms": 9.0}}},
        "model.onnx": {"bytes": 2048, "runtime": "onnxruntime", "metrics": {"accuracy": 0.9},
                       "latency": {"1": {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0}}},
        "model.onnx@openvino": {"file": "model.onnx", "runtime": "openvino", "skipped": "no CPU plugin"}}}
    targets = parse_budget_targets([
        {"name": "ci", "optional": True, "budgets": {"p95_ref": 3}},
        {"name": "any", "threads": 1, "budgets": {"p95_ms": 5}},
        {"name": "ov", "runtime": "openvino", "budgets": {"min_accuracy": 0.5}}])
    checks, failing = check_budgets(report, targets)
    verdicts = {(c["target"], c["artifact"]): (c["verdict"], c["ok"]) for c in checks}
    assert verdicts[("ci", "model.onnx")] == ("not measured", True)
    assert verdicts[("any", "model.onnx")] == ("holds", True)
    assert verdicts[("any", "model.onnx@openvino")] == ("not measured", True)   # cannot run here, not asked for
    assert verdicts[("any", "model.keras")] == ("not measured", True)            # the reference, timed at 2 threads
    assert [(f.target, f.artifact) for f in failing] == [("ov", "model.onnx@openvino")]   # asked for by name
    assert "cannot run here" in next(c for c in checks if c["target"] == "any" and "@" in c["artifact"])["detail"]
    with pytest.raises(BudgetError, match="optional must be true or false"):
        parse_budget_targets([{"name": "x", "optional": "yes", "budgets": {"p95_ms": 1}}])


def test_http_result_uses_the_same_checker(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x" * 4096)
    (tmp_path / "report.json").write_text(json.dumps({"reference_accuracy": 0.9}))
    http = {"version": "model.onnx", "accuracy": 0.85, "levels": [{"p50_ms": 5.0, "p95_ms": 9.0}]}
    targets = parse_budget_targets([{"name": "svc", "threads": 0, "budgets": {
        "max_accuracy_drop": 0.02, "p95_ms": 8, "p50_ms": 6, "max_size_kb": 4}}])
    broken = check_http_result(http, tmp_path, targets)
    assert all(isinstance(r, BudgetResult) for r in broken)
    assert sorted((r.budget, r.measured) for r in broken) == [("max_accuracy_drop", pytest.approx(0.05)),
                                                             ("p95_ms", 9.0)]

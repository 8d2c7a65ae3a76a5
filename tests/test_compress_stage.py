"""The pipeline's compress stage: the chooser's pick per runtime becomes model.int8.*, shown in the report."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from edgecnn._io import sha256_file
from test_pipeline import TINY, edgecnn

pytestmark = pytest.mark.slow


def _recipe(tmp_path: Path, data: Path, compress: dict) -> Path:
    raw = yaml.safe_load(TINY.read_text())
    raw["name"] = "tiny-compress"
    raw["data"]["path"] = str(data)
    raw["export"]["formats"] = ["tflite-fp32", "tflite-int8", "onnx", "onnx-int8", "openvino-int8"]
    raw["compress"] = compress
    path = tmp_path / "tiny-compress.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def compressed_run(tmp_path_factory, tiny_defects) -> Path:
    tmp = tmp_path_factory.mktemp("compress")
    # exhaustive: every route runs (QAT included); a budget every candidate holds and size alone, so each runtime
    # gets a pick whatever the tiny model's accuracy (tests/test_verified.py holds the budgets' verdicts)
    recipe = _recipe(tmp, tiny_defects, {
        "enabled": True, "max_accuracy_drop": 1.0, "min_agreement": None, "prefer": "size", "exhaustive": True,
        "latency_runs": 5,
        "routes": ["tflite-int8", "tflite-int8-qat", "onnx-int8-minmax", "onnx-int8-percentile", "onnx-int8-qat",
                   "openvino-int8-minmax"],
        "qat": {"epochs": 1, "lr": 1e-4}})
    out = tmp / "run"
    p = edgecnn("run", str(recipe), "--output", str(out))
    assert p.returncode in (0, 1), p.stdout + p.stderr  # 1: a tiny model may miss its budgets; that is fine here
    assert "Traceback" not in p.stderr
    return out


def test_every_route_is_a_measured_candidate(compressed_run):
    comp = json.loads((compressed_run / "compress.json").read_text())
    assert set(comp["runtimes"]) == {"litert", "onnxruntime", "openvino"}  # one pick per runtime
    routes = {c["route"]: c for r in comp["runtimes"].values() for c in r["candidates"]}
    assert set(routes) == {"tflite-int8", "tflite-int8-qat", "onnx-int8-minmax", "onnx-int8-percentile",
                           "onnx-int8-qat", "openvino-int8-minmax"}
    assert routes["openvino-int8-minmax"]["runtime"] == "openvino"
    for c in routes.values():
        assert c["error"] is None, c
        assert 0 <= c["accuracy"] <= 1 and c["size_bytes"] > 0 and c["latency_p50_ms"] > 0
    assert routes["tflite-int8-qat"]["notes"]["distilled"] is True
    # one QAT model for both runtimes, and its ONNX runs every Conv/MatMul in int8 in onnxruntime
    assert routes["onnx-int8-qat"]["notes"]["final"] == routes["tflite-int8-qat"]["notes"]["final"]
    assert routes["onnx-int8-qat"]["float_heavy_ops"] == 0 and routes["onnx-int8-minmax"]["float_heavy_ops"] == 0
    assert set(comp["picks"]) == {"tflite-int8", "onnx-int8", "openvino-int8"}


def test_picks_are_the_exported_int8_artifacts(compressed_run):
    comp = json.loads((compressed_run / "compress.json").read_text())
    manifest = json.loads((compressed_run / "manifest.json").read_text())
    for fmt, filename in (("tflite-int8", "model.int8.tflite"), ("onnx-int8", "model.int8.onnx"),
                          ("openvino-int8", "model.int8.openvino")):  # a folder artifact, copied whole
        pick = comp["picks"][fmt]
        assert sha256_file(compressed_run / filename) == sha256_file(compressed_run / pick["artifact"])
        entry = manifest["artifacts"][filename]
        assert entry["stage"] == "compress" and entry["route"] == pick["route"]
        assert entry["sha256"] == sha256_file(compressed_run / filename)
    assert manifest["artifacts"]["model.fp32.tflite"]["stage"] == "export"


def test_export_copies_the_choosers_float_onnx_instead_of_converting_again(compressed_run):
    """The chooser's int8 ONNX candidates were quantised from its float twin: that file is the shipped model.onnx."""
    comp = json.loads((compressed_run / "compress.json").read_text())
    assert comp["float_twins"]["onnx"] == "compress/model.onnx"
    assert sha256_file(compressed_run / "model.onnx") == sha256_file(compressed_run / "compress" / "model.onnx")
    assert "model.onnx is the chooser's float twin" in (compressed_run / "edgecnn.log").read_text()


def test_report_shows_the_candidates(compressed_run):
    report = json.loads((compressed_run / "report.json").read_text())
    assert report["compress"]["picks"]
    md = (compressed_run / "report.md").read_text()
    assert "## Compression: every int8 candidate the chooser tried" in md
    assert "tflite-int8-qat" in md and "onnx-int8-percentile" in md
    html = (compressed_run / "report.html").read_text()
    assert 'id="compression"' in html and "tflite-int8-qat" in html


def test_rerun_skips_compress_and_a_new_budget_redoes_only_int8(compressed_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(compressed_run, run)
    p = edgecnn("run", str(run / "recipe.yaml"), "--output", str(run))
    assert "compress: up to date" in p.stderr and "export: all 5 artifacts up to date" in p.stderr, p.stderr
    fp32 = (run / "model.fp32.tflite").stat().st_mtime_ns
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["compress"]["routes"] = ["tflite-int8", "onnx-int8-minmax", "openvino-int8-minmax"]
    recipe["compress"]["exhaustive"] = False
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    p = edgecnn("compress", str(run))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "tflite-int8: tflite-int8" in p.stdout and "onnx-int8: onnx-int8-minmax" in p.stdout
    p = edgecnn("export", str(run))
    assert p.returncode == 0, p.stderr
    # only the int8 files whose pick changed are exported again
    assert sorted(p.stdout.split("exported: ")[1].split(";")[0].split(", ")) == ["onnx-int8", "openvino-int8",
                                                                                "tflite-int8"]
    assert (run / "model.fp32.tflite").stat().st_mtime_ns == fp32
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["artifacts"]["model.int8.onnx"]["route"] == "onnx-int8-minmax"


def test_compress_command_without_a_compress_section(tmp_path, tiny_defects):
    run = tmp_path / "plain"
    run.mkdir()
    raw = yaml.safe_load(TINY.read_text())
    raw["data"]["path"] = str(tiny_defects)
    (run / "recipe.yaml").write_text(yaml.safe_dump(raw))
    p = edgecnn("compress", str(run))
    assert p.returncode == 2
    assert "opts out of the int8 chooser" in p.stderr and "Traceback" not in p.stderr


def test_unknown_route_in_recipe_is_a_recipe_error(tmp_path, tiny_defects):
    recipe = _recipe(tmp_path, tiny_defects, {"enabled": True, "routes": ["tflite-int4"]})
    p = edgecnn("run", str(recipe), "--output", str(tmp_path / "x"))
    assert p.returncode == 2
    assert "compress.routes" in p.stderr and "tflite-int4" in p.stderr and "Traceback" not in p.stderr

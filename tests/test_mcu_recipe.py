"""The grey MCU recipe (models/mcu-dsconv-96-gray.yaml) end to end on a tiny variant (48 px, a few epochs):
one input channel from loading to the firmware files, TFLite Micro answers as LiteRT int8 does on the test
split (agreement >= 99 %, top-1 within 0.5 pp), the cortex-m4-256k profile holds, and report.json /
``edgecnn tflm-info`` say which layer sets the arena.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro")

RECIPE = Path(__file__).resolve().parent.parent / "models" / "mcu-dsconv-96-gray.yaml"
SIZE = 48


def grey_run_dir(tmp_path_factory, tiny_defects) -> Path:
    """The tiny grey MCU run, built once per test session (this module and tests/test_report_mcu.py read it;
    under pytest-xdist the first worker builds it under a lock). Readers must not change it."""
    from conftest import _shared_dir
    from edgecnn.config import load_recipe
    from edgecnn.pipeline import run

    with _shared_dir(tmp_path_factory, "mcu-gray-run") as (out, exists):
        if not exists:
            recipe = load_recipe(RECIPE, **{"model.input_size": SIZE, "data.batch_size": 16,
                                            "data.min_images_per_class": 5, "export.calibration_images": 20,
                                            "evaluate.warmup": 1, "evaluate.runs": 10})
            recipe.train.head.epochs = 4
            recipe.export.formats = ["tflite-int8", "tflm-c"]
            result = run(recipe, data=str(tiny_defects), output=out)
            assert result.report is not None
    return out


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory, tiny_defects) -> Path:
    return grey_run_dir(tmp_path_factory, tiny_defects)


@pytest.mark.slow
def test_grey_model_end_to_end_and_tflm_equals_litert(gray_run, tiny_defects):
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import load_arrays
    from edgecnn.runtime import load_runner

    manifest = json.loads((gray_run / "manifest.json").read_text())
    assert manifest["preprocessing"]["channels"] == 1
    int8 = manifest["artifacts"]["model.int8.tflite"]
    assert int8["input"]["shape"][1:] == [SIZE, SIZE, 1] and int8["input"]["dtype"] == "int8"
    assert (gray_run / "model.int8.tflm" / "model_data.cc").is_file()

    x, y = load_arrays(discover(tiny_defects, channels=1), "test", SIZE)
    lite = load_runner(gray_run / "model.int8.tflite", runtime="litert")(x).argmax(1)
    tflm_runner = load_runner(gray_run / "model.int8.tflm")
    assert tflm_runner.backend == "tflm" and tflm_runner.input_channels == 1
    tflm = tflm_runner(x).argmax(1)
    assert float(np.mean(tflm == lite)) >= 0.99
    assert abs(float(np.mean(tflm == y)) - float(np.mean(lite == y))) <= 0.005

    report = json.loads((gray_run / "report.json").read_text())
    mcu = report["artifacts"]["model.int8.tflite@tflm"]["mcu"]
    assert mcu["arena_bytes"] / 1024 <= 192 and mcu["flash_bytes"] / 1024 <= 768     # cortex-m4-256k
    agree = mcu["litert_agreement"]     # measured by the tflm runner on the evaluated test split
    assert agree["images"] == len(y) and agree["reference"] == {"agreement": 1.0, "max_diff_steps": 0}
    assert agree["xnnpack"]["agreement"] == pytest.approx(float(np.mean(tflm == lite)))
    checked = [c for c in report["budgets"]["checks"] if "cortex-m4-256k" in json.dumps(c)]
    assert checked and not [v for v in report["budgets"]["violations"] if "cortex-m4-256k" in json.dumps(v)]
    peak = mcu["activation_peak"]
    assert peak["bytes"] == max(a["live_bytes"] for a in mcu["activations"]) <= mcu["arena_bytes"]
    assert peak["layer"] and peak["arena_head_bytes"] + peak["arena_tail_bytes"] == mcu["arena_bytes"]
    first = mcu["activations"][0]
    assert first["live_bytes"] >= SIZE * SIZE       # the one-channel int8 input is live at the first op


@pytest.mark.slow
def test_tflm_info_prints_the_layer_table(gray_run):
    from typer.testing import CliRunner

    from edgecnn.cli import app

    res = CliRunner().invoke(app, ["tflm-info", str(gray_run / "model.int8.tflite")])
    assert res.exit_code == 0, res.output
    report = json.loads((gray_run / "report.json").read_text())
    peak = report["artifacts"]["model.int8.tflite@tflm"]["mcu"]["activation_peak"]
    assert "live B" in res.output and f"{peak['bytes']:,}" in res.output and peak["layer"] in res.output
    bad = subprocess.run([sys.executable, "-m", "edgecnn.cli", "tflm-info", str(gray_run / "model.int8.tflit")],
                         capture_output=True, text=True, timeout=300)   # float files: tests/test_tflm.py
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr

"""report.html's "Microcontroller" section, drawn from a real run's report.json: the tiny grey MCU run of
tests/test_mcu_recipe.py (built once per session), rendered on a copy. The section shows the measured
arena, flash, ops and resolver, TFLM version, per-op live activations and TFLM vs LiteRT; a report
without TFLite Micro figures has no such section.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tflite_micro")

from test_mcu_recipe import grey_run_dir  # noqa: E402 - after the importorskip


@pytest.fixture(scope="module")
def mcu_page(tmp_path_factory, tiny_defects) -> tuple[Path, dict]:
    from edgecnn.report import render_report

    run = tmp_path_factory.mktemp("mcu-report") / "gray"
    shutil.copytree(grey_run_dir(tmp_path_factory, tiny_defects), run, symlinks=True)
    page = render_report(run, model_card=False)
    return page, json.loads((run / "report.json").read_text())


def _section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}">')
    return html[start:html.index("</section>", start)]


@pytest.mark.slow
def test_mcu_section_shows_the_measured_figures(mcu_page):
    page, report = mcu_page
    html = page.read_text()
    assert 'href="#microcontroller"' in html           # in the navigation bar
    sec = _section(html, "microcontroller")
    mcu = report["artifacts"]["model.int8.tflite@tflm"]["mcu"]
    peak = mcu["activation_peak"]
    assert f"{mcu['arena_bytes']:,} B" in sec and f"{mcu['arena_recommended_bytes'] / 1024:,.1f} KiB" in sec
    assert f"{mcu['flash_bytes'] / 1024:,.1f} KiB" in sec and mcu["tflm_version"] in sec
    assert peak["layer"] in sec and f"{peak['bytes']:,} B" in sec
    for op in mcu["ops"]:
        assert op in sec
    assert "MicroMutableOpResolver" in sec and "AddConv2D()" in sec      # model.int8.tflm/op_resolver.h
    assert "cortex-m4-256k" in sec and "max_arena_kb" in sec and "BROKEN" not in sec
    # TFLM against LiteRT: its top-1 beside LiteRT's, and the agreements TFLM's runner measured
    agree = mcu["litert_agreement"]
    assert agree["images"] == report["test_images"] and agree["reference"]["agreement"] == 1.0
    lite = report["artifacts"]["model.int8.tflite"]["metrics"]["accuracy"]
    assert f"{lite:.4f}" in sec and f"{agree['xnnpack']['agreement']:.4f}" in sec
    from PIL import Image

    png = page.parent / "plots" / "mcu_activations.png"
    assert 'src="plots/mcu_activations.png"' in sec and Image.open(png).size[1] > 200


@pytest.mark.slow
def test_no_mcu_figures_no_section(mcu_page, tmp_path):
    from edgecnn.report import render_report

    page, report = mcu_page
    run = tmp_path / "run"
    shutil.copytree(page.parent, run, symlinks=True)
    for art in report["artifacts"].values():
        art.pop("mcu", None)
    (run / "report.json").write_text(json.dumps(report))
    html = render_report(run, model_card=False).read_text()
    assert 'id="microcontroller"' not in html and 'id="artifacts"' in html

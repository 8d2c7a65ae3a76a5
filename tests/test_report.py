"""report.html, MODEL_CARD.md, compare_runs and Grad-CAM: content checks on a tiny real run.

The page is checked the way a reader would break it: every artifact of the manifest is on it,
every figure is a real PNG, every relative link resolves, and a run whose dataset is gone still
renders (with a note) instead of crashing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "recipes" / "tiny.yaml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.links.append(value)


def links_of(html_text: str) -> list[str]:
    p = _Links()
    p.feed(html_text)
    return p.links


def assert_links_resolve(page: Path) -> list[str]:
    """Every href/src is an in-page anchor or a relative path to an existing file; returns the files."""
    files = []
    for link in links_of(page.read_text()):
        if link.startswith("#"):
            continue
        assert "://" not in link and not link.startswith(("//", "data:", "/")), f"non-relative link {link!r}"
        target = (page.parent / link).resolve()
        assert target.is_file(), f"{page.name}: link {link!r} does not resolve"
        files.append(link)
    return files


def assert_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.width > 10 and im.height > 10


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_defects) -> Path:
    out = tmp_path_factory.mktemp("report-runs") / "tiny"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, "-m", "edgecnn.cli", "run", str(TINY), "--data", str(tiny_defects),
                        "--output", str(out)], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert p.returncode in (0, 1), p.stdout + p.stderr  # 1 = a budget broke; the report must show it either way
    return out


@pytest.fixture(scope="module")
def rendered(tiny_run) -> Path:
    from edgecnn.evaluate.report_html import render_report

    page = render_report(tiny_run)
    assert page == tiny_run / "report.html"
    return page


# ------------------------------------------------------------------------------ fast unit tests


def test_gradcam_shape_and_range():
    from edgecnn.arch import create_model
    from edgecnn.evaluate.gradcam import find_feature_layer, gradcam

    model = create_model("dsconv", num_classes=3, input_size=32, alpha=0.25, depth=4)
    images = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    layer = find_feature_layer(model)
    pool_input = model.get_layer("pool").input
    assert model.get_layer(layer).output is pool_input
    for class_index in (None, 1, np.array([0, 1, 2, 0, 1])):
        maps = gradcam(model, images, class_index=class_index)
        assert maps.shape == (5, 32, 32) and maps.dtype == np.float32
        assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
        assert all(m.max() in (0.0, 1.0) or np.isclose(m.max(), 1.0) for m in maps)  # each scaled by its own peak
    assert gradcam(model, images[0]).shape == (1, 32, 32)
    with pytest.raises(EdgecnnError, match="class_index must be in 0..2"):
        gradcam(model, images, class_index=3)
    with pytest.raises(EdgecnnError, match="no layer named"):
        gradcam(model, images, layer="nope")
    with pytest.raises(EdgecnnError, match="images must have shape"):
        gradcam(model, images[:, :16])


def test_layer_rows_with_and_without_inspect(monkeypatch):
    from edgecnn.arch import create_model
    from edgecnn.evaluate.report_html import layer_rows

    model = create_model("dsconv", num_classes=3, input_size=32, alpha=0.25, depth=4)
    rows, source = layer_rows(model)
    assert len(rows) == len(model.layers) and all("name" in r for r in rows)
    monkeypatch.setitem(sys.modules, "edgecnn.arch.inspect", None)  # the module missing: the fallback
    rows, source = layer_rows(model)
    assert source == "model.layers"
    assert [r["name"] for r in rows] == [l.name for l in model.layers]
    assert sum(r["params"] for r in rows) == model.count_params()
    assert rows[-1]["type"] == "Softmax" and rows[-1]["output shape"] == "(N, 3)"


def test_peak_inside_maps_to_original_pixels():
    from edgecnn.evaluate.gradcam import peak_inside

    heat = np.zeros((32, 32), np.float32)
    heat[4, 28] = 1.0  # column 28, row 4 of 32 -> x ~ 114, y ~ 18 in a 128 px image
    assert peak_inside(heat, [100, 10, 120, 30], (128, 128))
    assert not peak_inside(heat, [0, 0, 100, 128], (128, 128))
    assert not peak_inside(heat, [100, 10, 114, 30], (128, 128))  # x1 is exclusive
    assert not peak_inside(np.zeros((32, 32)), [0, 0, 128, 128], (128, 128))  # no evidence: no peak


def test_pareto_front():
    from edgecnn.evaluate.plots import TradeoffPoint, pareto_front

    pts = [TradeoffPoint("slow-best", 10, 0.95, 1), TradeoffPoint("fast", 1, 0.80, 1),
           TradeoffPoint("dominated", 5, 0.79, 1), TradeoffPoint("mid", 3, 0.90, 1)]
    assert [pts[i].label for i in pareto_front(pts)] == ["fast", "mid", "slow-best"]


def test_render_without_report_is_an_error(tmp_path):
    from edgecnn.evaluate.report_html import render_report

    with pytest.raises(EdgecnnError, match="no readable report.json"):
        render_report(tmp_path)


# ------------------------------------------------------------------------------ on a tiny real run


@pytest.mark.slow
def test_report_content(rendered, tiny_run):
    text = rendered.read_text()
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    report = json.loads((tiny_run / "report.json").read_text())
    for name in ["model.keras", *manifest["artifacts"]]:
        assert name in text, f"{name} missing from report.html"
    verdict = report["verdict"].upper()
    assert f'<div class="banner {report["verdict"]}"><span class="head">{verdict}</span>' in text
    for heading in ("Accuracy vs latency vs size", "Confusion matrices", "Per-class precision / recall", "Training",
                    "Misclassified test images", "Grad-CAM", "<details><summary>Layers of model.keras"):
        assert heading in text, heading
    for c in report["classes"]:
        assert c in text
    assert "<script" not in text.lower() and "http://" not in text and "https://" not in text


@pytest.mark.slow
def test_report_plots_are_pngs_and_links_resolve(rendered, tiny_run):
    files = assert_links_resolve(rendered)
    pngs = [f for f in files if f.endswith(".png")]
    for needed in ("plots/tradeoff.png", "plots/confusion.png", "plots/training.png", "plots/gradcam.png"):
        assert needed in pngs, needed
    assert any(f.startswith("plots/misclassified_") for f in pngs) or "No test image is misclassified" in \
        rendered.read_text()
    for png in (tiny_run / "plots").glob("*.png"):
        assert_png(png)
    assert not list(tiny_run.glob(".plots*")), "temporary plot folders left behind"


@pytest.mark.slow
def test_gradcam_json_and_model_card(rendered, tiny_run):
    loc = json.loads((tiny_run / "gradcam.json").read_text())
    assert loc["n"] > 0 and 0.0 <= loc["fraction"] <= 1.0 and 0.0 < loc["chance"] < 1.0
    assert set(loc["per_class"]) <= {"crack", "scratch", "spot"}
    card = (tiny_run / "MODEL_CARD.md").read_text()
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    for name in ["model.keras", *manifest["artifacts"]]:
        assert f"`{name}`" in card, name
    for section in ("## Intended use", "## Data", "## Metrics", "## Artifacts and budgets", "## Limitations",
                    "## How to reproduce"):
        assert section in card
    assert "Synthetic" in card and "95 % Wilson" in card and "Lowest recall" in card


@pytest.mark.slow
def test_report_survives_a_missing_dataset(tiny_run, tmp_path):
    from edgecnn.evaluate.report_html import render_report

    run = tmp_path / "moved"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("plots", "report.html", "gradcam.json"))
    info = json.loads((run / "dataset.json").read_text())
    info["root"] = str(tmp_path / "gone")
    (run / "dataset.json").write_text(json.dumps(info))
    page = render_report(run)
    text = page.read_text()
    assert "no longer on disk" in text and "Misclassified test images" in text
    assert not (run / "plots" / "gradcam.png").exists()
    assert_links_resolve(page)
    assert (run / "MODEL_CARD.md").is_file()


@pytest.mark.slow
def test_compare_runs_lists_both(rendered, tiny_run, tmp_path):
    from edgecnn.evaluate.report_html import compare_runs

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    report = json.loads((other / "report.json").read_text())
    report["name"] = "tiny-copy"
    (other / "report.json").write_text(json.dumps(report))
    page = compare_runs([tiny_run, other], tmp_path / "cmp")
    assert page == tmp_path / "cmp" / "compare.html"
    text = page.read_text()
    assert ">tiny<" in text and ">tiny-copy<" in text
    assert text.count("model.int8.tflite") >= 2
    files = assert_links_resolve(page)
    assert "plots/compare_tradeoff.png" in files
    assert_png(tmp_path / "cmp" / "plots" / "compare_tradeoff.png")
    assert any(f.endswith("report.html") for f in files)  # each run's own page is linked

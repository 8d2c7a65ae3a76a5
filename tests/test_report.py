"""report.html, MODEL_CARD.md, compare_runs, the findings and Grad-CAM.

The fast tests render a run directory written by hand (no training): the report only reads files,
imports no TensorFlow, turns every missing file into a note, and takes new sections from its
registry. The slow tests check a tiny real run the way a reader would break it: every artifact of
the manifest is on the page, every figure is a real PNG, every relative link resolves, and a run
whose dataset is gone still renders (with a note) instead of crashing.
"""
from __future__ import annotations

import json
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
def rendered(tiny_run) -> Path:
    from edgecnn.report import render_report

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
    from edgecnn.evaluate.findings import layer_rows

    model = create_model("dsconv", num_classes=3, input_size=32, alpha=0.25, depth=4)
    rows, source = layer_rows(model)
    assert len(rows) == len(model.layers) and all("name" in r for r in rows)
    monkeypatch.setitem(sys.modules, "edgecnn.arch.inspect", None)  # the module missing: the fallback
    rows, source = layer_rows(model)
    assert source == "model.layers"
    assert [r["name"] for r in rows] == [layer.name for layer in model.layers]
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
    from edgecnn.report.pareto import TradeoffPoint, pareto_front

    pts = [TradeoffPoint("slow-best", 10, 0.95, 1), TradeoffPoint("fast", 1, 0.80, 1),
           TradeoffPoint("dominated", 5, 0.79, 1), TradeoffPoint("mid", 3, 0.90, 1)]
    assert [pts[i].label for i in pareto_front(pts)] == ["fast", "mid", "slow-best"]


def test_render_without_report_is_an_error(tmp_path):
    from edgecnn.report import render_report

    with pytest.raises(EdgecnnError, match="no readable report.json"):
        render_report(tmp_path)


# ------------------------------------------------------------------------------ on a run directory written by hand


def _artifact(acc: float, p50: float, nbytes: int, precision: str) -> dict:
    cm = [[8, 2], [1, 9]]
    per_class = {c: {"precision": 0.9, "recall": r, "f1": 0.85, "support": 10} for c, r in (("good", 0.8),
                                                                                             ("crack", 0.9))}
    return {"format": "tflite", "runtime": "litert", "precision": precision, "bytes": nbytes, "gzip_bytes": nbytes // 2,
            "metrics": {"accuracy": acc, "accuracy_ci95": [acc - 0.1, min(1.0, acc + 0.05)], "macro_f1": acc,
                        "agreement": 1.0, "confusion_matrix": cm, "per_class": per_class},
            "latency": {"1": {"p50_ms": p50, "p95_ms": p50 * 1.2, "p99_ms": p50 * 1.3, "runs": 10}}}


@pytest.fixture
def written_run(tmp_path) -> Path:
    """A run directory with every file the report reads, written by hand (no model, no dataset on disk)."""
    from PIL import Image

    run = tmp_path / "handmade"
    (run / "findings").mkdir(parents=True)
    arts = {"model.keras": _artifact(0.85, 4.0, 40_000, "fp32"),
            "model.fp32.tflite": _artifact(0.85, 3.0, 38_000, "fp32"),   # front: faster than keras, as accurate
            "model.int8.tflite": _artifact(0.80, 1.0, 10_000, "int8"),   # front: fastest
            "model.onnx": _artifact(0.75, 3.5, 38_000, "fp32"),          # dominated by fp32.tflite
            "model.onnx@openvino": {"file": "model.onnx", "runtime": "openvino", "format": "onnx",
                                    "precision": "fp32", "skipped": "openvino is not installed"}}
    report = {"name": "handmade", "created": "2026-01-01T00:00:00Z", "classes": ["good", "crack"], "test_images": 20,
              "reference": "model.keras", "reference_accuracy": 0.85, "machine": {"cpu": "test cpu", "cores": 2},
              "latency_protocol": {"batch": 1, "warmup": 2, "runs": 10, "threads": [1]}, "artifacts": arts,
              "budgets": {"checks": [{"artifact": "model.int8.tflite", "budget": "max_size_kb", "measured": 9.8,
                                      "allowed": 5.0, "unit": " KB", "ok": False}],
                          "violations": [{"artifact": "model.int8.tflite", "budget": "max_size_kb", "measured": 9.8,
                                          "allowed": 5.0, "unit": " KB"}]},
              "verdict": "fail",
              "compress": {"max_accuracy_drop": 0.02, "min_agreement": None, "val_images": 20,
                           "float_val_accuracy": 0.85, "picks": {}, "runtimes": {"litert": {"candidates": [
                               {"route": "ptq", "tier": "ptq", "accuracy": 0.84, "drop": 0.01, "agreement": 0.95,
                                "size_bytes": 10_000, "latency_p50_ms": 1.0, "latency_p95_ms": 1.2, "seconds": 3,
                                "within_budget": True, "pareto": True, "error": None},
                               # the chooser called this one Pareto (it is smaller); the report's one front does not
                               {"route": "qat", "tier": "qat", "accuracy": 0.83, "drop": 0.02, "agreement": 0.94,
                                "size_bytes": 9_000, "latency_p50_ms": 1.1, "latency_p95_ms": 1.3, "seconds": 9,
                                "within_budget": True, "pareto": True, "error": None}]}}}}
    (run / "report.json").write_text(json.dumps(report))
    manifest = {"model": {"name": "dsconv", "input_size": 32}, "labels": ["good", "crack"],
                "artifacts": {n: {} for n in arts if n != "model.keras"}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    phase = {"name": "head", "loss": [1.0, 0.5], "val_loss": [1.1, 0.6], "accuracy": [0.5, 0.8],
             "val_accuracy": [0.5, 0.7], "lr": [1e-3, 5e-4], "trainable": "head"}
    (run / "history.json").write_text(json.dumps({"phases": [phase]}))
    (run / "recipe.yaml").write_text("name: handmade\ndescription: A run written by a test.\n")
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(run / "findings" / "misclassified_00.png")
    findings = {"version": 1, "notes": ["a note from the evaluate stage"],
                "layers": {"rows": [{"name": "conv", "type": "Conv2D", "params": 28}], "source": "model.layers",
                           "total_params": 28, "macs": None},
                "misclassified": {"n_test": 20, "n_wrong": 3, "images": [
                    {"src": "findings/misclassified_00.png", "file": "test/crack/0.png", "true": "crack",
                     "pred": "good", "p_pred": 0.7, "p_true": 0.3}]},
                "gradcam": {"layer": "block_4", "grid": "2×2"}}
    (run / "findings" / "findings.json").write_text(json.dumps(findings))
    return run


def test_report_renders_without_tensorflow(written_run):
    code = ("import sys; from edgecnn.report import render_report; page = render_report(sys.argv[1]); "
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'keras', 'edgecnn.data.loader', 'edgecnn._tf') "
            "if m in sys.modules]; print(page); assert not heavy, heavy")
    p = subprocess.run([sys.executable, "-c", code, str(written_run)], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    text = (written_run / "report.html").read_text()
    assert "a note from the evaluate stage" in text and "test/crack/0.png" in text
    assert '<div class="banner fail"><span class="head">FAIL</span>' in text
    assert "<details><summary>Layers of model.keras (1 layers · 28 parameters" in text
    assert "skipped: openvino is not installed" in text  # a runtime unavailable here: a row, not a crash
    assert_links_resolve(written_run / "report.html")
    assert "skipped: openvino is not installed" in (written_run / "MODEL_CARD.md").read_text()


def test_markdown_report(written_run):
    from edgecnn.report import render_markdown

    text = render_markdown(json.loads((written_run / "report.json").read_text()))
    assert "`model.onnx@openvino` | openvino | fp32 | skipped: openvino is not installed |" in text
    assert "## Budgets: FAIL" in text and "| ptq | ptq |" in text.replace("litert | ", "")
    rows = [line for line in text.split("## Budgets")[0].splitlines() if line.startswith("| `model.")]
    assert len(rows) == 5 and len({line.count("|") for line in rows}) == 1  # the skipped row has every column


def test_one_pareto_front_for_tables_and_plot(written_run):
    from edgecnn.report import ReportContext, read_run
    from edgecnn.report.compression import compression_rows
    from edgecnn.report.pareto import pareto_front

    ctx = ReportContext(read_run(written_run), written_run / "plots")
    pts = ctx.tradeoff_points
    assert ctx.front == {pts[i].label for i in pareto_front(pts)} == {"fp32.tflite", "int8.tflite"}
    from edgecnn.report import render_report

    text = render_report(written_run).read_text()
    for name in ("model.fp32.tflite", "model.int8.tflite"):
        assert f"★ <code>{name}</code>" in text
    for name in ("model.keras", "model.onnx"):
        assert f"★ <code>{name}</code>" not in text and f"<code>{name}</code>" in text
    verdicts = {row[1]: row[-1] for row, _ in compression_rows(read_run(written_run).report["compress"])}
    assert verdicts == {"ptq": "within budget ★", "qat": "within budget"}


def test_missing_files_become_notes(written_run):
    from edgecnn.report import render_report

    shutil.rmtree(written_run / "findings")
    for name in ("history.json", "manifest.json", "recipe.yaml"):
        (written_run / name).unlink()
    text = render_report(written_run).read_text()
    assert text.count("findings/findings.json is missing") >= 3  # gallery, Grad-CAM, layer table
    assert "No history.json in the run directory." in text and "No dataset.json in the run directory." in text
    assert "This section could not be drawn" not in text


def test_a_registered_section_is_rendered_in_its_place(written_run):
    from edgecnn.report import list_sections, register_section, render_report, unregister_section

    @register_section("classes-test", order=65, title="Classes (test section)")
    def classes_section(ctx):
        return "<p>classes: " + ", ".join(ctx.run.classes) + "</p>"

    @register_section("broken-test", order=66, title="Broken (test section)")
    def broken_section(ctx):
        raise KeyError("no_such_field")

    try:
        assert "classes-test" in [s.name for s in list_sections()]
        with pytest.raises(EdgecnnError, match="already registered"):
            register_section("classes-test", order=1, title="again")(lambda ctx: "")
        text = render_report(written_run).read_text()
    finally:
        unregister_section("classes-test")
        unregister_section("broken-test")
    assert '<section id="classes-test"><h2>Classes (test section)</h2><p>classes: good, crack</p></section>' in text
    assert '<a href="#classes-test">Classes (test section)</a>' in text
    assert text.index('id="per-class"') < text.index('id="classes-test"') < text.index('id="training"')
    assert "This section could not be drawn (KeyError: &#x27;no_such_field&#x27;)" in text
    assert 'id="files"' in text  # the sections after the broken one are still there
    assert "classes-test" not in render_report(written_run).read_text()


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
    for needed in ("plots/tradeoff.png", "plots/confusion.png", "plots/training.png", "findings/gradcam.png"):
        assert needed in pngs, needed
    assert any(f.startswith("findings/misclassified_") for f in pngs) or "No test image is misclassified" in \
        rendered.read_text()
    for png in [*(tiny_run / "plots").glob("*.png"), *(tiny_run / "findings").glob("*.png")]:
        assert_png(png)
    assert not list(tiny_run.glob(".plots*")), "temporary plot folders left behind"
    assert not list(tiny_run.glob(".findings*")), "temporary findings folders left behind"


@pytest.mark.slow
def test_evaluate_stage_writes_the_findings_once(tiny_run):
    from edgecnn.evaluate.findings import write_findings

    path = tiny_run / "findings" / "findings.json"
    findings = json.loads(path.read_text())
    assert findings["gradcam"]["src"] == "findings/gradcam.png" and findings["localisation"]["n"] > 0
    gallery = findings["misclassified"]
    assert gallery["n_test"] == json.loads((tiny_run / "report.json").read_text())["test_images"]
    assert len(gallery["images"]) == min(gallery["n_wrong"], 24)
    assert findings["layers"]["total_params"] > 0
    before = path.stat().st_mtime_ns
    assert write_findings(tiny_run) == path  # inputs unchanged: left as it is
    assert path.stat().st_mtime_ns == before


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
    from edgecnn.evaluate.findings import write_findings
    from edgecnn.report import render_report

    run = tmp_path / "moved"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("plots", "findings", "report.html", "gradcam.json"))
    info = json.loads((run / "dataset.json").read_text())
    info["root"] = str(tmp_path / "gone")
    (run / "dataset.json").write_text(json.dumps(info))
    findings = json.loads(write_findings(run).read_text())
    assert any("no longer on disk" in n for n in findings["notes"])
    assert findings["layers"]["rows"] and "misclassified" not in findings  # the model is there, the images not
    page = render_report(run)
    text = page.read_text()
    assert "no longer on disk" in text and "Misclassified test images" in text
    assert "<details><summary>Layers of model.keras" in text
    assert not (run / "findings" / "gradcam.png").exists()
    assert_links_resolve(page)
    assert (run / "MODEL_CARD.md").is_file()


@pytest.mark.slow
def test_compare_runs_lists_both(rendered, tiny_run, tmp_path):
    from edgecnn.report import compare_runs

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

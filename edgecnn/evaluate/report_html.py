"""report.html: the page people look at, per run (``render_report``) and across runs (``compare_runs``).

A static, self-contained page: inline CSS, no JavaScript, no network; its figures are PNG files in
``RUN_DIR/plots/`` referenced by relative links, so the run directory can be zipped, copied or
served as it is. Sections, top to bottom:

* verdict against the budgets (a pass/fail banner listing every broken budget);
* every artifact's accuracy (95 % Wilson interval), agreement, latency and size, and the
  accuracy-vs-latency-vs-size trade-off plot with the Pareto front;
* confusion matrices (float ``model.keras`` beside the int8 artifacts) and per-class precision/recall;
* training curves of both phases on one epoch axis, with the learning-rate schedule;
* the misclassified test images of the reference model, and Grad-CAM overlays of the defect
  classes with the localisation score against the bundled set's bounding boxes;
* the dataset, the per-layer table of the model and the resolved recipe (collapsed).

The image sections need ``model.keras`` and the run's dataset on disk (``dataset.json`` "root");
when either is missing they are replaced by a note, never by a crash.

Example:
    >>> from edgecnn.evaluate.report_html import render_report, compare_runs
    >>> render_report("export/defects-mobilenetv2")                      # doctest: +SKIP
    PosixPath('export/defects-mobilenetv2/report.html')
    >>> compare_runs(["export/defects-mobilenetv2", "export/defects-dsconv"], "export/compare")  # doctest: +SKIP
    PosixPath('export/compare/compare.html')
"""
from __future__ import annotations

import html
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import atomic_path, sha256_file, write_text
from edgecnn.errors import EdgecnnError
from edgecnn.evaluate import plots

__all__ = ["render_report", "compare_runs", "read_run", "RunFiles", "latency_p50", "num", "REPORT_HTML",
           "COMPARE_HTML"]

log = logging.getLogger("edgecnn.report")
REPORT_HTML = "report.html"
COMPARE_HTML = "compare.html"
PLOTS = "plots"
MAX_GALLERY = 24
GRADCAM_PER_CLASS = 4
NORMAL_CLASSES = {"good", "ok", "normal", "pass", "nominal", "no_defect", "background", "clean"}


# ----------------------------------------------------------------------------------------------
# Reading a run directory


@dataclass
class RunFiles:
    """What a run directory holds, read once (missing optional files are None)."""

    dir: Path
    report: dict
    manifest: dict | None = None
    history: dict | None = None
    recipe: Any = None
    recipe_text: str = ""
    dataset: dict | None = None
    gradcam: dict | None = None

    @property
    def name(self) -> str:
        return self.report.get("name") or self.dir.name

    @property
    def classes(self) -> list[str]:
        return list(self.report.get("classes") or (self.manifest or {}).get("labels") or [])

    @property
    def reference(self) -> str:
        return self.report.get("reference", "model.keras")

    def artifact_names(self) -> list[str]:
        """The reference first, then every artifact of the report and of the manifest."""
        names = [self.reference] + list(self.report.get("artifacts", {}))
        names += list((self.manifest or {}).get("artifacts", {}))
        return list(dict.fromkeys(names))


def _json_or_none(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        log.warning("%s is unreadable (%s); its section is left out", path, e)
        return None


def read_run(run_dir: str | os.PathLike) -> RunFiles:
    """Read report.json (required) and manifest/history/recipe/dataset/gradcam (optional) of a run.

    Raises:
        EdgecnnError: ``run_dir`` has no readable report.json.
    """
    run_dir = Path(run_dir)
    report = _json_or_none(run_dir / "report.json")
    if report is None or "artifacts" not in report:
        raise EdgecnnError(f"no readable report.json in {str(run_dir)!r}; run `edgecnn evaluate {run_dir}` first.")
    run = RunFiles(dir=run_dir, report=report, manifest=_json_or_none(run_dir / "manifest.json"),
                   history=_json_or_none(run_dir / "history.json"), dataset=_json_or_none(run_dir / "dataset.json"),
                   gradcam=_json_or_none(run_dir / "gradcam.json"))
    if (run_dir / "recipe.yaml").is_file():
        run.recipe_text = (run_dir / "recipe.yaml").read_text()
        try:
            from edgecnn.config import load_recipe

            run.recipe = load_recipe(run_dir / "recipe.yaml")
        except EdgecnnError as e:
            log.warning("recipe.yaml of %s is not valid (%s); data settings fall back to defaults", run_dir, e)
    return run


def latency_p50(art: dict, threads: int = 1) -> tuple[float | None, str]:
    """p50 latency at ``threads`` threads, else at the fewest threads measured; returns (ms, note)."""
    lat = art.get("latency") or {}
    if str(threads) in lat:
        return float(lat[str(threads)]["p50_ms"]), ""
    if not lat:
        return None, ""
    t = min(lat, key=lambda k: int(k) if k.isdigit() else 1 << 30)
    return float(lat[t]["p50_ms"]), f"timed at {t} threads"


def _short(name: str) -> str:
    return name[len("model."):] if name.startswith("model.") else name


def _tradeoff_points(run: RunFiles, group: str = "", short: bool = True) -> list[plots.TradeoffPoint]:
    points = []
    for name, art in run.report["artifacts"].items():
        p50, note = latency_p50(art)
        acc = art.get("metrics", {}).get("accuracy")
        if p50 is None or acc is None:
            continue
        ci = art["metrics"].get("accuracy_ci95")
        points.append(plots.TradeoffPoint(_short(name) if short else name, p50, float(acc), int(art.get("bytes", 0)),
                                          group=group, note=note, ci95=tuple(ci) if ci else None))
    return points


# ----------------------------------------------------------------------------------------------
# The images: misclassified gallery, Grad-CAM, layer table (need model.keras and the dataset)


@dataclass
class ImageFindings:
    """What the model-and-images pass found; ``notes`` explain every section that had to be skipped."""

    notes: list[str] = field(default_factory=list)
    layers: list[dict] | None = None
    layers_source: str = ""
    total_params: int | None = None
    macs: int | None = None
    n_test: int = 0
    n_wrong: int = 0
    misclassified: list[dict] = field(default_factory=list)
    gradcam_png: str | None = None
    gradcam_layer: str = ""
    gradcam_grid: str = ""
    localisation: dict | None = None


class _Skip(Exception):
    """A section that cannot be drawn, with the sentence that says why."""


def layer_rows(model) -> tuple[list[dict], str]:
    """(rows, source): the per-layer table from ``edgecnn.arch.inspect.layer_table`` when that module
    exists, else name / type / output shape / params from ``model.layers``."""
    try:
        from edgecnn.arch.inspect import layer_table  # written separately; optional
    except ImportError:
        layer_table = None
    if layer_table is not None:
        try:
            rows = _as_dicts(layer_table(model))
            if rows:
                return rows, "edgecnn.arch.inspect.layer_table"
        except Exception as e:  # another module's bug must not cost the whole report
            log.warning("edgecnn.arch.inspect.layer_table failed (%s: %s); using model.layers", type(e).__name__, e)
    rows = []
    for layer in model.layers:
        try:
            shape = layer.output_shape
        except (AttributeError, RuntimeError):
            shape = "?"
        rows.append({"name": layer.name, "type": type(layer).__name__, "output shape": _fmt_shape(shape),
                     "params": int(layer.count_params())})
    return rows, "model.layers"


def _fmt_shape(shape: Any) -> str:
    if isinstance(shape, list):
        return ", ".join(_fmt_shape(s) for s in shape)
    if isinstance(shape, tuple):
        return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
    return str(shape)


def _as_dicts(rows: Any) -> list[dict]:
    """Rows of any reasonable table shape (dicts, dataclasses, namedtuples, a DataFrame-like) as dicts."""
    import dataclasses

    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a pandas DataFrame
        return rows.to_dict("records")
    if isinstance(rows, dict) and "rows" in rows:
        rows = rows["rows"]
    elif hasattr(rows, "rows") and not callable(rows.rows):
        rows = rows.rows
    out = []
    for r in rows:
        if isinstance(r, dict):
            out.append(dict(r))
        elif dataclasses.is_dataclass(r):
            out.append(dataclasses.asdict(r))
        elif hasattr(r, "_asdict"):
            out.append(dict(r._asdict()))
        else:
            return []
    return out


def _discover_test(run: RunFiles):
    """The run's test split, re-discovered from dataset.json's root with the recipe's data settings."""
    from edgecnn.config import DataConfig
    from edgecnn.data.folders import discover

    if not run.dataset or not run.dataset.get("root"):
        raise _Skip("the run has no dataset.json, so its test images are unknown")
    root = Path(run.dataset["root"])
    if not root.is_dir():
        raise _Skip(f"the run's dataset {root} (recorded in dataset.json) is no longer on disk")
    d = run.recipe.data if run.recipe is not None else DataConfig()
    try:
        ds = discover(root, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.split_seed,
                      min_images_per_class=min(d.min_images_per_class, 2), skip_bad_images=True,
                      check_images=d.skip_bad_images)
    except EdgecnnError as e:
        raise _Skip(f"the dataset at {root} can no longer be read as it was ({e})") from None
    if ds.classes != run.classes:
        raise _Skip(f"the dataset at {root} now has classes {ds.classes}, the run has {run.classes}")
    notes = []
    if run.dataset.get("fingerprint") and ds.fingerprint() != run.dataset["fingerprint"]:
        notes.append(f"the dataset at {root} changed after this run was evaluated; the images below are "
                     "today's files, so they can differ from the figures in report.json")
    return ds, notes


def _meta_boxes(root: Path) -> dict[str, dict]:
    """meta.json records by relative path (the bundled set only), else {}."""
    meta = _json_or_none(root / "meta.json")
    if not meta or not isinstance(meta.get("images"), list):
        return {}
    return {m["path"]: m for m in meta["images"] if isinstance(m, dict) and "path" in m}


def _read_rgb(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _analyse_images(run: RunFiles, plots_dir: Path) -> ImageFindings:
    """Load model.keras and the test split, then draw the gallery and Grad-CAM; every failure is a note."""
    f = ImageFindings()
    model_path = run.dir / "model.keras"
    if not model_path.is_file():
        f.notes.append("model.keras is missing, so the layer table, misclassified images and Grad-CAM are left out")
        return f
    from edgecnn._tf import keras

    try:
        model = keras.models.load_model(str(model_path), compile=False)
    except Exception as e:  # a corrupt file: Keras raises many types
        f.notes.append(f"model.keras could not be loaded ({type(e).__name__}: {e}); image sections are left out")
        return f
    f.layers, f.layers_source = layer_rows(model)
    f.total_params = int(model.count_params())
    if f.layers and all("macs" in r for r in f.layers):
        f.macs = int(sum(int(r["macs"] or 0) for r in f.layers))
    try:
        ds, notes = _discover_test(run)
    except _Skip as e:
        f.notes.append(f"{e}: the misclassified images and Grad-CAM are left out")
        return f
    f.notes += notes
    try:
        _gallery_and_gradcam(run, model, ds, plots_dir, f)
    except Exception as e:  # the report must still be written; the note says what went wrong
        log.warning("image sections of the report failed: %s: %s", type(e).__name__, e, exc_info=True)
        f.notes.append(f"the image sections failed ({type(e).__name__}: {e})")
    return f


def _gallery_and_gradcam(run: RunFiles, model, ds, plots_dir: Path, f: ImageFindings) -> None:
    from edgecnn.data.loader import load_arrays
    from edgecnn.evaluate.gradcam import find_feature_layer, gradcam, localisation_score

    size = int(model.input_shape[1])
    images, labels = load_arrays(ds, "test", size)
    paths = ds.paths("test")
    probs = model.predict(images, batch_size=64, verbose=0)
    pred = probs.argmax(1)
    classes = ds.classes
    wrong = np.flatnonzero(pred != labels)
    f.n_test, f.n_wrong = len(labels), len(wrong)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:MAX_GALLERY]
    for k, i in enumerate(wrong):
        name = f"misclassified_{k:02d}.png"
        plots.save_thumbnail(_read_rgb(paths[i]), plots_dir / name, max_side=160)
        f.misclassified.append({"src": f"{PLOTS}/{name}", "file": os.path.relpath(paths[i], ds.root),
                                "true": classes[labels[i]], "pred": classes[pred[i]],
                                "p_pred": float(probs[i, pred[i]]), "p_true": float(probs[i, labels[i]])})

    boxes = _meta_boxes(ds.root)
    with_box = {m["class"] for m in boxes.values() if m.get("bbox")}
    defect_classes = [c for c in classes if c in with_box] if with_box else \
        [c for c in classes if c.lower() not in NORMAL_CLASSES]
    rows: dict[str, list[dict]] = {}
    f.gradcam_layer = find_feature_layer(model)
    fmap = model.get_layer(f.gradcam_layer).output_shape
    f.gradcam_grid = f"{fmap[1]}×{fmap[2]}"
    for c in defect_classes:
        idx = np.flatnonzero(labels == classes.index(c))[:GRADCAM_PER_CLASS]
        if not len(idx):
            continue
        maps = gradcam(model, images[idx], class_index=labels[idx])
        rows[c] = []
        for i, m in zip(idx, maps):
            rel = os.path.relpath(paths[i], ds.root).replace(os.sep, "/")
            rows[c].append({"image": _read_rgb(paths[i]), "heatmap": m, "bbox": (boxes.get(rel) or {}).get("bbox"),
                            "title": f"{Path(paths[i]).stem}\npred {classes[pred[i]]} {probs[i, pred[i]]:.2f}"})
    if rows:
        plots.gradcam_plot(rows, plots_dir / "gradcam.png")
        f.gradcam_png = f"{PLOTS}/gradcam.png"
    if with_box:
        cached = run.gradcam
        if cached and cached.get("model_sha256") == sha256_file(run.dir / "model.keras") \
                and cached.get("dataset") == str(ds.root) and cached.get("layer") == f.gradcam_layer \
                and cached.get("meta_sha256") == sha256_file(ds.root / "meta.json") \
                and cached.get("fraction") is not None and cached.get("limit") is None:
            f.localisation = cached
        else:
            f.localisation = localisation_score(run.dir, model=model)
            run.gradcam = f.localisation
    else:
        f.notes.append("Grad-CAM localisation is measured only on datasets whose meta.json records defect "
                       "bounding boxes (the bundled set)")


# ----------------------------------------------------------------------------------------------
# HTML


CSS = """
:root { --ok: #1a7f37; --bad: #cf222e; --muted: #57606a; --line: #d0d7de; --bg2: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1f2328;
       margin: 0 auto; padding: 16px 28px 48px; max-width: 1320px; }
h1 { font-size: 24px; margin: 8px 0 2px; } h2 { font-size: 19px; margin: 30px 0 8px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); } h3 { font-size: 15px; margin: 18px 0 6px; }
.sub, .note, figcaption, .muted { color: var(--muted); } .sub { margin: 0 0 10px; }
nav { position: sticky; top: 0; background: white; padding: 6px 0; border-bottom: 1px solid var(--line);
      z-index: 1; font-size: 13px; } nav a { margin-right: 12px; color: #0969da; text-decoration: none; }
.banner { border-radius: 6px; padding: 12px 16px; margin: 14px 0; color: white; }
.banner.pass { background: var(--ok); } .banner.fail { background: var(--bad); } .banner.none { background: #6e7781; }
.banner .head { font-size: 20px; font-weight: 700; letter-spacing: .04em; } .banner code { color: white; }
.banner ul { margin: 6px 0 0; padding-left: 20px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 170px;
        background: var(--bg2); }
.card .v { font-size: 18px; font-weight: 600; } .card .k { font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: var(--bg2); font-weight: 600; } td.l, th.l { text-align: left; }
tr.front td:first-child { font-weight: 600; } .ok { color: var(--ok); } .bad { color: var(--bad); font-weight: 600; }
.scroll { overflow-x: auto; }
img.plot { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.gallery figure { margin: 0; border: 1px solid var(--line); border-radius: 4px; padding: 6px; background: var(--bg2); }
.gallery img { width: 100%; height: auto; image-rendering: pixelated; display: block; }
.gallery figcaption { font-size: 12px; line-height: 1.3; margin-top: 4px; color: #1f2328; }
.gallery figcaption .muted { overflow-wrap: anywhere; }
td.wrap { white-space: normal; text-align: left; min-width: 140px; }
details { margin: 10px 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: var(--bg2); padding: 10px; border-radius: 4px; overflow-x: auto; font-size: 12px; }
.notes { border-left: 4px solid #bf8700; background: #fff8c5; padding: 8px 12px; margin: 10px 0; }
code { font-size: 12.5px; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def num(x: float) -> str:
    """A measured or allowed budget value: 4 significant digits, thousands plain (10,000 not 1e+04)."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _kb(b: float | None) -> str:
    return "—" if b is None else f"{b / 1024:,.1f}"


def _table(head: list[str], rows: list[list[str]], left: int = 1, classes: list[str] | None = None,
           wrap: tuple[int, ...] = ()) -> str:
    """An HTML table; cells are already-escaped HTML; the first ``left`` columns are left-aligned,
    the columns in ``wrap`` may wrap."""
    th = "".join(f'<th class="l">{h}</th>' if i < left or i in wrap or i - len(head) in wrap else f"<th>{h}</th>"
                 for i, h in enumerate(head))
    body = []
    for r_i, row in enumerate(rows):
        cls = f' class="{classes[r_i]}"' if classes and classes[r_i] else ""
        tds = "".join(f'<td class="wrap">{c}</td>' if i in wrap or i - len(row) in wrap else
                      f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _fig(src: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure style="margin:8px 0"><img class="plot" src="{_e(src)}" alt="{_e(alt)}">{cap}</figure>'


def _verdict_html(run: RunFiles) -> str:
    b = run.report.get("budgets")
    verdict = run.report.get("verdict")
    if b is None or verdict is None:
        return ('<div class="banner none"><span class="head">NOT CHECKED</span> — report.json has no budget '
                "verdict yet.</div>")
    broken = b.get("violations", [])
    n_checks = len(b.get("checks", []))
    if not broken:
        msg = f"all {n_checks} budget checks hold" if n_checks else "no budgets are set in the recipe"
        return f'<div class="banner pass"><span class="head">PASS</span> — {msg}.</div>'
    items = "".join(f"<li><code>{_e(v['artifact'])}</code>: <b>{_e(v['budget'])}</b> broken — measured "
                    f"{num(v['measured'])}{_e(v.get('unit', ''))}, allowed {num(v['allowed'])}{_e(v.get('unit', ''))}"
                    "</li>" for v in broken)
    return (f'<div class="banner fail"><span class="head">FAIL</span> — {len(broken)} of {n_checks} budget checks '
            "broken:"
            f"<ul>{items}</ul></div>")


def _budget_status(run: RunFiles) -> dict[str, tuple[int, list[dict]]]:
    """Per artifact: (number of budget checks, the broken checks)."""
    out: dict[str, tuple[int, list[dict]]] = {}
    for c in (run.report.get("budgets") or {}).get("checks", []):
        n, broken = out.get(c["artifact"], (0, []))
        out[c["artifact"]] = (n + 1, broken + ([c] if not c["ok"] else []))
    return out


def _artifacts_html(run: RunFiles, front: set[str]) -> str:
    threads = run.report.get("latency_protocol", {}).get("threads", [1])
    status = _budget_status(run)
    head = ["artifact", "format / runtime", "precision", "size KB<br>(gzip)", "top-1<br>(95 % interval)",
            "macro F1", "agreement"] + [f"p50 / p95 ms<br>@{t} thread{'s' if t != 1 else ''}" for t in threads]
    head += ["budgets"]
    rows, classes = [], []
    manifest_arts = (run.manifest or {}).get("artifacts", {})
    for name in run.artifact_names():
        a = run.report["artifacts"].get(name)
        mark = "★ " if _short(name) in front else ""
        if a is None:
            m = manifest_arts.get(name, {})
            rows.append([f"{mark}<code>{_e(name)}</code>", _e(m.get("format", "")), _e(m.get("precision", "")),
                         _kb(m.get("bytes")), '<span class="muted">not evaluated</span>', "", ""]
                        + ["—"] * len(threads) + [""])
            classes.append("")
            continue
        m = a.get("metrics", {})
        lo, hi = m.get("accuracy_ci95", (None, None))
        lat = []
        for t in threads:
            x = a.get("latency", {}).get(str(t))
            lat.append(f"{x['p50_ms']:.2f} / {x['p95_ms']:.2f}" if x else '<span class="muted">—</span>')
        n, broken = status.get(name, (0, []))
        budget = ('<span class="muted">none</span>' if not n else
                  f'<span class="ok">{n} ok</span>' if not broken else
                  f'<span class="bad">{len(broken)} of {n} broken:</span> ' + ", ".join(
                      f"{_e(c['budget'])} {num(c['measured'])} {'&lt;' if c['budget'].startswith('min') else '&gt;'} "
                      f"{num(c['allowed'])}{_e(c['unit'])}"
                      for c in broken))
        agreement = m.get("agreement")
        ci = f'<br><span class="muted">{lo:.3f} – {hi:.3f}</span>' if lo is not None else ""
        rows.append([f"{mark}<code>{_e(name)}</code>",
                     f'{_e(a.get("format") or "")}<br><span class="muted">{_e(a.get("runtime") or "")}</span>',
                     _e(a.get("precision") or ""),
                     f'{_kb(a.get("bytes"))}<br><span class="muted">{_kb(a.get("gzip_bytes"))}</span>',
                     f"{m.get('accuracy', float('nan')):.4f}{ci}", f"{m.get('macro_f1', float('nan')):.3f}",
                     "—" if agreement is None else f"{agreement:.4f}"] + lat + [budget])
        classes.append("front" if mark else "")
    return _table(head, rows, left=2, classes=classes, wrap=(-1,))


def _per_class_html(run: RunFiles) -> str:
    names = [n for n in run.artifact_names() if n in run.report["artifacts"]]
    ref = run.report["artifacts"][run.reference]["metrics"].get("per_class", {})
    lowest = min(ref, key=lambda c: ref[c]["recall"]) if ref else None
    head = ["class", "support"] + [f"<code>{_e(_short(n))}</code><br>P / R" for n in names]
    rows = []
    for c in run.classes:
        row = [_e(c) + (' <span class="bad">(lowest recall)</span>' if c == lowest else ""),
               str(ref.get(c, {}).get("support", ""))]
        for n in names:
            v = run.report["artifacts"][n]["metrics"].get("per_class", {}).get(c)
            if not v:
                row.append("—")
                continue
            r = f"{v['recall']:.2f}"
            row.append(f"{v['precision']:.2f} / " + (f'<span class="bad">{r}</span>' if v["recall"] < 0.8 else r))
        rows.append(row)
    return _table(head, rows, left=1)


def _training_caption(history: dict) -> str:
    parts = []
    for ph in history.get("phases", []):
        n = len(ph.get("loss", []))
        lr = ph.get("lr")
        lr0 = lr[0] if isinstance(lr, list) and lr else lr
        trainable = ph.get("trainable")
        if isinstance(trainable, list):
            trainable = ", ".join(trainable)
        best = min(ph.get("val_loss") or [float("nan")])
        parts.append(f"<b>{_e(ph.get('name', '?'))}</b>: {n} epoch(s), trainable {_e(trainable)}, "
                     f"lr {lr0:.2g}" + (f" ({_e(ph['schedule'])} decay)" if ph.get("schedule") else "") +
                     f", best val_loss {best:.4f}")
    return "; ".join(parts) + ". Early stopping restores the best epoch's weights (lowest val_loss)."


def _dataset_html(run: RunFiles) -> str:
    d = run.dataset
    if not d:
        return '<p class="note">No dataset.json in the run directory.</p>'
    counts = d.get("counts", {})
    splits = list(counts)
    head = ["class"] + splits + ["total"]
    rows = [[_e(c)] + [str(counts[s].get(c, 0)) for s in splits] + [str(sum(counts[s].get(c, 0) for s in splits))]
            for c in run.classes]
    rows.append(["<b>total</b>"] + [f"<b>{sum(counts[s].values())}</b>" for s in splits] +
                [f"<b>{sum(sum(v.values()) for v in counts.values())}</b>"])
    root = Path(d.get("root", ""))
    meta = _json_or_none(root / "meta.json") if d.get("root") else None
    synth = ""
    if meta and meta.get("generator") == "edgecnn.data.defects":
        synth = (f"<p><b>Synthetic data.</b> The bundled defect set: defects drawn procedurally (generator version "
                 f"{_e(meta.get('version'))}, seed {_e(meta.get('seed'))}) on crops of scikit-image's photographs "
                 f"({_e(', '.join(meta.get('textures', [])))}); {meta.get('hard_fraction', 0):.0%} of the defects "
                 "are drawn faint or small. Accuracy here says little about real parts until the model is checked "
                 "on real images.</p>")
    skipped = d.get("skipped") or []
    return (f"<p>Root <code>{_e(d.get('root'))}</code>, layout <code>{_e(d.get('layout'))}</code>"
            f"{'' if root.is_dir() else ' (<span class=bad>no longer on disk</span>)'}, fingerprint "
            f"<code>{_e(str(d.get('fingerprint', ''))[:16])}</code>"
            f"{f', {len(skipped)} unreadable image(s) skipped' if skipped else ''}.</p>{synth}" + _table(head, rows))


def _layers_html(f: ImageFindings) -> str:
    if not f.layers:
        return ""
    cols = list(dict.fromkeys(k for r in f.layers for k in r))
    cols = [c for c in cols if any(r.get(c) not in (None, "", (), []) for r in f.layers)]  # drop empty columns
    rows = [[_e(_fmt_cell(r.get(c))) for c in cols] for r in f.layers]
    total = f" · {f.total_params:,} parameters" if f.total_params is not None else ""
    total += f" · {f.macs / 1e6:,.1f} M MACs per image" if f.macs else ""
    return (f'<details><summary>Layers of model.keras ({len(f.layers)} layers{total}; from '
            f'<code>{_e(f.layers_source)}</code>)</summary>' +
            _table([_e(c.replace("_", " ")) for c in cols], rows, left=2,
                   wrap=tuple(i for i, c in enumerate(cols) if c in ("inputs", "note"))) +
            "</details>")


def _fmt_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (tuple, list)):
        if all(isinstance(x, int) or x is None for x in v):
            return "×".join("?" if x is None else str(x) for x in v)
        return ", ".join(str(x) for x in v)
    return str(v)


def _gallery_html(f: ImageFindings) -> str:
    if not f.misclassified:
        if f.n_test:
            return f"<p>No test image is misclassified by the reference model ({f.n_test} images).</p>"
        return ""
    items = []
    for m in f.misclassified:
        items.append(f'<figure><img src="{_e(m["src"])}" alt="{_e(m["file"])}"><figcaption>'
                     f'true <b>{_e(m["true"])}</b> → pred <b class="bad">{_e(m["pred"])}</b> '
                     f'({m["p_pred"]:.2f}; p(true) {m["p_true"]:.2f})<br><span class="muted">{_e(m["file"])}</span>'
                     "</figcaption></figure>")
    shown = len(f.misclassified)
    more = f", the {shown} most confident shown" if f.n_wrong > shown else ""
    return (f"<p>{f.n_wrong} of {f.n_test} test images misclassified by <code>model.keras</code>{more} "
            "(most confident mistakes first).</p>" f'<div class="gallery">{"".join(items)}</div>')


def _gradcam_html(f: ImageFindings) -> str:
    out = []
    loc = f.localisation
    if loc and loc.get("fraction") is not None:
        ratio = loc["fraction"] / loc["chance"] if loc.get("chance") else float("nan")
        out.append(f'<div class="cards"><div class="card"><div class="v">{loc["fraction"]:.1%}</div><div class="k">'
                   f'heatmap peak inside the defect box ({loc["n"]} defect test images)</div></div>'
                   f'<div class="card"><div class="v">{loc["chance"]:.1%}</div><div class="k">chance (mean box area / '
                   f'image area)</div></div><div class="card"><div class="v">{ratio:.1f}×</div><div class="k">'
                   "better than chance</div></div></div>")
        rows = [[_e(c), str(v["n"]), f"{v['fraction']:.1%}", f"{v['chance']:.1%}"]
                for c, v in loc.get("per_class", {}).items()]
        out.append(_table(["class", "images", "peak in box", "chance"], rows))
    if f.gradcam_png:
        out.append(_fig(f.gradcam_png, "Grad-CAM overlays",
                        f"Grad-CAM of the true class's logit at layer <code>{_e(f.gradcam_layer)}</code> "
                        f"({_e(f.gradcam_grid)} feature grid, upsampled): red = evidence for the class. Box = the "
                        "defect's bounding box from meta.json; + = heatmap peak. The peak can only land on one of "
                        "the grid's cells, so a coarse grid caps the localisation score; "
                        "<code>benchmarks/gradcam_localisation.py --layers NAME</code> scores finer, earlier layers."))
    return "".join(out)


def _confusion_section(run: RunFiles, plots_dir: Path) -> tuple[str, list[str]]:
    arts = run.report["artifacts"]
    ref = run.reference
    int8 = [n for n, a in arts.items() if n != ref and a.get("precision") == "int8"]
    others = [n for n in arts if n != ref and n not in int8]
    subtitles = {n: f"top-1 {arts[n]['metrics']['accuracy']:.3f}" for n in arts}
    html_parts, written = [], []
    main = [ref] + int8 if ref in arts else int8
    if main:
        plots.confusion_plot({n: arts[n]["metrics"]["confusion_matrix"] for n in main}, run.classes,
                             plots_dir / "confusion.png", subtitles=subtitles)
        written.append("confusion.png")
        html_parts.append(_fig(f"{PLOTS}/confusion.png", "confusion matrices",
                               "Rows: true class; columns: predicted; colour = share of the row; red = count of "
                               "a mistake. The float reference beside the int8 artifacts."))
    if others:
        plots.confusion_plot({n: arts[n]["metrics"]["confusion_matrix"] for n in others}, run.classes,
                             plots_dir / "confusion_other.png", subtitles=subtitles)
        written.append("confusion_other.png")
        html_parts.append("<details><summary>Confusion matrices of the other artifacts</summary>" +
                          _fig(f"{PLOTS}/confusion_other.png", "confusion matrices of the other artifacts") +
                          "</details>")
    return "".join(html_parts), written


def _files_html(run: RunFiles) -> str:
    names = ["report.md", "report.json", "MODEL_CARD.md", "manifest.json", "recipe.yaml", "history.json",
             "dataset.json", "gradcam.json", "labels.txt"]
    links = [f'<a href="{_e(n)}">{_e(n)}</a>' for n in names if (run.dir / n).is_file()]
    arts = [f'<a href="{_e(n)}">{_e(n)}</a>' for n in run.artifact_names() if (run.dir / n).is_file()]
    return f"<p>{' · '.join(links)}</p><p>Artifacts: {' · '.join(arts)}</p>"


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def _render_html(run: RunFiles, f: ImageFindings, sections: dict[str, str], front: set[str]) -> str:
    r = run.report
    ref = r["artifacts"].get(run.reference, {}).get("metrics", {})
    mach = r.get("machine", {})
    proto = r.get("latency_protocol", {})
    model = (run.manifest or {}).get("model", {})
    desc = run.recipe.description if run.recipe is not None else ""
    nav = [("verdict", "Verdict"), ("artifacts", "Artifacts"), ("tradeoff", "Trade-off")]
    nav += [("compression", "Compression")] if r.get("compress") else []
    nav += [("confusion", "Confusion"),
           ("per-class", "Per class"), ("training", "Training"), ("mistakes", "Mistakes"), ("gradcam", "Grad-CAM"),
           ("data", "Data"), ("model", "Model"), ("files", "Files")]
    smallest = min(r["artifacts"].items(), key=lambda kv: kv[1].get("bytes", 1 << 62))
    fastest = min(((n, latency_p50(a)[0]) for n, a in r["artifacts"].items() if latency_p50(a)[0] is not None),
                  key=lambda kv: kv[1], default=(None, None))
    lo, hi = ref.get("accuracy_ci95", (0, 0))
    cards = [(f"{ref.get('accuracy', float('nan')):.1%}", f"reference top-1 (95 %: {lo:.1%} – {hi:.1%})"),
             (f"{_kb(smallest[1].get('bytes'))} KB", f"smallest: {_short(smallest[0])}")]
    if fastest[0]:
        cards.append((f"{fastest[1]:.2f} ms", f"fastest p50 @1 thr: {_short(fastest[0])}"))
    cards.append((str(r.get("test_images", "?")), f"test images, {len(run.classes)} classes"))
    notes = "".join(f"<li>{_e(n)}</li>" for n in f.notes)
    body = [
        f"<h1>{_e(run.name)}</h1>",
        f'<p class="sub">{_e(desc)} Model <code>{_e(model.get("name", "?"))}</code> at '
        f'{_e(model.get("input_size", "?"))} px, classes {_e(", ".join(run.classes))}. Evaluated {_e(r.get("created"))}'
        f' on {_e(mach.get("cpu", "?"))} ({_e(mach.get("cores", "?"))} cores); latency: batch '
        f'{_e(proto.get("batch", 1))}, {_e(proto.get("warmup", "?"))} warm-up + {_e(proto.get("runs", "?"))} timed '
        "runs.</p>",
        "<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in nav) + "</nav>",
        f'<section id="verdict"><h2>Verdict</h2>{_verdict_html(run)}<div class="cards">' +
        "".join(f'<div class="card"><div class="v">{v}</div><div class="k">{_e(k)}</div></div>' for v, k in cards) +
        "</div>" + (f'<div class="notes"><b>Notes</b><ul>{notes}</ul></div>' if notes else "") + "</section>",
        f'<section id="artifacts"><h2>Artifacts</h2>{_artifacts_html(run, front)}<p class="note">top-1 on the test '
        "split with its 95 % Wilson interval; agreement = share of test images where the artifact's top-1 equals "
        "the float reference's; ★ = on the accuracy-vs-latency Pareto front.</p>" + sections.get("budgets", "") +
        "</section>",
        f'<section id="tradeoff"><h2>Accuracy vs latency vs size</h2>{sections.get("tradeoff", "")}</section>',
        _compression_html(run),
        f'<section id="confusion"><h2>Confusion matrices</h2>{sections.get("confusion", "")}</section>',
        f'<section id="per-class"><h2>Per-class precision / recall</h2>{_per_class_html(run)}<p class="note">'
        "Recall below 0.80 in red.</p></section>",
        f'<section id="training"><h2>Training</h2>{sections.get("training", "")}</section>',
        f'<section id="mistakes"><h2>Misclassified test images</h2>'
        f'{_gallery_html(f) or "<p class=note>Not available (see the notes at the top).</p>"}</section>',
        f'<section id="gradcam"><h2>Where the model looks (Grad-CAM)</h2>'
        f'{_gradcam_html(f) or "<p class=note>Not available (see the notes at the top).</p>"}</section>',
        f'<section id="data"><h2>Data</h2>{_dataset_html(run)}</section>',
        f'<section id="model"><h2>Model</h2>{_layers_html(f) or "<p class=note>Layer table not available.</p>"}'
        + (f"<details><summary>Recipe (resolved, recipe.yaml)</summary><pre>{_e(run.recipe_text)}</pre></details>"
           if run.recipe_text else "") + "</section>",
        f'<section id="files"><h2>Files</h2>{_files_html(run)}</section>',
    ]
    return _page(f"{run.name} — edgecnn report", "\n".join(body))


def _compression_html(run: RunFiles) -> str:
    """The chooser's candidates (compress stage), the pick per runtime and why; empty without one."""
    from edgecnn.evaluate.run import COMPRESSION_HEAD, compression_rows, compression_summary

    comp = run.report.get("compress")
    if not comp:
        return ""
    rows = compression_rows(comp)
    cls = {"pick": "front", "fits": "", "over": "", "failed": "bad"}
    table = _table([_e(h) for h in COMPRESSION_HEAD], [[_e(c) for c in row] for row, _ in rows], left=2,
                   classes=[cls[t] for _, t in rows], wrap=(-1,))
    return (f'<section id="compression"><h2>Compression: the int8 chooser</h2><p>{_e(compression_summary(comp))}'
            f"</p>{table}<p class=\"note\">Measured on the validation split, never the test split; each runtime "
            "escalates from post-training quantisation to better calibration, QAT and mixed precision until the "
            "drop fits. ★ = on the Pareto front of (val top-1, size, latency).</p></section>")


def _budgets_table(run: RunFiles) -> str:
    checks = (run.report.get("budgets") or {}).get("checks", [])
    if not checks:
        return ""
    rows = [[f"<code>{_e(c['artifact'])}</code>", _e(c["budget"]), f"{num(c['measured'])}{_e(c['unit'])}",
             f"{num(c['allowed'])}{_e(c['unit'])}", '<span class="ok">ok</span>' if c["ok"] else
             '<span class="bad">BROKEN</span>'] for c in checks]
    return (f"<details><summary>All {len(checks)} budget checks</summary>" +
            _table(["artifact", "budget", "measured", "allowed", "verdict"], rows, left=2) + "</details>")


def _swap_in(tmp_dir: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp_dir`` with two renames, so a reader sees the old or the new folder."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp_dir, final)
    shutil.rmtree(old, ignore_errors=True)


def render_report(run_dir: str | os.PathLike, *, images: bool = True, model_card: bool = True) -> Path:
    """Write ``RUN_DIR/report.html`` and its figures in ``RUN_DIR/plots/`` (and MODEL_CARD.md).

    Figures are drawn into a temporary folder that replaces ``plots/`` in one rename; the HTML is
    written atomically after it, so no reader sees a page whose images are missing.

    Args:
        run_dir: an evaluated run directory (report.json; manifest, history, model.keras, dataset
            optional).
        images: also load model.keras and the test images for the misclassified gallery, Grad-CAM
            (and ``gradcam.json``, reused while model.keras is unchanged) and the layer table.
        model_card: also write ``RUN_DIR/MODEL_CARD.md`` (see :func:`write_model_card`).

    Returns:
        The path of report.html.

    Raises:
        EdgecnnError: the run has no readable report.json. Everything else missing becomes a note.
    """
    run = read_run(run_dir)
    tmp = run.dir / f".{PLOTS}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        sections: dict[str, str] = {"budgets": _budgets_table(run)}
        points = _tradeoff_points(run)
        front_idx = plots.pareto_front(points)
        front = {points[i].label for i in front_idx}
        plots.tradeoff_plot(points, tmp / "tradeoff.png", title=f"{run.name}: accuracy vs latency vs size")
        hollow = [p.label for p in points if p.note]
        sections["tradeoff"] = _fig(
            f"{PLOTS}/tradeoff.png", "accuracy vs latency",
            "x: p50 latency at batch 1 on one thread (log scale); y: top-1 with its 95 % interval; marker area ∝ "
            "file size. The dashed step line is the Pareto front: no other artifact is both faster and more "
            f"accurate. Front: {_e(', '.join(points[i].label for i in front_idx))}." +
            (f" Dashed hollow markers ({_e(', '.join(hollow))}) have no 1-thread timing and are plotted at the "
             "fewest threads measured." if hollow else ""))
        sections["confusion"], _ = _confusion_section(run, tmp)
        phases = (run.history or {}).get("phases") or []
        if phases:
            plots.training_plot(phases, tmp / "training.png")
            sections["training"] = _fig(f"{PLOTS}/training.png", "training curves", _training_caption(run.history))
        else:
            sections["training"] = '<p class="note">No history.json in the run directory.</p>'
        findings = _analyse_images(run, tmp) if images else ImageFindings(
            notes=["image sections not rendered (render_report(images=False))"])
        _swap_in(tmp, run.dir / PLOTS)
        if model_card:
            from edgecnn.evaluate.model_card import write_model_card

            write_model_card(run.dir, run=run, localisation=findings.localisation)
        out = write_text(run.dir / REPORT_HTML, _render_html(run, findings, sections, front))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("report: %s", out)
    return out


# ----------------------------------------------------------------------------------------------
# Across runs


def compare_runs(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> Path:
    """Side-by-side comparison of several evaluated runs: ``OUT_DIR/compare.html`` and
    ``OUT_DIR/plots/compare_tradeoff.png`` (every artifact of every run on one accuracy-vs-latency plot).

    Args:
        run_dirs: two or more run directories with report.json (one works too).
        out_dir: a folder of its own for the page (created if missing); not a run directory,
            whose plots/ folder render_report replaces.

    Returns:
        The path of compare.html.

    Raises:
        EdgecnnError: no run directory given, or one of them has no report.json.
    """
    if not run_dirs:
        raise EdgecnnError("compare_runs: pass at least one run directory (with report.json).")
    runs = [read_run(d) for d in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = []
    for r in runs:  # two runs of one recipe in different folders must stay distinguishable
        label = r.name if sum(x.name == r.name for x in runs) == 1 else f"{r.name} ({r.dir.name})"
        labels.append(label)
    points = [p for r, label in zip(runs, labels) for p in _tradeoff_points(r, group=label)]
    with atomic_path(out_dir / PLOTS / "compare_tradeoff.png") as tmp:
        plots.tradeoff_plot(points, tmp, title="accuracy vs latency vs size, all runs")
    front = {(points[i].group, points[i].label) for i in plots.pareto_front(points)}

    notes = []
    fps = {(r.dataset or {}).get("fingerprint") for r in runs}
    if len(fps) > 1:
        notes.append("The runs were evaluated on different datasets (dataset fingerprints differ): their accuracies "
                     "are not directly comparable.")
    cpus = {((r.report.get("machine") or {}).get("cpu"), (r.report.get("machine") or {}).get("cores")) for r in runs}
    if len(cpus) > 1:
        notes.append("The runs were timed on different machines: compare latencies within a run, not across.")

    summary_rows = []
    for r, label in zip(runs, labels):
        model = (r.manifest or {}).get("model", {})
        ref = r.report["artifacts"].get(r.reference, {}).get("metrics", {})
        lo, hi = ref.get("accuracy_ci95", (0, 0))
        report_link = r.dir / REPORT_HTML
        rel = os.path.relpath(report_link, out_dir).replace(os.sep, "/")
        name = f'<a href="{_e(rel)}">{_e(label)}</a>' if report_link.is_file() else _e(label)
        verdict = r.report.get("verdict")
        summary_rows.append([name, f"<code>{_e(model.get('name', '?'))}</code>", _e(model.get("input_size", "?")),
                             str(r.report.get("test_images", "?")), f"{ref.get('accuracy', float('nan')):.4f}",
                             f"{lo:.3f} – {hi:.3f}",
                             '<span class="muted">—</span>' if verdict is None else
                             f'<span class="{"ok" if verdict == "pass" else "bad"}">{_e(verdict.upper())}</span>'])
    rows, classes = [], []
    for r, label in zip(runs, labels):
        for name, a in r.report["artifacts"].items():
            m = a.get("metrics", {})
            lo, hi = m.get("accuracy_ci95", (0, 0))
            p50, note = latency_p50(a)
            on_front = (label, _short(name)) in front
            rows.append([_e(label), ("★ " if on_front else "") + f"<code>{_e(name)}</code>",
                         _e(a.get("precision") or ""),
                         f"{m.get('accuracy', float('nan')):.4f}", f"{lo:.3f} – {hi:.3f}",
                         "—" if p50 is None else f"{p50:.2f}" + (f' <span class="muted">({_e(note)})</span>'
                                                                  if note else ""),
                         _kb(a.get("bytes")), _kb(a.get("gzip_bytes"))])
            classes.append("front" if on_front else "")
    note_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    body = [f"<h1>Comparison of {len(runs)} runs</h1>",
            f'<p class="sub">{_e(", ".join(labels))}</p>',
            f'<div class="notes"><b>Notes</b><ul>{note_html}</ul></div>' if notes else "",
            "<h2>Runs</h2>", _table(["run", "model", "input px", "test images", "reference top-1", "95 % interval",
                                     "verdict"], summary_rows, left=2),
            "<h2>Accuracy vs latency vs size</h2>",
            _fig(f"{PLOTS}/compare_tradeoff.png", "accuracy vs latency, all runs",
                 "Colour = run; x: p50 latency at batch 1, one thread (log); y: top-1 with its 95 % interval; marker "
                 "area ∝ file size; dashed step line and ★ = the Pareto front over all runs."),
            "<h2>Every artifact</h2>",
            _table(["run", "artifact", "precision", "top-1", "95 % interval", "p50 ms @1 thr", "size KB", "gzip KB"],
                   rows, left=2, classes=classes)]
    return write_text(out_dir / COMPARE_HTML, _page("edgecnn: comparison of runs", "\n".join(body)))

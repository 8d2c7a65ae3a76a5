"""The built-in sections of report.html, top to bottom; each is one registered function.

They read the run directory's files (:class:`~edgecnn.report.run_files.RunFiles`) and draw
figures from numbers already measured; the images of the model (misclassified gallery, Grad-CAM,
layer table) come from ``findings/``, written by the evaluate stage. A file that is missing
becomes a note in its section.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecnn.report import plots
from edgecnn.report.compression import COMPRESSION_HEAD, compression_rows, compression_summary
from edgecnn.report.markup import (
    check_verdict,
    escape,
    figure_html,
    kb,
    measured_text,
    note,
    num,
    table,
    unit_text,
    unmeasured_text,
)
from edgecnn.report.pareto import PARETO_DEFINITION, pareto_front
from edgecnn.report.registry import ReportContext, register_section
from edgecnn.report.run_files import FINDINGS_JSON, RunFiles, latency_p50, read_json_or_none, short_name

__all__: list[str] = []  # the sections are reached through the registry (edgecnn.report.list_sections)

NO_FINDINGS = (f"{FINDINGS_JSON} is missing: the misclassified images, Grad-CAM and the layer table are written by "
               "the evaluate stage (`edgecnn evaluate RUN_DIR`).")


def _findings(ctx: ReportContext, key: str) -> Any:
    """One entry of findings.json (None when the file or the entry is missing)."""
    return (ctx.run.findings or {}).get(key)


def _unavailable(ctx: ReportContext) -> str:
    return note(NO_FINDINGS if ctx.run.findings is None else "Not available (see the notes at the top).")


# ----------------------------------------------------------------------------------------------
# Verdict and artifacts


def _verdict_banner(run: RunFiles) -> str:
    b = run.report.get("budgets")
    verdict = run.report.get("verdict")
    if b is None or verdict is None:
        return ('<div class="banner none"><span class="head">NOT CHECKED</span> — report.json has no budget '
                "verdict yet.</div>")
    broken = b.get("violations", [])
    n_checks = len(b.get("checks", []))
    withheld = run.report.get("withheld") or {}
    if withheld:
        items = "".join(f"<li><code>{escape(fmt)}</code> ({escape(w['runtime'])}): {escape(w['reason'])}</li>"
                        for fmt, w in withheld.items())
        return (f'<div class="banner fail"><span class="head">FAIL</span> — int8 withheld for {len(withheld)} '
                f"runtime(s): no route held the budget, so only the float artifacts ship.<ul>{items}</ul></div>")
    if not broken and not n_checks:
        return ('<div class="banner none"><span class="head">NO BUDGETS</span> — the recipe sets none, so nothing '
                "was checked against a limit.</div>")
    if not broken:
        return f'<div class="banner pass"><span class="head">PASS</span> — all {n_checks} budget checks hold.</div>'
    items = "".join(f"<li><code>{escape(v['artifact'])}</code>: <b>{escape(v['budget'])}</b> "
                    f"{escape(check_verdict(v).lower())} — measured {escape(measured_text(v))}, allowed "
                    f"{num(v['allowed'])}{escape(unit_text(v.get('unit')))}</li>" for v in broken)
    return (f'<div class="banner fail"><span class="head">FAIL</span> — {len(broken)} of {n_checks} budget checks '
            f"broken:<ul>{items}</ul></div>")


@register_section("verdict", order=10, title="Verdict")
def verdict_section(ctx: ReportContext) -> str:
    """The budget verdict banner, the headline figures, and the notes on what could not be shown."""
    r = ctx.run.report
    ref = r["artifacts"].get(ctx.run.reference, {}).get("metrics", {})
    smallest = min(r["artifacts"].items(), key=lambda kv: kv[1].get("bytes", 1 << 62))
    fastest = min(((n, latency_p50(a)[0]) for n, a in ctx.run.measured().items() if latency_p50(a)[0] is not None),
                  key=lambda kv: kv[1], default=(None, None))
    label, key = _headline(ctx.run)[0]
    if key == "accuracy":
        lo, hi = ref.get("accuracy_ci95", (0, 0))
        head = (f"{ref.get('accuracy', float('nan')):.1%}", f"reference top-1 (95 %: {lo:.1%} – {hi:.1%})")
    else:
        head = (f"{ref.get(key, float('nan')):.4f}", f"reference {label}")
    cards = [head, (f"{kb(smallest[1].get('bytes'))} KB", f"smallest: {short_name(smallest[0])}")]
    if fastest[0]:
        cards.append((f"{fastest[1]:.2f} ms", f"fastest p50 @1 thr: {short_name(fastest[0])}"))
    cards.append((str(r.get("test_images", "?")), f"test images, {len(ctx.run.classes)} classes"))
    notes = "".join(f"<li>{escape(n)}</li>" for n in ctx.notes)
    return (_verdict_banner(ctx.run) + '<div class="cards">' +
            "".join(f'<div class="card"><div class="v">{v}</div><div class="k">{escape(k)}</div></div>'
                    for v, k in cards) +
            "</div>" + (f'<div class="notes"><b>Notes</b><ul>{notes}</ul></div>' if notes else ""))


def _headline(run: RunFiles) -> tuple[tuple[str, str], ...]:
    """The task's headline ``(label, metric)`` pairs (top-1 / macro F1 / agreement for a classifier)."""
    from edgecnn.tasks import get_task

    return get_task(run.task).headline


def _budget_status(run: RunFiles) -> dict[str, tuple[int, list[dict]]]:
    """Per artifact: (number of budget checks, the broken checks)."""
    out: dict[str, tuple[int, list[dict]]] = {}
    for c in (run.report.get("budgets") or {}).get("checks", []):
        n, broken = out.get(c["artifact"], (0, []))
        out[c["artifact"]] = (n + 1, broken + ([c] if not c["ok"] else []))
    return out


def _budgets_details(run: RunFiles) -> str:
    checks = (run.report.get("budgets") or {}).get("checks", [])
    if not checks:
        return ""
    rows = [[f"<code>{escape(c['artifact'])}</code>", escape(c["budget"]),
             escape(measured_text(c)), f"{num(c['allowed'])}{escape(unit_text(c['unit']))}",
             f'<span class="{"ok" if c["ok"] else "bad"}">{escape(check_verdict(c))}</span>'] for c in checks]
    return (f"<details><summary>All {len(checks)} budget checks</summary>" +
            table(["artifact", "budget", "measured", "allowed", "verdict"], rows, left=2) + "</details>")


@register_section("artifacts", order=20, title="Artifacts")
def artifacts_section(ctx: ReportContext) -> str:
    """Every artifact's size, accuracy, agreement, latency and budgets; ★ = on the Pareto front."""
    run = ctx.run
    threads = run.report.get("latency_protocol", {}).get("threads", [1])
    status = _budget_status(run)
    headline = _headline(run)
    head = ["artifact", "format / runtime", "precision", "size KB<br>(gzip)"]
    head += [f"{escape(label)}<br>(95 % interval)" if key == "accuracy" else escape(label) for label, key in headline]
    head += [f"p50 / p95 ms<br>@{t} thread{'s' if t != 1 else ''}" for t in threads]
    head += ["budgets"]
    rows, classes = [], []
    manifest_arts = (run.manifest or {}).get("artifacts", {})
    for name in run.artifact_names():
        a = run.report["artifacts"].get(name)
        mark = "★ " if short_name(name) in ctx.front else ""
        if a is None or "metrics" not in a:
            m = {**manifest_arts.get(name, {}), **(a or {})}
            why = unmeasured_text(m)
            rows.append([f"{mark}<code>{escape(name)}</code>",
                         f'{escape(m.get("format") or "")}<br><span class="muted">{escape(m.get("runtime") or "")}'
                         "</span>", escape(m.get("precision") or ""), kb(m.get("bytes")),
                         f'<span class="muted">{escape(why)}</span>'] + [""] * (len(headline) - 1) +
                        ["—"] * len(threads) + [""])
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
                      f"{escape(c['budget'])} {num(c['measured'])} "
                      f"{'&lt;' if c['budget'].startswith('min') else '&gt;'} "
                      f"{num(c['allowed'])}{escape(unit_text(c['unit']))}"
                      for c in broken))
        ci = f'<br><span class="muted">{lo:.3f} – {hi:.3f}</span>' if lo is not None else ""
        figures = ["—" if not isinstance(m.get(key), (int, float)) else
                   f"{m[key]:.3f}" if key == "macro_f1" else f"{m[key]:.4f}" + (ci if key == "accuracy" else "")
                   for _, key in headline]
        rows.append([f"{mark}<code>{escape(name)}</code>",
                     f'{escape(a.get("format") or "")}<br><span class="muted">{escape(a.get("runtime") or "")}'
                     "</span>",
                     escape(a.get("precision") or ""),
                     f'{kb(a.get("bytes"))}<br><span class="muted">{kb(a.get("gzip_bytes"))}</span>'] +
                    figures + lat + [budget])
        classes.append("front" if mark else "")
    return (table(head, rows, left=2, classes=classes, wrap=(-1,)) +
            '<p class="note">top-1 on the test split with its 95 % Wilson interval; agreement = share of test images '
            "where the artifact's top-1 equals the float reference's; ★ = on the Pareto front of accuracy vs "
            f"latency ({escape(PARETO_DEFINITION)}).</p>" + _budgets_details(run))


@register_section("tradeoff", order=30, title="Accuracy vs latency vs size", nav="Trade-off", tasks=("classify",))
def tradeoff_section(ctx: ReportContext) -> str:
    """The accuracy-vs-latency plot, marker area = size, with the Pareto front."""
    points = ctx.tradeoff_points
    path, src = ctx.plot_path("tradeoff.png")
    plots.tradeoff_plot(points, path, title=f"{ctx.run.name}: accuracy vs latency vs size")
    front = [points[i].label for i in pareto_front(points)]
    hollow = [p.label for p in points if p.note]
    return figure_html(
        src, "accuracy vs latency",
        "x: p50 latency at batch 1 on one thread (log scale); y: top-1 with its 95 % interval; marker area ∝ "
        f"file size. The dashed step line is the Pareto front: {escape(PARETO_DEFINITION)}. "
        f"Front: {escape(', '.join(front))}." +
        (f" Dashed hollow markers ({escape(', '.join(hollow))}) have no 1-thread timing and are plotted at the "
         "fewest threads measured." if hollow else ""))


@register_section("compression", order=40, title="Compression: the int8 chooser", nav="Compression",
                  tasks=("classify",))
def compression_section(ctx: ReportContext) -> str | None:
    """The chooser's candidates (compress stage), the pick per runtime and why; left out without one."""
    comp = ctx.run.report.get("compress")
    if not comp:
        return None
    rows = compression_rows(comp)
    cls = {"pick": "front", "fits": "", "over": "", "failed": "bad"}
    body = table([escape(h) for h in COMPRESSION_HEAD], [[escape(c) for c in row] for row, _ in rows], left=2,
                 classes=[cls[t] for _, t in rows], wrap=(-1,))
    return (f"<p>{escape(compression_summary(comp))}</p>{body}<p class=\"note\">Measured on the validation split, "
            "never the test split; each runtime escalates from post-training quantisation to better calibration, "
            "QAT and mixed precision until the drop fits. ★ = on the Pareto front of val top-1 vs p50 latency "
            f"({escape(PARETO_DEFINITION)}).</p>")


# ----------------------------------------------------------------------------------------------
# Per-class figures and training


@register_section("confusion", order=50, title="Confusion matrices", nav="Confusion", tasks=("classify",))
def confusion_section(ctx: ReportContext) -> str:
    """The float reference beside the int8 artifacts; the other artifacts folded away."""
    arts = ctx.run.measured()
    ref = ctx.run.reference
    int8 = [n for n, a in arts.items() if n != ref and a.get("precision") == "int8"]
    others = [n for n in arts if n != ref and n not in int8]
    subtitles = {n: f"top-1 {arts[n]['metrics']['accuracy']:.3f}" for n in arts}
    parts = []
    main = [ref] + int8 if ref in arts else int8
    if main:
        path, src = ctx.plot_path("confusion.png")
        plots.confusion_plot({n: arts[n]["metrics"]["confusion_matrix"] for n in main}, ctx.run.classes, path,
                             subtitles=subtitles)
        parts.append(figure_html(src, "confusion matrices",
                                 "Rows: true class; columns: predicted; colour = share of the row; red = count of "
                                 "a mistake. The float reference beside the int8 artifacts."))
    if others:
        path, src = ctx.plot_path("confusion_other.png")
        plots.confusion_plot({n: arts[n]["metrics"]["confusion_matrix"] for n in others}, ctx.run.classes, path,
                             subtitles=subtitles)
        parts.append("<details><summary>Confusion matrices of the other artifacts</summary>" +
                     figure_html(src, "confusion matrices of the other artifacts") + "</details>")
    return "".join(parts)


@register_section("per-class", order=60, title="Per-class precision / recall", nav="Per class", tasks=("classify",))
def per_class_section(ctx: ReportContext) -> str:
    """Precision and recall of every class for every artifact; recall below 0.80 in red."""
    run = ctx.run
    measured = run.measured()
    names = [n for n in run.artifact_names() if n in measured]
    ref = measured.get(run.reference, {}).get("metrics", {}).get("per_class", {})
    lowest = min(ref, key=lambda c: ref[c]["recall"]) if ref else None
    head = ["class", "support"] + [f"<code>{escape(short_name(n))}</code><br>P / R" for n in names]
    rows = []
    for c in run.classes:
        row = [escape(c) + (' <span class="bad">(lowest recall)</span>' if c == lowest else ""),
               str(ref.get(c, {}).get("support", ""))]
        for n in names:
            v = measured[n]["metrics"].get("per_class", {}).get(c)
            if not v:
                row.append("—")
                continue
            r = f"{v['recall']:.2f}"
            row.append(f"{v['precision']:.2f} / " + (f'<span class="bad">{r}</span>' if v["recall"] < 0.8 else r))
        rows.append(row)
    return table(head, rows, left=1) + '<p class="note">Recall below 0.80 in red.</p>'


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
        parts.append(f"<b>{escape(ph.get('name', '?'))}</b>: {n} epoch(s), trainable {escape(trainable)}, "
                     f"lr {lr0:.2g}" + (f" ({escape(ph['schedule'])} decay)" if ph.get("schedule") else "") +
                     f", best val_loss {best:.4f}")
    return "; ".join(parts) + ". Early stopping restores the best epoch's weights (lowest val_loss)."


@register_section("training", order=70, title="Training", tasks=("classify",))
def training_section(ctx: ReportContext) -> str:
    """Loss, accuracy and learning rate of every phase on one epoch axis (history.json)."""
    phases = (ctx.run.history or {}).get("phases") or []
    if not phases:
        return note("No history.json in the run directory.")
    path, src = ctx.plot_path("training.png")
    plots.training_plot(phases, path)
    return figure_html(src, "training curves", _training_caption(ctx.run.history))


# ----------------------------------------------------------------------------------------------
# What the evaluate stage found in the images (findings/)


@register_section("mistakes", order=80, title="Misclassified test images", nav="Mistakes", tasks=("classify",))
def mistakes_section(ctx: ReportContext) -> str:
    """The reference model's most confident mistakes on the test split (findings/misclassified_*.png)."""
    g = _findings(ctx, "misclassified")
    if not g:
        return _unavailable(ctx)
    images = g.get("images", [])
    if not images:
        return f"<p>No test image is misclassified by the reference model ({g['n_test']} images).</p>"
    items = [f'<figure><img src="{escape(m["src"])}" alt="{escape(m["file"])}"><figcaption>'
             f'true <b>{escape(m["true"])}</b> → pred <b class="bad">{escape(m["pred"])}</b> '
             f'({m["p_pred"]:.2f}; p(true) {m["p_true"]:.2f})<br><span class="muted">{escape(m["file"])}</span>'
             "</figcaption></figure>" for m in images]
    more = f", the {len(images)} most confident shown" if g["n_wrong"] > len(images) else ""
    return (f"<p>{g['n_wrong']} of {g['n_test']} test images misclassified by <code>{escape(ctx.run.reference)}"
            f"</code>{more} (most confident mistakes first).</p>" f'<div class="gallery">{"".join(items)}</div>')


@register_section("gradcam", order=90, title="Where the model looks (Grad-CAM)", nav="Grad-CAM", tasks=("classify",))
def gradcam_section(ctx: ReportContext) -> str:
    """How often the Grad-CAM peak lands in the defect's box, and the overlays (findings/gradcam.png)."""
    out = []
    loc = ctx.run.localisation
    if loc and loc.get("fraction") is not None:
        ratio = loc["fraction"] / loc["chance"] if loc.get("chance") else float("nan")
        out.append(f'<div class="cards"><div class="card"><div class="v">{loc["fraction"]:.1%}</div><div class="k">'
                   f'heatmap peak inside the defect box ({loc["n"]} defect test images)</div></div>'
                   f'<div class="card"><div class="v">{loc["chance"]:.1%}</div><div class="k">chance (mean box area / '
                   f'image area)</div></div><div class="card"><div class="v">{ratio:.1f}×</div><div class="k">'
                   "better than chance</div></div></div>")
        rows = [[escape(c), str(v["n"]), f"{v['fraction']:.1%}", f"{v['chance']:.1%}"]
                for c, v in loc.get("per_class", {}).items()]
        out.append(table(["class", "images", "peak in box", "chance"], rows))
    g = _findings(ctx, "gradcam")
    if g and g.get("src"):
        out.append(figure_html(
            g["src"], "Grad-CAM overlays",
            f"Grad-CAM of the true class's logit at layer <code>{escape(g.get('layer', '?'))}</code> "
            f"({escape(g.get('grid', '?'))} feature grid, upsampled): red = evidence for the class. Box = the "
            "defect's bounding box from meta.json; + = heatmap peak. The peak can only land on one of the grid's "
            "cells, so a coarse grid caps the localisation score; "
            "<code>benchmarks/gradcam_localisation.py --layers NAME</code> scores finer, earlier layers."))
    return "".join(out) or _unavailable(ctx)


# ----------------------------------------------------------------------------------------------
# Data, model, files


@register_section("data", order=100, title="Data")
def data_section(ctx: ReportContext) -> str:
    """Images per class and split (dataset.json); whether the data is the bundled synthetic set."""
    run = ctx.run
    d = run.dataset
    if not d:
        return note("No dataset.json in the run directory.")
    counts = d.get("counts", {})
    splits = list(counts)
    head = ["class"] + splits + ["total"]
    rows = [[escape(c)] + [str(counts[s].get(c, 0)) for s in splits] +
            [str(sum(counts[s].get(c, 0) for s in splits))] for c in run.classes]
    rows.append(["<b>total</b>"] + [f"<b>{sum(counts[s].values())}</b>" for s in splits] +
                [f"<b>{sum(sum(v.values()) for v in counts.values())}</b>"])
    root = Path(d.get("root", ""))
    meta = read_json_or_none(root / "meta.json") if d.get("root") else None
    synth = ""
    if meta and meta.get("generator") == "edgecnn.data.defects":
        synth = (f"<p><b>Synthetic data.</b> The bundled defect set: defects drawn procedurally (generator version "
                 f"{escape(meta.get('version'))}, seed {escape(meta.get('seed'))}) on crops of scikit-image's "
                 f"photographs ({escape(', '.join(meta.get('textures', [])))}); {meta.get('hard_fraction', 0):.0%} "
                 "of the defects are drawn faint or small. Accuracy here says little about real parts until the "
                 "model is checked on real images.</p>")
    skipped = d.get("skipped") or []
    return (f"<p>Root <code>{escape(d.get('root'))}</code>, layout <code>{escape(d.get('layout'))}</code>"
            f"{'' if root.is_dir() else ' (<span class=bad>no longer on disk</span>)'}, fingerprint "
            f"<code>{escape(str(d.get('fingerprint', ''))[:16])}</code>"
            f"{f', {len(skipped)} unreadable image(s) skipped' if skipped else ''}.</p>{synth}" + table(head, rows))


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


@register_section("model", order=110, title="Model")
def model_section(ctx: ReportContext) -> str:
    """The per-layer table of model.keras (findings.json "layers") and the resolved recipe."""
    layers = _findings(ctx, "layers") or {}
    rows_in = layers.get("rows") or []
    if rows_in:
        cols = list(dict.fromkeys(k for r in rows_in for k in r))
        cols = [c for c in cols if any(r.get(c) not in (None, "", (), []) for r in rows_in)]  # drop empty columns
        rows = [[escape(_fmt_cell(r.get(c))) for c in cols] for r in rows_in]
        total = f" · {layers['total_params']:,} parameters" if layers.get("total_params") is not None else ""
        total += f" · {layers['macs'] / 1e6:,.1f} M MACs per image" if layers.get("macs") else ""
        body = (f"<details><summary>Layers of {escape(ctx.run.reference)} ({len(rows_in)} layers{total}; from "
                f"<code>{escape(layers.get('source', '?'))}</code>)</summary>" +
                table([escape(c.replace("_", " ")) for c in cols], rows, left=2,
                      wrap=tuple(i for i, c in enumerate(cols) if c in ("inputs", "note"))) + "</details>")
    elif ctx.run.task != "classify":   # the per-layer findings are the classifier's; a task shows its own
        body = ""
    else:
        body = note(NO_FINDINGS) if ctx.run.findings is None else note("Layer table not available.")
    if ctx.run.recipe_text:
        body += (f"<details><summary>Recipe (resolved, recipe.yaml)</summary><pre>{escape(ctx.run.recipe_text)}</pre>"
                 "</details>")
    return body


@register_section("files", order=120, title="Files")
def files_section(ctx: ReportContext) -> str:
    """Links to the run's JSON/Markdown files and to every artifact on disk."""
    run = ctx.run
    names = ["report.md", "report.json", "MODEL_CARD.md", "manifest.json", "recipe.yaml", "history.json",
             "dataset.json", "gradcam.json", FINDINGS_JSON, "labels.txt"]
    links = [f'<a href="{escape(n)}">{escape(n)}</a>' for n in names if (run.dir / n).is_file()]
    arts = [f'<a href="{escape(n)}">{escape(n)}</a>' for n in run.artifact_names() if (run.dir / n).is_file()]
    return f"<p>{' · '.join(links)}</p><p>Artifacts: {' · '.join(arts)}</p>"

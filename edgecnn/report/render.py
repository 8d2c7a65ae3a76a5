"""report.html per run (:func:`render_report`) and compare.html across runs (:func:`compare_runs`).

A static, self-contained page: inline CSS, no JavaScript, no network; its figures are PNG files in
``RUN_DIR/plots/`` (drawn here from report.json and history.json) and ``RUN_DIR/findings/``
(written by the evaluate stage), referenced by relative links, so the run directory can be
zipped, copied or served as it is. The page is the header, then every registered section
(:mod:`edgecnn.report.sections`, :func:`~edgecnn.report.registry.register_section`) in order.

Nothing here loads a model or reads images: TensorFlow and the data loader are not imported.

Example:
    >>> from edgecnn.report import render_report, compare_runs
    >>> render_report("export/defects-mobilenetv2")                      # doctest: +SKIP
    PosixPath('export/defects-mobilenetv2/report.html')
    >>> compare_runs(["export/defects-mobilenetv2", "export/defects-dsconv"], "export/compare")  # doctest: +SKIP
    PosixPath('export/compare/compare.html')
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from edgecnn._io import atomic_path, swap_in_dir, write_text
from edgecnn._plugins import import_submodules
from edgecnn.errors import EdgecnnError
from edgecnn.report import plots
from edgecnn.report import sections as _builtin_sections  # noqa: F401  (registers the built-in sections)
from edgecnn.report.markup import escape, figure_html, kb, page, table
from edgecnn.report.pareto import PARETO_DEFINITION, pareto_front
from edgecnn.report.registry import PLOTS_DIR, ReportContext, render_sections, tradeoff_points
from edgecnn.report.run_files import RunFiles, latency_p50, read_run, short_name

__all__ = ["render_report", "compare_runs", "REPORT_HTML", "COMPARE_HTML"]

log = logging.getLogger("edgecnn.report")
import_submodules("edgecnn.report.task_sections")  # each task's own sections (anomaly maps, masks, MCU memory)
REPORT_HTML = "report.html"
COMPARE_HTML = "compare.html"


def _header(run: RunFiles, nav: list[tuple[str, str]]) -> str:
    r = run.report
    mach = r.get("machine", {})
    proto = r.get("latency_protocol", {})
    model = (run.manifest or {}).get("model", {})
    return "\n".join([
        f"<h1>{escape(run.name)}</h1>",
        f'<p class="sub">{escape(run.description)} Model <code>{escape(model.get("name", "?"))}</code> at '
        f'{escape(model.get("input_size", "?"))} px, classes {escape(", ".join(run.classes))}. Evaluated '
        f'{escape(r.get("created"))} on {escape(mach.get("cpu", "?"))} ({escape(mach.get("cores", "?"))} cores); '
        f'latency: batch {escape(proto.get("batch", 1))}, {escape(proto.get("warmup", "?"))} warm-up + '
        f'{escape(proto.get("runs", "?"))} timed runs.</p>',
        "<nav>" + "".join(f'<a href="#{escape(a)}">{escape(t)}</a>' for a, t in nav) + "</nav>"])


def render_report(run_dir: str | os.PathLike, *, model_card: bool = True) -> Path:
    """Write ``RUN_DIR/report.html`` and its figures in ``RUN_DIR/plots/`` (and MODEL_CARD.md).

    Figures are drawn into a temporary folder that replaces ``plots/`` in one rename; the HTML is
    written atomically after it, so no reader sees a page whose images are missing.

    Args:
        run_dir: an evaluated run directory (report.json; manifest, history, dataset and the
            evaluate stage's ``findings/`` optional: each one missing becomes a note).
        model_card: also write ``RUN_DIR/MODEL_CARD.md`` (see
            :func:`~edgecnn.report.model_card.write_model_card`).

    Returns:
        The path of report.html.

    Raises:
        EdgecnnError: the run has no readable report.json. Everything else missing becomes a note.
    """
    run = read_run(run_dir)
    tmp = run.dir / f".{PLOTS_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ctx = ReportContext(run, tmp, notes=list((run.findings or {}).get("notes", [])))
        rendered = render_sections(ctx)
        swap_in_dir(tmp, run.dir / PLOTS_DIR)
        if model_card:
            from edgecnn.report.model_card import write_model_card

            write_model_card(run.dir, run=run)
        body = _header(run, [(s.name, s.nav) for s, _ in rendered]) + "\n" + "\n".join(h for _, h in rendered)
        out = write_text(run.dir / REPORT_HTML, page(f"{run.name} — edgecnn report", body))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("report: %s", out)
    return out


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
    points = [p for r, label in zip(runs, labels) for p in tradeoff_points(r, group=label)]
    with atomic_path(out_dir / PLOTS_DIR / "compare_tradeoff.png") as tmp:
        plots.tradeoff_plot(points, tmp, title="accuracy vs latency vs size, all runs")
    front = {(points[i].group, points[i].label) for i in pareto_front(points)}

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
        name = f'<a href="{escape(rel)}">{escape(label)}</a>' if report_link.is_file() else escape(label)
        verdict = r.report.get("verdict")
        summary_rows.append([name, f"<code>{escape(model.get('name', '?'))}</code>",
                             escape(model.get("input_size", "?")),
                             str(r.report.get("test_images", "?")), f"{ref.get('accuracy', float('nan')):.4f}",
                             f"{lo:.3f} – {hi:.3f}",
                             '<span class="muted">—</span>' if verdict is None else
                             f'<span class="{"ok" if verdict == "pass" else "bad"}">{escape(verdict.upper())}</span>'])
    rows, classes = [], []
    for r, label in zip(runs, labels):
        for name, a in r.measured().items():
            m = a.get("metrics", {})
            lo, hi = m.get("accuracy_ci95", (0, 0))
            p50, note = latency_p50(a)
            on_front = (label, short_name(name)) in front
            rows.append([escape(label), ("★ " if on_front else "") + f"<code>{escape(name)}</code>",
                         escape(a.get("precision") or ""),
                         f"{m.get('accuracy', float('nan')):.4f}", f"{lo:.3f} – {hi:.3f}",
                         "—" if p50 is None else f"{p50:.2f}" + (f' <span class="muted">({escape(note)})</span>'
                                                                  if note else ""),
                         kb(a.get("bytes")), kb(a.get("gzip_bytes"))])
            classes.append("front" if on_front else "")
    note_html = "".join(f"<li>{escape(n)}</li>" for n in notes)
    body = [f"<h1>Comparison of {len(runs)} runs</h1>",
            f'<p class="sub">{escape(", ".join(labels))}</p>',
            f'<div class="notes"><b>Notes</b><ul>{note_html}</ul></div>' if notes else "",
            "<h2>Runs</h2>", table(["run", "model", "input px", "test images", "reference top-1", "95 % interval",
                                     "verdict"], summary_rows, left=2),
            "<h2>Accuracy vs latency vs size</h2>",
            figure_html(f"{PLOTS_DIR}/compare_tradeoff.png", "accuracy vs latency, all runs",
                 "Colour = run; x: p50 latency at batch 1, one thread (log); y: top-1 with its 95 % interval; marker "
                 f"area ∝ file size; dashed step line and ★ = the Pareto front over all runs ({PARETO_DEFINITION})."),
            "<h2>Every artifact</h2>",
            table(["run", "artifact", "precision", "top-1", "95 % interval", "p50 ms @1 thr", "size KB", "gzip KB"],
                   rows, left=2, classes=classes)]
    return write_text(out_dir / COMPARE_HTML, page("edgecnn: comparison of runs", "\n".join(body)))

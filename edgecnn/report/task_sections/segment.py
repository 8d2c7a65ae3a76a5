"""Report sections of ``task: segment``: per-pixel figures of every artifact, the int8 choice, masks
over images (best and worst test cases, float beside int8) and the training curves.

They read report.json (``metrics``: pixel_accuracy, iou per class, miou, miou_drop, pixel_agreement),
int8.json's copy in report.json (``int8_choice``), history.json and the pictures the evaluate stage
drew into ``findings/segment/`` (listed in report.json's ``examples``).
"""
from __future__ import annotations

from edgecnn.report import plots
from edgecnn.report.markup import escape, figure_html, kb, note, table
from edgecnn.report.registry import ReportContext, register_section

TASKS = ("segment",)


def _f(x, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


@register_section("segment-metrics", order=25, title="Masks: pixel accuracy and IoU per artifact", nav="Masks",
                  tasks=TASKS)
def segment_metrics_section(ctx: ReportContext) -> str:
    """One row per measured artifact: IoU of every class, mIoU, its drop and pixel agreement vs float."""
    run = ctx.run
    classes = run.classes
    threads = run.report.get("latency_protocol", {}).get("threads", [1])
    head = (["artifact", "runtime", "precision", "size KB", "pixel acc."] + [f"IoU {escape(c)}" for c in classes] +
            ["mIoU", "mIoU drop", "pixel agreement"] + [f"p50 ms @{t}" for t in threads])
    rows = []
    for name, art in run.measured().items():
        m = art["metrics"]
        iou = m.get("iou", {})
        lat = [_f(art.get("latency", {}).get(str(t), {}).get("p50_ms"), 2) for t in threads]
        rows.append([f"<code>{escape(name)}</code>", escape(art.get("runtime", "")), escape(art.get("precision") or ""),
                     kb(art.get("bytes")), _f(m.get("pixel_accuracy"))] + [_f(iou.get(c)) for c in classes] +
                    [f"<b>{_f(m.get('miou'))}</b>", _f(m.get("miou_drop")), _f(m.get("pixel_agreement"))] + lat)
    n = run.report.get("test_images", "?")
    return (table(head, rows, left=3) +
            f'<p class="note">On {escape(n)} test images. IoU (Jaccard) of a class = |predicted ∩ true| / '
            "|predicted ∪ true| over all test pixels; mIoU = their mean over the classes; pixel accuracy = correct "
            "pixels / all pixels; pixel agreement = pixels whose class equals model.keras's; mIoU drop = model.keras's "
            "mIoU minus the artifact's. The Artifacts table's top-1 columns do not apply to masks.</p>")


@register_section("segment-int8", order=42, title="int8: calibration chosen within the mIoU budget", nav="int8",
                  tasks=TASKS)
def segment_int8_section(ctx: ReportContext) -> str | None:
    """Every int8 candidate (format x calibration) with its validation mIoU and drop; the pick in bold."""
    choice = ctx.run.report.get("int8_choice")
    if not choice:
        return None
    rows = []
    for fmt, c in choice.items():
        for cand in c.get("candidates", []):
            picked = cand["method"] == c.get("pick")
            mark = (lambda s: f"<b>{s}</b>") if picked else (lambda s: s)
            rows.append([f"<code>{escape(fmt)}</code>", mark(escape(cand["method"])), _f(cand["miou"]),
                         _f(c.get("float_miou")), mark(_f(cand["miou_drop"])), _f(cand.get("pixel_agreement")),
                         ("picked" + ("" if c.get("within_budget") else " (no candidate fits: smallest drop)"))
                         if picked else ""])
    budget = next(iter(choice.values())).get("max_miou_drop")
    return (table(["format", "calibration", "val mIoU", "float val mIoU", "drop", "pixel agreement", ""], rows) +
            f'<p class="note">Candidates are tried in order; the first within max_miou_drop {escape(budget)} on the '
            "validation pairs becomes the artifact (segment.max_miou_drop, segment.int8_calibrations).</p>")


@register_section("segment-examples", order=82, title="Masks over images: best and worst test cases",
                  nav="Examples", tasks=TASKS)
def segment_examples_section(ctx: ReportContext) -> str:
    """The pictures the evaluate stage drew: image, truth, float mask, int8 mask, worst first."""
    examples = ctx.run.report.get("examples") or []
    if not examples:
        return note("No examples in report.json (the evaluate stage draws them).")
    out = []
    for e in examples:
        if not (ctx.run.dir / e["file"]).is_file():
            continue
        cap = (f"{escape(e['kind'])}: {escape(e['image'])}, float mIoU {_f(e['float_miou'], 3)}" +
               (f", int8 mIoU {_f(e['int8_miou'], 3)}, int8 agreement {_f(e['int8_agreement'], 3)}"
                if "int8_miou" in e else ""))
        out.append(figure_html(e["file"], e["image"], cap))
    colours = ", ".join(escape(c) for c in ctx.run.classes[1:])
    return "".join(out) + note(f"Ranked by the float model's mIoU per image (images with a defect). Defect classes "
                               f"in order of colour red, yellow, cyan: {colours}.")


@register_section("segment-training", order=70, title="Training", tasks=TASKS)
def segment_training_section(ctx: ReportContext) -> str:
    """Loss, pixel accuracy and learning rate of both phases (history.json); best val mIoU per phase."""
    phases = (ctx.run.history or {}).get("phases") or []
    if not phases:
        return note("No history.json in the run directory.")
    path, src = ctx.plot_path("segment_training.png")
    plots.training_plot(phases, path)
    parts = [f"<b>{escape(p.get('name', '?'))}</b>: {len(p.get('loss', []))} epoch(s), best val mIoU "
             f"{max(p.get('val_miou') or [float('nan')]):.4f}" for p in phases]
    weights = (ctx.run.history or {}).get("class_weights") or {}
    cw = ", ".join(f"{escape(k)} {v:.2f}" for k, v in weights.items())
    return figure_html(src, "training curves", "; ".join(parts) + ". Each phase keeps its best epoch by val mIoU"
                       + (f"; pixel class weights {cw}." if cw else "."))

"""Report sections of ``task: detect``: COCO figures of every artifact, the int8 choice, boxes drawn over test
images (truth, float, int8) and the training curves.

They read report.json (``metrics``: map, map50, map75, precision, recall, box_agreement, per_class), its copy
of int8.json (``int8_choice``), detections.json (the evaluate stage's boxes at the report threshold) and
history.json; the pictures are drawn here from those files and the test images they name.
"""
from __future__ import annotations

import json

from edgecnn.report import plots
from edgecnn.report.markup import escape, figure_html, kb, note, table
from edgecnn.report.registry import ReportContext, register_section

TASKS = ("detect",)
EXAMPLES = 4


def _f(x, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


@register_section("detect-metrics", order=25, title="Boxes: COCO mAP, precision and recall per artifact",
                  nav="Boxes", tasks=TASKS)
def detect_metrics_section(ctx: ReportContext) -> str:
    """One row per measured artifact: mAP@0.5:0.95, @0.5, @0.75, AP@0.5 per class, precision / recall at the
    report threshold, box agreement with model.keras, latency."""
    run = ctx.run
    classes = run.classes
    threads = run.report.get("latency_protocol", {}).get("threads", [1])
    head = (["artifact", "runtime", "precision", "size KB", "mAP", "mAP@0.5", "mAP@0.75"] +
            [f"AP@0.5 {escape(c)}" for c in classes] + ["P", "R", "box agreement"] +
            [f"p50 ms @{t}" for t in threads])
    rows = []
    for name, art in run.measured().items():
        m = art["metrics"]
        per = m.get("per_class", {})
        lat = [_f(art.get("latency", {}).get(str(t), {}).get("p50_ms"), 2) for t in threads]
        rows.append([f"<code>{escape(name)}</code>", escape(art.get("runtime", "")), escape(art.get("precision") or ""),
                     kb(art.get("bytes")), f"<b>{_f(m.get('map'))}</b>", _f(m.get("map50")), _f(m.get("map75"))] +
                    [_f(per.get(c, {}).get("ap50")) for c in classes] +
                    [_f(m.get("precision"), 3), _f(m.get("recall"), 3), _f(m.get("box_agreement"))] + lat)
    rep = run.report
    t = rep.get("detect", {}).get("report_threshold")
    curves = _pr_curves(ctx)
    return (table(head, rows, left=3) + curves +
            f'<p class="note">On {escape(rep.get("test_images", "?"))} test images holding '
            f'{escape(rep.get("test_boxes", "?"))} boxes. mAP is COCO\'s (pycocotools\' rules: AP from 101 recall '
            "points, averaged over IoU 0.50:0.05:0.95 and over the classes with boxes); mAP@0.5 at IoU 0.5 alone. "
            f"P and R count the detections scoring at least {escape(t)} (matched at IoU 0.5). Box agreement = "
            "detections matched one to one with model.keras's (same class, IoU >= 0.5) over all of both: "
            "M / (R + O - M).</p>")


def _pr_curves(ctx: ReportContext) -> str:
    """Precision over recall at IoU 0.5, per class: model.keras solid, the int8 artifacts dashed."""
    arts = {n: a for n, a in ctx.run.measured().items() if a.get("pr_curves") and "@" not in n}
    ref = arts.get(ctx.run.reference)
    if not ref:
        return ""
    fig = plots.figure(4.8 + 1.6 * max(0, len(ref["pr_curves"]) - 1), 3.2)
    axes = fig.subplots(1, len(ref["pr_curves"]), squeeze=False)[0]
    recall = [i / 100 for i in range(101)]
    for ax, cls in zip(axes, ref["pr_curves"]):
        for name, a in arts.items():
            if name == ctx.run.reference or "int8" in name:
                ax.plot(recall, a["pr_curves"].get(cls, [0] * 101), "-" if name == ctx.run.reference else "--",
                        label=name)
        ax.set_title(cls)
        ax.set_xlabel("recall")
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("precision (IoU 0.5)")
    axes[-1].legend(fontsize=7)
    path, src = ctx.plot_path("detect_pr.png")
    plots.save_figure(fig, path)
    return figure_html(src, "precision-recall curves", "Precision over recall at IoU 0.5 per class (COCO's 101 "
                       "interpolated points): model.keras solid, the int8 artifacts dashed.")


@register_section("detect-int8", order=42, title="int8: the chooser held to mAP@0.5 and box agreement", nav="int8",
                  tasks=TASKS)
def detect_int8_section(ctx: ReportContext) -> str | None:
    """Every int8 candidate the chooser tried, per runtime, with its val figures; picks and withheld files."""
    choice = ctx.run.report.get("int8_choice") or {}
    if not choice.get("runtimes"):
        return None
    rows = []
    for runtime, res in choice["runtimes"].items():
        for c in res.get("candidates", []):
            picked = c["route"] == res.get("chosen")
            mark = (lambda s: f"<b>{s}</b>") if picked else (lambda s: s)
            rows.append([escape(runtime), mark(escape(c["route"])), _f(c.get("accuracy")), mark(_f(c.get("drop"))),
                         _f(c.get("agreement")), kb(c.get("size_bytes")), _f(c.get("latency_p50_ms"), 3),
                         "picked" if picked else escape((c.get("error") or "")[:80])])
    held = choice.get("withheld", {})
    tail = "".join(f"<p><b>{escape(f)} withheld</b>: {escape(w.get('reason', ''))}</p>" for f, w in held.items())
    return (table(["runtime", "route", "val mAP@0.5", "drop", "box agreement", "KB", "p50 ms", ""], rows) + tail +
            note("Routes are tried in cost order per runtime; the first within detect.max_int8_map_drop and "
                 "detect.min_int8_box_agreement (and not slower than float unless compress.prefer says size) is "
                 "shipped."))


def _draw(image_path: str, size: int, layers: dict[str, list], out_path) -> None:
    from edgecnn.report.boxes import draw_boxes

    # drawn 3x the model's input so 1 px lines read
    draw_boxes(image_path, layers, size=(size, size), scale=3).save(out_path)


@register_section("detect-examples", order=82, title="Boxes over test images: truth, float, int8", nav="Examples",
                  tasks=TASKS)
def detect_examples_section(ctx: ReportContext) -> str:
    """The test images where the float model and the int8 artifact disagree most (else the first ones), with the
    true boxes (green), model.keras's (yellow) and the int8 file's (red) at the report threshold."""
    path = ctx.run.dir / "detections.json"
    if not path.is_file():
        return note("No detections.json in the run directory (the evaluate stage writes it).")
    found = json.loads(path.read_text())
    dets = found.get("detections", {})
    ref = dets.get(ctx.run.reference)
    if ref is None:
        return note("detections.json has no model.keras entry.")
    int8 = next((k for k in dets if "int8" in k and "@" not in k), None)
    size = int((ctx.run.manifest or {}).get("model", {}).get("input_size") or 128)
    order = list(range(len(ref)))
    if int8:
        order.sort(key=lambda i: -abs(len(ref[i]["boxes"]) - len(dets[int8][i]["boxes"])))
    out = []
    for rank, i in enumerate(order[:EXAMPLES]):
        layers = {"truth": found["truth"][i][0], "float": ref[i]["boxes"]}
        if int8:
            layers["int8"] = dets[int8][i]["boxes"]
        file, src = ctx.plot_path(f"detect_example_{rank}.png")
        try:
            _draw(found["images"][i], size, layers, file)
        except OSError:
            continue
        cap = (f"{escape(found['images'][i])}: {len(found['truth'][i][0])} true box(es), float "
               f"{len(ref[i]['boxes'])}" + (f", {escape(int8)} {len(dets[int8][i]['boxes'])}" if int8 else ""))
        out.append(figure_html(src, found["images"][i], cap))
    return "".join(out) + note("Green: the true boxes; yellow: model.keras; red: the int8 artifact (at the report "
                               "threshold). Ranked by how many boxes the two models' answers differ in.")


@register_section("detect-training", order=70, title="Training", tasks=TASKS)
def detect_training_section(ctx: ReportContext) -> str:
    """Loss of both phases (history.json)."""
    phases = (ctx.run.history or {}).get("phases") or []
    if not phases:
        return note("No history.json in the run directory.")
    path, src = ctx.plot_path("detect_training.png")
    plots.training_plot(phases, path)
    head = (ctx.run.history or {}).get("head", "?")
    parts = [f"<b>{escape(p.get('name', '?'))}</b>: {p.get('epochs')} epoch(s), loss "
             f"{_f((p.get('loss') or [None])[-1])}, val loss {_f((p.get('val_loss') or [None])[-1])}"
             for p in phases]
    dropped = (ctx.run.history or {}).get("augment_dropped_boxes")
    return figure_html(src, "training curves", f"{escape(head)} head; " + "; ".join(parts) +
                       (f". Augmentation cut {dropped} box(es) below half their area (dropped, counted)."
                        if dropped is not None else "."))

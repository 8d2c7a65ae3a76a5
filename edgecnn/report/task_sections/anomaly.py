"""The anomaly run's report sections: figures per artifact, score histograms with the threshold, ROC
curves, and a gallery of heatmaps over the float model's worst cases.

They read only the run directory: report.json (figures, ROC points, gallery list), scores.json (test
scores per artifact) and maps/*.png (written by the evaluate stage, ``edgecnn.anomaly.evaluate``).
"""
from __future__ import annotations

import numpy as np

from edgecnn.report import plots
from edgecnn.report.markup import escape, figure_html, kb, note, num, table
from edgecnn.report.registry import ReportContext, register_section
from edgecnn.report.run_files import read_json_or_none

TASKS = ("anomaly",)


def _f(v) -> str:
    return num(v) if isinstance(v, (int, float)) else "—"


@register_section("anomaly-figures", order=25, title="Anomaly detection: every artifact", nav="Detection",
                  tasks=TASKS)
def figures_section(ctx: ReportContext) -> str:
    """Image and pixel figures, agreement with the Keras scores and latency of every artifact."""
    rep = ctx.run.report
    a = rep.get("anomaly", {})
    rows = []
    for name, art in rep.get("artifacts", {}).items():
        m = art.get("metrics", {})
        lat = (art.get("latency") or {}).get("1") or {}
        recall = ", ".join(f"{escape(k)} {v:.2f}" for k, v in (m.get("recall_per_defect") or {}).items())
        rows.append([f"<code>{escape(name)}</code>", escape(art.get("precision") or ""), kb(art.get("bytes")),
                     _f(m.get("auroc")), _f(m.get("f1")), recall, _f(m.get("good_pass_rate")),
                     _f(m.get("pixel_auroc")), _f(m.get("pro")), _f(m.get("iou")), _f(m.get("score_correlation")),
                     _f(lat.get("p50_ms"))])
    head = ["artifact", "precision", "KB", "image AUROC", "F1", "recall per defect", "good passed", "pixel AUROC",
            "PRO (FPR ≤ 0.3)", "IoU", "score rank corr.", "p50 ms @1t"]
    rule = a.get("threshold_rule")
    return (f"<p>{escape(a.get('method'))} on {escape(a.get('backbone'))}, fitted on good images only. Scores and "
            f"maps are normalised so <b>0.5 is the threshold</b> (set by <code>{escape(rule)}</code> on the "
            f"validation split: raw threshold {_f(a.get('threshold'))}, scale {_f(a.get('scale'))}). Score rank "
            "correlation is Spearman's, with the Keras scores.</p>" + table(head, rows, wrap=(5,)))


@register_section("anomaly-scores", order=35, title="Scores of good and defective images", nav="Scores", tasks=TASKS)
def scores_section(ctx: ReportContext) -> str:
    """Histograms of the test scores, good vs defective, with the threshold, per artifact."""
    s = read_json_or_none(ctx.run.dir / "scores.json")
    if not s:
        return note("No scores.json in the run directory (run `edgecnn evaluate` on it).")
    defect = np.array(s["defect"], bool)
    names = list(s["scores"])
    fig = plots.figure(4.2 * min(len(names), 4), 3.0)
    axes = fig.subplots(1, min(len(names), 4), squeeze=False)[0]
    for ax, name in zip(axes, names):
        v = np.array(s["scores"][name])
        bins = np.linspace(min(v.min(), 0.0), max(v.max(), 1.0), 40)
        ax.hist(v[~defect], bins=bins, alpha=0.6, color="#1a7f37", label=f"good ({(~defect).sum()})")
        ax.hist(v[defect], bins=bins, alpha=0.6, color="#cf222e", label=f"defect ({defect.sum()})")
        ax.axvline(0.5, color="black", ls="--", lw=1, label="threshold 0.5")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("normalised score")
        ax.legend(fontsize=7)
    path, src = ctx.plot_path("anomaly_scores.png")
    plots.save_figure(fig, path)
    return figure_html(src, "score histograms", "Test scores of good (green) and defective (red) images; "
                       "right of the dashed line is flagged.")


@register_section("anomaly-roc", order=36, title="ROC curves", nav="ROC", tasks=TASKS)
def roc_section(ctx: ReportContext) -> str:
    """Image-level ROC of every artifact (report.json's points)."""
    arts = {n: a for n, a in ctx.run.report.get("artifacts", {}).items() if a.get("roc")}
    if not arts:
        return note("No ROC points in report.json.")
    fig = plots.figure(4.5, 4.0)
    ax = fig.subplots()
    for name, a in arts.items():
        ax.plot(a["roc"]["fpr"], a["roc"]["tpr"], label=f"{name} (AUROC {a['metrics']['auroc']:.3f})", lw=1.2)
    ax.plot([0, 1], [0, 1], color="#6e7781", lw=0.8, ls=":")
    ax.set_xlabel("false positive rate (good flagged)")
    ax.set_ylabel("true positive rate (defects found)")
    ax.legend(fontsize=7, loc="lower right")
    path, src = ctx.plot_path("anomaly_roc.png")
    plots.save_figure(fig, path)
    return figure_html(src, "ROC curves", "Image-level ROC on the test split.")


@register_section("anomaly-gallery", order=37, title="Heatmaps of the worst cases", nav="Heatmaps", tasks=TASKS)
def gallery_section(ctx: ReportContext) -> str:
    """The lowest-scored defects and the highest-scored good images: image, map overlay, ground truth."""
    items = [g for g in ctx.run.report.get("gallery") or [] if (ctx.run.dir / g["file"]).is_file()]
    if not items:
        return note("No heatmaps in maps/ (run `edgecnn evaluate` on the run directory).")
    tiles = "".join(f'<figure style="margin:4px"><img src="{escape(g["file"])}" alt="{escape(g["kind"])}">'
                    f"<figcaption>{escape(g['kind'])}: score {g['score']:.3f} ({escape(g['why'])})</figcaption>"
                    "</figure>" for g in items)
    return ("<p>The float model's worst test cases. Each tile: the image, the map over it (red to yellow where it "
            "passes 0.5), the ground-truth mask.</p>" f'<div class="gallery">{tiles}</div>')

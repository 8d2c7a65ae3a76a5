"""report.md: the evaluation as Markdown (one row per artifact, the budget verdict, per-class figures)."""
from __future__ import annotations

from edgecnn.report.compression import COMPRESSION_HEAD, compression_rows, compression_summary
from edgecnn.report.markup import check_verdict, measured_text, unit_text, unmeasured_text
from edgecnn.report.pareto import PARETO_DEFINITION

__all__ = ["render_markdown"]


def render_markdown(report: dict) -> str:
    """A readable report.md: one row per artifact, then the budget verdict and per-class figures."""
    threads = report["latency_protocol"]["threads"]
    head = ["artifact", "runtime", "precision", "size KB", "gzip KB", "top-1", "95% CI", "agree", "max |Δp|"]
    head += [f"p50/p95 ms @{t}t" for t in threads]
    lines = [f"# {report['name']}: evaluation", "",
             f"Test split: {report['test_images']} images, classes: {', '.join(report['classes'])}. "
             f"Reference: `{report['reference']}` (top-1 {report['reference_accuracy']:.4f}). "
             f"Machine: {report['machine']['cpu']} ({report['machine']['cores']} cores). "
             f"Latency: batch 1, {report['latency_protocol']['warmup']} warm-up + "
             f"{report['latency_protocol']['runs']} timed runs.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, a in report["artifacts"].items():
        if "metrics" not in a:  # a runtime that cannot run on this machine, or a run that failed
            what = unmeasured_text(a)
            lines.append(f"| `{name}` | {a.get('runtime', '')} | {a.get('precision') or ''} | {what} |"
                         + " |" * (len(head) - 4))
            continue
        m = a["metrics"]
        lo, hi = m["accuracy_ci95"]
        row = [f"`{name}`", a["runtime"], a["precision"] or "", f"{a['bytes'] / 1024:.1f}",
               f"{a['gzip_bytes'] / 1024:.1f}", f"{m['accuracy']:.4f}", f"{lo:.3f}–{hi:.3f}",
               f"{m.get('agreement', 1.0):.4f}", f"{m.get('max_abs_prob_delta', 0.0):.4f}"]
        for t in threads:
            lat = a["latency"].get(str(t))
            row.append(f"{lat['p50_ms']:.2f} / {lat['p95_ms']:.2f}" if lat else "—")
        lines.append("| " + " | ".join(row) + " |")
    if report.get("withheld"):
        lines += ["", "## int8 withheld: no route held the budget", ""] + [
            f"- `{fmt}` ({w['runtime']}): not shipped, the float artifacts are. {w['reason']}"
            for fmt, w in report["withheld"].items()]
    if report.get("unverified"):
        lines += ["", "## int8 not verified", "", "Plain post-training int8, held by no chooser and no budget "
                  "(`compress.enabled: false`): " + ", ".join(f"`{n}`" for n in report["unverified"]) + "."]
    if report.get("errors"):
        lines += ["", "## Failed artifact runs", ""] + [f"- `{e['artifact']}` in {e['runtime']}: {e['error']}"
                                                         for e in report["errors"]]
    b = report.get("budgets")
    if b is not None:
        verdict = "FAIL" if b["violations"] else "PASS" if b["checks"] else "none set"
        lines += ["", f"## Budgets: {verdict}", ""]
        if not b["checks"]:
            lines.append("No budgets set: nothing was checked against a limit.")
        else:
            lines += ["| artifact | budget | measured | allowed | verdict |", "|---|---|---|---|---|"]
            for c in b["checks"]:
                verdict = check_verdict(c)
                lines.append(f"| `{c['artifact']}` | {c['budget']} | {measured_text(c)} | "
                             f"{c['allowed']:.4g}{unit_text(c['unit'])} | "
                             f"{verdict if c['ok'] else f'**{verdict}**'} |")
    if report.get("compress"):
        lines += ["", "## Compression: every int8 candidate the chooser tried", "",
                  compression_summary(report["compress"]), "",
                  "| " + " | ".join(COMPRESSION_HEAD) + " |", "|" + "---|" * len(COMPRESSION_HEAD)]
        lines += ["| " + " | ".join(row) + " |" for row, _ in compression_rows(report["compress"])]
        lines.append("")
        lines.append(f"★ = on the Pareto front of val top-1 vs p50 latency ({PARETO_DEFINITION}).")
    ref = report["artifacts"][report["reference"]]["metrics"]
    lines += ["", "## Per class (reference model)", "", "| class | precision | recall | F1 | support |",
              "|---|---|---|---|---|"]
    for c, v in ref["per_class"].items():
        lines.append(f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |")
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", "", "```",
              "\t" + "\t".join(report["classes"])]
    for c, row in zip(report["classes"], ref["confusion_matrix"]):
        lines.append(c + "\t" + "\t".join(str(v) for v in row))
    lines.append("```")
    return "\n".join(lines) + "\n"

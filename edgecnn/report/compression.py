"""The compress stage's chooser (``report.json`` "compress", from compress.json) as text and table rows.

Shared by report.html's "Compression" section and report.md.
"""
from __future__ import annotations

from edgecnn.report.pareto import TradeoffPoint, latency_or_inf, pareto_front

__all__ = ["COMPRESSION_HEAD", "candidate_front", "compression_rows", "compression_summary"]

COMPRESSION_HEAD = ["runtime", "route", "tier", "val top-1", "drop", "agree", "size KB", "p50 / p95 ms @1t",
                    "time s", "verdict"]


def candidate_front(compress: dict) -> set[tuple[str, str]]:
    """(runtime, route) of the chooser's candidates on the Pareto front (val top-1 vs p50 latency)."""
    keys, points = [], []
    for runtime, res in compress.get("runtimes", {}).items():
        for c in res.get("candidates", []):
            if c.get("error") or c.get("accuracy") is None:
                continue
            keys.append((runtime, c["route"]))
            points.append(TradeoffPoint(c["route"], latency_or_inf(c.get("latency_p50_ms")), float(c["accuracy"]),
                                        int(c.get("size_bytes") or 0)))
    return {keys[i] for i in pareto_front(points)}


def compression_rows(compress: dict) -> list[tuple[list[str], str]]:
    """The chooser's candidates as table rows (plain text) and a tag: 'pick', 'fits', 'over' or 'failed'.

    A ★ after the verdict marks the candidates on the Pareto front (:func:`candidate_front`).
    """
    rows = []
    picks = {p["route"] for p in compress.get("picks", {}).values()}
    front = candidate_front(compress)
    for runtime, res in compress.get("runtimes", {}).items():
        for c in res.get("candidates", []):
            if c.get("error"):
                rows.append(([runtime, c["route"], c["tier"], "—", "—", "—", "—", "—", f"{c['seconds']:.0f}",
                              f"failed: {c['error'][:120]}"], "failed"))
                continue
            tag = "pick" if c["route"] in picks else ("fits" if c["within_budget"] else "over")
            lat = (f"{c['latency_p50_ms']:.2f} / {c['latency_p95_ms']:.2f}" if c.get("latency_p50_ms") is not None
                   else "—")
            verdict = {"pick": "chosen" if c["within_budget"] else "closest (outside budget)",
                       "fits": "within budget", "over": "outside budget"}[tag]
            rows.append(([runtime, c["route"], c["tier"], f"{c['accuracy']:.4f}", f"{c['drop']:+.4f}",
                          f"{c['agreement']:.4f}", f"{c['size_bytes'] / 1024:.1f}", lat, f"{c['seconds']:.0f}",
                          verdict + (" ★" if (runtime, c["route"]) in front else "")], tag))
    return rows


def compression_summary(compress: dict) -> str:
    """One paragraph: the budget, what was chosen per runtime and why."""
    agree = compress.get("min_agreement")
    parts = [f"Budget: top-1 drop ≤ {compress['max_accuracy_drop']:.4f}"
             + (f" and agreement ≥ {agree:.4f}" if agree is not None else "") + " on the validation split "
             f"({compress['val_images']} images, float top-1 {compress['float_val_accuracy']:.4f})."]
    if compress.get("prune"):
        p = compress["prune"]
        parts.append(f"Pruned to {p['sparsity']:.1%} sparsity ({p['epochs']} epochs) before quantisation.")
    if compress.get("cluster"):
        parts.append(f"Clustered to {compress['cluster']['clusters']} centroids per kernel.")
    for fmt, pick in compress.get("picks", {}).items():
        parts.append(f"{fmt}: {pick['reason']}.")
    if compress.get("chosen"):
        parts.append(f"Overall pick: {compress['chosen']}.")
    return " ".join(parts)

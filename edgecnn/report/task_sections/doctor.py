"""The "Int8 doctor" section: why an int8 artifact is worse or slower than float (``RUN/doctor.json``).

Shown when the run has a ``doctor.json`` (written by ``edgecnn doctor RUN``,
:func:`edgecnn.evaluate.doctor.diagnose`): per int8 artifact the verdicts, agreement and timing in
each runtime, the layers that add the most error (share, local and cumulative SQNR, cosine, scale,
clipped share, weights) and the op types int8 and float spend their time in. Like every section it
reads only the run directory; it never runs a model.
"""
from __future__ import annotations

from edgecnn.report.markup import escape, note, table
from edgecnn.report.registry import ReportContext, register_section
from edgecnn.report.run_files import read_json_or_none

__all__ = ["DOCTOR_JSON"]

DOCTOR_JSON = "doctor.json"
"""The doctor's figures in the run directory."""


def _f(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _weight_note(r: dict) -> str:
    bits = [f"worst channel {r['weight_sqnr_db']:.0f} dB"] if r.get("weight_sqnr_db") is not None else []
    if r.get("weight_dead_channels"):
        bits.append(f"{r['weight_dead_channels']} channel(s) zeroed")
    return f" ({', '.join(bits)})" if bits else ""


def _layers_table(rows: list[dict]) -> str:
    body = [[f"<code>{escape(r['node'])}</code>", escape(r["op_type"]), _f(r.get("share"), ".0%"),
             _f(r.get("loss_db"), ".2f"), _f(r.get("sqnr_db"), ".1f"), _f(r.get("cosine"), ".4f"),
             _f(r.get("scale"), ".4g"), _f(r.get("clipped"), ".1%"),
             escape(r.get("weights") or "—") + escape(_weight_note(r))] for r in rows]
    return table(["layer", "op", "share of error", "local loss dB", "cumulative SQNR dB", "cosine", "scale",
                  "clipped", "weights"], body, left=2)


def _runtime_rows(art: dict) -> str:
    rows = []
    for rt, m in art["runtimes"].items():
        if "agreement" not in m:
            rows.append([escape(rt), "—", "—", "—", "—", escape(m.get("note", ""))])
            continue
        lat = m.get("latency") or {}
        cover = []
        for prec, p in (m.get("profile") or {}).items():
            left = p["precision_share"].get("float", 0) + p["precision_share"].get("qdq", 0)
            cover.append(f"{prec}: ops {p['total_us'] / 1e3:.3f} of {p['end_to_end_us'] / 1e3:.3f} ms "
                         f"({p['ops_over_end_to_end']:.0%})" + (f", {left:.0%} in float ops and Q/DQ"
                                                                if prec == "int8" else ""))
        rows.append([escape(rt), f"{m['agreement']:.4f}", _f(m.get("output_sqnr_db"), ".1f"),
                     f"{lat['int8_p50_ms']:.3f} / {lat['float_p50_ms']:.3f}" if lat else "—",
                     f"{lat['ratio']:.2f}×" if lat else "—",
                     escape("; ".join(cover) or m.get("profile_note", "not profiled"))])
    return table(["runtime", "agreement", "output SQNR dB", "p50 ms int8 / float @1 thr", "int8 ÷ float",
                  "per-op profile (profiler on): per-op sum of end-to-end"], rows, left=1, wrap=(5,))


def _op_types(art: dict) -> str:
    out = []
    for rt, m in art["runtimes"].items():
        prof = m.get("profile") or {}
        if not prof:
            continue
        ops = list(dict.fromkeys(op for p in prof.values() for op in p["op_types"]))
        rows = []
        for op in ops[:12]:
            cells = [f"<code>{escape(op)}</code>"]
            for prec in ("int8", "float"):
                v = prof.get(prec, {}).get("op_types", {}).get(op)
                total = prof.get(prec, {}).get("total_us") or 0
                cells.append("—" if v is None else f"{v['us'] / 1e3:.3f} ms ({v['us'] / total:.0%}, {v['count']}×)"
                             if total else "—")
            rows.append(cells)
        out.append(f"<details><summary>{escape(rt)}: time per op type, int8 beside float</summary>"
                   + table(["op type", "int8 artifact", "float twin"], rows) + "</details>")
    return "".join(out)


@register_section("doctor", order=42, title="Int8 doctor: why int8 is worse or slower", nav="Int8 doctor")
def doctor_section(ctx: ReportContext) -> str | None:
    """Renders RUN/doctor.json when present (``edgecnn doctor RUN`` writes it)."""
    d = read_json_or_none(ctx.run.dir / DOCTOR_JSON)
    if not d or not d.get("artifacts"):
        return None
    im = d.get("images") or {}
    out = [f"<p>From <code>{DOCTOR_JSON}</code> (<code>edgecnn doctor</code>): each int8 artifact against its "
           f"float twin on {escape(im.get('agreement', '?'))} images ({escape(im.get('source', '?'))}; "
           f"{escape(im.get('per_layer', '?'))} for the per-layer figures), at 1 thread. CPU int8 path: "
           f"{escape(d.get('cpu', {}).get('int8_path', '?'))}.</p>"]
    for name, art in d["artifacts"].items():
        out.append(f"<h3><code>{escape(name)}</code> vs <code>{escape(art['float_twin'])}</code></h3>")
        out.append("<ul>" + "".join(f"<li>{escape(v)}</li>" for v in art.get("verdicts", [])) + "</ul>")
        out.append(_runtime_rows(art))
        layers = art.get("layers") or {}
        if art.get("top_layers"):
            out.append(f'<p class="muted">The layers that add the most error ({escape(layers.get("instrument"))}, '
                       f"{escape(layers.get('images', '?'))} images). Share: the layer's part of the noise added along "
                       "the graph; local loss: SQNR lost between its inputs and its output; cumulative: its output "
                       "against float.</p>")
            out.append(_layers_table(art["top_layers"]))
        if layers.get("note"):
            out.append(note(layers["note"]))
        out.append(_op_types(art))
        for rt, why in (art.get("skipped") or {}).items():
            out.append(note(f"{rt}: skipped ({why})"))
    return "".join(out)

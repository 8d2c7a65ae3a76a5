"""The "Microcontroller" section: what TFLite Micro measured of the int8 file (report.json's ``"mcu"``).

Shown for any task whose report has a ``"<file>@tflm"`` (or ``model.int8.tflm``) entry with ``"mcu"``
figures (``evaluate: {runtimes: [tflm]}``, :func:`edgecnn.runtime.tflm_runner.mcu_figures`): the arena
(minimal, measured; recommended, ``kTensorArenaSize``), flash (model bytes + the estimated kernels), the
ops and the op resolver, the TFLM version, the per-op live activation memory (which layer sets the arena)
and TFLM's answers against LiteRT's int8 answers. Like every section it reads only the run directory.
"""
from __future__ import annotations

from pathlib import Path

from edgecnn.report import plots
from edgecnn.report.markup import check_verdict, escape, figure_html, measured_text, note, num, table, unit_text
from edgecnn.report.registry import ReportContext, register_section
from edgecnn.runtime.tflm_runner import FIRMWARE_FOLDER_SUFFIX

__all__ = ["mcu_entries", "activation_plot", "MCU_BUDGETS", "MIN_TFLM_AGREEMENT", "MAX_TOP1_GAP"]

MCU_BUDGETS = ("max_arena_kb", "max_flash_kb")
MIN_TFLM_AGREEMENT = 0.99   # TFLM vs LiteRT int8: the acceptance the microcontroller issue sets
MAX_TOP1_GAP = 0.005        # |TFLM top-1 - LiteRT int8 top-1|
_LABEL_CHARS = 44


def mcu_entries(report: dict) -> dict[str, dict]:
    """report.json's entries that carry TFLite Micro figures (``"mcu"``), by key, in report order."""
    return {k: a for k, a in report.get("artifacts", {}).items() if isinstance(a.get("mcu"), dict)}


def _kib(b: int | float | None) -> str:
    return "—" if b is None else f"{b / 1024:,.1f} KiB"


def _bytes(b: int | None) -> str:
    return "—" if b is None else f"{b:,} B"


def activation_plot(activations: list[dict], path: str | Path, *, arena_bytes: int | None = None,
                    planned_bytes: int | None = None, title: str = "") -> Path:
    """Horizontal bars, one per operator in execution order: the activation bytes live while it runs
    (light) and the part it writes (dark); the peak in red, the measured arena and its planned part as lines."""
    n = len(activations)
    fig = plots.figure(8.0, max(2.6, 0.19 * n + 1.3))
    ax = fig.add_subplot(1, 1, 1)
    live = [a["live_bytes"] / 1024 for a in activations]
    outs = [a["output_bytes"] / 1024 for a in activations]
    peak = max(range(n), key=live.__getitem__) if n else -1
    ys = list(range(n))
    ax.barh(ys, live, color=["#f4b6b6" if i == peak else "#b6cff4" for i in ys], label="live activations")
    ax.barh(ys, outs, color=["#cf222e" if i == peak else "#0550ae" for i in ys], height=0.45,
            label="written by the op")
    labels = [f"{a['op_index']} {a['op']} · {a['layer']}" for a in activations]
    ax.set_yticks(ys, [t if len(t) <= _LABEL_CHARS else t[:_LABEL_CHARS - 1] + "…" for t in labels], fontsize=7.5)
    ax.invert_yaxis()
    for value, style, text in ((planned_bytes, ":", "arena's planned part"), (arena_bytes, "--", "minimal arena")):
        if value:
            ax.axvline(value / 1024, color="#57606a", linestyle=style, linewidth=1.2,
                       label=f"{text} {value / 1024:,.1f} KiB")
    ax.set_xlabel("KiB")
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return plots.save_figure(fig, path)


def _cards(mcu: dict) -> str:
    peak = mcu.get("activation_peak") or {}
    cards = [(_kib(mcu["arena_bytes"]), f"minimal arena ({mcu['arena_bytes']:,} B, measured)"),
             (_kib(mcu.get("arena_recommended_bytes")), "recommended arena (kTensorArenaSize)"),
             (_kib(mcu["flash_bytes"]), f"flash: model {_kib(mcu.get('model_bytes'))} + kernels "
                                        f"{_kib(mcu.get('kernel_bytes_estimate'))} (estimate)"),
             (f"{len(mcu.get('ops', []))} ops", f"{mcu.get('op_count', '?')} operators"),
             (escape(str(mcu.get("tflm_version", "?"))), "tflite-micro version")]
    if peak:
        cards.append((_kib(peak["bytes"]), f"activation peak at {peak['op']} ({peak['layer']})"))
    return '<div class="cards">' + "".join(f'<div class="card"><div class="v">{v}</div><div class="k">{escape(k)}</div>'
                                           "</div>" for v, k in cards) + "</div>"


def _budget_rows(ctx: ReportContext, files: set[str]) -> str:
    checks = [c for c in (ctx.run.report.get("budgets") or {}).get("checks", [])
              if c.get("budget") in MCU_BUDGETS and (c.get("artifact") in files or
                                                    c.get("artifact", "").split("@")[0] in files)]
    if not checks:
        return note("No max_arena_kb / max_flash_kb budget (or target profile) is set for these files.")
    judged: dict[tuple, list[str]] = {}   # one row per judgement; the entries of one file share their figures
    for c in checks:
        judged.setdefault((c.get("target") or "", c["budget"], c["measured"], c["allowed"], c["ok"],
                           c.get("unit"), c.get("detail") if c["measured"] is None else ""), []).append(c["artifact"])
    rows = [[", ".join(f"<code>{escape(a)}</code>" for a in arts), escape(target), escape(budget),
             escape(measured_text({"measured": measured, "unit": unit})), f"{num(allowed)}{escape(unit_text(unit))}",
             f'<span class="{"ok" if ok else "bad"}">'
             f'{escape(check_verdict({"measured": measured, "ok": ok, "detail": detail}))}</span>']
            for (target, budget, measured, allowed, ok, unit, detail), arts in judged.items()]
    return "<h3>Budgets</h3>" + table(["artifact", "target", "budget", "measured", "allowed", "verdict"], rows,
                                       left=3)


def _agreement_table(ctx: ReportContext, entries: dict[str, dict]) -> str:
    arts = ctx.run.report["artifacts"]
    rows = []
    for key, a in entries.items():
        m = a.get("metrics", {})
        file = str(a.get("file", key))
        if file.endswith(FIRMWARE_FOLDER_SUFFIX):   # the firmware folder holds the bytes of model.int8.tflite
            file = file[:-len(FIRMWARE_FOLDER_SUFFIX)] + ".tflite"
        lite = next((x for x in arts.values() if x.get("file") == file and x.get("runtime") == "litert"
                     and "metrics" in x), None)
        agree = a["mcu"].get("litert_agreement") or {}
        t1 = m.get("accuracy")
        l1 = (lite or {}).get("metrics", {}).get("accuracy")
        gap = None if t1 is None or l1 is None else t1 - l1
        cells = []
        for kernels in ("xnnpack", "reference"):
            k = agree.get(kernels)
            if not k:
                cells.append('<span class="muted">—</span>')
                continue
            cls = "ok" if k["agreement"] >= MIN_TFLM_AGREEMENT else "bad"
            cells.append(f'<span class="{cls}">{k["agreement"]:.4f}</span>'
                         f'<br><span class="muted">max {k["max_diff_steps"]} int8 steps</span>')
        gap_cell = "—" if gap is None else (
            f'<span class="{"ok" if abs(gap) <= MAX_TOP1_GAP + 1e-9 else "bad"}">{gap * 100:+.2f} pp</span>')
        rows.append([f"<code>{escape(key)}</code>", "—" if t1 is None else f"{t1:.4f}",
                     "—" if l1 is None else f"{l1:.4f}", gap_cell, *cells,
                     "—" if m.get("agreement") is None else f"{m['agreement']:.4f}"])
    n = next((e["mcu"]["litert_agreement"].get("images") for e in entries.values()
              if e["mcu"].get("litert_agreement")), None)
    head = ["TFLM entry", "TFLM top-1", "LiteRT int8 top-1", "TFLM − LiteRT", "agreement with LiteRT (XNNPACK)",
            "agreement with LiteRT (reference kernels)", "agreement with float"]
    return ("<h3>Same answers as LiteRT?</h3>" + table(head, rows) +
            f'<p class="muted">On the {n if n is not None else "evaluated"} test images. The acceptance for an MCU '
            f"recipe: agreement ≥ {MIN_TFLM_AGREEMENT:.0%} and top-1 within {MAX_TOP1_GAP * 100:.1f} pp. "
            "TFLM's kernels are ports of LiteRT's reference kernels (agreement 1.0 expected); LiteRT's default "
            "XNNPACK kernels round differently, which flips answers whose top-2 margin is small.</p>")


def _resolver(ctx: ReportContext, mcu: dict) -> str:
    header = ctx.run.dir / f"model.int8{FIRMWARE_FOLDER_SUFFIX}" / "op_resolver.h"
    ops = ", ".join(f"<code>{escape(o)}</code>" for o in mcu.get("ops", []))
    text = header.read_text() if header.is_file() else ""
    body = (f"<pre>{escape(text)}</pre>" if text else
            note("model.int8.tflm/op_resolver.h is not in the run (add tflm-c to export.formats to write it)."))
    return (f"<p>Ops, in first-use order ({len(mcu.get('ops', []))} kernels to register): {ops}.</p>"
            f"<details><summary>op_resolver.h</summary>{body}</details>")


def _peak_caption(mcu: dict) -> str:
    p = mcu.get("activation_peak")
    if not p:
        return ""
    head, tail = p.get("arena_head_bytes"), p.get("arena_tail_bytes")
    parts = (f"; the arena's planned part (activations and scratch) is {_bytes(head)} and its persistent part "
             f"(tensor, node and quantisation structs) {_bytes(tail)}" if head is not None and tail is not None else "")
    return (f"Live activation bytes per operator, in execution order. The peak, {_bytes(p['bytes'])} at op "
            f"{p['op_index']} {escape(p['op'])} (layer <code>{escape(p['layer'])}</code>), sets the arena: minimal "
            f"arena {_bytes(mcu['arena_bytes'])}{parts}. To shrink it, shrink that layer's live tensors.")


@register_section("microcontroller", order=45, title="Microcontroller (TensorFlow Lite Micro)", nav="MCU",
                  tasks=None)
def microcontroller_section(ctx: ReportContext) -> str | None:
    """Arena, flash, ops, TFLM version, per-op live activations and TFLM vs LiteRT, from report.json's "mcu"."""
    entries = mcu_entries(ctx.run.report)
    if not entries:
        return None
    key, first = next(iter(entries.items()))
    mcu = first["mcu"]
    others = {k: a for k, a in entries.items() if a["mcu"].get("arena_bytes") != mcu["arena_bytes"]
              or a["mcu"].get("model_bytes") != mcu["model_bytes"]}
    out = [f"<p>Measured in the TFLite Micro interpreter (reference kernels) on <code>{escape(key)}</code>"
           + (f" (also {', '.join(f'<code>{escape(k)}</code>' for k in entries if k != key)}: the same figures)"
              if len(entries) > 1 and not others else "") + ".</p>", _cards(mcu)]
    if others:
        rows = [[f"<code>{escape(k)}</code>", _bytes(a["mcu"]["arena_bytes"]),
                 _bytes(a["mcu"].get("arena_recommended_bytes")), _bytes(a["mcu"]["flash_bytes"])]
                for k, a in entries.items()]
        out.append(table(["TFLM entry", "minimal arena", "recommended", "flash (est.)"], rows))
    out.append(_budget_rows(ctx, {a.get("file", k) for k, a in entries.items()} | set(entries)))
    out.append(_agreement_table(ctx, entries))
    out.append("<h3>Which layer sets the arena</h3>")
    acts = mcu.get("activations") or []
    if acts:
        path, src = ctx.plot_path("mcu_activations.png")
        peak = mcu.get("activation_peak") or {}
        activation_plot(acts, path, arena_bytes=mcu["arena_bytes"], planned_bytes=peak.get("arena_head_bytes"),
                        title=f"{ctx.run.name}: live activation memory per op")
        out.append(figure_html(src, "live activation bytes per operator", _peak_caption(mcu)))
    else:
        out.append(note("report.json has no per-op activation figures (an older edgecnn measured it)."))
    out.append(_latency_estimate(ctx))
    out.append("<h3>Ops and the op resolver</h3>" + _resolver(ctx, mcu))
    rules = mcu.get("rules") or {}
    if rules:
        out.append("<details><summary>How each figure is found</summary>" + table(
            ["figure", "rule"], [[escape(k), escape(v)] for k, v in rules.items()], left=1, wrap=(1,)) + "</details>")
    return "".join(out)


def _latency_estimate(ctx: ReportContext) -> str:
    """``mcu_latency.json`` (``edgecnn.mcu.latency``): the estimated time per image on each named core, with its
    basis, headed as an estimate: nothing here was measured on a board."""
    import json

    path = ctx.run.dir / "mcu_latency.json"
    if not path.is_file():
        return ""
    targets = json.loads(path.read_text()).get("targets", {})
    rows = [[escape(name), escape(t.get("core", "")), f"{t.get('clock_mhz', 0):.0f} MHz", f"{t.get('macs', 0):,}",
             f"<b>{t.get('ms', 0):.0f}</b>", escape(", ".join(f"{op} {ms:.0f}" for op, ms in
                                                           sorted((t.get("by_op_ms") or {}).items(),
                                                                  key=lambda kv: -kv[1])[:3]))]
            for name, t in targets.items()]
    if not rows:
        return ""
    basis = next(iter(targets.values())).get("basis", "")
    return ("<h3>Latency on the target: estimated, not measured</h3>" +
            table(["profile", "core", "clock", "MACs", "ms / image (est.)", "largest ops (ms)"], rows) +
            note(f"An estimate from the int8 graph: {basis}"))

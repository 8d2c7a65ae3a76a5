"""The "Target CPU" section: the int8 files run by the target's own kernels (report.json's ``"target"``).

Shown for any task whose report has an entry written by a target-CPU runtime (``litert-arm64``,
``onnxruntime-arm64``: ``evaluate.runtimes``, :mod:`edgecnn.runtime.arm64_child`): per file, its top-1
accuracy and agreement with the float model on the target's kernels beside the same figures on this
machine, how often the two runs give the same answer, the largest probability difference, and which CPU
and library versions each figure is from. Like every section it reads only the run directory.
"""
from __future__ import annotations

from edgecnn.report.markup import check_verdict, escape, measured_text, note, num, table
from edgecnn.report.registry import ReportContext, register_section

__all__ = ["target_entries"]


def target_entries(report: dict) -> dict[str, dict]:
    """report.json's entries that a target-CPU runtime measured (they carry ``"target"``), by key."""
    return {k: a for k, a in report.get("artifacts", {}).items()
            if isinstance(a.get("target"), dict) and "metrics" in a}


def _pct(x) -> str:
    return "—" if x is None else f"{100 * float(x):.2f} %"


@register_section("target-cpu", order=46, title="Target CPU: the int8 files on the device's kernels",
                  nav="Target CPU")
def target_cpu_section(ctx: ReportContext) -> str | None:
    entries = target_entries(ctx.run.report)
    if not entries:
        return None
    arts = ctx.run.report["artifacts"]
    rows = []
    for key, a in entries.items():
        t, m = a["target"], a["metrics"]
        host = arts.get(a.get("file", ""), {})
        hm = host.get("metrics", {}) if host.get("runtime") == t.get("host_runtime") else {}
        changed = t.get("images", 0) - round(t.get("host_agreement", 1.0) * t.get("images", 0))
        rows.append([f"<code>{escape(key)}</code>", _pct(m.get("accuracy")), _pct(hm.get("accuracy")),
                     _pct(m.get("agreement")), _pct(hm.get("agreement")),
                     _pct(t.get("host_agreement")) + f" ({changed} of {t.get('images', '?')} changed)",
                     num(t["max_abs_diff"]) if t.get("max_abs_diff") is not None else escape(t.get("error", "—"))])
    head = ["entry", "top-1 (target)", "top-1 (host)", "agreement w/ float (target)", "agreement w/ float (host)",
            "target vs host, same file", "max |Δp|"]
    first = next(iter(entries.values()))["target"]
    machine = ctx.run.report.get("machine", {})
    where = table(["figure", "CPU", "kernels", "versions"], [
        ["target columns", escape(f"{first.get('cpu')} (emulated: {first.get('emulator') or 'qemu-user'})"),
         escape(", ".join(dict.fromkeys(str(a["target"].get("kernels", "")) for a in entries.values()))),
         escape(", ".join(f"{a['target'].get('kernels', '?').split(' of ')[-1]} {a['target'].get('runtime_version')}"
                          for a in entries.values()))],
        ["host columns", escape(f"{machine.get('cpu', first.get('host_cpu'))} ({machine.get('machine', '?')})"),
         "the host build of the same libraries",
         escape(", ".join(sorted({f"{a['target'].get('host_runtime')} {a['target'].get('host_runtime_version')}"
                                  for a in entries.values()})))]])
    checks = [c for c in (ctx.run.report.get("budgets") or {}).get("checks", []) if c.get("budget") ==
              "min_target_agreement"]
    budget = ""
    if checks:
        budget = "<h3>Budgets</h3>" + table(["artifact", "target", "measured", "allowed", "verdict"], [
            [f"<code>{escape(c['artifact'])}</code>", escape(c.get("target", "")), measured_text(c),
             f"≥ {num(c['allowed'])}", escape(check_verdict(c))] for c in checks])
    return (table(head, rows) + where + budget +
            note("Target figures come from the aarch64 builds of the runtimes run under qemu-user: the same "
                 "instructions as the device, emulated, so the answers are the device's but the times are not - "
                 "these entries have no latency. Only int8 files are run there: float kernels agree across CPUs."))

"""The evaluate stage's tail, written once for every task: the budget verdict over what was measured,
report.json and report.md written, the stage recorded in the run store."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgecnn._io import write_json, write_text
from edgecnn.stages.result import RunResult
from edgecnn.store import RunStore

__all__ = ["finish_evaluation"]


def finish_evaluation(store: RunStore, report: dict[str, Any], budgets: Any, fp: str, *,
                      manifest: dict[str, Any] | None = None, withheld: dict[str, dict] | None = None,
                      markdown: Callable[[dict], str] | None = None,
                      outputs: Sequence[str] = ("report.json",)) -> RunResult:
    """Apply ``budgets`` to ``report``'s figures and give the verdict: fail on a broken budget, on an artifact
    that failed while running (``report["errors"]``) and on a withheld int8 format; an int8 file no chooser
    held is listed under ``unverified``. Writes report.json (and report.md with the task's ``markdown``)
    and records the evaluate stage with ``fp``.

    Returns:
        The :class:`RunResult` (the report and the violations).
    """
    from edgecnn.evaluate.budgets import check_budgets

    checks, violations = check_budgets(report, budgets)
    report["budgets"] = {"checks": checks, "violations": [v.to_json() for v in violations]}
    report.pop("withheld", None)
    if withheld:
        report["withheld"] = withheld
    if manifest is not None:
        report["unverified"] = sorted(n for n, a in manifest["artifacts"].items() if a.get("verified") is False)
    report["verdict"] = "pass" if not violations and not report.get("errors") and not withheld else "fail"
    write_json(store.path("report.json"), report)
    if markdown is not None:
        write_text(store.path("report.md"), markdown(report))
    store.record("evaluate", fp, list(outputs), hashed=False)
    return RunResult(store.dir, report, violations)

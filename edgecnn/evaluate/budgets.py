"""Budgets: the limits an artifact must hold (accuracy, drop vs float, agreement, p95 latency, size)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from edgecnn.config import BudgetsConfig


@dataclass(frozen=True)
class Violation:
    artifact: str
    budget: str
    measured: float
    allowed: float
    unit: str = ""

    def __str__(self) -> str:
        u = self.unit
        return (f"{self.artifact}: {self.budget} broken: measured {self.measured:.4g}{u}, "
                f"allowed {self.allowed:.4g}{u}")

    def to_json(self) -> dict:
        return asdict(self)


def check_budgets(report: dict, budgets: BudgetsConfig) -> tuple[list[dict], list[Violation]]:
    """Apply the budgets to a report's artifacts; returns (every check with its verdict, the violations)."""
    from edgecnn.evaluate.latency import resolve_threads

    checks: list[dict] = []
    violations: list[Violation] = []

    def check(artifact: str, name: str, measured: float | None, allowed: float, upper: bool, unit: str = ""):
        if measured is None:
            return
        ok = measured <= allowed if upper else measured >= allowed
        checks.append({"artifact": artifact, "budget": name, "measured": measured, "allowed": allowed,
                       "unit": unit, "ok": ok})
        if not ok:
            violations.append(Violation(artifact, name, measured, allowed, unit))

    ref = report.get("reference_accuracy")
    for name, art in report["artifacts"].items():
        b = budgets.for_artifact(name)
        acc = art.get("metrics", {}).get("accuracy")
        if b.min_accuracy is not None:
            check(name, "min_accuracy", acc, b.min_accuracy, upper=False)
        if b.max_accuracy_drop is not None and ref is not None and acc is not None:
            check(name, "max_accuracy_drop", ref - acc, b.max_accuracy_drop, upper=True)
        if b.min_agreement is not None:
            check(name, "min_agreement", art.get("metrics", {}).get("agreement"), b.min_agreement, upper=False)
        if b.p95_ms is not None:
            lat = art.get("latency", {}).get(str(resolve_threads(b.threads)), {})
            check(name, f"p95_ms@{b.threads or 'all'}threads", lat.get("p95_ms"), b.p95_ms, upper=True, unit=" ms")
        if b.max_size_kb is not None:
            check(name, "max_size_kb", art["bytes"] / 1024, b.max_size_kb, upper=True, unit=" KB")
    return checks, violations


def check_http_result(result: dict, run_dir, budgets: BudgetsConfig) -> list[Violation]:
    """Budgets applied to what a client of the service saw (``serve.evaluate_via_http``'s result).

    Accuracy, the drop against the in-process float model (from report.json, when present), size,
    and the client-side p95 at the first concurrency level, which stands for every thread count:
    the service's thread budget is its own.
    """
    import json
    from pathlib import Path

    from edgecnn.evaluate.latency import resolve_threads

    first = result["levels"][0] if result.get("levels") else {}
    name = result["version"]
    latency = {str(resolve_threads(t)): {"p95_ms": first.get("p95_ms")} for t in (1, 0)}
    art = {"metrics": {"accuracy": result["accuracy"]}, "bytes": (Path(run_dir) / name).stat().st_size,
           "latency": latency}
    report: dict = {"artifacts": {name: art}}
    report_path = Path(run_dir) / "report.json"
    if report_path.is_file():
        report["reference_accuracy"] = json.loads(report_path.read_text()).get("reference_accuracy")
    return check_budgets(report, budgets)[1]

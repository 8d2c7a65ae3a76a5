"""Accuracy, agreement, latency and size of every artifact, checked against budgets.

    check_budgets(report, recipe.budgets)   # the evaluate stage's verdict on report.json
    check(run_dir, "budgets.yaml")          # the CI gate (exit codes 0 / 1 / 2)

Both judge with ``check_targets`` and return :class:`BudgetResult` s.
"""
from edgecnn.evaluate.budgets import BudgetResult, check_budgets, check_targets
from edgecnn.evaluate.metrics import classification_metrics
from edgecnn.runtime.latency import measure_latency

__all__ = ["BudgetResult", "check", "check_budgets", "check_targets", "classification_metrics", "measure_latency"]


def __getattr__(name: str):
    if name == "check":
        from edgecnn.evaluate.check import check

        return check
    raise AttributeError(name)

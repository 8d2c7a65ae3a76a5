"""Accuracy, agreement, latency and size of every artifact, checked against budgets.

    check(run_dir, "budgets.yaml")      # the CI gate (exit codes 0 / 1 / 2)
    render_report(run_dir)              # report.html, plots/, MODEL_CARD.md
"""
from edgecnn.evaluate.budgets import Violation, check_budgets
from edgecnn.evaluate.latency import measure_latency
from edgecnn.evaluate.metrics import classification_metrics

__all__ = ["Violation", "check_budgets", "classification_metrics", "measure_latency", "check", "render_report"]


def __getattr__(name: str):
    if name == "check":
        from edgecnn.evaluate.check import check

        return check
    if name == "render_report":
        from edgecnn.evaluate.report_html import render_report

        return render_report
    raise AttributeError(name)

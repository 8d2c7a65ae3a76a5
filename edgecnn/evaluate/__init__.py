"""Accuracy, agreement, latency and size of every artifact, checked against budgets."""
from edgecnn.evaluate.budgets import Violation, check_budgets
from edgecnn.evaluate.latency import measure_latency
from edgecnn.evaluate.metrics import classification_metrics

__all__ = ["Violation", "check_budgets", "classification_metrics", "measure_latency"]

"""Classification metrics from probabilities, plus agreement with a reference model."""
from __future__ import annotations

import math

import numpy as np


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion: honest error bars for small test sets."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str], top_k: int = 5,
                           reference: np.ndarray | None = None) -> dict:
    """Top-1 (and top-k when there are more than 5 classes), per-class P/R/F1, confusion matrix,
    and, given the reference model's probabilities, top-1 agreement and max |delta probability|."""
    n_classes = len(classes)
    pred = probs.argmax(1)
    correct = int((pred == labels).sum())
    out: dict = {"n": int(len(labels)), "accuracy": correct / max(1, len(labels)),
                 "accuracy_ci95": wilson_interval(correct, len(labels))}
    if n_classes > 5:
        k = min(top_k, n_classes)
        topk = np.argsort(-probs, axis=1)[:, :k]
        out[f"top{k}_accuracy"] = float((topk == labels[:, None]).any(1).mean())
    cm = confusion_matrix(labels, pred, n_classes)
    per_class = {}
    for i, c in enumerate(classes):
        tp = cm[i, i]
        precision = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        recall = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                        "support": int(cm[i, :].sum())}
    out["per_class"] = per_class
    out["macro_f1"] = float(np.mean([v["f1"] for v in per_class.values()]))
    out["confusion_matrix"] = cm.tolist()
    if reference is not None:
        out["agreement"] = float((reference.argmax(1) == pred).mean())
        out["max_abs_prob_delta"] = float(np.abs(reference - probs).max())
    return out

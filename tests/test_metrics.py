from __future__ import annotations

import numpy as np

from edgecnn.evaluate.metrics import classification_metrics, wilson_interval
from edgecnn.runtime.latency import measure_latency, percentiles


def test_metrics_by_hand():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    ref = np.array([[0.8, 0.2], [0.1, 0.9], [0.3, 0.7], [0.4, 0.6]])
    m = classification_metrics(probs, labels, ["a", "b"], reference=ref)
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 0], [1, 2]]
    assert m["per_class"]["a"]["precision"] == 0.5 and m["per_class"]["b"]["recall"] == 2 / 3
    assert m["agreement"] == 0.75
    assert np.isclose(m["max_abs_prob_delta"], 0.3)


def test_topk_only_above_five_classes():
    """Six classes: top-5 counts a label ranked 1st to 5th, not 6th; five or fewer classes: no top-k key."""
    p = np.array([0.40, 0.25, 0.15, 0.10, 0.07, 0.03])
    probs = np.stack([p, p, p, p[::-1]])
    labels = np.array([0,      # ranked 1st: top-1 and top-5
                       4,      # ranked 5th: top-5 only
                       5,      # ranked 6th: neither
                       1])     # p reversed, class 1 ranked 5th: top-5 only
    classes = [str(i) for i in range(6)]
    m = classification_metrics(probs, labels, classes)
    assert m["accuracy"] == 0.25 and m["top5_accuracy"] == 0.75
    assert classification_metrics(probs, labels, classes, top_k=2)["top2_accuracy"] == 0.25   # row 0 only
    assert classification_metrics(probs, labels, classes, top_k=9)["top6_accuracy"] == 1.0    # k capped at 6
    five = probs[:, :5] / probs[:, :5].sum(1, keepdims=True)
    small = classification_metrics(five, np.array([0, 4, 4, 1]), classes[:5])
    assert small["accuracy"] == 0.25 and not [k for k in small if k.startswith("top")]


def test_wilson():
    lo, hi = wilson_interval(95, 100)
    assert lo < 0.95 < hi and hi - lo < 0.1


def test_latency_counts_runs():
    calls = []
    lat = measure_latency(lambda x: calls.append(x.shape), np.zeros((4, 4, 3)), warmup=3, runs=25)
    assert len(calls) == 28 and calls[0] == (1, 4, 4, 3) and lat["runs"] == 25
    assert percentiles(np.arange(1, 101))["p50_ms"] == 50.5

from __future__ import annotations

import numpy as np

from edgecnn.evaluate.latency import measure_latency, percentiles
from edgecnn.evaluate.metrics import classification_metrics, wilson_interval


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
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(8), 50)
    labels = rng.integers(0, 8, 50)
    m = classification_metrics(probs, labels, [str(i) for i in range(8)], top_k=5)
    assert m["top5_accuracy"] >= m["accuracy"]


def test_wilson():
    lo, hi = wilson_interval(95, 100)
    assert lo < 0.95 < hi and hi - lo < 0.1


def test_latency_counts_runs():
    calls = []
    lat = measure_latency(lambda x: calls.append(x.shape), np.zeros((4, 4, 3)), warmup=3, runs=25)
    assert len(calls) == 28 and calls[0] == (1, 4, 4, 3) and lat["runs"] == 25
    assert percentiles(np.arange(1, 101))["p50_ms"] == 50.5

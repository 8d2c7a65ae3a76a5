"""FOMO centroid detection (issue 34, item 8): the builders' one-output contract, the cell decode, centroid targets,
the weighted loss and the centroid metrics by hand, and one tiny grey run through int8, LiteRT and TFLite Micro."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError

ROOT = Path(__file__).resolve().parent.parent
FOMO = ["fomo_mobilenet_v2", "fomo_efficientnet_lite0"]


def _output(cells: dict[tuple[int, int], tuple[int, float]], g: int, k: int, size: int) -> np.ndarray:
    """A centroid detector's output (G * G, 4 + K): the cell boxes, and per listed (row, col) the probability of a
    class; every other cell is background."""
    out = np.zeros((g * g, 4 + k), np.float32)
    s = size / g
    for i in range(g):
        for j in range(g):
            out[i * g + j, :4] = np.array([j, i, j + 1, i + 1]) * s / size
    for (i, j), (c, p) in cells.items():
        out[i * g + j, 4 + c] = p
    return out


@pytest.mark.parametrize("name", FOMO)
def test_builders_answer_every_cell_as_its_own_box_with_k_class_probabilities(name):
    from edgecnn.arch import create_model, get_model_entry, list_models
    from edgecnn.detect.train import head_kind

    assert name in list_models(task="detect") and get_model_entry(name).task == "detect"
    model = create_model(name, num_classes=3, input_size=64)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    out = model(x, training=False).numpy()
    assert out.shape == (2, 8 * 8, 4 + 3)                       # one cell per 8x8 pixels
    layer = head_kind(model)
    assert (layer.kind, layer.stride) == ("centroid", 8)
    want = _output({}, 8, 3, 64)[:, :4]
    np.testing.assert_allclose(out[0, :, :4], want, atol=1e-6)  # row-major cells, fractions of the side
    probs = out[..., 4:]
    assert probs.min() >= 0 and np.all(probs.sum(-1) < 1)       # background holds the rest
    raw = model.get_layer("det_raw").output.shape
    assert tuple(raw[1:]) == (64, 4)                            # K + 1 logits, background first
    assert all(n.startswith("det_") for n in ("det_fomo_conv", "det_logits")) and model.get_layer("det_logits")


def test_the_decode_is_a_softmax_over_background_and_classes():
    from edgecnn.arch.detection import DetectionOutput

    raw = np.random.default_rng(1).normal(0, 2, (1, 16, 3)).astype(np.float32)
    out = DetectionOutput("centroid", 2, 32, stride=8)(raw).numpy()[0]
    e = np.exp(raw[0] - raw[0].max(1, keepdims=True))
    np.testing.assert_allclose(out[:, 4:], (e / e.sum(1, keepdims=True))[:, 1:], atol=1e-6)
    np.testing.assert_allclose(out[5, :4], [0.25, 0.25, 0.5, 0.5], atol=1e-6)   # row 1, col 1 of a 4x4 grid


def test_builder_refuses_a_size_without_whole_cells():
    from edgecnn.arch import create_model

    with pytest.raises(EdgecnnError, match=r"input_size must be a multiple of 8.*Received input_size=100; use 96"):
        create_model("fomo_mobilenet_v2", num_classes=3, input_size=100)
    with pytest.raises(EdgecnnError, match=r"num_classes .* must be an integer >= 1. Received num_classes=0"):
        create_model("fomo_mobilenet_v2", num_classes=0, input_size=96)


def test_centroid_targets_mark_each_centre_cell_with_class_plus_one():
    from edgecnn.detect.centroid import centroid_targets

    boxes = np.array([[0, 0, 20, 20],      # centre (10, 10)  -> cell (1, 1)
                      [40, 8, 48, 24],     # centre (44, 16)  -> cell (2, 5)
                      [2, 2, 14, 14],      # centre (8, 8)    -> cell (1, 1) too: smaller than box 0, so it wins
                      [60, 60, 64, 64]],   # centre (62, 62)  -> the last cell
                     np.float32)
    t = centroid_targets(boxes, np.array([0, 2, 1, 0]), 3, 64).reshape(8, 8)
    assert t.dtype == np.int32
    assert t[1, 1] == 2 and t[2, 5] == 3 and t[7, 7] == 1
    assert np.count_nonzero(t) == 3
    empty = centroid_targets(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 3, 64)
    assert empty.shape == (64,) and not empty.any()              # an image without objects is all background
    with pytest.raises(EdgecnnError, match=r"class ids must be in \[0, 3\)"):
        centroid_targets(boxes[:1], np.array([3]), 3, 64)


def test_centroid_loss_weights_object_cells_a_hundredfold():
    from edgecnn._tf import tf
    from edgecnn.detect.centroid import OBJECT_WEIGHT, centroid_loss

    raw = np.zeros((1, 4, 3), np.float32)                        # uniform: every cell's CE is log(3)
    target = np.array([[0, 0, 0, 2]], np.float32)
    got = float(centroid_loss(2)(tf.constant(target), tf.constant(raw)))
    assert OBJECT_WEIGHT == 100.0
    assert math.isclose(got, math.log(3) * (3 + 100) / 4, rel_tol=1e-5)


def test_centroid_metrics_by_hand():
    from edgecnn.detect.centroid import centroid_metrics, centroids

    size, g = 64, 8
    truth = [(np.array([[0, 0, 24, 24], [40, 40, 64, 64]], np.float32), np.array([0, 1])),
             (np.array([[8, 8, 16, 16]], np.float32), np.array([0]))]
    first = _output({(0, 0): (0, 0.9), (0, 1): (0, 0.8), (1, 1): (0, 0.7),   # one object of 3 cells in box 0
                     (6, 6): (0, 0.9),                                       # in box 1 but the wrong class
                     (4, 0): (1, 0.4)}, g, 2, size)                          # below the threshold: no detection
    second = _output({(1, 1): (0, 0.6), (5, 5): (1, 0.95)}, g, 2, size)      # a hit and a false alarm
    objs = centroids(first, size, 0.5)
    assert [(round(x, 3), round(y, 3), c) for x, y, c, _ in objs] == [(9.333, 6.667, 0), (52.0, 52.0, 0)]
    m = centroid_metrics(truth, np.stack([first, second]), size, score_threshold=0.5)
    assert (m["centroid_tp"], m["centroid_fp"], m["centroid_fn"]) == (2, 2, 1)
    assert m["centroid_precision"] == 0.5 and math.isclose(m["centroid_recall"], 2 / 3)
    assert math.isclose(m["centroid_f1"], 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_each_true_box_is_matched_once():
    from edgecnn.detect.centroid import centroid_metrics

    truth = [(np.array([[0, 0, 64, 64]], np.float32), np.array([0]))]
    two = _output({(0, 0): (0, 0.9), (7, 7): (0, 0.8)}, 8, 1, 64)             # two separate objects, one box
    m = centroid_metrics(truth, two[None], 64)
    assert (m["centroid_tp"], m["centroid_fp"], m["centroid_fn"]) == (1, 1, 0)
    none = centroid_metrics([(np.zeros((0, 4)), np.zeros(0))], _output({}, 8, 1, 64)[None], 64)
    assert none["centroid_f1"] == 0.0 and none["centroid_tp"] == none["centroid_fp"] == 0


def test_cell_agreement_compares_the_argmax_with_background():
    from edgecnn.detect.centroid import cell_agreement, cell_classes

    a = _output({(0, 0): (0, 0.9), (0, 1): (1, 0.45)}, 2, 2, 16)
    b = _output({(0, 0): (0, 0.9), (0, 1): (1, 0.55)}, 2, 2, 16)
    assert cell_classes(a).tolist() == [[1, 0, 0, 0]]   # 0.45 < background's 0.55
    assert cell_classes(b).tolist() == [[1, 2, 0, 0]]
    assert cell_agreement(a, b) == 0.75 and cell_agreement(a[None], a[None]) == 1.0
    assert cell_classes(b, 0.6).tolist() == [[1, 0, 0, 0]]   # with a threshold: the cells that fire
    assert cell_agreement(a, b, 0.5) == 0.75 and cell_agreement(a, b, 0.6) == 1.0


# ---------------------------------------------------------------------------- one tiny grey run
@pytest.mark.slow
def test_tiny_grey_run_through_litert_and_tflite_micro(tiny_defects, tmp_path):
    import edgecnn

    result = edgecnn.run(ROOT / "tests" / "recipes" / "detect-fomo-tiny.yaml", data=tiny_defects,
                         output=tmp_path / "run")
    assert result.ok, (result.violations, result.errors, result.withheld)
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["preprocessing"]["channels"] == 1
    report = json.loads((run / "report.json").read_text())
    arts = report["artifacts"]
    for key in ("model.keras", "model.int8.tflite", "model.int8.tflite@tflm"):
        m = arts[key]["metrics"]
        assert {"centroid_precision", "centroid_recall", "centroid_f1", "cell_agreement"} <= set(m), key
    micro = arts["model.int8.tflite@tflm"]
    assert micro["runtime"] == "tflm" and micro["mcu"]["arena_bytes"] < 768 * 1024
    assert micro["metrics"]["runtime_cell_agreement"] >= 0.95   # an untrained net's near-ties; trained: >= 0.99
    assert "runtime_cell_argmax_agreement" in micro["metrics"]


def test_centroid_budget_keys_gate_the_fomo_figures():
    """min_centroid_f1 and min_cell_agreement judge the figures a FOMO run's evaluation writes, by name."""
    from edgecnn.budget_schema import parse_budget_targets
    from edgecnn.evaluate.budgets import check_budgets

    report = {"artifacts": {"model.int8.tflite": {"file": "model.int8.tflite", "runtime": "litert", "bytes": 1,
                                                  "metrics": {"centroid_f1": 0.66, "cell_agreement": 0.9986}}}}
    ok = parse_budget_targets([{"name": "f", "artifacts": "*", "budgets": {"min_centroid_f1": 0.6,
                                                                             "min_cell_agreement": 0.99}}])
    bad = parse_budget_targets([{"name": "f", "artifacts": "*", "budgets": {"min_centroid_f1": 0.7}}])
    assert check_budgets(report, ok)[1] == []
    assert [v.budget for v in check_budgets(report, bad)[1]] == ["min_centroid_f1"]

"""The int8 chooser's task scorers on hand-made answers (no TensorFlow), and a route that raises: recorded as its
candidate's error, named in the reason, never the pick."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.anomaly.metrics import AurocScorer
from edgecnn.compress.scorers import Score, TopOneScorer
from edgecnn.segment.metrics import MiouScorer


def _images(n: int, size: int = 4) -> np.ndarray:
    """Image i is filled with the value i, so a fake runner can tell which image it is given."""
    return np.repeat(np.arange(n, dtype=np.float32), size * size * 3).reshape(n, size, size, 3)


class _Fake:
    """A runner whose answer to image i is ``outputs[k][i]`` for each of its outputs."""

    def __init__(self, *outputs: np.ndarray):
        self.outputs = [np.asarray(o, np.float32) for o in outputs]

    def _rows(self, x):
        return np.asarray(x)[:, 0, 0, 0].astype(int)

    def __call__(self, x):
        return self.outputs[0][self._rows(x)]

    def predict_outputs(self, x):
        return [o[self._rows(x)] for o in self.outputs]


def _onehot(classes, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[np.asarray(classes)]


def test_top1_scorer_drop_and_agreement_over_val_and_extra_images():
    labels = np.array([0, 1, 2, 1])
    scorer = TopOneScorer(_images(4), labels, max_drop=0.25, min_agreement=0.7,
                          extra=(_images(2), np.array([0, 1])))           # the float model's top-1 on two more
    scorer.prepare(lambda: _Fake(_onehot([0, 1, 2, 2], 3)))              # float: 3 of 4 right
    assert scorer.float_metric == scorer.reference == 0.75
    s = scorer.score(_Fake(_onehot([0, 1, 1, 1], 3)))                    # int8: also 3 of 4, one flip each way
    # val: agrees on 0, 1 (2 of 4); extra images 0, 1 answered [0, 1]: both agree -> 4 of 6
    assert (s.metric, s.drop, s.agreement) == (0.75, 0.0, pytest.approx(4 / 6))
    assert not scorer.holds(s) and scorer.holds(Score(0.5, 0.25, 0.7))
    assert scorer.resolution == 0.25 and scorer.agreement_images == 6


def test_auroc_scorer_auroc_drop_and_rank_correlation():
    defect = np.array([False, False, True, True])
    amap = np.zeros((4, 3, 3, 1))
    scorer = AurocScorer(_images(4), defect, max_drop=0.25, head_layers=("anomaly_map/",), batch=3)
    scorer.prepare(lambda: _Fake(amap, [[0.1], [0.2], [0.8], [0.9]]))    # map first: told apart by rank
    assert scorer.float_metric == 1.0 and scorer.resolution == 0.25
    s = scorer.score(_Fake([[0.1], [0.85], [0.8], [0.9]], amap))
    # pairs (defect > good): 0.8>0.1, 0.9>0.1, 0.9>0.85 hold, 0.8>0.85 does not -> 3/4; ranks 1 2 3 4 vs 1 3 2 4:
    # Spearman 1 - 6 * 2 / (4 * 15) = 0.8
    assert (s.metric, s.drop, s.agreement) == (0.75, 0.25, pytest.approx(0.8))
    assert scorer.holds(s) and not scorer.holds(Score(0.7, 0.3, 1.0))
    assert scorer.score(_Fake(np.full((4, 1), 0.5), amap)).agreement == 0.0   # collapsed scores keep no order


def test_auroc_scorer_on_good_only_val_holds_the_float_ranking():
    scorer = AurocScorer(_images(3), [False] * 3, max_drop=0.01)
    scorer.prepare(lambda: _Fake([[0.1], [0.2], [0.3]], np.zeros((3, 2, 2, 1))))
    kept = scorer.score(_Fake([[0.0], [0.5], [0.9]], np.zeros((3, 2, 2, 1))))
    swapped = scorer.score(_Fake([[0.5], [0.0], [0.9]], np.zeros((3, 2, 2, 1))))
    assert scorer.min_agreement == AurocScorer.GOOD_ONLY_CORRELATION and kept.drop == swapped.drop == 0.0
    assert scorer.holds(kept) and not scorer.holds(swapped)


def test_miou_scorer_is_the_lectures_worked_example():
    """test_segment's 4x4 example: float = truth (mIoU 1), int8 = its prediction: mIoU 31/45, agreement 13/16."""
    truth = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    pred = np.array([[0, 0, 0, 1], [0, 0, 1, 0], [0, 2, 1, 1], [2, 2, 2, 2]])
    scorer = MiouScorer(_images(1), truth[None], 3, max_drop=0.3, min_agreement=0.8)
    scorer.prepare(lambda: _Fake(_onehot(truth[None], 3)))
    s = scorer.score(_Fake(_onehot(pred[None], 3)))
    assert scorer.float_metric == 1.0
    assert (s.metric, s.drop, s.agreement) == (pytest.approx(31 / 45), pytest.approx(14 / 45), 13 / 16)
    assert not scorer.holds(s) and scorer.holds(Score(0.8, 0.2, 0.8))


@pytest.fixture()
def tiny_onnx(tmp_path):
    """(N, 4, 4, 3) -> softmax of the channel means: a float ONNX classifier that needs no TensorFlow."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
         helper.make_node("Softmax", ["m"], ["probs"], axis=-1)], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_a_route_that_raises_is_recorded_and_never_picked(tiny_onnx, tmp_path):
    """A bug in a route (a TypeError) ends that candidate, visibly: its error, the reason, not the pick."""
    import shutil

    from edgecnn.compress import chooser

    @chooser.register_route("test-raises", tier="ptq", runtime="onnxruntime", filename="model.raises.onnx",
                            needs_model=False)
    def _raises(ctx, path):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    @chooser.register_route("test-copies", tier="calibration", runtime="onnxruntime", filename="model.copy.onnx",
                            needs_model=False)
    def _copies(ctx, path):
        shutil.copy(ctx.onnx_path(), path)
        return {"copy": True}

    try:
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (12, 4, 4, 3)).astype(np.float32)
        labels = images.mean(axis=(1, 2)).argmax(1)
        scorer = TopOneScorer(images, labels, max_drop=0.0, min_agreement=1.0)
        result = chooser.choose_with(scorer, None, images, tmp_path / "work", float_onnx=tiny_onnx, runs=0,
                                     routes=("test-raises", "test-copies"))
    finally:
        chooser._ROUTES.pop("test-raises")
        chooser._ROUTES.pop("test-copies")
    raised, copied = result.candidates
    assert raised.route == "test-raises" and raised.error.startswith("TypeError: unsupported operand")
    assert raised.artifact is None and not raised.within_budget
    assert result.chosen is copied and copied.error is None and copied.accuracy == 1.0 and copied.agreement == 1.0
    assert "Failed: test-raises (TypeError" in result.reason
    js = result.to_json()
    assert js["metric"] == "top-1" and js["candidates"][0]["error"].startswith("TypeError")


def test_routes_a_task_cannot_use_are_skipped_with_the_reason(tiny_onnx, tmp_path):
    """QAT and NNCF need class labels and a classifier loss; a float-head route needs the task's head layers."""
    from edgecnn.compress import chooser

    class Unlabelled(TopOneScorer):   # a task without class labels and without a named head
        task, has_labels = "unlabelled", False

    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (12, 4, 4, 3)).astype(np.float32)
    scorer = Unlabelled(images, np.zeros(12, int), max_drop=0.5)
    result = chooser.choose_with(scorer, None, images, tmp_path / "work", float_onnx=tiny_onnx, runs=0,
                                 routes=("onnx-int8-nncf", "onnx-int8-float-head"))
    assert not result.candidates and result.chosen is None
    assert "class labels" in result.skipped["onnx-int8-nncf"]
    assert "names no head layers" in result.skipped["onnx-int8-float-head"]
    by_name = {r.name: r for r in chooser.list_routes()}
    assert by_name["tflite-int8-qat"].needs_labels and by_name["onnx-int8-qat"].needs_labels
    assert by_name["tflite-int8-float-head"].needs_head and not by_name["tflite-int8"].needs_labels

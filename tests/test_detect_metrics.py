"""Box post-processing and detection metrics (edgecnn.detect.boxes, edgecnn.detect.metrics): fast, no TensorFlow.

The mAP is held equal to pycocotools (the reference everyone quotes) on random sets built to hit COCO's
corner cases: images without objects, detections of classes without truth, duplicate detections, equal
scores, equal IoUs (integer boxes, repeated truth boxes) and crowd boxes.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from edgecnn.detect.boxes import (
    Detections,
    batched_nms,
    cxcywh_to_xyxy,
    decode_anchors,
    encode_anchors,
    iou_matrix,
    nms,
    postprocess,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from edgecnn.detect.metrics import box_agreement, coco_map


# ---------------------------------------------------------------------------------------------------------
# boxes
# ---------------------------------------------------------------------------------------------------------
def test_conversions_round_trip():
    xyxy = np.array([[1.0, 2.0, 5.0, 10.0], [0.0, 0.0, 3.0, 3.0]])
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), [[1, 2, 4, 8], [0, 0, 3, 3]])
    np.testing.assert_array_equal(xywh_to_xyxy(xyxy_to_xywh(xyxy)), xyxy)
    np.testing.assert_array_equal(cxcywh_to_xyxy([[3.0, 6.0, 4.0, 8.0]]), [[1, 2, 5, 10]])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        xyxy_to_xywh(np.zeros((2, 3)))


def test_iou_matrix_by_hand():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [50 / 150, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(iou[1], 0.0)  # zero-size boxes: IoU 0, never NaN
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def test_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10],  # 0
                      [1, 0, 11, 10],  # 1: IoU 9/11 with 0
                      [0, 0, 10, 5],  # 2: IoU 0.5 with 0 (not above 0.5: kept)
                      [50, 50, 60, 60]])  # 3: far away
    scores = np.array([0.8, 0.9, 0.7, 0.1])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1, 2, 3])  # 1 suppresses 0; 2 vs 1: 45/105
    np.testing.assert_array_equal(nms(boxes, scores, 0.95), [1, 0, 2, 3])
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_nms_ties_are_broken_by_index():
    boxes = np.array([[0, 0, 10, 10]] * 3)
    np.testing.assert_array_equal(nms(boxes, np.array([0.5, 0.5, 0.5]), 0.5), [0])
    np.testing.assert_array_equal(nms(boxes, np.array([0.4, 0.5, 0.5]), 0.5), [1])
    with pytest.raises(ValueError, match="one score per box"):
        nms(boxes, np.array([0.5]), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(boxes, np.ones(3), 1.5)


def test_batched_nms_is_class_wise_and_capped():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]])
    scores = np.array([0.9, 0.8, 0.95, 0.3])
    classes = np.array([0, 0, 1, 0])
    np.testing.assert_array_equal(batched_nms(boxes, scores, classes, 0.5), [2, 0, 3])
    np.testing.assert_array_equal(batched_nms(boxes, scores, classes, 0.5, max_detections=2), [2, 0])
    np.testing.assert_array_equal(batched_nms(boxes, np.full(4, 0.5), classes, 0.5), [0, 2, 3])


def test_anchor_coding_round_trip():
    rng = np.random.default_rng(0)
    anchors = np.column_stack([rng.uniform(0, 128, 50), rng.uniform(0, 128, 50),
                               rng.uniform(4, 64, 50), rng.uniform(4, 64, 50)])
    xy0 = rng.uniform(0, 100, (50, 2))
    boxes = np.concatenate([xy0, xy0 + rng.uniform(2, 60, (50, 2))], axis=1)
    deltas = encode_anchors(boxes, anchors)
    np.testing.assert_allclose(decode_anchors(deltas, anchors), boxes, atol=1e-3)
    # zero deltas decode to the anchor itself; the SSD variances scale the offsets
    np.testing.assert_allclose(decode_anchors(np.zeros((1, 4)), [[10, 20, 4, 8]]), [[8, 16, 12, 24]])
    np.testing.assert_allclose(decode_anchors([[1, 0, 0, 0]], [[10, 20, 4, 8]]), [[8.4, 16, 12.4, 24]], rtol=1e-6)
    np.testing.assert_allclose(encode_anchors([[8.4, 16, 12.4, 24]], [[10, 20, 4, 8]]), [[1, 0, 0, 0]], atol=1e-5)
    assert np.isfinite(decode_anchors([[0, 0, 1e6, 1e6]], [[0, 0, 1, 1]])).all()  # clamped, no overflow
    with pytest.raises(ValueError, match="positive width and height"):
        encode_anchors([[0, 0, 0, 5]], [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="same length"):
        decode_anchors(np.zeros((2, 4)), np.ones((3, 4)))


def test_postprocess_on_hand_made_outputs():
    boxes = np.array([[0, 0, 10, 10],  # anchor 0
                      [0, 0, 10, 9],  # anchor 1: overlaps 0 (IoU 0.9)
                      [30, 30, 40, 40],  # anchor 2
                      [60, 60, 80, 80]], np.float32)  # anchor 3: everything below the threshold
    probs = np.array([[0.90, 0.00],
                      [0.80, 0.60],
                      [0.20, 0.70],
                      [0.01, 0.04]], np.float32)
    dets = postprocess(probs, boxes)
    assert dets.count == 4
    np.testing.assert_array_equal(dets.classes, [0, 1, 1, 0])  # the same box may be kept for two classes
    np.testing.assert_allclose(dets.scores, [0.9, 0.7, 0.6, 0.2])
    np.testing.assert_array_equal(dets.boxes[:3], boxes[[0, 2, 1]])
    assert dets.boxes.dtype == np.float32 and dets.scores.dtype == np.float32 and dets.classes.dtype == np.int64

    assert postprocess(probs, boxes, score_threshold=0.65).classes.tolist() == [0, 1]
    assert postprocess(probs, boxes, max_detections=1).count == 1
    assert postprocess(probs, boxes, iou_threshold=0.95).count == 5  # anchor 1's class 0 survives
    assert postprocess(np.zeros((4, 2)), boxes).count == 0
    clipped = postprocess(probs, boxes + 35, image_size=(64, 48))
    assert clipped.boxes[:, [0, 2]].max() <= 64 and clipped.boxes[:, [1, 3]].max() <= 48
    with pytest.raises(ValueError, match=r"\(A, K\)"):
        postprocess(probs, boxes[:3])


def test_postprocess_is_deterministic_under_ties():
    boxes = np.array([[0, 0, 10, 10]] * 3 + [[50, 50, 60, 60]], np.float32)
    probs = np.full((4, 3), 0.5, np.float32)
    dets = postprocess(probs, boxes)
    assert dets.classes.tolist() == [0, 1, 2, 0, 1, 2]  # equal scores: anchor order, then class order
    np.testing.assert_array_equal(dets.boxes, boxes[[0, 0, 0, 3, 3, 3]])
    again = postprocess(probs.copy(), boxes.copy())
    np.testing.assert_array_equal(again.boxes, dets.boxes)


def test_detections_json_round_trip():
    dets = Detections(np.array([[1, 2, 3, 4]]), np.array([0.5]), np.array([1]))
    data = dets.to_json(labels=["scratch", "crack"])
    assert json.loads(json.dumps(data)) == {"count": 1, "boxes": [[1.0, 2.0, 3.0, 4.0]], "scores": [0.5],
                                            "classes": [1], "labels": ["crack"]}
    back = Detections.from_json(data)
    np.testing.assert_array_equal(back.boxes, dets.boxes)
    assert Detections.empty().count == 0 and Detections.empty().to_json()["boxes"] == []
    with pytest.raises(ValueError, match="one score and one class"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2))


# ---------------------------------------------------------------------------------------------------------
# COCO mAP: parity with pycocotools
# ---------------------------------------------------------------------------------------------------------
def _random_case(seed: int, num_images: int = 12, num_classes: int = 4, jitter: int = 4):
    """Truth and detections with COCO's corner cases; integer boxes and coarse scores make ties common."""
    rng = np.random.default_rng(seed)
    truth, detections, crowd = [], [], []
    for i in range(num_images):
        k = 0 if i % 4 == 1 else int(rng.integers(1, 6))  # every fourth image has no objects
        xy = rng.integers(0, 80, (k, 2))
        gt = np.concatenate([xy, xy + rng.integers(4, 40, (k, 2))], axis=1).astype(float)
        cls = rng.integers(0, num_classes - 1, k)  # the last class never has truth
        if k >= 2 and rng.random() < 0.5:  # a repeated truth box: equal IoUs
            gt[1], cls[1] = gt[0], cls[0]
        boxes, scores, classes = [], [], []
        for box, c in zip(gt, cls):
            for _ in range(int(rng.integers(0, 3))):  # missed, found, or found twice
                boxes.append(box + rng.integers(-jitter, jitter + 1, 4))
                scores.append(rng.integers(1, 11) / 10)
                classes.append(c if rng.random() < 0.85 else rng.integers(0, num_classes))
        for _ in range(int(rng.integers(0, 4))):  # false positives, some of the class without truth
            xy0 = rng.integers(0, 90, 2)
            boxes.append(np.concatenate([xy0, xy0 + rng.integers(3, 30, 2)]))
            scores.append(rng.integers(1, 11) / 10)
            classes.append(rng.integers(0, num_classes))
        if boxes and rng.random() < 0.3:  # an exact duplicate detection
            boxes.append(boxes[0])
            scores.append(scores[0])
            classes.append(classes[0])
        boxes = np.array(boxes, float).reshape(-1, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        truth.append((gt, cls))
        detections.append(Detections(boxes, np.array(scores), np.array(classes)))
        crowd.append(rng.random(k) < 0.15)
    return truth, detections, crowd


def _pycocotools_eval(truth, detections, num_classes, iscrowd=None):
    """pycocotools' COCOeval on the same boxes, built in memory (bbox [x, y, w, h]); its printing silenced."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, ((boxes, classes), dets) in enumerate(zip(truth, detections)):
        images.append({"id": i + 1, "width": 128, "height": 128})
        for j, (box, c) in enumerate(zip(xyxy_to_xywh(np.asarray(boxes, float).reshape(-1, 4)), classes)):
            crowd = int(iscrowd[i][j]) if iscrowd is not None else 0
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": crowd})
        for box, score, c in zip(xyxy_to_xywh(dets.boxes.astype(np.float64)), dets.scores, dets.classes):
            results.append({"image_id": i + 1, "category_id": int(c) + 1, "bbox": [float(v) for v in box],
                            "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.mark.parametrize("seed, jitter", [(seed, 4) for seed in range(6)] + [(seed, 1) for seed in range(6, 10)])
def test_map_equals_pycocotools(seed, jitter):
    pytest.importorskip("pycocotools")
    truth, detections, _ = _random_case(seed, jitter=jitter)
    ours = coco_map(truth, detections, num_classes=4)
    ref = _pycocotools_eval(truth, detections, num_classes=4)
    assert ours["map"] == pytest.approx(ref.stats[0], abs=1e-4)
    assert ours["map50"] == pytest.approx(ref.stats[1], abs=1e-4)
    assert ours["map75"] == pytest.approx(ref.stats[2], abs=1e-4)
    assert 3 not in ours["per_class"]  # the class without truth is left out, as in pycocotools


def test_per_class_ap_equals_pycocotools():
    pytest.importorskip("pycocotools")
    truth, detections, _ = _random_case(100, num_images=20)
    ours = coco_map(truth, detections, num_classes=4)
    precision = _pycocotools_eval(truth, detections, num_classes=4).eval["precision"]  # (T, R, K, area, maxDets)
    for k in range(4):
        p = precision[:, :, k, 0, -1]
        if (p > -1).any():
            assert ours["per_class"][k]["ap"] == pytest.approx(p.mean(), abs=1e-4)
            assert ours["per_class"][k]["ap50"] == pytest.approx(p[0].mean(), abs=1e-4)
            np.testing.assert_allclose(ours["pr_curves"][k], p[0], atol=1e-4)
        else:
            assert k not in ours["per_class"]


@pytest.mark.parametrize("seed", [3, 7])
def test_map_with_crowd_boxes_equals_pycocotools(seed):
    pytest.importorskip("pycocotools")
    truth, detections, crowd = _random_case(seed)
    assert any(c.any() for c in crowd)
    ours = coco_map(truth, detections, num_classes=4, iscrowd=crowd)
    ref = _pycocotools_eval(truth, detections, num_classes=4, iscrowd=crowd)
    assert ours["map"] == pytest.approx(ref.stats[0], abs=1e-4)
    assert ours["map50"] == pytest.approx(ref.stats[1], abs=1e-4)


def test_map_with_more_than_100_detections_per_image_equals_pycocotools():
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 100, (150, 2))
    boxes = np.concatenate([xy, xy + 10], axis=1)
    truth = [(boxes[:60], np.zeros(60, int))]
    detections = [Detections(boxes + rng.uniform(-3, 3, boxes.shape), rng.uniform(0, 1, 150), np.zeros(150))]
    ours = coco_map(truth, detections, num_classes=1)
    ref = _pycocotools_eval(truth, detections, num_classes=1)
    assert ours["map"] == pytest.approx(ref.stats[0], abs=1e-4)
    assert ours["map50"] == pytest.approx(ref.stats[1], abs=1e-4)


# ---------------------------------------------------------------------------------------------------------
# COCO mAP: by hand
# ---------------------------------------------------------------------------------------------------------
def _dets(boxes, scores, classes) -> Detections:
    return Detections(np.array(boxes, float).reshape(-1, 4), np.array(scores, float), np.array(classes))


def test_map_by_hand_and_precision_recall_at_threshold():
    truth = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 1])),
             (np.zeros((0, 4)), np.zeros(0, int))]  # an image without objects
    detections = [_dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.2], [0, 1]),
                  _dets([[5, 5, 9, 9]], [0.8], [0])]  # a false positive on the empty image
    out = coco_map(truth, detections, num_classes=3, score_threshold=0.25)
    assert out["per_class"][1]["ap"] == pytest.approx(1.0)
    # class 0: the true positive outranks the false one, so precision is 1 at every recall point
    assert out["per_class"][0]["ap"] == pytest.approx(1.0)
    assert out["map"] == pytest.approx(1.0) and sorted(out["per_class"]) == [0, 1]
    # at 0.25 the class-1 hit (0.2) does not count: 1 true, 1 false positive, 1 of 2 boxes found
    assert (out["precision"], out["recall"], out["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert out["per_class"][0]["precision"] == pytest.approx(0.5)
    assert out["per_class"][1]["recall"] == 0.0
    assert out["num_truth"] == 2 and out["num_images"] == 2


def test_map_without_truth_is_minus_one_and_bad_input_is_refused():
    out = coco_map([(np.zeros((0, 4)), np.zeros(0, int))], [_dets([[0, 0, 1, 1]], [0.5], [0])], num_classes=1)
    assert out["map"] == -1.0 and out["per_class"] == {}
    with pytest.raises(ValueError, match="one detections entry per truth image"):
        coco_map([], [Detections.empty()], num_classes=1)
    with pytest.raises(ValueError, match=r"classes should be in \[0, 2\)"):
        coco_map([(np.array([[0, 0, 1, 1]]), np.array([2]))], [Detections.empty()], num_classes=2)


# ---------------------------------------------------------------------------------------------------------
# box agreement
# ---------------------------------------------------------------------------------------------------------
def test_box_agreement_edge_cases():
    a = _dets([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.9, 0.8, 0.1], [0, 1, 0])
    assert box_agreement([a, Detections.empty()], [a, Detections.empty()]) == 1.0  # identical
    assert box_agreement([Detections.empty()], [Detections.empty()]) == 1.0  # nothing on either side
    far = _dets([[60, 60, 70, 70]], [0.9], [0])
    assert box_agreement([a], [far]) == 0.0  # disjoint
    assert box_agreement([a], [Detections.empty()]) == 0.0
    other_class = _dets([[0, 0, 10, 10]], [0.9], [1])
    assert box_agreement([a], [other_class]) == 0.0  # same box, other class: no match
    # one of the two counted reference boxes found, plus one extra: 1 / (2 + 2 - 1)
    b = _dets([[0, 0, 10, 11], [60, 60, 70, 70]], [0.5, 0.5], [0, 0])
    assert box_agreement([a], [b]) == pytest.approx(1 / 3)
    # one to one: two copies of one box match one reference box once
    twice = _dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.9], [0, 0])
    assert box_agreement([a.select([0])], [twice]) == pytest.approx(1 / 2)
    # the threshold applies to both sides; the IoU bound is inclusive
    assert box_agreement([a], [a], score_threshold=0.95) == 1.0
    half = _dets([[0, 0, 10, 5]], [0.9], [0])
    assert box_agreement([a.select([0])], [half], iou=0.5) == 1.0
    with pytest.raises(ValueError, match="one detections entry per image"):
        box_agreement([a], [])


def test_precision_and_recall_at_a_threshold_ignore_the_detections_below_it():
    """Precision / recall at ``score_threshold`` are those of the detections at or above it: adding low-scored
    detections (many per image, as a real detector's post-processing leaves) changes nothing. (They were
    computed from flags put in score order twice, which scrambled them as soon as the order was not the identity.)"""
    rng = np.random.default_rng(7)
    truth, dets = [], []
    for _ in range(30):
        k = int(rng.integers(0, 3))
        boxes = np.sort(rng.uniform(0, 100, (k, 2, 2)), axis=1).reshape(k, 4)[:, [0, 2, 1, 3]]
        classes = rng.integers(0, 3, k)
        truth.append((boxes, classes))
        good = boxes + rng.normal(0, 2, boxes.shape)   # near-hits with high scores
        noise = np.sort(rng.uniform(0, 100, (12, 2, 2)), axis=1).reshape(12, 4)[:, [0, 2, 1, 3]]
        dets.append(Detections(np.concatenate([good, noise]), np.concatenate([rng.uniform(0.5, 1, k),
                                                                             rng.uniform(0.0, 0.3, 12)]),
                               np.concatenate([classes, rng.integers(0, 3, 12)])))
    full = coco_map(truth, dets, 3, score_threshold=0.4)
    kept = coco_map(truth, [d.above(0.4) for d in dets], 3, score_threshold=0.4)
    assert full["precision"] == pytest.approx(kept["precision"]) and full["recall"] == pytest.approx(kept["recall"])
    assert full["recall"] > 0.3 and full["precision"] > 0.3   # the near-hits count

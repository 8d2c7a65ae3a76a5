"""task: detect: the builders, the decode layer against the numpy coding, the papers' targets, and one tiny run
through every stage, every runtime, the int8 chooser, ``edgecnn check`` and the service."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError

DETECTORS = ["ssdlite_mobilenet_v2", "ssdlite_efficientnet_lite0", "centernet_mobilenet_v2",
             "centernet_efficientnet_lite0"]


@pytest.mark.parametrize("name", DETECTORS)
def test_builders_answer_boxes_in_the_unit_square_and_class_probabilities(name):
    from edgecnn.arch import create_model, get_model_entry, list_models

    assert name in list_models(task="detect") and get_model_entry(name).task == "detect"
    model = create_model(name, num_classes=2, input_size=64)
    out = model(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32), training=False).numpy()
    assert out.ndim == 3 and out.shape[0] == 2 and out.shape[-1] == 4 + 2
    assert out.min() >= 0 and out.max() <= 1
    boxes = out[..., :4]
    assert np.all(boxes[..., 2] >= boxes[..., 0]) and np.all(boxes[..., 3] >= boxes[..., 1])
    assert model.get_layer("det_raw") is not None


def test_builder_refuses_a_size_the_head_cannot_use():
    from edgecnn.arch import create_model

    with pytest.raises(EdgecnnError, match="input_size must be a multiple of 32.*Received input_size=100; use 96"):
        create_model("ssdlite_mobilenet_v2", num_classes=3, input_size=100)


def test_the_graphs_decoding_is_the_numpy_ssd_coding():
    """The decode layer in the exported graph and edgecnn.detect.boxes.decode_anchors are the same arithmetic, so
    training targets (encode_anchors) and the artifacts' boxes agree."""
    from edgecnn.arch.detection import DetectionOutput, ssd_anchors
    from edgecnn.detect.boxes import decode_anchors

    anchors = ssd_anchors(64)
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 1, (1, len(anchors), 3 + 1 + 4)).astype(np.float32)
    out = DetectionOutput("ssd", 3, 64, anchors=anchors)(raw).numpy()[0]
    want = np.clip(decode_anchors(raw[0, :, 4:], anchors) / 64, 0, 1)
    np.testing.assert_allclose(out[:, :4], want, atol=1e-5)
    e = np.exp(raw[0, :, :4] - raw[0, :, :4].max(1, keepdims=True))
    np.testing.assert_allclose(out[:, 4:], (e / e.sum(1, keepdims=True))[:, 1:], atol=1e-5)


def test_ssd_targets_assign_every_box_and_decode_back_to_it():
    from edgecnn.arch.detection import ssd_anchors
    from edgecnn.detect.boxes import decode_anchors
    from edgecnn.detect.train import ssd_targets

    anchors = ssd_anchors(128)
    boxes = np.array([[10, 12, 40, 30], [60, 60, 70, 120], [3, 3, 5, 5]], np.float32)   # wide, tall, tiny
    t = ssd_targets(boxes, np.array([0, 2, 1]), anchors)
    for i, c in enumerate([0, 2, 1]):
        pos = np.flatnonzero(t[:, 0] == c + 1)
        assert len(pos), f"box {i} has no anchor (each box's best anchor is positive)"
        got = decode_anchors(t[pos, 1:], anchors[pos])
        assert np.all(np.abs(got - boxes[i]) < 1e-2), (i, got)   # every positive anchor regresses to its box
    assert set(np.unique(t[:, 0])) <= {-1, 0, 1, 2, 3}
    assert (ssd_targets(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), anchors) == 0).all()  # a negative


def test_centernet_targets_put_a_peak_at_each_centre():
    from edgecnn.detect.train import centernet_targets, gaussian_radius

    t = centernet_targets(np.array([[16, 16, 48, 32]], np.float32), np.array([1]), 2, 64).reshape(8, 8, 7)
    # centre (32, 24) -> cell (row 3, col 4) at stride 8, offset (0, 0); size 32 x 16 -> log(4), log(2)
    assert t[3, 4, 1] == 1.0 and t[..., 1].max() == 1.0 and t[..., 0].max() == 0.0
    np.testing.assert_allclose(t[3, 4, 2:], [np.log(4), np.log(2), 0.0, 0.0, 1.0], atol=1e-6)
    assert t[..., 6].sum() == 1
    assert 0 < gaussian_radius(2, 4) < 2


# ---------------------------------------------------------------------------- one tiny run


@pytest.mark.slow
def test_tiny_recipe_end_to_end(detect_tiny_run):
    run = detect_tiny_run
    report = json.loads((run / "report.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    assert report["task"] == "detect" and manifest["task"] == "detect"
    assert report["classes"] == ["scratch", "crack", "spot"] and report["verdict"] == "pass"
    arts = report["artifacts"]
    # every artifact in every runtime that runs it, OpenVINO included
    assert {"model.keras", "model.fp32.tflite", "model.onnx", "model.onnx@openvino", "model.int8.tflite",
            "model.int8.onnx", "model.int8.onnx@openvino"} <= set(arts)
    for key, a in arts.items():
        m = a["metrics"]
        assert {"map", "map50", "precision", "recall", "box_agreement", "map_drop"} <= set(m), key
    assert arts["model.keras"]["metrics"]["box_agreement"] == 1.0
    assert arts["model.onnx"]["metrics"]["box_agreement"] > 0.99   # the same float graph in another runtime
    # the int8 files are the chooser's picks, verified, with their route
    choice = json.loads((run / "int8.json").read_text())
    for f in ("model.int8.tflite", "model.int8.onnx"):
        entry = manifest["artifacts"][f]
        assert entry["verified"] is True and entry["route"] == choice["picks"][f]["route"]
        assert entry["stage"] == "compress"
    for res in choice["runtimes"].values():
        assert not any(c["error"] for c in res["candidates"]), res["candidates"]
    # one output in every artifact: (N, A, 4 + K)
    outs = {a["outputs"][0]["shape"][1:] == manifest["artifacts"]["model.onnx"]["outputs"][0]["shape"][1:]
            for a in manifest["artifacts"].values()}
    assert outs == {True}
    dets = json.loads((run / "detections.json").read_text())
    assert len(dets["images"]) == report["test_images"] and set(dets["detections"]) == set(arts)
    assert (run / "report.html").read_text().count("mAP@0.5") >= 2


@pytest.mark.slow
def test_check_gates_the_box_figures(detect_tiny_run, tmp_path):
    from edgecnn.evaluate.check import check

    strict = tmp_path / "strict.yaml"
    strict.write_text('version: 1\ntargets:\n  - {name: boxes, artifacts: "*", budgets: {min_map50: 0.99}}\n')
    loose = tmp_path / "loose.yaml"
    loose.write_text('version: 1\ntargets:\n  - {name: boxes, artifacts: "*", budgets: '
                     '{min_map50: 0.0, max_map_drop: 1.0, min_box_agreement: 0.0}}\n')
    assert check(detect_tiny_run, strict).exit_code == 1
    assert check(detect_tiny_run, loose).exit_code == 0


@pytest.mark.slow
def test_the_service_answers_boxes_in_the_uploaded_images_pixels(detect_tiny_run, tiny_defects, tmp_path):
    import httpx

    from serve_fixtures import Server

    image = sorted((tiny_defects / "test/spot").iterdir())[0].read_bytes()
    server = Server(detect_tiny_run, log_dir=tmp_path).wait_ready()
    try:
        url = f"{server.url}/v2/models/detect-tiny/classify"
        r = httpx.post(url + "?threshold=0.01", content=image, headers={"content-type": "image/png"}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["task"] == "detect" and body["image_size"] == [48, 48] and body["input_size"] == [64, 64]
        assert body["count"] == len(body["objects"]) == sum(body["counts"].values())
        for o in body["objects"]:
            assert o["label"] in ("scratch", "crack", "spot") and 0.01 <= o["score"] <= 1
            assert all(0 <= v <= 48 for v in o["box"]) and all(0 <= v <= 64 for v in o["box_input"])
        meta = httpx.get(f"{server.url}/v2/models/detect-tiny", timeout=30).json()
        assert meta["outputs"][0]["shape"][-1] == 4 + 3
        bad = httpx.post(url + "?threshold=2", content=image, headers={"content-type": "image/png"}, timeout=60)
        assert bad.status_code == 400 and "threshold must be a number between 0 and 1" in bad.text
        png = httpx.post(url + "?threshold=0.01&draw=png", content=image, headers={"content-type": "image/png"},
                         timeout=60)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        drawn = json.loads(png.headers["x-detections"])
        assert [d["box"] for d in drawn] == [o["box"] for o in body["objects"]]
        from PIL import Image

        assert Image.open(__import__("io").BytesIO(png.content)).size == (48, 48)
    finally:
        server.stop()


@pytest.mark.slow
def test_predict_prints_and_draws_boxes_in_the_images_pixels(detect_tiny_run, tiny_defects, tmp_path):
    from edgecnn.predict import detect_files, is_detector

    files = [str(p) for p in sorted((tiny_defects / "test/crack").iterdir())[:2]]
    assert is_detector(detect_tiny_run) and is_detector(detect_tiny_run / "model.int8.tflite")
    keras = detect_files(detect_tiny_run, files, threshold=0.01, draw=tmp_path / "drawn")
    tflite = detect_files(detect_tiny_run / "model.fp32.tflite", files, threshold=0.01)
    for (f, a), (_, b) in zip(keras, tflite):
        assert (tmp_path / "drawn" / f"{Path(f).stem}.boxes.png").is_file()
        n = min(len(a), len(b), 5)   # the float graph in two runtimes: the same best boxes (the tail may differ at
        assert abs(len(a) - len(b)) <= 2 and [x["label"] for x in a[:n]] == [x["label"] for x in b[:n]]   # 0.01)
        assert np.allclose([x["box"] for x in a[:n]], [x["box"] for x in b[:n]], atol=0.5)
        assert all(0 <= v <= 48 for x in a for v in x["box"])
    with pytest.raises(EdgecnnError, match="--threshold must be between 0 and 1"):
        detect_files(detect_tiny_run, files, threshold=1.5)

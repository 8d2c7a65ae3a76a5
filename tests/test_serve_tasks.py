"""Every task's outputs over a real server on loopback: a classify, an anomaly and a segment run served at once.

``/v2/models/{name}`` declares every output of every served version under its own name and real shape and
agrees with manifest.json; ``/infer`` answers every output (or those the request names) in JSON and in the
binary tensor extension, equal to the artifact run in process; the Python client and ``evaluate_via_http``
read several outputs. The runs are the session's tiny runs (conftest.py): nothing is trained here.
"""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgecnn.runtime import load_runner
from edgecnn.serve import InferenceClient, evaluate_via_http
from edgecnn.serve.protocol import split_binary_response
from serve_fixtures import Server

pytestmark = pytest.mark.slow          # the session's trained tiny runs

OUTPUTS = {"classify": 1, "anomaly": 2, "segment": 1}   # what each task's artifacts answer


@pytest.fixture(scope="module")
def runs(tiny_run, anomaly_tiny_run, segment_tiny_run) -> dict[str, Path]:
    return {"classify": tiny_run, "anomaly": anomaly_tiny_run, "segment": segment_tiny_run}


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    """One server for the three runs (one model each, named by its manifest)."""
    srv = Server(runs["classify"], str(runs["anomaly"]), str(runs["segment"]),
                 log_dir=tmp_path_factory.mktemp("serve-tasks")).wait_ready(timeout=120)
    yield srv
    srv.stop()


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _kserve(spec: dict) -> dict:
    """A manifest tensor spec as KServe metadata names it: -1 for the batch and any other dynamic dimension."""
    return {"name": spec["name"], "shape": [-1 if i == 0 or d is None else d for i, d in enumerate(spec["shape"])]}


@pytest.fixture(scope="module")
def pick_images(tiny_defects):
    """``pick_images(run, n)``: ``n`` real test images (one per class first) at the run's input size (0-255)."""
    from edgecnn.serve.client import load_images

    files = sorted((tiny_defects / "test").rglob("*.png"), key=lambda f: (f.name, f.parent.name))

    def pick(run: Path, n: int) -> np.ndarray:
        size = _manifest(run)["artifacts"]["model.onnx"]["input"]["shape"][1]
        return load_images([str(f) for f in files[:n]], size, size)

    return pick


def _infer(server: Server, model: str, body: dict, version: str | None = None) -> httpx.Response:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return httpx.post(server.url + path, json=body, timeout=60)


def _request(images: np.ndarray, input_name: str, outputs: list[str] | None = None) -> dict:
    body: dict = {"inputs": [{"name": input_name, "shape": list(images.shape), "datatype": "FP32",
                              "data": images.ravel().tolist()}]}
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return body


@pytest.mark.parametrize("task", list(OUTPUTS))
def test_metadata_matches_the_manifest_for_every_task(server, runs, task):
    manifest = _manifest(runs[task])
    name = manifest["name"]
    meta = httpx.get(f"{server.url}/v2/models/{name}", timeout=30).json()
    assert meta["parameters"]["task"] == task
    assert len(meta["versions"]) >= 2          # fp32 and int8 at least: every one is checked
    for version in meta["versions"]:
        meta = httpx.get(f"{server.url}/v2/models/{name}/versions/{version}", timeout=30).json()
        entry = manifest["artifacts"][version]
        assert [{"name": i["name"], "shape": i["shape"]} for i in meta["inputs"]] == [_kserve(entry["input"])]
        recorded = entry.get("outputs") or [entry["output"]]   # a manifest without an outputs list: its primary
        served = [{"name": o["name"], "shape": o["shape"]} for o in meta["outputs"]]
        assert served[:len(recorded)] == [_kserve(o) for o in recorded], version
        assert meta["parameters"]["artifact_outputs"][:len(recorded)] == recorded, version
        assert len(served) == OUTPUTS[task], (version, served)
        assert {o["datatype"] for o in meta["outputs"]} == {"FP32"}       # /infer answers dequantised floats
        assert len({o["name"] for o in served}) == len(served)
        if task == "segment":                      # per-pixel probabilities: (N, H, W, classes)
            h, w = meta["inputs"][0]["shape"][1:3]
            assert served[0]["shape"] == [-1, h, w, len(manifest["labels"])]
        if task == "anomaly":                      # a score and a map, in the artifact's order
            assert sorted(len(o["shape"]) for o in served) == [2, 4]


def test_a_manifest_outputs_list_is_honoured_and_a_differing_record_logged(runs, tmp_path, caplog):
    """Entries with the ``outputs`` list (what add_artifact's callers record): the service declares the same;
    a record that differs from the artifact is a warning, and the artifact's own outputs are served."""
    import logging
    import shutil

    from edgecnn._io import write_json
    from edgecnn.serve.repository import Repository

    run = tmp_path / "run"
    shutil.copytree(runs["anomaly"], run)
    manifest = _manifest(run)
    for version in ("model.onnx", "model.int8.tflite"):
        entry = manifest["artifacts"][version]
        entry["outputs"] = [o.to_json() for o in load_runner(run / version).outputs]
        assert entry["outputs"][0] == entry["output"]
    honest = [dict(o) for o in manifest["artifacts"]["model.onnx"]["outputs"]]
    manifest["artifacts"]["model.int8.tflite"]["outputs"][1]["name"] = "renamed"
    write_json(run / "manifest.json", manifest)
    with caplog.at_level(logging.WARNING, logger="edgecnn.serve"):
        repo = Repository(run, threads=1, warmup_runs=1)
    _, onnx = repo.resolve(manifest["name"], "model.onnx")
    assert [o.to_json() for o in onnx.outputs] == honest
    _, tflite = repo.resolve(manifest["name"], "model.int8.tflite")
    assert "renamed" not in [o.name for o in tflite.outputs]
    differ = [r for r in caplog.records if r.getMessage() == "manifest_outputs_differ"]
    assert [r.fields["artifact"] for r in differ] == ["model.int8.tflite"]


def test_infer_on_a_segment_run_returns_the_per_pixel_probabilities(server, runs, pick_images):
    run = runs["segment"]
    name, version = _manifest(run)["name"], "model.onnx"
    runner = load_runner(run / version, threads=1)
    images = pick_images(run, 2)
    r = _infer(server, name, _request(images, runner.input.name), version)
    assert r.status_code == 200, r.text
    [out] = r.json()["outputs"]
    h, w = images.shape[1:3]
    assert out["name"] == runner.output.name and out["shape"] == [2, h, w, 4] and out["datatype"] == "FP32"
    probs = np.asarray(out["data"], np.float32).reshape(out["shape"])
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(probs, runner(images), atol=1e-5)


@pytest.mark.parametrize("version", ["model.onnx", "model.int8.tflite"])
def test_infer_on_an_anomaly_run_returns_the_score_and_the_map(server, runs, pick_images, version):
    """Every output in JSON and binary, each under its own name and shape, equal to the artifact in process."""
    run = runs["anomaly"]
    name = _manifest(run)["name"]
    runner = load_runner(run / version, threads=1)
    names = [o.name for o in runner.outputs]
    images = pick_images(run, 2)
    expected = dict(zip(names, runner.predict_outputs(images)))
    assert sorted(a.ndim for a in expected.values()) == [2, 4]

    r = _infer(server, name, _request(images, runner.input.name), version)          # JSON, every output
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    assert [o["name"] for o in outs] == names
    for o in outs:
        assert o["shape"] == list(expected[o["name"]].shape)
        np.testing.assert_allclose(np.asarray(o["data"], np.float32).reshape(o["shape"]), expected[o["name"]],
                                   atol=1e-5)

    client = InferenceClient(server.url)                                            # binary, one named output
    map_name = next(n for n, a in expected.items() if a.ndim == 4)
    only_map = client.infer_outputs(name, images, version=version, outputs=[map_name])
    assert list(only_map) == [map_name]
    np.testing.assert_allclose(only_map[map_name], expected[map_name], atol=1e-5)
    both = client.infer_outputs(name, images, version=version, outputs=names[::-1])   # the request's order
    assert list(both) == names[::-1] and all(both[n].shape == expected[n].shape for n in names)
    np.testing.assert_allclose(client.infer(name, images, version=version), expected[names[0]], atol=1e-5)
    client.close()


def test_binary_outputs_can_be_mixed_with_json_ones(server, runs, pick_images):
    """Per output ``binary_data``: the map as raw bytes after the JSON, the score as JSON numbers."""
    run = runs["anomaly"]
    name = _manifest(run)["name"]
    runner = load_runner(run / "model.onnx", threads=1)
    score, amap = (o.name for o in sorted(runner.outputs, key=lambda o: len(o.shape)))
    images = pick_images(run, 1)
    head = json.dumps({"inputs": [{"name": runner.input.name, "shape": list(images.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": images.nbytes}}],
                       "outputs": [{"name": score}, {"name": amap, "parameters": {"binary_data": True}}]}).encode()
    r = httpx.post(f"{server.url}/v2/models/{name}/infer", content=head + images.astype("<f4").tobytes(),
                   headers={"Inference-Header-Content-Length": str(len(head))}, timeout=60)
    assert r.status_code == 200, r.text
    meta, arrays = split_binary_response(r.content, r.headers["inference-header-content-length"])
    by_name = {o["name"]: o for o in meta["outputs"]}
    assert "data" in by_name[score] and by_name[amap]["parameters"]["binary_data_size"] == arrays[amap].nbytes
    expected = dict(zip((o.name for o in runner.outputs), runner.predict_outputs(images)))
    np.testing.assert_allclose(arrays[amap], expected[amap], atol=1e-5)
    np.testing.assert_allclose(arrays[score], expected[score], atol=1e-5)


def test_an_unknown_output_is_a_400_listing_the_real_ones(server, runs, pick_images):
    run = runs["anomaly"]
    name = _manifest(run)["name"]
    runner = load_runner(run / "model.onnx", threads=1)
    r = _infer(server, name, _request(pick_images(run, 1), runner.input.name, ["score", "anomaly_mapp"]))
    assert r.status_code == 400
    message = r.json()["error"]
    assert "'anomaly_mapp'" in message and all(repr(o.name) in message for o in runner.outputs)


def test_evaluate_via_http_reads_every_output_of_another_task(server, runs, tiny_defects):
    """A task without class labels: every answer checked against the metadata, latency measured, no accuracy."""
    name = _manifest(runs["anomaly"])["name"]
    result = evaluate_via_http(server.url, tiny_defects / "test", model=name, concurrency=(1,), limit=4, warmup=1)
    assert result["task"] == "anomaly" and result["accuracy"] is None and len(result["outputs"]) == 2
    [level] = result["levels"]
    assert level["errors"] == 0 and level["requests"] == 4 and level["p50_ms"] > 0, level

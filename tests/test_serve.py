"""The inference service, end to end: a real server process on loopback, real HTTP.

Artifacts (tests/serve_fixtures.py) come from a tiny tf_keras model converted to ONNX and TFLite
once per session; no training. Each server is ``python -m edgecnn.serve`` (the entry point the
Docker image runs) on 127.0.0.1 and a free port, stopped with SIGTERM by its test or fixture.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from edgecnn.errors import EdgecnnError
from edgecnn.serve import InferenceClient, create_app, evaluate_via_http
from serve_fixtures import (
    LABELS,
    Server,
    free_port,
    http_fixture,  # noqa: F401  (the `http` fixture: a client of `server`)
    png_bytes,
    png_header_only,
    record_onnx,
    shared_run,
)

BODY_LIMIT = 64 * 1024
PIXEL_LIMIT = 1_000_000
GOOD_PIXELS = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3)).astype(np.float32)


# ---------------------------------------------------------------------------- artifacts


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """The run directory ``tiny/``; ``alt.onnx`` (other weights) lies beside it."""
    return shared_run(tmp_path_factory)


@pytest.fixture
def run_copy(artifacts, tmp_path) -> Path:
    """A private copy of the run directory, for tests that change files."""
    dst = tmp_path / "tiny"
    shutil.copytree(artifacts, dst)
    return dst


def _reference(run_dir: Path, images: np.ndarray, filename: str = "model.onnx") -> np.ndarray:
    from edgecnn.runtime import load_runner

    return load_runner(run_dir / filename, threads=1)(images)


@pytest.fixture(scope="module")
def server(artifacts, tmp_path_factory):
    srv = Server(artifacts, "--max-body-bytes", str(BODY_LIMIT), "--max-image-pixels", str(PIXEL_LIMIT),
                 "--max-concurrency", "32", log_dir=tmp_path_factory.mktemp("logs")).wait_ready()
    yield srv
    srv.stop_cleanly()


def infer_body(images=GOOD_PIXELS, name="image", **extra) -> dict:
    return {"inputs": [{"name": name, "shape": list(images.shape), "datatype": "FP32",
                        "data": images.ravel().tolist()}], **extra}


def assert_still_healthy(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    r = client.post("/v2/models/tiny/infer", json=infer_body())
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------- endpoints


def test_health_and_server_metadata(http):
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    meta = http.get("/v2").json()
    assert meta["name"] == "edgecnn" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_default_and_versions(http):
    meta = http.get("/v2/models/tiny").json()
    assert meta["name"] == "tiny"
    assert meta["versions"] == ["model.onnx", "model.fp32.tflite"]      # never model.keras
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 32, 32, 3]}]
    assert meta["outputs"][0]["datatype"] == "FP32" and meta["outputs"][0]["shape"] == [-1, 3]
    assert meta["parameters"]["labels"] == LABELS and meta["parameters"]["default_version"] == "model.onnx"
    tfl = http.get("/v2/models/tiny/versions/model.fp32.tflite").json()
    assert tfl["platform"] == "litert_tflite" and tfl["inputs"][0]["shape"] == [-1, 32, 32, 3]
    assert http.get("/v2/models/tiny/ready").json()["ready"] is True
    assert http.get("/v2/models/tiny/versions/model.fp32.tflite/ready").json()["ready"] is True
    index = http.post("/v2/repository/index").json()
    assert {(m["version"], m["default"]) for m in index} == {("model.onnx", True), ("model.fp32.tflite", False)}


def test_openapi_documents_every_response_body(http):
    """/docs shows a response schema per route, and each schema is the body the route really sends."""
    from edgecnn.serve import protocol

    spec = http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def body_schema(path: str, method: str, status: str = "200") -> dict:
        response = spec["paths"][path][method]["responses"][status]
        schema = response["content"]["application/json"]["schema"]
        ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
        assert ref, f"{method.upper()} {path} {status}: no response model"
        return schemas[ref.rsplit("/", 1)[-1]]

    documented = {
        ("/v2/health/live", "get"): "LiveResponse", ("/v2/health/ready", "get"): "ReadyResponse",
        ("/v2", "get"): "ServerMetadata", ("/v2/models/{name}", "get"): "ModelMetadata",
        ("/v2/models/{name}/versions/{version}", "get"): "ModelMetadata",
        ("/v2/models/{name}/ready", "get"): "ModelReady",
        ("/v2/models/{name}/infer", "post"): "InferenceResponse",
        ("/v2/models/{name}/versions/{version}/infer", "post"): "InferenceResponse",
        ("/v2/models/{name}/classify", "post"): "ClassifyResponse",
        ("/v2/models/{name}/versions/{version}/classify", "post"): "ClassifyResponse",
        ("/v2/repository/index", "post"): "RepositoryModel",
    }
    for (path, method), model in documented.items():
        assert body_schema(path, method) == schemas[model], (path, method)
    assert set(schemas["InferenceResponse"]["required"]) == {"model_name", "outputs"}
    assert body_schema("/v2/models/{name}/infer", "post", "400") == schemas["ErrorResponse"]
    assert body_schema("/v2/health/ready", "get", "503") == schemas["ReadyResponse"]
    infer_request = spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert "$ref" not in json.dumps(infer_request) and "inputs" in infer_request["schema"]["properties"]

    # The real bodies fit the documented models, extra keys included (none may be dropped silently).
    png = png_bytes()
    bodies = {
        protocol.LiveResponse: http.get("/v2/health/live").json(),
        protocol.ReadyResponse: http.get("/v2/health/ready").json(),
        protocol.ServerMetadata: http.get("/v2").json(),
        protocol.ModelMetadata: http.get("/v2/models/tiny").json(),
        protocol.ModelReady: http.get("/v2/models/tiny/ready").json(),
        protocol.InferenceResponse: http.post("/v2/models/tiny/infer", json=infer_body(id="x")).json(),
        protocol.ClassifyResponse: http.post("/v2/models/tiny/classify", content=png,
                                             headers={"Content-Type": "image/png"}).json(),
        protocol.ErrorResponse: http.post("/v2/models/tiny/infer", content=b"{").json(),
    }
    for model, body in bodies.items():
        assert model.model_validate(body).model_dump(exclude_unset=True) == body, model.__name__


def test_infer_json_matches_in_process_onnxruntime(http, artifacts):
    batch = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    r = http.post("/v2/models/tiny/infer", json=infer_body(batch, id="req-7"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-7" and body["model_name"] == "tiny" and body["model_version"] == "model.onnx"
    out = body["outputs"][0]
    assert out["datatype"] == "FP32" and out["shape"] == [3, 3]
    np.testing.assert_allclose(np.array(out["data"]).reshape(3, 3), _reference(artifacts, batch), atol=1e-5)
    # nested data and UINT8 pixels are accepted too
    nested = {"inputs": [{"name": "image", "shape": [3, 32, 32, 3], "datatype": "UINT8",
                          "data": batch.astype(int).tolist()}]}
    r2 = http.post("/v2/models/tiny/versions/model.onnx/infer", json=nested)
    np.testing.assert_allclose(r2.json()["outputs"][0]["data"], out["data"], atol=1e-6)


def test_infer_tflite_version(http, artifacts):
    meta = http.get("/v2/models/tiny/versions/model.fp32.tflite").json()
    r = http.post("/v2/models/tiny/versions/model.fp32.tflite/infer",
                  json=infer_body(name=meta["inputs"][0]["name"]))
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], _reference(artifacts, GOOD_PIXELS)[0], atol=1e-4)


def test_infer_binary_tensor_extension(server, artifacts):
    client = InferenceClient(server.url)
    batch = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    body, headers = client.encode_infer(batch, "image", binary=True)
    head = json.loads(body[: int(headers["Inference-Header-Content-Length"])])
    head["parameters"] = {"binary_data_output": True}
    head_bytes = json.dumps(head).encode()
    raw = body[int(headers["Inference-Header-Content-Length"]):]
    r = httpx.post(f"{server.url}/v2/models/tiny/infer", content=head_bytes + raw,
                   headers={"Content-Type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(len(head_bytes))})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:n])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 2 * 3 * 4
    probs = np.frombuffer(r.content[n:], "<f4").reshape(2, 3)
    np.testing.assert_allclose(probs, _reference(artifacts, batch), atol=1e-5)
    np.testing.assert_allclose(client.infer("tiny", batch, binary=True), probs, atol=1e-6)
    np.testing.assert_allclose(client.infer("tiny", batch, binary=False), probs, atol=1e-6)        # JSON
    np.testing.assert_allclose(client.infer("tiny", batch / 2), _reference(artifacts, batch / 2), atol=1e-5)  # FP32


def test_classify_png_jpeg_multipart(http, artifacts):
    png = png_bytes()
    r = http.post("/v2/models/tiny/classify", content=png, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3 and {p["label"] for p in preds} == set(LABELS)
    assert abs(sum(p["probability"] for p in preds) - 1) < 1e-4
    assert preds == sorted(preds, key=lambda p: -p["probability"])
    from edgecnn.data.preprocess import load_image

    expected = _reference(artifacts, load_image(png, 32)[None])[0]
    assert preds[0]["index"] == int(np.argmax(expected))
    r = http.post("/v2/models/tiny/classify?top_k=2", files={"file": ("x.png", png, "image/png")})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    r = http.post("/v2/models/tiny/versions/model.fp32.tflite/classify?top_k=1",
                  content=png_bytes(fmt="JPEG"), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1 and r.json()["image"]["format"] == "JPEG"


def test_metrics_prometheus_text(http):
    http.get("/v2/health/live")
    http.post("/v2/models/tiny/infer", content=b"not json", headers={"Content-Type": "application/json"})
    text = http.get("/metrics").text
    assert "# TYPE edgecnn_requests_total counter" in text
    assert 'edgecnn_requests_total{route="/v2/health/live",method="GET",status="200"}' in text
    assert 'route="/v2/models/{name}/infer",method="POST",status="400"' in text
    assert "# TYPE edgecnn_request_duration_seconds histogram" in text
    assert 'edgecnn_request_duration_seconds_bucket{route="/v2/health/live",le="+Inf"}' in text
    assert "edgecnn_requests_in_flight 1" in text                      # this very request
    assert 'edgecnn_model_version_loaded{model="tiny",version="model.onnx"' in text
    assert "process_resident_memory_bytes" in text


def test_logs_are_json_lines_with_request_ids(http, server):
    r = http.get("/v2/health/live", headers={"X-Request-ID": "trace-42"})
    assert r.headers["x-request-id"] == "trace-42"
    time.sleep(0.2)
    events = [e for e in server.log_events() if e.get("event") == "request"]
    assert any(e["request_id"] == "trace-42" and e["status"] == 200 and e["route"] == "/v2/health/live" for e in events)


# ---------------------------------------------------------------------------- bad requests


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


JSON = {"Content-Type": "application/json"}
_BINARY_HEAD = _json({"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "FP32",
                                  "parameters": {"binary_data_size": 8}}]})
BAD_INFER = {
    "not json": (b"{not json", JSON, 400, "invalid"),
    "empty body": (b"", JSON, 400, "empty"),
    "deeply nested json": (b"[" * 20_000 + b"]" * 20_000, JSON, 400, "recursion"),
    "deeply nested data": (b'{"inputs":[{"name":"image","shape":[1,32,32,3],"datatype":"FP32","data":'
                           + b"[" * 20_000 + b"]" * 20_000 + b"}]}", JSON, 400, "invalid"),
    "json array": (b"[1, 2, 3]", JSON, 400, "invalid"),
    "no inputs field": (_json({"id": "x"}), JSON, 400, "inputs"),
    "id not a string": (_json(infer_body(id=5)), JSON, 400, "id"),
    "wrong content type": (_json(infer_body()), {"Content-Type": "text/plain"}, 415, "application/json"),
    "missing input": (_json(infer_body(name="pixels")), JSON, 400, "missing input 'image'"),
    "two inputs": (_json({"inputs": infer_body()["inputs"] * 2}), JSON, 400, "one input"),
    "wrong shape": (_json(infer_body(np.zeros((1, 16, 16, 3)))), JSON, 400, "shape must be [-1, 32, 32, 3]"),
    "rank 3": (_json({"inputs": [{"name": "image", "shape": [32, 32, 3], "datatype": "FP32", "data": [0] * 3072}]}),
               JSON, 400, "shape"),
    "negative shape": (_json({"inputs": [{"name": "image", "shape": [-1, 32, 32, 3], "datatype": "FP32",
                                         "data": [1]}]}),
                       JSON, 400, "shape"),
    "batch too big": (_json({"inputs": [{"name": "image", "shape": [65, 32, 32, 3], "datatype": "FP32", "data": [1]}]}),
                      JSON, 400, "batch of 1 to 5"),   # max_batch 64, but 64 KiB fit 5 FP32 images
    "count mismatch": (_json({"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "FP32",
                                         "data": [1, 2]}]}),
                       JSON, 400, "holds 3072 values"),
    "wrong dtype": (_json({"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "INT64",
                                      "data": [0] * 3072}]}),
                    JSON, 400, "datatype must be one of FP32, UINT8"),
    "bytes dtype": (_json({"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "BYTES", "data": ["a"]}]}),
                    JSON, 400, "datatype"),
    "strings as data": (_json({"inputs": [{"name": "image", "shape": [1, 1, 1, 3], "datatype": "FP32",
                                          "data": ["a", {}, []]}]}),
                        JSON, 400, "shape"),
    "ragged data": (_json({"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "FP32",
                                      "data": [[1, 2], [3]]}]}),
                    JSON, 400, "list of numbers"),
    "infinite value": (b'{"inputs":[{"name":"image","shape":[1,32,32,3],"datatype":"FP32","data":[1e999'
                       + b",0" * 3071 + b"]}]}", JSON, 400, "finite"),
    "uint8 out of range": (_json({"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8",
                                              "data": [300] * 3072}]}), JSON, 400, "0-255"),
    "unknown output": (_json(infer_body(outputs=[{"name": "logits"}])), JSON, 400, "unknown output 'logits'"),
    "binary header too long": (b'{"inputs":[]}', {"Inference-Header-Content-Length": "999"}, 400, "does not fit"),
    "binary header not int": (b'{"inputs":[]}', {"Inference-Header-Content-Length": "abc"}, 400, "integer"),
    "binary size mismatch": (_BINARY_HEAD + b"\0" * 8, {"Inference-Header-Content-Length": str(len(_BINARY_HEAD))},
                             400, "needs 12288 bytes"),
    "binary tail too short": (_BINARY_HEAD + b"\0" * 4, {"Inference-Header-Content-Length": str(len(_BINARY_HEAD))},
                              400, "runs past the end"),
}


@pytest.mark.parametrize("case", list(BAD_INFER), ids=list(BAD_INFER))
def test_bad_infer_requests_are_4xx_and_server_survives(http, case):
    body, headers, status, fragment = BAD_INFER[case]
    r = http.post("/v2/models/tiny/infer", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert fragment.lower() in r.json()["error"].lower(), r.json()
    assert_still_healthy(http)


BAD_OTHER = {
    "unknown model infer": ("POST", "/v2/models/nope/infer", _json(infer_body()), JSON, 404, "unknown model 'nope'"),
    "unknown version infer": ("POST", "/v2/models/tiny/versions/9/infer", _json(infer_body()), JSON, 404,
                              "no version '9'"),
    "keras version never served": ("POST", "/v2/models/tiny/versions/model.keras/infer", _json(infer_body()), JSON, 404,
                                   "no version"),
    "unknown model metadata": ("GET", "/v2/models/tinyy", None, {}, 404, "did you mean 'tiny'"),
    "unknown version metadata": ("GET", "/v2/models/tiny/versions/x", None, {}, 404, "versions: model.onnx"),
    "unknown model ready": ("GET", "/v2/models/nope/ready", None, {}, 404, "unknown model"),
    "unknown model classify": ("POST", "/v2/models/nope/classify", png_bytes(), {"Content-Type": "image/png"}, 404,
                               "unknown"),
    "unknown model reload": ("POST", "/v2/repository/models/nope/load", b"", {}, 404, "unknown model"),
    "unknown route": ("GET", "/v3/whatever", None, {}, 404, "no such endpoint"),
    "wrong method": ("GET", "/v2/models/tiny/infer", None, {}, 405, "method not allowed"),
}


@pytest.mark.parametrize("case", list(BAD_OTHER), ids=list(BAD_OTHER))
def test_unknown_models_versions_routes(http, case):
    method, path, body, headers, status, fragment = BAD_OTHER[case]
    r = http.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert fragment.lower() in r.json()["error"].lower(), r.json()
    assert_still_healthy(http)


def _truncated_png() -> bytes:
    noisy = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


PNG_CT = {"Content-Type": "image/png"}
BAD_IMAGES = {
    "zero bytes": (b"", PNG_CT, 400, "empty"),
    "truncated png": (_truncated_png(), PNG_CT, 400, "could not decode"),
    "text renamed to png": (b"hello, I am not an image\n" * 10, PNG_CT, 400, "not a png or jpeg"),
    "gif": (_gif(), {"Content-Type": "image/gif"}, 415, "image/png"),
    "gif sent as png": (_gif(), PNG_CT, 415, "GIF images are not accepted"),
    "20000x20000 header": (png_header_only(20000, 20000), PNG_CT, 400, "pixels"),
    "over the pixel limit": (png_header_only(2000, 1000), PNG_CT, 400, "limit is 1000000"),
    "zero-size header": (png_header_only(0, 0), PNG_CT, 400, ""),
    "json body": (b"{}", JSON, 415, "image/png"),
    "no content type": (png_bytes(), {}, 415, "content-type"),
    "multipart without file": (None, {"files": {"file": (None, b"just text")}}, 400, "no file"),
    "multipart renamed text": (None, {"files": {"file": ("cat.png", b"GIF? no, text", "image/png")}}, 400, "not a png"),
    "multipart empty file": (None, {"files": {"file": ("cat.png", b"", "image/png")}}, 400, "empty"),
    "malformed multipart": (b"--xyz\r\nnonsense", {"Content-Type": "multipart/form-data; boundary=xyz"}, 400, ""),
    "multipart no boundary": (b"abc", {"Content-Type": "multipart/form-data"}, 400, ""),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES), ids=list(BAD_IMAGES))
def test_bad_images_are_4xx_and_server_survives(http, case):
    body, headers, status, fragment = BAD_IMAGES[case]
    if body is None:
        r = http.post("/v2/models/tiny/classify", files=headers["files"])
    else:
        r = http.post("/v2/models/tiny/classify", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert fragment.lower() in r.json()["error"].lower(), r.json()
    assert_still_healthy(http)


@pytest.mark.parametrize("top_k", ["0", "-1", "abc", "100000"])
def test_bad_top_k_is_400(http, top_k):
    r = http.post(f"/v2/models/tiny/classify?top_k={top_k}", content=png_bytes(), headers=PNG_CT)
    assert r.status_code == 400 and "top_k" in r.json()["error"]
    assert_still_healthy(http)


def _padded_infer_body(size: int) -> bytes:
    body = _json(infer_body())
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + body[-1:]


@pytest.mark.parametrize("delta,status", [(-1, 200), (0, 200), (1, 413)])
def test_body_limit_boundary(http, delta, status):
    body = _padded_infer_body(BODY_LIMIT + delta)
    assert len(body) == BODY_LIMIT + delta
    r = http.post("/v2/models/tiny/infer", content=body, headers=JSON)
    assert r.status_code == status, r.text[:300]
    if status == 413:
        assert "exceeds the limit of 65536 bytes" in r.json()["error"]
    assert_still_healthy(http)


def test_body_limit_counts_streamed_bytes(http):
    """Chunked transfer has no Content-Length: the limit is enforced by counting bytes as they arrive."""
    def chunks():
        for _ in range(20):
            yield b" " * 8192

    r = http.post("/v2/models/tiny/infer", content=chunks(), headers=JSON)
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and "exceeds" in r.json()["error"]
    big_image = np.random.default_rng(4).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big_image).save(buf, format="PNG")
    r = http.post("/v2/models/tiny/classify", content=iter([buf.getvalue()]), headers=PNG_CT)
    assert r.status_code == 413
    assert_still_healthy(http)


# ---------------------------------------------------------------------------- start-up refusals


def test_hash_mismatch_is_refused_at_start(run_copy, tmp_path):
    with open(run_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    proc = subprocess.run([sys.executable, "-m", "edgecnn.serve", str(run_copy), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "does not match manifest.json" in proc.stderr and "model.onnx" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_keras_and_unlisted_files_are_refused(run_copy):
    with pytest.raises(EdgecnnError, match="never loaded"):
        create_app(run_copy / "model.keras")
    shutil.copy(run_copy / "model.onnx", run_copy / "extra.onnx")
    with pytest.raises(EdgecnnError, match="not listed"):
        create_app(run_copy / "extra.onnx")
    (run_copy / "manifest.json").unlink()
    with pytest.raises(EdgecnnError, match="manifest.json"):
        create_app(run_copy)


def test_artifact_target_serves_only_that_artifact(run_copy):
    repo = create_app(run_copy / "model.fp32.tflite").state.service.repo
    state, loaded = repo.resolve("tiny")
    assert list(state.versions) == ["model.fp32.tflite"] and loaded.platform == "litert_tflite"


# ---------------------------------------------------------------------------- reload, overload, shutdown


def _replace_onnx(run_dir: Path, source: Path | bytes) -> None:
    tmp = run_dir / ".model.onnx.tmp"
    tmp.write_bytes(source if isinstance(source, bytes) else source.read_bytes())
    os.replace(tmp, run_dir / "model.onnx")


def _probs(client: httpx.Client) -> list[float]:
    r = client.post("/v2/models/tiny/infer", json=infer_body())
    assert r.status_code == 200, r.text
    return r.json()["outputs"][0]["data"]


def test_reload_with_broken_file_keeps_old_version_serving(run_copy, tmp_path):
    srv = Server(run_copy, log_dir=tmp_path).wait_ready()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            before = _probs(client)
            original = (run_copy / "model.onnx").read_bytes()
            # 1. file changed, manifest not: the hash check refuses it
            _replace_onnx(run_copy, b"garbage" * 100)
            r = client.post("/v2/repository/models/tiny/load")
            assert r.status_code == 409 and "does not match manifest.json" in r.json()["error"]
            assert "Still serving generation 1" in r.json()["error"]
            assert _probs(client) == before
            # 2. manifest updated to the garbage's hash: onnxruntime cannot load it
            record_onnx(run_copy)
            r = client.post("/v2/repository/models/tiny/load")
            assert r.status_code == 409 and "could not load" in r.json()["error"]
            assert _probs(client) == before
            assert_still_healthy(client)
            # 3. the original back: reload succeeds, nothing changes
            _replace_onnx(run_copy, original)
            record_onnx(run_copy)
            r = client.post("/v2/repository/models/tiny/load")
            assert r.status_code == 200, r.text
            assert r.json()["unchanged"] == ["model.onnx", "model.fp32.tflite"]
            metrics = client.get("/metrics").text
            assert 'edgecnn_model_loads_total{model="tiny",result="failed"} 2' in metrics
    finally:
        srv.stop_cleanly()


def _wait_for_answers(answered: list, more: int, what: str, timeout: float = 60.0) -> None:
    """Until ``more`` further entries are in ``answered`` (the load threads append one per answer)."""
    target, deadline = len(answered) + more, time.monotonic() + timeout
    while len(answered) < target:
        assert time.monotonic() < deadline, f"{what}: {len(answered)} answers, waited {timeout:.0f} s for {target}"
        time.sleep(0.01)


def _inference_counts(client: httpx.Client) -> tuple[int, Counter]:
    """(runtime calls, requests per status of /infer) from /metrics."""
    calls, statuses = 0, Counter()
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("edgecnn_inference_duration_seconds_count"):
            calls += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("edgecnn_requests_total") and 'route="/v2/models/{name}/infer"' in line:
            statuses[int(line.split('status="')[1].split('"')[0])] += int(float(line.rsplit(" ", 1)[1]))
    return calls, statuses


def test_reload_under_load_drops_no_request(run_copy, artifacts, tmp_path):
    """Three reloads while 4 clients keep /infer busy: every request is answered 200, each reload begins with
    requests in flight, and every request sent after a reload returned is answered by the model it loaded.
    The test waits for answers, never for the clock: a loaded machine only makes it slower."""
    srv = Server(run_copy, log_dir=tmp_path).wait_ready()
    sources = [artifacts.parent / "alt.onnx", artifacts / "model.onnx", artifacts.parent / "alt.onnx"]
    serving = [artifacts / "model.onnx", *sources]        # the model answering after 0, 1, 2, 3 reloads
    expected = {src: _reference(src.parent, GOOD_PIXELS, src.name)[0] for src in set(serving)}
    assert not np.allclose(*expected.values(), atol=1e-4)  # the two models are told apart by their answers
    reloads = {"begun": 0, "done": 0}
    answered: list[tuple[int, int, int, object, np.ndarray | None]] = []  # begun, done at send; begun at answer
    stop = threading.Event()
    lock = threading.Lock()

    def load():
        client = InferenceClient(srv.url)
        body, headers = client.encode_infer(GOOD_PIXELS, "image", binary=False)
        for _ in range(3000):          # bounded even if stop is never set
            if stop.is_set():
                break
            with lock:
                begun, done = reloads["begun"], reloads["done"]
            try:
                status, _, data = client.request("POST", "/v2/models/tiny/infer", body, headers)
                out = np.array(json.loads(data)["outputs"][0]["data"]) if status == 200 else None
            except OSError as e:
                status, out = type(e).__name__, None
            with lock:
                answered.append((begun, done, reloads["begun"], status, out))

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        _wait_for_answers(answered, 8, "before the first reload")
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            results = []
            for source in sources:
                _replace_onnx(run_copy, source)
                record_onnx(run_copy)
                with lock:
                    reloads["begun"] += 1
                r = client.post("/v2/repository/models/tiny/load")
                assert r.status_code == 200, r.text
                with lock:
                    reloads["done"] += 1
                results.append(r.json())
                _wait_for_answers(answered, 8, f"after reload {len(results)}")   # at least 4 sent after it
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        stop.set()
        srv.stop_cleanly()
    assert [r["loaded"] for r in results] == [["model.onnx"]] * 3
    assert [r["generation"] for r in results] == [2, 3, 4]
    statuses = Counter(a[3] for a in answered)
    assert set(statuses) == {200}, statuses
    for k in (1, 2, 3):
        assert any(sent < k <= at_answer for sent, _, at_answer, _, _ in answered), f"reload {k}: none in flight"
    for k, model in enumerate(serving):   # sent after reload k returned, answered before reload k + 1 began
        outs = [out for _, done, at_answer, _, out in answered if done == k == at_answer]
        assert outs, f"no request sent after reload {k} was answered before the next"
        for out in outs:
            np.testing.assert_allclose(out, expected[model], atol=1e-5, err_msg=f"after reload {k}: {model.name}")


def test_overload_is_refused_fast_with_503(artifacts, tmp_path):
    """At max_concurrency=1, 12 requests at once: the extra ones get 503 with Retry-After at admission, without
    waiting for the admitted one (some 503 arrives before its round's last 200) and without running the model
    (runtime calls = 200s, per /metrics). How fast: benchmarks/serve_throughput.py --overload (a timing is
    never asserted here)."""
    srv = Server(artifacts, "--max-concurrency", "1", log_dir=tmp_path).wait_ready()
    batch = np.random.default_rng(5).integers(0, 256, (64, 32, 32, 3)).astype(np.float32)
    body = _json(infer_body(batch))
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            calls0, statuses0 = _inference_counts(c)
        seen: list[tuple[int, int, float, str]] = []       # (round, status, answered at, Retry-After)
        for round_ in range(5):
            barrier = threading.Barrier(12)

            def one(barrier=barrier, round_=round_):
                with httpx.Client(base_url=srv.url, timeout=30) as c:
                    barrier.wait()
                    r = c.post("/v2/models/tiny/infer", content=body, headers=JSON)
                    seen.append((round_, r.status_code, time.monotonic(), r.headers.get("retry-after", "")))

            threads = [threading.Thread(target=one) for _ in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            if any(s == 503 for _, s, _, _ in seen):
                break
        assert len(seen) == 12 * (round_ + 1) and {s for _, s, _, _ in seen} <= {200, 503}, seen
        busy = [(r, at, ra) for r, s, at, ra in seen if s == 503]
        assert busy, "no request was refused at max_concurrency=1"
        assert all(ra == "1" for _, _, ra in busy)
        last_ok = {r: max((at for r2, s, at, _ in seen if r2 == r and s == 200), default=-1.0) for r, _, _ in busy}
        assert any(at < last_ok[r] for r, at, _ in busy), "every 503 came after the admitted requests finished"
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            calls, statuses = _inference_counts(c)
            n_ok = sum(s == 200 for _, s, _, _ in seen)
            assert calls - calls0 == n_ok and statuses[200] - statuses0[200] == n_ok
            assert statuses[503] - statuses0[503] == len(busy)
            assert_still_healthy(c)
    finally:
        srv.stop_cleanly()


def test_sigterm_during_load_finishes_accepted_requests(artifacts, tmp_path):
    """SIGTERM mid-load: every request the server accepted is answered 200, then it exits 0.

    "Accepted" = the server logged it. A request that reaches a socket the server is closing gets a
    connection error and was never processed; that is what a client retries against another replica.
    """
    srv = Server(artifacts, log_dir=tmp_path).wait_ready()
    batch = np.random.default_rng(6).integers(0, 256, (32, 32, 32, 3)).astype(np.float32)
    client = InferenceClient(srv.url)
    body, headers = client.encode_infer(batch, "image")
    outcomes: list = []
    lock = threading.Lock()

    def load():
        c = InferenceClient(srv.url, timeout=30)
        for _ in range(2000):
            try:
                status, _, _ = c.request("POST", "/v2/models/tiny/infer", body, headers)
            except (ConnectionError, OSError) as e:   # refused / reset / closed before being accepted
                if "timed out" in str(e):
                    status = "timeout"
                else:
                    with lock:
                        outcomes.append(("conn", type(e).__name__))
                    return
            with lock:
                outcomes.append(("http", status))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    srv.proc.wait(30)
    srv.stop_cleanly()
    statuses = Counter(s for kind, s in outcomes if kind == "http")
    assert set(statuses) == {200}, statuses
    served = [e for e in srv.log_events() if e.get("event") == "request" and e["route"].endswith("/infer")]
    assert Counter(e["status"] for e in served) == Counter({200: statuses[200]})
    # requests were in flight when shutdown began, and they finished after it
    shutdown = next(e["ts"] for e in srv.log_events() if e.get("msg", "").startswith("Shutting down"))
    assert any(e["ts"] > shutdown for e in served), "no request was in flight at SIGTERM; test proves nothing"


def test_multiple_workers(artifacts, tmp_path):
    srv = Server(artifacts, "--workers", "2", log_dir=tmp_path).wait_ready()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            for _ in range(4):
                assert_still_healthy(client)
            r = client.post("/v2/repository/models/tiny/load")
            assert r.status_code == 409 and "SIGHUP" in r.json()["error"]
    finally:
        srv.stop_cleanly()


# ---------------------------------------------------------------------------- validation client


def _image_tree(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label in LABELS:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            size = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def test_evaluate_via_http_on_an_image_folder(server, artifacts, tmp_path):
    folder = _image_tree(tmp_path / "test", per_class=4, seed=7)
    result = evaluate_via_http(server.url, folder, concurrency=(1, 2))
    assert result["model"] == "tiny" and result["version"] == "model.onnx" and result["n_images"] == 12
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 2]
    assert all(lv["errors"] == 0 and lv["p50_ms"] <= lv["p95_ms"] <= lv["p99_ms"] and lv["throughput_rps"] > 0
               for lv in result["levels"])
    from edgecnn.serve.client import list_images, load_images

    files = list_images(folder, LABELS)
    truth = np.array([y for _, y in files])
    expected = float(np.mean(np.argmax(_reference(artifacts, load_images([f for f, _ in files], 32, 32)), 1) == truth))
    assert result["accuracy"] == pytest.approx(expected)
    binary = evaluate_via_http(server.url, folder, concurrency=(2,), binary=True, version="model.fp32.tflite")
    assert binary["levels"][0]["errors"] == 0 and binary["version"] == "model.fp32.tflite"
    with pytest.raises(EdgecnnError, match="one folder per class"):
        evaluate_via_http(server.url, tmp_path, concurrency=(1,))


def test_evaluate_via_http_on_a_run_directory_matches_the_pipeline(server, run_copy, tmp_path):
    """Given a run directory, the service is evaluated on the recipe's test split, with the
    pipeline's preprocessing: predictions equal onnxruntime on ``load_arrays(ds, "test")``."""
    data = _image_tree(tmp_path / "data", per_class=12, seed=8)
    (run_copy / "recipe.yaml").write_text(f"name: tiny\ndata: {{path: {data}}}\n"
                                          "model: {name: dsconv, input_size: 32}\n")
    from edgecnn.data.loader import load_arrays
    from edgecnn.pipeline import Run

    ds = Run.open(run_copy).dataset()   # the discovery records the test split in dataset.json, as evaluate does
    result = evaluate_via_http(server.url, run_copy, concurrency=(2,), binary=True)
    images, labels = load_arrays(ds, "test", 32)
    assert result["n_images"] == len(labels) > 0 and result["levels"][0]["errors"] == 0
    expected = float(np.mean(np.argmax(_reference(run_copy, images), 1) == labels))
    assert result["accuracy"] == pytest.approx(expected)


# ---------------------------------------------------------------------------- bounded load test


@pytest.mark.slow
def test_load_2000_mixed_requests(server):
    """2,000 good and bad requests from 8 threads: each answered with its own status, the server counts the
    same answers, and requests really overlapped. Requests per second and RSS growth are numbers for
    benchmarks/serve_soak.py (which writes them to JSON), not asserts here."""
    client = InferenceClient(server.url)
    good, good_headers = client.encode_infer(GOOD_PIXELS, "image")
    png = png_bytes()
    mix = [
        ("POST", "/v2/models/tiny/infer", good, good_headers, 200),
        ("POST", "/v2/models/tiny/classify?top_k=2", png, PNG_CT, 200),
        ("POST", "/v2/models/tiny/versions/model.fp32.tflite/classify", png, PNG_CT, 200),
        ("POST", "/v2/models/tiny/infer", b"{oops", JSON, 400),
        ("POST", "/v2/models/tiny/infer", _json(infer_body(np.zeros((1, 8, 8, 3)))), JSON, 400),
        ("POST", "/v2/models/nope/infer", good, good_headers, 404),
        ("POST", "/v2/models/tiny/infer", b" " * (BODY_LIMIT + 1), JSON, 413),
        ("POST", "/v2/models/tiny/classify", b"not an image", PNG_CT, 400),
        ("POST", "/v2/models/tiny/classify", png_header_only(20000, 20000), PNG_CT, 400),
        ("GET", "/v2/health/ready", None, {}, 200),
    ]

    def served() -> Counter:
        """Requests per status the server has counted (over all routes)."""
        text = httpx.get(f"{server.url}/metrics").text
        out: Counter = Counter()
        for line in text.splitlines():
            if line.startswith("edgecnn_requests_total{") and 'route="/metrics"' not in line:
                out[int(line.split('status="')[1].split('"')[0])] += int(float(line.rsplit(" ", 1)[1]))
        return out

    before = served()
    answered: Counter = Counter()
    unexpected: Counter = Counter()
    counter = iter(range(2000))
    lock = threading.Lock()
    in_flight = {"now": 0, "max": 0}

    def worker():
        c = InferenceClient(server.url)
        while True:
            with lock:
                i = next(counter, None)
                if i is not None:
                    in_flight["now"] += 1
                    in_flight["max"] = max(in_flight["max"], in_flight["now"])
            if i is None:
                return
            method, path, body, headers, want = mix[(i * 7) % len(mix)]
            try:
                status, _, _ = c.request(method, path, body, headers)
            except OSError as e:
                status = type(e).__name__
            with lock:
                in_flight["now"] -= 1
                answered[status] += 1
                if status != want:
                    unexpected[(path, want, status)] += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish in 300 s"
    assert not unexpected, unexpected
    assert answered == Counter({200: 800, 400: 800, 404: 200, 413: 200}), answered
    after = served()
    assert {s: after[s] - before[s] for s in answered} == dict(answered)   # the server saw every request once
    assert in_flight["max"] > 1, "the 8 clients never had two requests in flight at once"
    assert_still_healthy(httpx.Client(base_url=server.url))


def test_dynamic_batcher_groups_concurrent_requests(artifacts):
    """Concurrent requests share runtime calls, and each gets exactly its own rows."""
    from edgecnn.runtime import load_runner
    from edgecnn.serve.batching import Batcher

    runner = load_runner(artifacts / "model.onnx", threads=1)
    batcher = Batcher(runner, max_images=8, max_delay_s=0.2)
    images = [np.random.default_rng(i).integers(0, 256, (1 + i % 2, 32, 32, 3)).astype(np.float32) for i in range(6)]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(images))

    def call(i: int) -> None:
        barrier.wait()
        results[i] = batcher(images[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    batcher.close()
    for i, batch in enumerate(images):
        np.testing.assert_allclose(results[i], runner(batch), atol=1e-5)
    assert batcher.batches < len(images)          # 9 images in at most 8-image calls: 2 or 3 calls
    with pytest.raises(ValueError, match="dynamic_batch"):
        from edgecnn.serve import ServeOptions
        ServeOptions(dynamic_batch=-1)


def test_a_one_channel_model_gets_grey_pixels_from_an_image_upload():
    """The classify endpoint decodes for the model's channel count (grey MCU recipes: data.channels 1)."""
    from edgecnn.data.preprocess import load_image
    from edgecnn.serve.app import decode_image

    png = png_bytes(size=(40, 30), color=(200, 30, 30))
    grey, info = decode_image(png, 16, 16, 10**6, channels=1)
    assert grey.shape == (16, 16, 1) and info["format"] == "PNG"
    assert np.array_equal(grey, load_image(png, (16, 16), 1))
    assert abs(float(grey.mean()) - (0.299 * 200 + 0.587 * 30 + 0.114 * 30)) < 1.0   # ITU-R 601-2 luma
    assert decode_image(png, 16, 16, 10**6)[0].shape == (16, 16, 3)


def test_the_dynamic_batcher_hands_each_caller_its_rows_of_every_output():
    """A multi-output version (an anomaly score and map): each caller gets its rows of every output."""
    from edgecnn.serve.batching import Batcher

    batcher = Batcher(lambda x: [x.sum(axis=(1, 2, 3))[:, None], x[..., :1]], max_images=8, max_delay_s=0.2)
    images = [np.full((1, 4, 4, 3), i, np.float32) for i in range(5)]
    results: list = [None] * len(images)

    def call(i):
        results[i] = batcher(images[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    for i, (score, amap) in enumerate(results):
        assert score.shape == (1, 1) and score[0, 0] == 48 * i
        assert amap.shape == (1, 4, 4, 1) and (amap == i).all()

"""The service under hostile and broken clients: a real server process on loopback, raw sockets.

Every numbered case of issue 18, reproduced against ``python -m edgecnn.serve`` with short timeouts:
slow headers and bodies, JSON amplification, buffering on routes outside the inference limit, too
many connections, a drain past the graceful timeout, EXIF orientation, strict types, API keys and
TLS, shed requests logged at WARNING and rate-limited, huge URLs. Bounded: every socket has a
timeout, every wait a deadline.
"""
from __future__ import annotations

import io
import json
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from edgecnn.errors import EdgecnnError
from edgecnn.serve import InferenceClient, ServeOptions, load_api_keys
from edgecnn.serve.metrics import SHED_LOG_INTERVAL_S
from serve_fixtures import (
    Server,
    http_fixture,  # noqa: F401  (the `http` fixture: a client of `server`)
    png_bytes,
    shared_run,
)

KEY = "k" * 8 + "-test-key-0123456789"
HEADER_TIMEOUT, BODY_TIMEOUT = 1.0, 4.0
MAX_BODY, MAX_BUFFERED, MAX_CONCURRENCY, MAX_CONNECTIONS = 16 * 2**20, 48 * 2**20, 4, 48
MAX_IMAGE_PIXELS = 1_000_000
PIXELS = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3))
JSON = {"Content-Type": "application/json"}


def infer_json(images=PIXELS, datatype="FP32") -> bytes:
    return json.dumps({"inputs": [{"name": "image", "shape": list(images.shape), "datatype": datatype,
                                   "data": images.ravel().tolist()}]}).encode()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def server(artifacts, tmp_path_factory):
    srv = Server(artifacts, "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
                 "--max-body-bytes", str(MAX_BODY), "--max-buffered-bytes", str(MAX_BUFFERED),
                 "--max-concurrency", str(MAX_CONCURRENCY), "--max-connections", str(MAX_CONNECTIONS),
                 "--max-image-pixels", str(MAX_IMAGE_PIXELS),
                 log_dir=tmp_path_factory.mktemp("logs"), env={"EDGECNN_API_KEY": KEY}).wait_ready()
    yield srv
    srv.stop_cleanly()


def raw_socket(server: Server, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    """Status, headers and JSON body of one HTTP response read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response; got {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body)


def slow_body_request(path: str = "/v2/models/tiny/infer", length: int = 1_000_000, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {length}\r\n\r\n{{").encode()


def metric(client: httpx.Client, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in client.get("/metrics").text.splitlines()
               if line.startswith(prefix))


# ---------------------------------------------------------------------------- 1. slow clients


def test_slow_bodies_and_headers_do_not_starve_inference(server, http):
    """16 clients stuck in their body and 8 in their headers: inference still answers 200 at once;
    then each slow client gets a JSON 408 and its connection is closed."""
    bodies = [raw_socket(server, slow_body_request()) for _ in range(16)]
    headers = [raw_socket(server, b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n") for _ in range(8)]
    try:
        time.sleep(0.3)
        for _ in range(3):
            r = http.post("/v2/models/tiny/infer", content=infer_json(), headers=JSON)
            assert r.status_code == 200, r.text
        assert http.post("/v2/models/tiny/classify", content=png_bytes(),
                         headers={"Content-Type": "image/png"}).status_code == 200
        for sock, status, word in [*((s, 408, "body_timeout") for s in bodies),
                                   *((s, 408, "header_timeout") for s in headers)]:
            got, head, body = read_response(sock)
            assert (got, head["connection"]) == (status, "close") and word in body["error"], body
            assert sock.recv(1) == b""                 # closed by the server
    finally:
        for sock in bodies + headers:
            sock.close()
    assert metric(http, 'edgecnn_requests_total{route="<connection>",method="-",status="408"}') >= 8


# ---------------------------------------------------------------------------- 2. JSON amplification


def _amplification_body(size: int = MAX_BODY) -> bytes:
    head = b'{"inputs":[{"name":"image","shape":[1,32,32,3],"datatype":"FP32","data":['
    n = (size - len(head) - 6) // 3
    return head + b"[]," * n + b"[]]}]}"


def test_json_amplification_is_refused_fast_within_the_memory_bound(server, http):
    """Eight 16 MiB bodies of empty lists at once, then eight batch-64 JSON requests: the refusals take
    milliseconds, and the server's peak RSS (VmHWM) stays under the bound docs/serving.md states."""
    bomb = _amplification_body()
    assert len(bomb) <= MAX_BODY
    server.reset_peak()
    before = server.memory_kib("VmRSS")
    statuses: list = []
    lock = threading.Lock()

    def send(body: bytes) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            try:
                r = c.post("/v2/models/tiny/infer", content=body, headers={**JSON, "X-Request-ID": "bomb"})
                got = (r.status_code, r.json()["error"] if r.status_code != 200 else "")
            except httpx.TransportError as e:
                # a 503 for full buffers closes the connection without reading the body: a client
                # still uploading 16 MiB sees the close before it reads the answer
                got = ("closed", str(e))
            with lock:
                statuses.append(got)

    batch64 = infer_json(np.random.default_rng(1).integers(0, 256, (64, 32, 32, 3)))
    codes, first_error = [], ""
    for body, n in ((bomb, 1), (bomb, 8), (batch64, 8)):
        threads = [threading.Thread(target=send, args=(body,)) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        codes.append(Counter(s for s, _ in statuses))
        first_error = first_error or statuses[0][1]
        statuses.clear()
    peak_growth = (server.memory_kib("VmHWM") - before) * 1024
    alone, together, valid = codes[0], codes[1], codes[2]
    # A bomb: 400. Eight at once: 400, or 503 once 48 MiB of bodies are buffered (or 408 if a
    # loaded machine cannot upload 16 MiB within the test's 4 s body_timeout). Valid: 200 or 503 busy.
    assert alone == Counter({400: 1}) and set(together) <= {400, 408, 503, "closed"}, codes
    assert set(valid) <= {200, 503} and valid[200] >= 1, codes
    assert "no empty or ragged lists" in first_error
    # docs/serving.md: bodies <= max_buffered_bytes, + per admitted request
    # max(6 B per value of a max_batch request + 2 MiB of chunks, 8 B per image pixel); + 16 MiB slack
    # for the allocator. The unbounded parser took ~585 MB per bomb.
    per_request = max(6 * 64 * 32 * 32 * 3 + 2 * 2**20, 8 * MAX_IMAGE_PIXELS)
    bound = MAX_BUFFERED + MAX_CONCURRENCY * per_request + 16 * 2**20
    assert peak_growth <= bound, f"peak RSS grew {peak_growth / 2**20:.0f} MiB > bound {bound / 2**20:.0f} MiB"
    time.sleep(0.3)
    # From the body's last byte to the answer (the upload itself is the client's time).
    refusals = [e["ms"] - e["body_ms"] for e in server.log_events()
                if e.get("request_id") == "bomb" and e.get("status") == 400]
    assert refusals
    print(f"\n[amplification] {len(refusals)} bombs refused {np.median(refusals):.0f} ms (p50), "
          f"{max(refusals):.0f} ms (max) after their last byte (target 100 ms; loaded 2-core machine); peak RSS "
          f"growth {peak_growth / 2**20:.0f} MiB of a {bound / 2**20:.0f} MiB bound; statuses {codes}")
    assert max(refusals) < 1000        # the old parser took 2.6 s per bomb here; the target is 100 ms


# ---------------------------------------------------------------------------- 3. buffering, connections


def test_buffered_bytes_and_connections_are_capped_with_json_503(server, http):
    """Bodies held open on a route outside the inference limit (the repository index) fill
    max_buffered_bytes; the next body to arrive is a JSON 503; max_connections caps sockets; the
    503s are counted in full but logged at WARNING at most once a second."""
    auth = f"Authorization: Bearer {KEY}\r\n"
    size = 4 * 2**20
    held = [raw_socket(server, slow_body_request("/v2/repository/index", size, auth) + b" " * (size - 2))
            for _ in range(MAX_BUFFERED // size - 1)]            # all but one byte of each: 44 MiB held
    gauge = "edgecnn_request_body_bytes_buffered "
    deadline = time.monotonic() + 20
    while metric(http, gauge) < len(held) * (size - 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(http, gauge) == len(held) * (size - 1)
    route_503 = 'edgecnn_requests_total{route="/v2/repository/index",method="POST",status="503"}'
    before = metric(http, route_503)
    # The shed log is rate-limited per (event, status), not per route: a 503 an earlier test on this
    # shared server logged less than SHED_LOG_INTERVAL_S ago would swallow this test's first line.
    time.sleep(SHED_LOG_INTERVAL_S + 0.05)
    try:
        for _ in range(5):      # 4.5 MiB each: refused after ~4 MiB, the rest (< DRAIN_BYTES) read and dropped
            sock = raw_socket(server)
            sender = threading.Thread(target=_send_quietly, args=(sock, slow_body_request(
                "/v2/repository/index", size + size // 8, auth) + b" " * (size + size // 8 - 1)))
            sender.start()
            status, head, body = read_response(sock)
            sender.join(10)
            sock.close()
            assert status == 503 and "max_buffered_bytes" in body["error"] and head["retry-after"] == "1", body
        assert metric(http, route_503) - before == 5
        # connections: fill up to the cap with idle sockets; the next one is refused
        idle = [raw_socket(server) for _ in range(MAX_CONNECTIONS - len(held))]
        try:
            time.sleep(0.2)
            over = raw_socket(server)
            status, head, body = read_response(over)
            assert status == 503 and "max_connections" in body["error"], body
            over.close()
        finally:
            for sock in idle:
                sock.close()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert http.post("/v2/models/tiny/infer", content=infer_json(), headers=JSON).status_code == 200
    assert metric(http, gauge) == 0
    shed = [e for e in server.log_events() if e.get("route") == "/v2/repository/index" and e.get("status") == 503]
    assert shed and all(e["level"] == "warning" for e in shed)
    # fewer lines than refusals; `suppressed` counts the unlogged 503s of every route (the limiter is per
    # event and status), so it is only checked to be there
    assert len(shed) < 5 and all(isinstance(e["suppressed"], int) and e["suppressed"] >= 0 for e in shed)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass      # the server answered and closed first


# ---------------------------------------------------------------------------- 5. smaller cases


def test_huge_url_gets_a_json_error(server, http):
    status, _, body = read_response(raw_socket(server, b"GET /v2/health/live?q=" + b"a" * 200_000
                                               + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status in (400, 414, 431) and body["error"], body
    assert http.get("/v2/health/live").status_code == 200


def _exif_jpeg(orientation: int) -> bytes:
    """A 48x32 JPEG, red left and blue right as stored, with an EXIF orientation tag."""
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[:, :24] = (220, 20, 20)
    pixels[:, 24:] = (20, 20, 220)
    pixels[:8] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def test_exif_orientation_is_applied_on_upload(http, artifacts):
    from PIL import ImageOps

    from edgecnn.data.preprocess import load_image
    from edgecnn.runtime import load_runner

    runner = load_runner(artifacts / "model.onnx", threads=1)
    rotated = _exif_jpeg(6)                  # "rotate 90 clockwise to display": a phone held sideways
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(rotated))).convert("RGB"))
    as_stored = np.asarray(Image.open(io.BytesIO(rotated)).convert("RGB"))
    want = runner(load_image(Image.fromarray(upright), 32)[None])[0]
    sideways = runner(load_image(Image.fromarray(as_stored), 32)[None])[0]
    assert np.abs(want - sideways).max() > 1e-4, "the test image is too symmetric to tell orientations apart"
    r = http.post("/v2/models/tiny/classify?top_k=3", content=rotated, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    got = {p["index"]: p["probability"] for p in r.json()["predictions"]}
    np.testing.assert_allclose([got[i] for i in range(3)], want, atol=1e-5)


STRICT = {
    "shape as strings": ({"shape": ["1", "32", "32", "3"]}, "shape.0"),
    "shape as floats": ({"shape": [1.0, 32, 32, 3]}, "valid integer"),
    "shape as booleans": ({"shape": [True, 32, 32, 3]}, "valid integer"),
    "datatype not a string": ({"datatype": 5}, "datatype"),
    "unknown input field": ({"dtype": "FP32"}, "extra inputs are not permitted"),
    "fp32 above 255": ({"data": [256.5] * 3072}, "0-255"),
    "fp32 negative": ({"data": [-0.5] * 3072}, "0-255"),
    "uint8 fraction": ({"datatype": "UINT8", "data": [1.5] * 3072}, "integers"),
    "booleans as data": ({"data": [True] * 3072}, "list of numbers"),
    "nested empties": ({"data": [[[[]] * 32] * 32]}, "no empty or ragged"),
    "data an object": ({"data": {"values": [1]}}, "list of numbers"),
}


@pytest.mark.parametrize("case", list(STRICT), ids=list(STRICT))
def test_strict_types(http, case):
    change, fragment = STRICT[case]
    body = json.loads(infer_json())
    body["inputs"][0].update(change)
    r = http.post("/v2/models/tiny/infer", json=body)
    assert r.status_code == 400 and fragment.lower() in r.json()["error"].lower(), r.text


def test_unknown_top_level_field_is_refused(http):
    r = http.post("/v2/models/tiny/infer", json={**json.loads(infer_json()), "inputz": []})
    assert r.status_code == 400 and "inputz" in r.json()["error"] and "not permitted" in r.json()["error"]


def test_max_batch_fits_the_body_limit(http):
    """The batch the metadata advertises, sent as ordinary JSON integers, fits max_body_bytes and runs."""
    meta = http.get("/v2/models/tiny").json()
    n = meta["parameters"]["max_batch"]
    assert 1 <= n <= 64
    body = infer_json(np.full((n, 32, 32, 3), 255))
    assert len(body) <= MAX_BODY
    r = http.post("/v2/models/tiny/infer", content=body, headers=JSON)
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [n, 3]


# ---------------------------------------------------------------------------- 6. access control


def test_management_routes_need_the_key(server, http):
    r = http.post("/v2/repository/index")
    assert r.status_code == 401 and "API key" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert http.post("/v2/repository/models/tiny/load").status_code == 401
    r = http.post("/v2/repository/models/tiny/load", headers={"Authorization": "Bearer wrong-key-0123456789"})
    assert r.status_code == 403 and "not valid" in r.json()["error"]
    assert http.post("/v2/repository/index", headers={"X-API-Key": KEY[:-1] + "x"}).status_code == 403
    assert http.post("/v2/repository/index", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert http.post("/v2/repository/models/tiny/load", headers={"X-API-Key": KEY}).status_code == 200
    # not protected by default: inference, metadata, health, metrics
    assert http.post("/v2/models/tiny/infer", content=infer_json(), headers=JSON).status_code == 200
    assert http.get("/metrics").status_code == 200 and http.get("/v2/models/tiny").status_code == 200
    assert InferenceClient(server.url, api_key=KEY).models()[0]["name"] == "tiny"
    with pytest.raises(EdgecnnError, match="401"):
        InferenceClient(server.url).models()


def test_api_keys_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_API_KEY", f"{KEY}, second-key-0123456789")
    keys = tmp_path / "keys"
    keys.write_text(f"# rotated monthly\n\nthird-key-0123456789\n{KEY}\n")
    assert load_api_keys(keys) == (KEY, "second-key-0123456789", "third-key-0123456789")
    keys.write_text("# nothing\n")
    with pytest.raises(EdgecnnError, match="holds no key"):
        load_api_keys(keys)
    with pytest.raises(EdgecnnError, match="cannot read"):
        load_api_keys(tmp_path / "missing")
    with pytest.raises(ValueError, match="shorter than 16"):
        ServeOptions(api_keys=("short",))
    with pytest.raises(ValueError, match="protect takes areas"):
        ServeOptions(protect=("everything",))
    options = ServeOptions(api_keys=(KEY,))
    assert KEY not in repr(options) and options.public()["api_keys"] == 1


# ---------------------------------------------------------------------------- TLS, protected areas, 4. drain


def test_tls_protected_areas_and_drain_past_graceful_timeout(artifacts, tmp_path):
    """HTTPS with a key file protecting inference and /metrics too; then SIGTERM with requests
    still running after --graceful-timeout: they end as JSON 503s, logged and counted as 503."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    (tmp_path / "keys").write_text(KEY + "\n")
    srv = Server(artifacts, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--api-key-file",
                 str(tmp_path / "keys"), "--protect", "inference,metrics", "--graceful-timeout", "1",
                 "--body-timeout", "30", log_dir=tmp_path, scheme="https").wait_ready(verify=str(cert))
    context = ssl.create_default_context(cafile=str(cert))
    try:
        with httpx.Client(base_url=srv.url, verify=str(cert), timeout=30) as client:
            assert client.get("/v2/health/ready").status_code == 200          # probes stay open
            assert client.post("/v2/models/tiny/infer", content=infer_json(), headers=JSON).status_code == 401
            assert client.get("/metrics").status_code == 401
            ok = client.post("/v2/models/tiny/infer", content=infer_json(), headers={**JSON, "X-API-Key": KEY})
            assert ok.status_code == 200, ok.text
            assert "edgecnn_requests_total" in client.get("/metrics", headers={"X-API-Key": KEY}).text
    except BaseException:
        srv.stop()
        raise
    # Drain: two requests in flight (bodies still arriving) when SIGTERM comes, for longer than 1 s.
    stuck = [context.wrap_socket(raw_socket(srv), server_hostname="127.0.0.1") for _ in range(2)]
    for sock in stuck:
        sock.sendall(slow_body_request(extra=f"X-API-Key: {KEY}\r\nX-Request-ID: stuck\r\n"))
    time.sleep(0.3)
    srv.proc.send_signal(signal.SIGTERM)
    answers = [read_response(sock) for sock in stuck]
    srv.stop_cleanly()
    assert [a[0] for a in answers] == [503, 503], answers
    assert all("shutting down" in body["error"] for _, _, body in answers)
    logged = [e for e in srv.log_events() if e.get("request_id") == "stuck"]
    assert logged and all(e["status"] == 503 and e["level"] == "warning" for e in logged), logged
    text = srv.log_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-2000:]


# ---------------------------------------------------------------------------- the soak, short


@pytest.mark.slow
def test_short_mixed_soak(artifacts, tmp_path):
    """benchmarks/serve_soak.py for 8 s (the 60 s run is the benchmark): valid JSON, binary and image
    requests with 20 % malformed ones, slow clients and overload bursts; no unexpected status, no
    valid request lost outside a burst, RSS growth within 20 MiB, no error in the server's log."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import serve_soak

    result = serve_soak.main([str(artifacts), "--seconds", "8", "--burst-every", "3", "--warmup", "2",
                              "--out", str(tmp_path / "soak.json")])
    assert result["unexpected"] == {} and result["lost_valid"] == {}, result
    assert result["healthy_after"] and result["server_error_log_lines"] == []
    assert result["rss_mib"]["growth"] <= 20, result["rss_mib"]
    statuses = result["statuses"]
    assert statuses.get("slow-body 408", 0) + statuses.get("slow-headers 408", 0) > 0
    assert statuses.get("amplification 400", 0) > 0 and statuses.get("json 200", 0) > 0

"""A small KServe v2 client, and validation of a served model over HTTP.

``evaluate_via_http`` sends a labelled image folder through ``/infer`` as raw tensors (FP32 pixels
0-255 at the model's input size, as JSON or with the binary tensor extension) at several
concurrency levels and reports accuracy, latency percentiles and throughput: the numbers the
service itself delivers, HTTP and decoding included.

The client uses ``http.client`` (one keep-alive connection per thread), which costs far less CPU
per request than a full-featured client; on a small machine the load generator shares the cores.
"""
from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from edgecnn.data.preprocess import load_image
from edgecnn.errors import EdgecnnError
from edgecnn.serve.protocol import split_binary_response

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class InferenceClient:
    """KServe v2 REST client.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        timeout: seconds per request.
        api_key: sent as ``Authorization: Bearer`` on every request (servers with ``--api-key-file``).

    Example:
        >>> client = InferenceClient("http://127.0.0.1:8000")              # doctest: +SKIP
        >>> probs = client.infer("defects", np.zeros((1, 128, 128, 3)))    # doctest: +SKIP
        >>> out = client.infer_outputs("anomaly", np.zeros((1, 48, 48, 3)))  # doctest: +SKIP
        >>> out["score"].shape, out["anomaly_map"].shape                      # doctest: +SKIP
        ((1, 1), (1, 48, 48, 1))
    """

    def __init__(self, url: str, timeout: float = 30.0, api_key: str | None = None):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EdgecnnError(f"url must look like http://HOST:PORT. Received url={url!r}.")
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.api_key = api_key
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._local = threading.local()
        self._input_names: dict[tuple[str, str | None], str] = {}   # (model, version) -> input tensor name

    # ------------------------------------------------------------------ transport

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = self._local.conn = cls(self.host, self.port, timeout=self.timeout)
        return conn

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on this thread's keep-alive connection; a stale connection is retried once."""
        for attempt in (0, 1):
            conn = self._connection()
            reused = getattr(self._local, "used", False)
            try:
                conn.request(method, self.prefix + path, body=body, headers={**self._auth, **(headers or {})})
                resp = conn.getresponse()
                data = resp.read()
                self._local.used = True
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt or not reused:   # only a kept-alive connection the server closed is retried
                    raise
            except BaseException:
                self.close()                # never reuse a connection in an unknown state
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None
        self._local.used = False

    def json(self, method: str, path: str, payload: Any = None) -> Any:
        """Send JSON, return the decoded answer; a non-2xx answer is an EdgecnnError with the server's message."""
        body = None if payload is None else json.dumps(payload).encode()
        status, _, data = self.request(method, path, body, {"Content-Type": "application/json"})
        return _decode(status, data, f"{method} {path}")

    # ------------------------------------------------------------------ protocol

    def models(self) -> list[dict[str, Any]]:
        """The repository index: ``[{"name", "version", "state", "default"}, ...]``."""
        return self.json("POST", "/v2/repository/index")

    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        return self.json("GET", _model_path(model, version))

    def encode_infer(self, images: np.ndarray, input_name: str, *, binary: bool = True, datatype: str | None = None,
                     request_id: str | None = None,
                     outputs: Sequence[str] | None = None) -> tuple[bytes, dict[str, str]]:
        """Body and headers of an infer request for a batch of pixels 0-255 (N, H, W, C).

        By default the pixels travel as binary tensor data (no JSON per value) and the answer comes
        back binary too; ``datatype`` None sends UINT8 (a quarter of the bytes) when every pixel is a
        whole number, else FP32. ``binary=False`` sends JSON (whole numbers as integers). ``outputs``
        names the outputs to answer (None: every output of the model).
        """
        images = np.asarray(images)
        if datatype is None:
            whole = images.dtype == np.uint8 or (images.size and np.array_equal(images, np.round(images))
                                                 and images.min() >= 0 and images.max() <= 255)
            datatype = "UINT8" if whole else "FP32"
        head: dict[str, Any] = {"inputs": [{"name": input_name, "shape": list(images.shape), "datatype": datatype}]}
        if request_id is not None:
            head["id"] = request_id
        if outputs is not None:
            head["outputs"] = [{"name": str(name)} for name in outputs]
        if binary:
            raw = np.ascontiguousarray(images, dtype=np.uint8 if datatype == "UINT8" else "<f4").tobytes()
            head["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
            head["parameters"] = {"binary_data_output": True}
            encoded = json.dumps(head, separators=(",", ":")).encode()
            return encoded + raw, {"Content-Type": "application/octet-stream",
                                   "Inference-Header-Content-Length": str(len(encoded))}
        # Whole-number pixels (the usual case) are sent as integers: shorter and faster to parse.
        values = images.ravel()
        as_int = values.astype(np.int64)
        data = as_int.tolist() if np.array_equal(as_int, values) else values.astype(np.float32).tolist()
        head["inputs"][0]["data"] = data
        return json.dumps(head, separators=(",", ":")).encode(), {"Content-Type": "application/json"}

    def infer(self, model: str, images: np.ndarray, *, version: str | None = None, binary: bool = True,
              input_name: str | None = None, output: str | None = None) -> np.ndarray:
        """One output (N, ...) for a batch of pixels 0-255 (N, H, W, C): ``output`` by name, else the model's
        first (primary) output, a classifier's probabilities (N, classes)."""
        answer = self.infer_outputs(model, images, version=version, binary=binary, input_name=input_name,
                                    outputs=None if output is None else [output])
        return next(iter(answer.values()))

    def infer_outputs(self, model: str, images: np.ndarray, *, version: str | None = None, binary: bool = True,
                      input_name: str | None = None, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every output the server answers for a batch of pixels 0-255, by name, float32, in the answer's order:
        the model's outputs in the artifact's order (``/v2/models/{name}``'s ``outputs``), or those ``outputs``
        names, in its order (an unknown name is the server's 400, listing the real ones)."""
        key = (model, version)
        if input_name is None:   # asked once per model, not per call: a metadata round trip doubles the requests
            input_name = self._input_names.get(key) or self.model_metadata(model, version)["inputs"][0]["name"]
            self._input_names[key] = input_name
        body, headers = self.encode_infer(images, input_name, binary=binary, outputs=outputs)
        status, resp_headers, data = self.request("POST", _model_path(model, version) + "/infer", body, headers)
        if status != 200:
            self._input_names.pop(key, None)   # a reloaded model may have renamed its input: ask again next time
            _decode(status, data, f"infer {model}")
        _, arrays = split_binary_response(data, resp_headers.get("inference-header-content-length"))
        return {name: a.astype(np.float32) for name, a in arrays.items()}

    def classify(self, model: str, image: bytes, *, content_type: str = "image/png", top_k: int = 5,
                 version: str | None = None) -> dict[str, Any]:
        """Top-k labels for an encoded PNG/JPEG image."""
        path = f"{_model_path(model, version)}/classify?top_k={int(top_k)}"
        status, _, data = self.request("POST", path, image, {"Content-Type": content_type})
        return _decode(status, data, f"classify {model}")


def _model_path(model: str, version: str | None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return path if version is None else f"{path}/versions/{quote(version, safe='')}"


def _decode(status: int, data: bytes, what: str) -> Any:
    try:
        payload = json.loads(data) if data else None
    except json.JSONDecodeError:
        payload = None
    if not 200 <= status < 300:
        message = payload.get("error") if isinstance(payload, dict) else data[:200].decode("latin-1")
        raise EdgecnnError(f"{what}: the server answered {status}: {message}")
    return payload


# ---------------------------------------------------------------------- validation over HTTP


def list_images(data: str | os.PathLike, labels: Sequence[str]) -> list[tuple[str, int]]:
    """(image path, label index) pairs: a run directory's test split, or a class-per-folder tree.

    A run directory (with ``recipe.yaml``) gives the test split its dataset.json records, the one
    ``edgecnn evaluate`` measures (same data folder, same seeded split); otherwise ``data`` must hold
    one folder of PNG/JPEG images per label.
    """
    root = Path(data)
    if (root / "recipe.yaml").is_file():
        files = _run_test_files(root)
        unknown = sorted({c for _, c in files} - set(labels))
        if unknown:
            raise EdgecnnError(f"the run's classes {unknown} are not labels of the served model ({', '.join(labels)}); "
                               "is the service serving this run?")
        return [(p, labels.index(c)) for p, c in files]
    if not root.is_dir():
        raise EdgecnnError(f"no such folder: {str(root)!r}; pass a run directory or a folder of <class>/*.png images.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    unknown = [p.name for p in class_dirs if p.name not in labels]
    if unknown or not class_dirs:
        raise EdgecnnError(
            f"{str(root)!r} must hold one folder per class named after the model's labels ({', '.join(labels)}). "
            f"Received folders: {', '.join(p.name for p in class_dirs) or 'none'}."
        )
    return [(str(f), labels.index(d.name)) for d in class_dirs for f in sorted(d.iterdir())
            if f.suffix.lower() in IMAGE_SUFFIXES]


def _run_test_files(run_dir: Path) -> list[tuple[str, str | None]]:
    """A run directory's test split as ``edgecnn evaluate`` resolved it (the same folder and seeded split):
    (image path, class name or None) pairs its dataset.json records; no pipeline, no TensorFlow."""
    path = run_dir / "dataset.json"
    try:
        files = json.loads(path.read_text())["test_files"]
    except (OSError, json.JSONDecodeError, KeyError):
        raise EdgecnnError(f"{str(path)!r} does not list the run's test images (a run made before they were "
                           f"recorded, or none yet). Run `edgecnn evaluate {run_dir}` once, or pass a folder of "
                           "images.") from None
    return [(str(f), c) for f, c in files]


def load_images(files: Sequence[str], height: int, width: int, channels: int = 3) -> np.ndarray:
    """float32 (N, height, width, channels) pixels 0-255 (RGB, or grey for one channel) by
    :func:`edgecnn.data.preprocess.load_image`, the preprocessing of the pipeline and of the classify endpoint."""
    pixels = np.empty((len(files), height, width, channels), np.float32)
    for i, f in enumerate(files):
        pixels[i] = load_image(f, (height, width), channels)
    return pixels


def evaluate_via_http(
    url: str,
    data: str | os.PathLike,
    *,
    model: str | None = None,
    version: str | None = None,
    concurrency: Sequence[int] = (1, 2, 4, 8),
    requests_per_level: int | None = None,
    binary: bool = True,
    warmup: int = 8,
    timeout: float = 30.0,
    limit: int | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Accuracy, latency and throughput of a served model on a labelled image folder.

    Each image is read on the client by :func:`edgecnn.data.preprocess.load_image` at the model's
    input size (the preprocessing of the training pipeline and of the classify endpoint) and sent as
    one FP32 tensor request to ``/infer`` (binary by default; the resized pixels are not whole numbers).
    Every concurrency level sends ``requests_per_level`` requests (default: each image once)
    from that many threads.

    A classifier (the metadata's ``parameters.task``) is asked for its first output only and scored by
    top-1 against the labels. Another task's model (anomaly: a score and a map; segment: per-pixel
    probabilities) is asked for every output; each answer must hold every output the metadata declares,
    with its shape, or it counts as an error; ``accuracy`` is then None (its quality figures, AUROC or
    mIoU, are ``edgecnn evaluate RUN`` in process) and the result holds latency and throughput.

    Args:
        url: the service, e.g. ``http://127.0.0.1:8000``.
        data: a run directory (its recipe's test split, as ``edgecnn evaluate`` uses), or a folder
            of ``<class>/*.png`` (or .jpg) images named after the model's labels (its metadata); for
            another task than classify, any folder of images.
        model: model name; None = the only model the server serves.
        version: artifact version; None = the server's default.
        concurrency: client threads per level.
        requests_per_level: requests per level; None = one per image.
        binary: send tensors with the binary tensor extension (the default) instead of JSON.
        warmup: untimed requests before each level.
        timeout: seconds per request.
        limit: use at most this many images.
        api_key: for a server that protects its routes (see docs/serving.md).

    Returns:
        ``{"url", "model", "version", "n_images", "task", "outputs", "accuracy", "binary", "levels": [{"concurrency",
        "requests", "errors", "accuracy", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "throughput_rps",
        "wall_s"}, ...]}``; ``accuracy`` is the first level's.

    Raises:
        EdgecnnError: the server is unreachable, the model is unknown, the folder does not match the labels.

    Example:
        >>> evaluate_via_http("http://127.0.0.1:8000", "export/defects-mobilenetv2")     # doctest: +SKIP
        >>> evaluate_via_http("http://127.0.0.1:8000", "my_test_images", concurrency=(1, 4))  # doctest: +SKIP
    """
    client = InferenceClient(url, timeout=timeout, api_key=api_key)
    try:
        if model is None:
            names = sorted({m["name"] for m in client.models()})
            if len(names) != 1:
                raise EdgecnnError(f"the server at {url} serves {len(names)} models ({', '.join(names)}); pass model=.")
            model = names[0]
        meta = client.model_metadata(model, version)
    except OSError as e:
        raise EdgecnnError(f"cannot reach the service at {url} ({e}); is `edgecnn serve` running?") from e
    params = meta.get("parameters", {})
    labels = list(params.get("labels") or [])
    task = str(params.get("task") or "classify")
    _, height, width, channels = meta["inputs"][0]["shape"]
    input_name = meta["inputs"][0]["name"]
    served_version = params.get("version", version)
    if task == "classify":
        files = list_images(data, labels)[:limit]
    else:
        files = [(f, -1) for f in _task_images(data)][:limit]
    if not files:
        raise EdgecnnError(f"no .png/.jpg images found in {str(data)!r}.")
    truth = np.array([y for _, y in files])
    pixels = load_images([f for f, _ in files], height, width, channels)
    # A classifier's answer is its primary output; another task's is every output, each checked against metadata.
    asked = [meta["outputs"][0]["name"]] if task == "classify" else None
    bodies = [client.encode_infer(p[None], input_name, binary=binary, outputs=asked) for p in pixels]
    path = _model_path(model, served_version) + "/infer"
    read = _answer_reader(meta["outputs"], task)

    levels = []
    for c in concurrency:
        if not isinstance(c, int) or c < 1:
            raise EdgecnnError(f"concurrency levels must be positive integers. Received {c!r}.")
        n = requests_per_level or len(bodies)
        _run_requests(client, path, bodies, min(warmup, n), c, read)
        levels.append(_level(client, path, bodies, truth if task == "classify" else None, n, c, read))
    client.close()
    return {"url": url, "model": model, "version": served_version, "binary": binary, "n_images": len(bodies),
            "task": task, "outputs": meta["outputs"], "labels": labels,
            "accuracy": levels[0]["accuracy"] if levels else None, "levels": levels}


def _task_images(data: str | os.PathLike) -> list[str]:
    """Images for a task other than classify (no class labels to score): a run directory's test split (what its
    dataset.json records), or every PNG/JPEG under a folder."""
    root = Path(data)
    if (root / "recipe.yaml").is_file():
        return [p for p, _ in _run_test_files(root)]
    if not root.is_dir():
        raise EdgecnnError(f"no such folder: {str(root)!r}; pass a run directory or a folder of images.")
    return [str(f) for f in sorted(root.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]


def _answer_reader(outputs: list[dict[str, Any]], task: str) -> Callable[[dict[str, np.ndarray]], Any]:
    """What one answer (output name -> array, batch 1) is worth: a classifier's top-1 index; for another task None
    when every declared output came back with its declared shape (-1 = any), else a string saying what did not."""
    if task == "classify":
        primary = outputs[0]["name"]
        return lambda arrays: int(np.argmax(arrays[primary][0])) if primary in arrays else f"no output {primary!r}"
    declared = {o["name"]: list(o["shape"]) for o in outputs}

    def check(arrays: dict[str, np.ndarray]) -> str | None:
        wrong = [f"{n} {list(arrays[n].shape) if n in arrays else 'missing'} (declared {shape})"
                 for n, shape in declared.items()
                 if n not in arrays or arrays[n].ndim != len(shape)
                 or any(d not in (-1, a) for d, a in zip(shape[1:], arrays[n].shape[1:]))]
        return f"outputs unlike the metadata: {'; '.join(wrong)}" if wrong else None

    return check


def _run_requests(client: InferenceClient, path: str, bodies: list, n: int, threads: int,
                  read: Callable[[dict[str, np.ndarray]], Any]) -> list[tuple]:
    """Send requests 0..n-1 (image i % len) from ``threads`` threads; (index, status, seconds, ``read(answer)`` or
    an error string)."""
    lock = threading.Lock()
    counter = iter(range(n))
    results: list[tuple] = []

    def worker():
        local = InferenceClient(client.url, client.timeout, client.api_key)
        out = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body, headers = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            try:
                status, resp_headers, data = local.request("POST", path, body, headers)
            except OSError as e:
                out.append((i, 0, time.perf_counter() - t0, f"{type(e).__name__}: {e}"))
                local.close()
                continue
            dt = time.perf_counter() - t0
            if status == 200:
                _, arrays = split_binary_response(data, resp_headers.get("inference-header-content-length"))
                out.append((i, status, dt, read(arrays)))
            else:
                out.append((i, status, dt, data[:300].decode("utf-8", "replace")))
        local.close()
        with lock:
            results.extend(out)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sorted(results)


def _level(client: InferenceClient, path: str, bodies: list, truth: np.ndarray | None, n: int, c: int,
           read: Callable[[dict[str, np.ndarray]], Any]) -> dict[str, Any]:
    """One concurrency level; ``truth`` None: no accuracy (a task without class labels), answers only checked."""
    started = time.perf_counter()
    results = _run_requests(client, path, bodies, n, c, read)
    wall = time.perf_counter() - started
    good = [r[1] == 200 and not isinstance(r[3], str) for r in results]
    ok = [r for r, g in zip(results, good) if g]
    errors = [r for r, g in zip(results, good) if not g]
    ms = np.array([r[2] for r in ok]) * 1e3 if ok else np.array([np.nan])
    correct = 0 if truth is None else sum(r[3] == truth[r[0] % len(truth)] for r in ok)
    level = {
        "concurrency": c, "requests": n, "errors": len(errors),
        "accuracy": correct / len(ok) if ok and truth is not None else None,
        "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
        "throughput_rps": len(ok) / wall if wall > 0 else None, "wall_s": wall,
    }
    if errors:
        level["first_error"] = f"status {errors[0][1]}: {errors[0][3]}"
    return level

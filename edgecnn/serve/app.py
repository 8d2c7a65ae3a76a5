"""The FastAPI application: KServe v2 REST endpoints, an image-classify endpoint, limits, metrics.

Layers, outermost first::

    transport           connection cap, header timeout, JSON 400s (edgecnn.serve.transport)
    ObserveMiddleware   request id, access log, metrics; drain-timeout cancellations end as JSON 503
    AuthMiddleware      API key on the protected areas (401/403) before any body is read
    LimitMiddleware     body size (413), body time (408), buffered bytes (503), then admission
                        against max_concurrency (503 at once, no queue)  (edgecnn.serve.middleware)
    routes              parse and validate in a worker thread, run the session, encode

Decoding and inference run in worker threads (onnxruntime releases the GIL), so health checks and
``/metrics`` stay responsive under load. Every client mistake is a 4xx ``{"error": "..."}``.
"""
from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgecnn._version import __version__
from edgecnn.data.preprocess import load_image
from edgecnn.errors import EdgecnnError
from edgecnn.serve.batching import Batcher
from edgecnn.serve.metrics import Metrics, log_event
from edgecnn.serve.middleware import AREAS, AuthMiddleware, LimitMiddleware, ObserveMiddleware
from edgecnn.serve.protocol import (
    HEADER_LENGTH,
    INPUT_DATATYPES,
    ClassifyResponse,
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelMetadata,
    ModelReady,
    ProtocolError,
    ReadyResponse,
    ReloadResponse,
    RepositoryModel,
    ServerMetadata,
    decode_input,
    encode_infer_response,
    parse_infer_request,
    requested_outputs,
    split_binary_inputs,
)
from edgecnn.serve.repository import LoadedVersion, ModelState, Repository

CONFIG_ENV = "EDGECNN_SERVE_CONFIG"
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_OTHER_IMAGES = {b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WEBP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


@dataclass(frozen=True)
class ServeOptions:
    """How the service runs and what it accepts (docs/serving.md, "Limits", states the memory bound).

    Args:
        threads: intra-op threads per session (None = the runtime's default, all cores).
        max_body_bytes: largest request body; larger ones get 413 before parsing.
        max_concurrency: inference requests (infer + classify) handled at once, counted from
            admission (the body has arrived); more get 503 with ``Retry-After: 1`` at once.
        max_batch: largest batch N in one infer request; a version whose FP32 batch of N would
            not fit ``max_body_bytes`` as binary tensor data accepts the largest N that does.
        max_image_pixels: largest width x height an uploaded image may declare (checked from the
            header, before decoding). Decoding and resizing take about 8 bytes per pixel.
        default_version: artifact file name used when a request names no version.
        warmup_runs: inferences on a zero image before a version is served.
        allow_reload: enable ``POST /v2/repository/models/{name}/load`` (off with several workers).
        header_timeout: seconds a request's headers may take (from its first byte); then 408.
        body_timeout: seconds a request's body may take to arrive; then 408.
        max_connections: open connections; more are answered 503 and closed.
        max_buffered_bytes: request-body bytes held at once over all requests; more get 503.
        api_keys: keys for the protected areas (none = open); compared in constant time.
        protect: areas that need a key when keys are set: ``repository`` (always), ``inference``,
            ``metrics``.
        dynamic_batch: 0 (off) or the most images one runtime call may gather from concurrent
            requests (:mod:`edgecnn.serve.batching`).
        batch_delay_ms: the longest a request waits for others to join its batch.
    """

    threads: int | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    max_concurrency: int = 8
    max_batch: int = 64
    max_image_pixels: int = 4096 * 4096
    default_version: str | None = None
    warmup_runs: int = 2
    allow_reload: bool = True
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 256
    max_buffered_bytes: int = 64 * 1024 * 1024
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    protect: tuple[str, ...] = ("repository",)
    dynamic_batch: int = 0
    batch_delay_ms: float = 2.0

    def __post_init__(self) -> None:
        for key in ("max_body_bytes", "max_concurrency", "max_batch", "max_image_pixels", "max_connections",
                    "max_buffered_bytes"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ServeOptions.{key} must be a positive integer. Received {key}={value!r}.")
        for key in ("header_timeout", "body_timeout"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"ServeOptions.{key} must be a positive number of seconds. Received {key}={value!r}.")
        if not isinstance(self.dynamic_batch, int) or isinstance(self.dynamic_batch, bool) or self.dynamic_batch < 0:
            raise ValueError("ServeOptions.dynamic_batch must be 0 (off) or the most images per batch. "
                             f"Received dynamic_batch={self.dynamic_batch!r}.")
        if not isinstance(self.batch_delay_ms, (int, float)) or not 0 <= self.batch_delay_ms <= 1000:
            raise ValueError(f"ServeOptions.batch_delay_ms must be 0-1000. Received {self.batch_delay_ms!r}.")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError("ServeOptions.threads must be None or a positive integer. "
                             f"Received threads={self.threads!r}.")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(f"ServeOptions.max_buffered_bytes ({self.max_buffered_bytes}) must be at least "
                             f"max_body_bytes ({self.max_body_bytes}), or no body of the largest size could arrive.")
        unknown = sorted(set(self.protect) - set(AREAS))
        if unknown:
            raise ValueError(f"ServeOptions.protect takes areas from {list(AREAS)}. Received {list(self.protect)}.")
        if "repository" not in self.protect:
            object.__setattr__(self, "protect", ("repository", *self.protect))
        object.__setattr__(self, "api_keys", tuple(self.api_keys))
        object.__setattr__(self, "protect", tuple(self.protect))
        short = [k for k in self.api_keys if not isinstance(k, str) or len(k) < 16 or k != k.strip()]
        if short:
            raise ValueError(f"ServeOptions.api_keys: {len(short)} key(s) shorter than 16 characters or with "
                             "surrounding spaces. Generate one with `python -c \"import secrets; "
                             "print(secrets.token_urlsafe(32))\"`.")

    def public(self) -> dict[str, Any]:
        """The options as logged: keys replaced by their count."""
        out = asdict(self)
        out["api_keys"] = len(self.api_keys)
        return out


# ---------------------------------------------------------------- images


def decode_image(data: bytes, height: int, width: int, max_pixels: int,
                 channels: int = 3) -> tuple[np.ndarray, dict[str, Any]]:
    """PNG/JPEG bytes -> float32 (height, width, channels) pixels 0-255 (RGB, or grey for a one-channel
    model), refusing bombs before decoding.

    The pixels are :func:`edgecnn.data.preprocess.load_image`'s, the preprocessing of training,
    evaluation and ``edgecnn predict``; only the format and size checks are the service's own.

    Raises:
        ProtocolError: empty, not PNG/JPEG (415 for another image format), too many declared
            pixels, truncated or corrupt.
    """
    from PIL import Image

    if not data:
        raise ProtocolError("the image is empty (0 bytes); send a PNG or JPEG file.")
    if data.startswith(_PNG):
        fmt = "PNG"
    elif data.startswith(_JPEG):
        fmt = "JPEG"
    else:
        other = next((name for magic, name in _OTHER_IMAGES.items() if data.startswith(magic)), None)
        if other:
            raise ProtocolError(f"{other} images are not accepted; send PNG or JPEG.", status=415)
        raise ProtocolError(f"the upload is not a PNG or JPEG image (it starts with {data[:8]!r}); "
                            "send PNG or JPEG.")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            w, h = im.size               # from the header; nothing decoded yet
            if w < 1 or h < 1 or w * h > max_pixels:
                raise ProtocolError(f"the {fmt} image declares {w}x{h} = {w * h} pixels; the limit is "
                                    f"{max_pixels} (max_image_pixels). Downscale it before sending.")
        # From the bytes: load_image frees its decoded copy before it resizes (bounds upload memory).
        return load_image(data, (height, width), channels), {"format": fmt, "width": w, "height": h}
    except ProtocolError:
        raise
    except Image.DecompressionBombError:
        raise ProtocolError(f"the {fmt} image declares too many pixels (decompression bomb); "
                            f"the limit is {max_pixels}.") from None
    except EdgecnnError as e:   # load_image: truncated or corrupt
        raise ProtocolError(str(e)[:300]) from None
    except Exception as e:      # Pillow raises many types while opening a damaged header
        raise ProtocolError(f"could not decode the {fmt} image: {str(e)[:200] or type(e).__name__}.") from None


# ---------------------------------------------------------------- OpenAPI documentation of the routes


def _inlined_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its nested models written in place: a "#/$defs/..." reference
    inside ``openapi_extra`` would point at the OpenAPI document's root, where nothing is defined."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return inline(schema)


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown model or version."},
}
_REQUEST_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The request is malformed; the message says what and how to fix it."},
    **_NOT_FOUND,
    413: {"model": ErrorResponse, "description": "The body exceeds max_body_bytes."},
    415: {"model": ErrorResponse, "description": "Unsupported Content-Type or image format."},
    503: {"model": ErrorResponse, "description": "max_concurrency requests in flight; retry after Retry-After."},
}
# The infer body is encoded by hand (encode_infer_response, binary tensors included) for speed, so the
# route names its schema here instead of passing it through response_model validation.
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": InferenceResponse,
          "description": "JSON; with binary outputs, `application/octet-stream`: Inference-Header-Content-Length "
                         "bytes of this JSON, then each binary output's raw little-endian bytes in order.",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    **_REQUEST_ERRORS,
}
_INFER_REQUEST = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inlined_schema(InferenceRequest)},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                 "description": "Binary tensor extension: JSON header, then raw input bytes."},
}}}
_CLASSIFY_REQUEST = {"requestBody": {"required": True, "content": {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string",
                                                                                 "format": "binary"}}}},
}}}


# ---------------------------------------------------------------- the app


class _Service:
    """The request handlers' shared state and the work they do in worker threads."""

    def __init__(self, repository: Repository, options: ServeOptions, metrics: Metrics):
        self.repo, self.options, self.metrics = repository, options, metrics
        self.limiter = anyio.CapacityLimiter(options.max_concurrency)
        self.ready = False
        self._batchers: dict[tuple[str, str], Batcher] = {}
        self._batchers_lock = threading.Lock()

    def predict(self, state: ModelState, loaded: LoadedVersion, images: np.ndarray) -> np.ndarray:
        """The version's primary output (a classifier's probabilities); see :meth:`predict_outputs`."""
        return self.predict_outputs(state, loaded, images)[0]

    def predict_outputs(self, state: ModelState, loaded: LoadedVersion, images: np.ndarray) -> list[np.ndarray]:
        """Every output of the version (``loaded.outputs``' order), through its dynamic batcher when that is on
        and the batch is small."""
        started = time.perf_counter()
        if self.options.dynamic_batch > len(images):
            outputs = self._batcher(state.name, loaded)(images)
        else:
            outputs = loaded.predict_outputs(images)
        self.metrics.observe_inference(state.name, loaded.version, time.perf_counter() - started)
        return list(outputs)

    def _batcher(self, model: str, loaded: LoadedVersion) -> Batcher:
        key = (model, loaded.version)
        with self._batchers_lock:
            batcher = self._batchers.get(key)
            if batcher is None or batcher.predict != loaded.predict_outputs:     # new, or the version was reloaded
                if batcher is not None:
                    batcher.close()
                batcher = self._batchers[key] = Batcher(loaded.predict_outputs, self.options.dynamic_batch,
                                                        self.options.batch_delay_ms / 1e3)
            return batcher

    def max_batch(self, loaded: LoadedVersion) -> int:
        """``max_batch``, or fewer where a batch of FP32 images would not fit ``max_body_bytes``."""
        image_bytes = 4 * loaded.input_hwc[0] * loaded.input_hwc[1] * loaded.input_hwc[2]
        return max(1, min(self.options.max_batch, self.options.max_body_bytes // image_bytes))

    def metadata(self, state: ModelState, loaded: LoadedVersion) -> dict[str, Any]:
        h, w, c = loaded.input_hwc
        return {
            "name": state.name,
            "versions": list(state.versions),
            "platform": loaded.platform,
            "inputs": [{"name": loaded.runner.input.name, "datatype": "FP32", "shape": [-1, h, w, c]}],
            "outputs": loaded.output_metadata(),
            "parameters": {
                "version": loaded.version, "default_version": state.default, "labels": state.labels,
                "task": state.manifest.get("task", "classify"),
                "preprocessing": state.manifest.get("preprocessing"), "precision": loaded.entry.get("precision"),
                "sha256": loaded.sha256, "backend": loaded.runner.backend,
                "accepted_input_datatypes": list(INPUT_DATATYPES), "max_batch": self.max_batch(loaded),
                "artifact_input": loaded.runner.input.to_json(), "artifact_output": loaded.runner.output.to_json(),
                "artifact_outputs": [o.to_json() for o in loaded.outputs],
                "generation": state.generation,
            },
        }

    def infer(self, state: ModelState, loaded: LoadedVersion, body: bytes, header_length: str | None) -> Response:
        try:
            request, tail = parse_infer_request(body, header_length)
            binaries = split_binary_inputs(request, tail) if header_length is not None else {}
            in_name = loaded.runner.input.name
            names = [i.name for i in request.inputs]
            if in_name not in names:
                raise ProtocolError(f"missing input {in_name!r}: model {state.name!r} version {loaded.version!r} "
                                    f"takes inputs [{in_name!r}]. Received inputs {names}.")
            if len(names) != 1:
                extra = sorted({n for n in names if n != in_name}) or [in_name]
                raise ProtocolError(f"unexpected or repeated inputs {extra}; the model takes one input, {in_name!r}.")
            images = decode_input(request.inputs[0], binaries.get(in_name), loaded.input_hwc, self.max_batch(loaded))
            available = [o.name for o in loaded.outputs]
            names, binary_names = requested_outputs(request, available)
        except ProtocolError:
            raise
        except Exception as e:     # anything else a body can provoke while being decoded is still its fault
            raise ProtocolError(f"invalid inference request ({type(e).__name__}: {str(e)[:200]}).") from None
        arrays = dict(zip(available, self.predict_outputs(state, loaded, images)))
        head = {"model_name": state.name, "model_version": loaded.version}
        if request.id is not None:
            head["id"] = request.id
        content, headers = encode_infer_response(head, {n: arrays[n] for n in names}, binary_names)
        media = "application/octet-stream" if headers else "application/json"
        return Response(content, media_type=media, headers=headers)

    def classify(self, state: ModelState, loaded: LoadedVersion, data: bytes, top_k: int) -> dict[str, Any]:
        h, w, c = loaded.input_hwc
        pixels, info = decode_image(data, h, w, self.options.max_image_pixels, channels=c)
        probs = self.predict(state, loaded, pixels[None])[0]
        order = np.argsort(-probs, kind="stable")[:top_k]
        return {
            "model_name": state.name, "model_version": loaded.version, "image": info,
            "predictions": [{"label": state.labels[i], "index": int(i), "probability": float(probs[i])} for i in order],
        }


def create_app(target: str | os.PathLike | Sequence[str | os.PathLike], options: ServeOptions | None = None) -> FastAPI:
    """Build the service for a run directory (or artifact, or several): load, verify and warm every model.

    Args:
        target: a run directory with ``manifest.json``, an ``.onnx``/``.tflite`` artifact inside one,
            or a list of them (one model each, named by the manifest's ``name``).
        options: limits and runtime settings; ``ServeOptions()`` when None.

    Returns:
        A FastAPI app; run it with uvicorn (``serve`` does).

    Raises:
        EdgecnnError: missing manifest, sha256 mismatch, a Keras/HDF5 target, a file that fails to load.

    Example:
        >>> app = create_app("export/defects-mobilenetv2", ServeOptions(threads=2))  # doctest: +SKIP
    """
    options = options or ServeOptions()
    repo = Repository(target, threads=options.threads, default_version=options.default_version,
                      warmup_runs=options.warmup_runs)
    metrics = Metrics()
    for state in repo.states():
        metrics.set_models(state.name, {v: lv.sha256 for v, lv in state.versions.items()})
        metrics.model_event(state.name, "ok")
    service = _Service(repo, options, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _map_large_allocations()
        service.ready = True
        log_event("ready", models={s.name: list(s.versions) for s in repo.states()}, pid=os.getpid(),
                  options=options.public())
        yield
        service.ready = False
        log_event("stopped", pid=os.getpid())

    app = FastAPI(title="edgecnn inference service", version=__version__, lifespan=lifespan,
                  summary="KServe v2 / Open Inference Protocol over onnxruntime and LiteRT.")
    app.state.service = service
    app.add_middleware(LimitMiddleware, max_body_bytes=options.max_body_bytes, max_concurrency=options.max_concurrency,
                       max_buffered_bytes=options.max_buffered_bytes, body_timeout=options.body_timeout,
                       metrics=metrics)
    app.add_middleware(AuthMiddleware, keys=options.api_keys, protect=options.protect)
    app.add_middleware(ObserveMiddleware, metrics=metrics, routes=app.router.routes)
    _install_error_handlers(app)

    # -------------------------------------------------------- health and metadata

    @app.get("/v2/health/live", response_model=LiveResponse)
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", response_model=ReadyResponse,
             responses={503: {"model": ReadyResponse, "description": "Not ready: starting, stopping or a model "
                                                                     "without a loaded version."}})
    async def ready():
        ok = service.ready and all(s.versions for s in repo.states())
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2", response_model=ServerMetadata)
    async def server_metadata():
        return {"name": "edgecnn", "version": __version__,
                "extensions": ["model_repository", "binary_tensor_data", "classification"]}

    @app.get("/v2/models/{name}", response_model=ModelMetadata, responses=_NOT_FOUND)
    async def model_metadata(name: str):
        return service.metadata(*repo.resolve(name))

    @app.get("/v2/models/{name}/versions/{version}", response_model=ModelMetadata, responses=_NOT_FOUND)
    async def model_version_metadata(name: str, version: str):
        return service.metadata(*repo.resolve(name, version))

    @app.get("/v2/models/{name}/ready", response_model=ModelReady, responses=_NOT_FOUND)
    async def model_ready(name: str):
        state, loaded = repo.resolve(name)
        return {"name": state.name, "version": loaded.version, "ready": service.ready}

    @app.get("/v2/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=_NOT_FOUND)
    async def model_version_ready(name: str, version: str):
        state, loaded = repo.resolve(name, version)
        return {"name": state.name, "version": loaded.version, "ready": service.ready}

    # -------------------------------------------------------- inference

    async def _infer(request: Request, name: str, version: str | None) -> Response:
        state, loaded = repo.resolve(name, version)
        header_length = request.headers.get(HEADER_LENGTH)
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if header_length is None and ctype not in ("application/json", ""):
            raise ProtocolError(f"infer takes Content-Type application/json (or the binary tensor extension with "
                                f"an Inference-Header-Content-Length header). Received {ctype!r}.", status=415)
        body = await request_body(request)
        return await anyio.to_thread.run_sync(partial(service.infer, state, loaded, body, header_length),
                                              limiter=service.limiter)

    @app.post("/v2/models/{name}/infer", responses=_INFER_RESPONSES, openapi_extra=_INFER_REQUEST)
    async def infer(request: Request, name: str):
        """KServe v2 inference: ``{"inputs": [{"name", "shape", "datatype", "data"}]}`` -> ``{"outputs": [...]}``."""
        return await _infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", responses=_INFER_RESPONSES,
              openapi_extra=_INFER_REQUEST)
    async def infer_version(request: Request, name: str, version: str):
        return await _infer(request, name, version)

    async def _classify(request: Request, name: str, version: str | None, top_k: int) -> dict[str, Any]:
        state, loaded = repo.resolve(name, version)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=16)
            except Exception as e:
                raise ProtocolError(f"malformed multipart body ({str(e)[:200] or type(e).__name__}).") from None
            files = [v for v in form.values() if isinstance(v, UploadFile)]
            if not files:
                raise ProtocolError("the multipart body has no file; upload the image as a file field (e.g. 'file').")
            data = await files[0].read()
            await form.close()
        elif ctype in ("image/png", "image/jpeg", "image/jpg"):
            data = await request_body(request)
        else:
            raise ProtocolError(f"classify takes an image/png or image/jpeg body, or multipart/form-data with a "
                                f"file field. Received Content-Type {ctype or 'none'!r}.", status=415)
        task = state.manifest.get("task", "classify")
        if task != "classify":   # an anomaly score and map, a mask: the task's own answer to an image
            from edgecnn.tasks import get_task

            params = dict(request.query_params)
            answer = await anyio.to_thread.run_sync(
                partial(get_task(task).serve_image, service, state, loaded, data, params), limiter=service.limiter)
            # a Response as it is; a dict as JSON, not checked against the classifier's response model
            return answer if isinstance(answer, Response) else JSONResponse(answer)
        k = min(top_k, loaded.num_classes)
        return await anyio.to_thread.run_sync(partial(service.classify, state, loaded, data, k),
                                              limiter=service.limiter)

    @app.post("/v2/models/{name}/classify", response_model=ClassifyResponse, responses=_REQUEST_ERRORS,
              openapi_extra=_CLASSIFY_REQUEST)
    async def classify(request: Request, name: str, top_k: int = Query(5, ge=1, le=1000)):
        """Upload a PNG/JPEG (raw body or multipart); returns the top-k labels with probabilities."""
        return await _classify(request, name, None, top_k)

    @app.post("/v2/models/{name}/versions/{version}/classify", response_model=ClassifyResponse,
              responses=_REQUEST_ERRORS, openapi_extra=_CLASSIFY_REQUEST)
    async def classify_version(request: Request, name: str, version: str, top_k: int = Query(5, ge=1, le=1000)):
        return await _classify(request, name, version, top_k)

    # -------------------------------------------------------- repository and operations

    @app.post("/v2/repository/index", response_model=list[RepositoryModel])
    async def repository_index():
        return [{"name": s.name, "version": v, "state": "READY", "default": v == s.default}
                for s in repo.states() for v in s.versions]

    # responses= rather than response_model: the body is the repository's own summary, passed through.
    @app.post("/v2/repository/models/{name}/load",
              responses={200: {"model": ReloadResponse}, **_NOT_FOUND,
                         409: {"model": ErrorResponse, "description": "Reload off, already running, or failed; "
                                                                      "the old versions keep serving."}})
    async def load_model(name: str):
        """Re-read the manifest and hot-swap changed versions; on failure the old ones keep serving."""
        if not options.allow_reload:
            raise ProtocolError("reload is off for this server (several workers): send SIGHUP to the server's "
                                "main process for a rolling restart instead.", status=409)
        old = repo.state(name)
        try:
            result = await anyio.to_thread.run_sync(repo.reload, name)
        except ProtocolError:
            raise
        except Exception as e:
            metrics.model_event(name, "failed")
            log_event("model_reload_failed", level=logging.WARNING, model=name, error=str(e),
                      still_serving=list(old.versions), generation=old.generation)
            message = str(e) if isinstance(e, EdgecnnError) else f"{type(e).__name__}: {e}"
            raise ProtocolError(f"reload of {name!r} failed: {message} Still serving generation {old.generation} "
                                f"({', '.join(old.versions)}).", status=409) from None
        state = repo.state(name)
        metrics.model_event(name, "ok")
        metrics.set_models(name, {v: lv.sha256 for v, lv in state.versions.items()})
        return result

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus_metrics():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _map_large_allocations(threshold: int = 1 << 20) -> None:
    """glibc: allocations over ``threshold`` (request bodies, decoded batches) get their own mapping,
    grown in place by mremap and returned to the OS when freed. By default the threshold rises to the
    largest block freed so far (up to 32 MiB), after which big bodies land on the heap, fragment it
    and stay resident after the request."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, threshold)      # M_MMAP_THRESHOLD; fixing it also stops the dynamic adjustment
    except (OSError, AttributeError):    # not glibc (musl, macOS): their allocators need no help here
        pass


async def request_body(request: Request) -> bytes | bytearray:
    """The body LimitMiddleware read (no copy), else the ASGI stream's."""
    body = request.scope.get("state", {}).get("body")
    return body if body is not None else await request.body()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, exc: ProtocolError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(EdgecnnError)
    async def edgecnn_error(request: Request, exc: EdgecnnError):
        # Raised by a runner on an input the protocol checks let through: still the request's fault.
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            detail = f"no such endpoint: {request.method} {request.url.path[:200]}; see /docs."
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(parts) or "invalid request"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        rid = request.scope.get("state", {}).get("request_id", "")
        log_event("unhandled_error", level=logging.ERROR, exc_info=exc, request_id=rid, path=request.url.path[:200])
        return JSONResponse({"error": f"internal server error (request id {rid}); see the server log."},
                            status_code=500)


def app_from_env() -> FastAPI:
    """uvicorn factory for ``workers > 1``: each worker process builds its app from ``EDGECNN_SERVE_CONFIG``."""
    config = json.loads(os.environ[CONFIG_ENV])
    return create_app(config["targets"], ServeOptions(**config["options"]))

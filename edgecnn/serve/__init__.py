"""The inference service: KServe v2 REST over onnxruntime (and LiteRT for .tflite).

    from edgecnn.serve import serve, evaluate_via_http
    serve("export/defects-mobilenetv2", port=8000, threads=2)          # blocks; SIGTERM drains
    evaluate_via_http("http://127.0.0.1:8000", "export/defects-mobilenetv2")  # accuracy + latency via HTTP

Only artifacts recorded in the run's ``manifest.json`` with a matching sha256 are served; Keras
files never are. See docs/serving.md for endpoints, limits, reload and metrics.
"""
from __future__ import annotations

import json
import logging.config
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from edgecnn.errors import EdgecnnError
from edgecnn.serve.app import CONFIG_ENV, ServeOptions, create_app
from edgecnn.serve.client import InferenceClient, evaluate_via_http

__all__ = ["serve", "create_app", "evaluate_via_http", "ServeOptions", "InferenceClient", "load_api_keys"]

API_KEY_ENV = "EDGECNN_API_KEY"


def load_api_keys(api_key_file: str | os.PathLike | None = None) -> tuple[str, ...]:
    """API keys from ``EDGECNN_API_KEY`` (one key, or several separated by commas) and from
    ``api_key_file`` (one key per line; blank lines and ``#`` comments skipped).

    Raises:
        EdgecnnError: the file is missing or unreadable, or it holds no key.
    """
    keys = [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]
    if api_key_file is not None:
        try:
            lines = Path(api_key_file).read_text().splitlines()
        except OSError as e:
            raise EdgecnnError(f"cannot read the API key file {str(api_key_file)!r} ({e.strerror or e}); "
                               "pass a readable file with one key per line.") from None
        from_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise EdgecnnError(f"the API key file {str(api_key_file)!r} holds no key; write one key per line.")
        keys += from_file
    return tuple(dict.fromkeys(keys))


def serve(
    target: str | os.PathLike | Sequence[str | os.PathLike],
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int | None = None,
    workers: int = 1,
    *,
    max_body_bytes: int = ServeOptions.max_body_bytes,
    max_concurrency: int = ServeOptions.max_concurrency,
    max_batch: int = ServeOptions.max_batch,
    max_image_pixels: int = ServeOptions.max_image_pixels,
    default_version: str | None = None,
    graceful_timeout: float = 30.0,
    log_level: str = "info",
    header_timeout: float = ServeOptions.header_timeout,
    body_timeout: float = ServeOptions.body_timeout,
    max_connections: int = ServeOptions.max_connections,
    max_buffered_bytes: int = ServeOptions.max_buffered_bytes,
    api_key_file: str | os.PathLike | None = None,
    protect: Sequence[str] = ServeOptions.protect,
    ssl_certfile: str | os.PathLike | None = None,
    ssl_keyfile: str | os.PathLike | None = None,
    dynamic_batch: int = ServeOptions.dynamic_batch,
    batch_delay_ms: float = ServeOptions.batch_delay_ms,
) -> None:
    """Serve a run directory (or artifact) over HTTP until SIGINT/SIGTERM; blocks.

    Models are loaded, hash-verified and warmed before the port opens, so ``/v2/health/ready``
    answers 200 from the first connection. On SIGTERM the listening socket closes, accepted
    requests finish (up to ``graceful_timeout`` seconds), then the process exits.

    Args:
        target: run directory, artifact path inside one, or a list of them.
        host: interface to bind; 127.0.0.1 by default (use 0.0.0.0 inside a container).
        port: TCP port.
        threads: intra-op threads per session (None = all cores).
        workers: processes; each loads its own sessions. With more than one, hot reload is
            replaced by a rolling restart on SIGHUP and ``/metrics`` is per process.
        max_body_bytes, max_concurrency, max_batch, max_image_pixels, default_version, header_timeout,
            body_timeout, max_connections, max_buffered_bytes, protect, dynamic_batch, batch_delay_ms:
            see :class:`ServeOptions`.
        graceful_timeout: seconds to let accepted requests finish after SIGTERM; requests still
            running then are answered 503 ``{"error"}``.
        log_level: ``debug``, ``info``, ``warning`` or ``error`` (JSON lines on stderr).
        api_key_file: file of API keys (one per line), added to ``EDGECNN_API_KEY``'s; with any
            key set, the ``protect`` areas need one (:func:`load_api_keys`).
        ssl_certfile, ssl_keyfile: PEM certificate and key: serve HTTPS (uvicorn's TLS).

    Raises:
        EdgecnnError: the target cannot be served (missing manifest, sha256 mismatch, Keras file,
            a load failure); raised before the port opens.
        ValueError: an option out of range.
    """
    import uvicorn

    from edgecnn.serve.metrics import log_config
    from edgecnn.serve.repository import Repository

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer. Received workers={workers!r}.")
    from edgecnn.serve.transport import protocol_class

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ValueError("TLS needs both ssl_certfile and ssl_keyfile (PEM files). "
                         f"Received ssl_certfile={ssl_certfile!r}, ssl_keyfile={ssl_keyfile!r}.")
    for path in (ssl_certfile, ssl_keyfile):
        if path is not None and not Path(path).is_file():
            raise EdgecnnError(f"TLS file not found: {str(path)!r}.")
    options = ServeOptions(threads=threads, max_body_bytes=max_body_bytes, max_concurrency=max_concurrency,
                           max_batch=max_batch, max_image_pixels=max_image_pixels, default_version=default_version,
                           header_timeout=header_timeout, body_timeout=body_timeout, max_connections=max_connections,
                           max_buffered_bytes=max_buffered_bytes, api_keys=load_api_keys(api_key_file),
                           protect=tuple(protect), dynamic_batch=dynamic_batch, batch_delay_ms=batch_delay_ms)
    logs = log_config(log_level)
    logging.config.dictConfig(logs)
    common = dict(host=host, port=port, log_config=logs, access_log=False, server_header=False,
                  timeout_graceful_shutdown=graceful_timeout, lifespan="on", http=protocol_class(),
                  ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    if workers == 1:
        app = create_app(target, options)
        uvicorn.Server(uvicorn.Config(app, **common)).run()
        return
    targets = [target] if isinstance(target, (str, os.PathLike)) else list(target)
    Repository(targets, default_version=default_version, load=False)   # fail here, once, not in every worker
    os.environ[CONFIG_ENV] = json.dumps({"targets": [str(Path(t)) for t in targets],
                                         "options": asdict(replace(options, allow_reload=False))})
    uvicorn.run("edgecnn.serve.app:app_from_env", factory=True, workers=workers, **common)

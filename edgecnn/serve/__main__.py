"""``python -m edgecnn.serve RUN_DIR [--port 8000 ...]``: the entry point the tests and the image use.

The ``edgecnn serve`` CLI command takes the same options and calls :func:`edgecnn.serve.serve`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgecnn.errors import EdgecnnError
from edgecnn.serve.app import ServeOptions


def main(
    target: Annotated[list[Path], typer.Argument(
        help="Run directory (with manifest.json) or .onnx/.tflite artifact; several allowed.")],
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 in a container).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    threads: Annotated[Optional[int], typer.Option(help="Intra-op threads per session (default: all cores).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (reload becomes SIGHUP rolling restart).")] = 1,
    max_body_bytes: Annotated[int, typer.Option(
        help="Largest request body; larger gets 413.")] = ServeOptions.max_body_bytes,
    max_concurrency: Annotated[int, typer.Option(
        help="Inference requests at once; more get 503.")] = ServeOptions.max_concurrency,
    max_batch: Annotated[int, typer.Option(help="Largest batch in one infer request.")] = ServeOptions.max_batch,
    max_image_pixels: Annotated[int, typer.Option(
        help="Largest width*height an uploaded image may declare.")] = ServeOptions.max_image_pixels,
    default_version: Annotated[Optional[str], typer.Option(
        help="Artifact served when a request names no version.")] = None,
    graceful_timeout: Annotated[float, typer.Option(
        help="Seconds accepted requests may take to finish after SIGTERM.")] = 30.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    header_timeout: Annotated[float, typer.Option(
        help="Seconds a request's headers may take; then 408.")] = ServeOptions.header_timeout,
    body_timeout: Annotated[float, typer.Option(
        help="Seconds a request's body may take to arrive; then 408.")] = ServeOptions.body_timeout,
    max_connections: Annotated[int, typer.Option(
        help="Open connections; more get 503.")] = ServeOptions.max_connections,
    max_buffered_bytes: Annotated[int, typer.Option(
        help="Request-body bytes held at once over all requests; more get 503.")] = ServeOptions.max_buffered_bytes,
    api_key_file: Annotated[Optional[Path], typer.Option(
        help="File of API keys, one per line (also: EDGECNN_API_KEY). With a key, repository calls need it.")] = None,
    protect: Annotated[str, typer.Option(
        help="Areas that need the key: repository, plus inference and/or metrics (comma-separated).")] = "repository",
    ssl_certfile: Annotated[Optional[Path], typer.Option(help="PEM certificate: serve HTTPS.")] = None,
    ssl_keyfile: Annotated[Optional[Path], typer.Option(help="PEM private key for --ssl-certfile.")] = None,
    dynamic_batch: Annotated[int, typer.Option(
        help="0 = off; else the most images one runtime call gathers from concurrent requests.")] = 0,
    batch_delay_ms: Annotated[float, typer.Option(
        help="Longest a request waits for others to join its batch.")] = ServeOptions.batch_delay_ms,
) -> None:
    """Serve an edgecnn run over the KServe v2 REST protocol."""
    from edgecnn.serve import serve

    try:
        serve([str(t) for t in target], host=host, port=port, threads=threads, workers=workers,
              max_body_bytes=max_body_bytes, max_concurrency=max_concurrency, max_batch=max_batch,
              max_image_pixels=max_image_pixels, default_version=default_version,
              graceful_timeout=graceful_timeout, log_level=log_level, header_timeout=header_timeout,
              body_timeout=body_timeout, max_connections=max_connections, max_buffered_bytes=max_buffered_bytes,
              api_key_file=api_key_file, protect=[a.strip() for a in protect.split(",") if a.strip()],
              ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, dynamic_batch=dynamic_batch,
              batch_delay_ms=batch_delay_ms)
    except (EdgecnnError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    typer.run(main)

"""The service's ASGI middleware (pure ASGI, no Starlette wrappers), outermost first.

    ObserveMiddleware   request id, access log (JSON line), Prometheus counters, in-flight gauge;
                        a request cancelled by the drain deadline ends as a JSON 503, not a 500
    AuthMiddleware      API key on the protected areas (repository, optionally inference and
                        /metrics): 401 without a key, 403 with a wrong one, before any body is read
    LimitMiddleware     reads every body before the app sees it: at most max_body_bytes (413),
                        within body_timeout (408), within max_buffered_bytes received and held
                        over all requests (503); only then is an inference request admitted
                        against max_concurrency (503), so slow uploads never hold an inference slot

The transport below them (:mod:`edgecnn.serve.transport`) times out slow headers and caps open
connections. Every refusal is a JSON ``{"error": ...}`` body.
"""
from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import os
import re
import time

import anyio
from starlette.routing import Match

from edgecnn.serve.metrics import Metrics, log_event, log_shed

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/(infer|classify)$")
# Areas an API key can protect; "repository" (load/reload and the index) is always among them.
AREAS = ("repository", "inference", "metrics")
SHED = (408, 503)       # refusals under attack or overload: WARNING, rate-limited, never one line each


def area_of(method: str, path: str) -> str | None:
    """Which protectable area a request belongs to (None = always open: health, metadata, docs)."""
    if path.startswith("/v2/repository/"):
        return "repository"
    if method == "POST" and INFER_PATH.match(path):
        return "inference"
    if path == "/metrics":
        return "metrics"
    return None


async def send_error(send, status: int, message: str, headers: list | None = None) -> None:
    """A complete JSON ``{"error": message}`` response."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class ObserveMiddleware:
    """Request id, one JSON access-log line, Prometheus counters and the in-flight gauge."""

    def __init__(self, app, metrics: Metrics, routes: list):
        self.app, self.metrics, self.routes = app, metrics, routes
        # Request ids: unique per process and cheap (uuid4 costs a getrandom syscall per request).
        self._ids = itertools.count(1)
        self._prefix = os.urandom(3).hex()

    def _route(self, scope) -> str:
        route = scope.get("route")      # set by the router when a route handled the request
        if route is not None and hasattr(route, "path"):
            return route.path
        for route in self.routes:       # rejected before routing (413, 503) or no route at all
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return route.path
        return "<unmatched>"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = dict(scope.get("headers") or ())
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else f"{self._prefix}-{next(self._ids)}"
        scope.setdefault("state", {})["request_id"] = request_id
        status = 0

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        self.metrics.request_started()
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when --graceful-timeout expires; it would answer a
            # plain-text 500 and log a traceback. The client gets a JSON 503 it can retry elsewhere.
            if not status:
                await send_error(send_with_id, 503, "the server is shutting down and this request did not finish "
                                                    "within its graceful timeout; retry it (on another replica).",
                                 [(b"connection", b"close"), (b"retry-after", b"1")])
        except Exception:
            status = status or 500
            raise
        finally:
            elapsed = time.perf_counter() - started
            status = status or 499       # the client went away before a response
            route = self._route(scope)
            self.metrics.request_finished(route, scope["method"], status, elapsed)
            client = scope.get("client") or ("", 0)
            fields = dict(request_id=request_id, method=scope["method"], path=scope["path"][:200], route=route,
                          status=status, ms=round(elapsed * 1e3, 2), client=client[0])
            if "body_s" in scope["state"]:     # time the body took to arrive, within ms
                fields["body_ms"] = round(scope["state"]["body_s"] * 1e3, 2)
            if status in SHED:
                log_shed("request", **fields)
            else:
                log_event("request", level=logging.ERROR if status >= 500 else logging.INFO, **fields)


class AuthMiddleware:
    """API keys for the protected areas, compared in constant time, before any body is read.

    A key is sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Without one the answer is
    401 (with ``WWW-Authenticate: Bearer``); with a wrong one, 403.
    """

    def __init__(self, app, keys: tuple[str, ...], protect: tuple[str, ...]):
        self.app, self.protect = app, frozenset(protect)
        self.keys = [k.encode() for k in keys]

    def _given(self, headers: dict[bytes, bytes]) -> bytes | None:
        auth = headers.get(b"authorization")
        if auth is not None and auth[:7].lower() == b"bearer ":
            return auth[7:].strip()
        return headers.get(b"x-api-key")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.keys or area_of(scope["method"], scope["path"]) not in self.protect:
            return await self.app(scope, receive, send)
        given = self._given(dict(scope.get("headers") or ()))
        if given is None:
            return await send_error(send, 401, "this endpoint needs an API key: send 'Authorization: Bearer KEY' "
                                               "or 'X-API-Key: KEY' (the server's EDGECNN_API_KEY or "
                                               "--api-key-file).", [(b"www-authenticate", b'Bearer realm="edgecnn"')])
        ok = False
        for key in self.keys:        # every key compared, each in constant time
            ok |= hmac.compare_digest(given, key)
        if not ok:
            return await send_error(send, 403, "the API key is not valid for this server.")
        await self.app(scope, receive, send)


class LimitMiddleware:
    """Reads each body (bounded in size, time and total buffered bytes), then admits inference.

    The body is counted as it arrives (a chunked upload has no Content-Length) and replayed to the
    app, so a parser never starts on an oversized body. Bytes count against ``max_buffered`` when
    they arrive, so a slow client holds only what it has sent, and for at most ``body_timeout``.
    A refused body is never stored: up to ``DRAIN_BYTES`` more of it are read and dropped before
    the 413/503 goes out, so the client reads the answer instead of a connection reset; beyond
    that the connection is closed. Only a complete body is admitted against ``max_concurrency``.
    """

    DRAIN_BYTES = 1 << 20

    def __init__(self, app, *, max_body_bytes: int, max_concurrency: int, max_buffered_bytes: int,
                 body_timeout: float, metrics: Metrics):
        self.app, self.max_body, self.max_concurrency = app, max_body_bytes, max_concurrency
        self.max_buffered, self.body_timeout, self.metrics = max_buffered_bytes, body_timeout, metrics
        self.active = 0          # admitted inference requests; touched only on the event loop thread
        self.buffered = 0        # body bytes received and held by all requests

    def _hold(self, n: int) -> None:
        self.buffered += n
        self.metrics.buffered_bytes = self.buffered

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > self.max_body:
            # Decided from the header alone; a body too large to drain is not read at all.
            budget = declared if declared <= self.max_body + self.DRAIN_BYTES else 0
            return await self._refuse(receive, send, 413, f"request body of {declared} bytes exceeds the limit of "
                                                          f"{self.max_body} bytes (max_body_bytes).", budget)
        held, started = 0, time.perf_counter()
        try:
            body = bytearray()      # grown in place (realloc, mremap when large): never a second copy
            if declared or b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                refusal = None
                try:
                    with anyio.fail_after(self.body_timeout):
                        while True:
                            message = await receive()
                            if message["type"] == "http.disconnect":
                                return
                            chunk, more = message.get("body", b""), message.get("more_body", False)
                            if held + len(chunk) > self.max_body:
                                refusal = (413, f"request body exceeds the limit of {self.max_body} bytes "
                                                "(max_body_bytes).", [])
                            elif self.buffered + len(chunk) > self.max_buffered:
                                refusal = (503, f"server busy: {self.buffered} bytes of request bodies are "
                                                f"buffered (max_buffered_bytes={self.max_buffered}); retry shortly.",
                                           [(b"retry-after", b"1")])
                            if refusal is not None:
                                break
                            body += chunk
                            self._hold(len(chunk))
                            held += len(chunk)
                            if not more:
                                break
                except TimeoutError:
                    return await send_error(send, 408, f"the request body did not arrive within {self.body_timeout:g} "
                                                       "s (body_timeout); send it at once, or split the batch.",
                                            [(b"connection", b"close")])
                if refusal is not None:
                    del body
                    self._hold(-held)
                    held = 0
                    return await self._refuse(receive, send, *refusal[:2], self.DRAIN_BYTES if more else -1,
                                              refusal[2])
                scope["state"]["body_s"] = time.perf_counter() - started
            gated = scope["method"] == "POST" and INFER_PATH.match(scope["path"]) is not None
            if gated and self.active >= self.max_concurrency:
                return await send_error(send, 503, f"server busy: {self.active} inference requests in flight "
                                                   f"(max_concurrency={self.max_concurrency}); retry shortly.",
                                        [(b"retry-after", b"1")])
            # The routes that parse bodies read them here, without a copy (edgecnn.serve.app.request_body);
            # anything reading the ASGI stream (multipart forms) gets them as bytes.
            scope["state"]["body"] = body
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()

            if gated:
                self.active += 1
            try:
                await self.app(scope, replay, send)
            finally:
                if gated:
                    self.active -= 1
        finally:
            self._hold(-held)

    async def _refuse(self, receive, send, status: int, message: str, budget: int, headers: list = ()) -> None:
        """Read and drop at most ``budget`` more body bytes (-1: the body has all arrived), then answer;
        the connection is closed when part of the body was left unread."""
        more = budget >= 0
        with anyio.move_on_after(self.body_timeout):
            while more and budget > 0:
                event = await receive()
                if event["type"] == "http.disconnect":
                    return
                budget -= len(event.get("body", b""))
                more = event.get("more_body", False)
        await send_error(send, status, message, [*headers, *([(b"connection", b"close")] if more else [])])

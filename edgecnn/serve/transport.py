"""uvicorn's HTTP protocol with the service's connection limits: slow headers, too many connections.

uvicorn has no header-read timeout (a client may take forever to finish its headers) and its
``limit_concurrency`` answers a plain-text 503. :func:`protocol_class` returns uvicorn's own
protocol (httptools when installed, else h11, as ``http="auto"`` picks) with three changes:

* a connection over ``max_connections`` gets a JSON 503 and is closed at once;
* a request whose headers are not complete ``header_timeout`` seconds after its first byte (or
  after the connection opened) gets a JSON 408 and the connection is closed;
* uvicorn's plain-text 400 for an unparseable request (a 200 KB URL, a malformed header) is JSON.

The limits are the app's :class:`~edgecnn.serve.app.ServeOptions`, found through the ASGI app chain
(``app.state.service``), so the same class works with several workers; under an app without them
the protocol is uvicorn's unchanged.
"""
from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from edgecnn.serve.metrics import log_shed

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:          # httptools not installed: uvicorn's auto choice is h11 too
    HttpToolsProtocol = None


def _service(app: Any) -> Any:
    for _ in range(8):        # uvicorn wraps the app (proxy headers, message logger): follow .app
        state = getattr(app, "state", None)
        service = getattr(state, "service", None) if state is not None else None
        if service is not None:
            return service
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class _Guarded:
    """Mixed into uvicorn's HttpToolsProtocol / H11Protocol (``self.cycle``, ``self.loop``,
    ``self.transport``, ``self.connections`` and ``self.app`` are theirs)."""

    _header_timer: Any = None
    _header_cycle: Any = None
    _limits: Any = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        service = _service(self.app)
        if service is None:
            return
        self._limits, self._metrics = service.options, service.metrics
        if len(self.connections) > self._limits.max_connections:
            self._refuse(503, f"server busy: {len(self.connections) - 1} connections open "
                              f"(max_connections={self._limits.max_connections}); retry shortly.", retry=True)
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        # A new request starts on an idle connection: its headers have header_timeout to arrive.
        if self._limits is not None and self._header_timer is None and (
                self.cycle is None or self.cycle.response_complete):
            self._arm()
        super().data_received(data)

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, f"{msg.rstrip('.')}: the request line or headers could not be parsed (a URL or a header "
                          "over the parser's limit, or malformed HTTP).")

    def _arm(self) -> None:
        self._header_cycle = self.cycle
        self._header_timer = self.loop.call_later(self._limits.header_timeout, self._header_deadline)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.cycle is not self._header_cycle:
            return          # closed, or a request's headers completed since the timer was armed
        self._refuse(408, f"the request headers did not arrive within {self._limits.header_timeout:g} s "
                          "(header_timeout).")

    def _refuse(self, status: int, message: str, retry: bool = False) -> None:
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n" + ("retry-after: 1\r\n" if retry else ""))
        if not self.transport.is_closing():
            self.transport.write(head.encode() + b"\r\n" + body)
            self.transport.close()
        if self._limits is not None:
            self._metrics.refused("<connection>", status)
            client = getattr(self, "client", None) or ("", 0)
            log_shed("connection_refused", status=status, error=message, client=client[0])


class GuardedH11Protocol(_Guarded, H11Protocol):
    """h11 (pure Python) with the service's connection limits."""


GuardedHttpToolsProtocol: type | None = None
if HttpToolsProtocol is not None:
    class GuardedHttpToolsProtocol(_Guarded, HttpToolsProtocol):  # type: ignore[no-redef]
        """httptools (C parser) with the service's connection limits."""


def protocol_class() -> type:
    """uvicorn's ``http="auto"`` protocol (httptools, else h11) with the service's connection limits."""
    return GuardedHttpToolsProtocol or GuardedH11Protocol

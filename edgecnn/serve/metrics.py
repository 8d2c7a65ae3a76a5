"""What the service tells operators: Prometheus metrics (text format 0.0.4) and JSON-line logs.

Written by hand (prometheus_client is not a dependency): a handful of counters and histograms
behind one lock. Route labels are route *templates* (``/v2/models/{name}/infer``), never the raw
path, so a client cannot grow the label set.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import sys
import threading
import time
from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOGGER_NAME = "edgecnn.serve"


class _Histogram:
    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        i = 0
        while i < len(LATENCY_BUCKETS) and seconds > LATENCY_BUCKETS[i]:
            i += 1
        self.counts[i] += 1
        self.sum += seconds
        self.count += 1


class Metrics:
    """Request counts by route/method/status, latency histograms, in-flight gauge, model events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[str, _Histogram] = {}
        self._inference: dict[tuple[str, str], _Histogram] = {}
        self._reloads: dict[tuple[str, str], int] = {}
        self._models: dict[tuple[str, str], str] = {}   # (model, version) -> sha256
        self.in_flight = 0
        self.buffered_bytes = 0        # request-body bytes held now (set by LimitMiddleware)
        self.started = time.time()

    def request_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def request_finished(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            key = (route, method, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            self._latency.setdefault(route, _Histogram()).observe(seconds)

    def refused(self, route: str, status: int) -> None:
        """A request the transport refused before the app saw it (slow headers, too many connections)."""
        with self._lock:
            key = (route, "-", str(status))
            self._requests[key] = self._requests.get(key, 0) + 1

    def observe_inference(self, model: str, version: str, seconds: float) -> None:
        with self._lock:
            self._inference.setdefault((model, version), _Histogram()).observe(seconds)

    def model_event(self, model: str, result: str) -> None:
        with self._lock:
            self._reloads[(model, result)] = self._reloads.get((model, result), 0) + 1

    def set_models(self, model: str, versions: dict[str, str]) -> None:
        with self._lock:
            self._models = {k: v for k, v in self._models.items() if k[0] != model}
            self._models.update({(model, v): sha for v, sha in versions.items()})

    def render(self) -> str:
        """The exposition text served at ``/metrics``."""
        lines: list[str] = []
        with self._lock:
            _family(lines, "edgecnn_requests_total", "counter", "HTTP requests by route template, method and status.")
            for (route, method, status), n in sorted(self._requests.items()):
                lines.append(f"edgecnn_requests_total{_labels(route=route, method=method, status=status)} {n}")
            _family(lines, "edgecnn_request_duration_seconds", "histogram", "HTTP request latency by route template.")
            for route, h in sorted(self._latency.items()):
                _histogram(lines, "edgecnn_request_duration_seconds", h, route=route)
            _family(lines, "edgecnn_inference_duration_seconds", "histogram",
                    "Time inside the runtime (onnxruntime / LiteRT) per request, without HTTP and decoding.")
            for (model, version), h in sorted(self._inference.items()):
                _histogram(lines, "edgecnn_inference_duration_seconds", h, model=model, version=version)
            _family(lines, "edgecnn_requests_in_flight", "gauge", "HTTP requests being served now.")
            lines.append(f"edgecnn_requests_in_flight {self.in_flight}")
            _family(lines, "edgecnn_request_body_bytes_buffered", "gauge",
                    "Request-body bytes received and held now, over all requests (max_buffered_bytes caps it).")
            lines.append(f"edgecnn_request_body_bytes_buffered {self.buffered_bytes}")
            _family(lines, "edgecnn_model_loads_total", "counter", "Model (re)loads by result (ok / failed).")
            for (model, result), n in sorted(self._reloads.items()):
                lines.append(f"edgecnn_model_loads_total{_labels(model=model, result=result)} {n}")
            _family(lines, "edgecnn_model_version_loaded", "gauge", "1 for each version being served, by sha256.")
            for (model, version), sha in sorted(self._models.items()):
                lines.append(f"edgecnn_model_version_loaded{_labels(model=model, version=version, sha256=sha)} 1")
        _family(lines, "process_resident_memory_bytes", "gauge", "Resident set size.")
        lines.append(f"process_resident_memory_bytes {rss_bytes()}")
        _family(lines, "process_cpu_seconds_total", "counter", "User and system CPU time.")
        t = os.times()
        lines.append(f"process_cpu_seconds_total {t.user + t.system:.3f}")
        _family(lines, "process_start_time_seconds", "gauge", "Start time, seconds since the epoch.")
        lines.append(f"process_start_time_seconds {self.started:.3f}")
        return "\n".join(lines) + "\n"


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; the peak from getrusage elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _family(lines: list[str], name: str, kind: str, help_: str) -> None:
    lines.append(f"# HELP {name} {help_}")
    lines.append(f"# TYPE {name} {kind}")


def _histogram(lines: list[str], name: str, h: _Histogram, **labels: str) -> None:
    cumulative = 0
    for bound, n in zip((*LATENCY_BUCKETS, float("inf")), h.counts):
        cumulative += n
        le = "+Inf" if bound == float("inf") else repr(bound)
        lines.append(f"{name}_bucket{_labels(**labels, le=le)} {cumulative}")
    lines.append(f"{name}_sum{_labels(**labels)} {h.sum:.6f}")
    lines.append(f"{name}_count{_labels(**labels)} {h.count}")


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


# ---------------------------------------------------------------- JSON-line logs


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus the record's ``fields`` extra."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn and the service: JSON lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": handler},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": lvl, "propagate": False},
            "uvicorn.error": {"handlers": ["default"], "level": lvl, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            LOGGER_NAME: {"handlers": ["default"], "level": lvl, "propagate": False},
        },
    }


def log_event(event: str, level: int = logging.INFO, exc_info: Any = None, **fields: Any) -> None:
    """Log one structured event on the ``edgecnn.serve`` logger."""
    logging.getLogger(LOGGER_NAME).log(level, event, extra={"fields": {"event": event, **fields}}, exc_info=exc_info)


SHED_LOG_INTERVAL_S = 1.0
_shed_lock = threading.Lock()
_shed_last: dict[tuple[str, Any], tuple[float, int]] = {}     # (event, status) -> (last logged, not logged since)


def log_shed(event: str, **fields: Any) -> None:
    """A refusal under overload or attack (408, 503): a WARNING, at most one line per second per
    (event, status); the line that is written carries ``suppressed``, how many were not. Metrics
    count every one of them."""
    key, now = (event, fields.get("status")), time.monotonic()
    with _shed_lock:
        last, suppressed = _shed_last.get(key, (-SHED_LOG_INTERVAL_S, 0))
        if now - last < SHED_LOG_INTERVAL_S:
            _shed_last[key] = (last, suppressed + 1)
            return
        _shed_last[key] = (now, 0)
    log_event(event, level=logging.WARNING, suppressed=suppressed, **fields)

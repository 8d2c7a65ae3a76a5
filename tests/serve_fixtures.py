"""Helpers for tests/test_serve.py: a tiny real model's artifacts and a server subprocess.

Artifacts come from a tiny tf_keras model (32x32x3 -> conv -> GAP -> dense(3)) converted to ONNX
and TFLite; no training. ``Server`` runs ``python -m edgecnn.serve`` (the entry point the Docker
image runs) bound to 127.0.0.1 on a free port, logging to a file.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from edgecnn.export.manifest import add_artifact, init_manifest

LABELS = ["crack", "good", "scratch"]


def _tiny_model(seed: int):
    from edgecnn._tf import keras, tf

    tf.random.set_seed(seed)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(LABELS), activation="softmax", name="probs")(x)
    return keras.Model(inp, out)


def _to_onnx(model, path: Path) -> None:
    import tf2onnx

    from edgecnn._tf import tf

    tf2onnx.convert.from_keras(model, input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.float32, name="image")],
                               opset=17, output_path=str(path))


def _spec(name, shape):
    return {"name": name, "shape": shape, "dtype": "float32", "quantization": None}


def record_onnx(run_dir: Path, filename: str = "model.onnx") -> None:
    add_artifact(run_dir, filename, format="onnx", precision="fp32", runtime="onnxruntime", stage="export",
                 parent="model.keras", input=_spec("image", [None, 32, 32, 3]), output=_spec("probs", [None, 3]))


def build_run(root: Path) -> Path:
    """``root/tiny/`` (model.keras, model.onnx, model.fp32.tflite, manifest.json) and ``root/alt.onnx``
    (same architecture, other weights: the "new version" for reload tests)."""
    from edgecnn._tf import tf

    run = root / "tiny"
    run.mkdir()
    model = _tiny_model(seed=1)
    model.save(run / "model.keras")
    _to_onnx(model, run / "model.onnx")
    (run / "model.fp32.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    _to_onnx(_tiny_model(seed=2), root / "alt.onnx")
    init_manifest(run, name="tiny", model={"name": "tiny", "input_size": 32, "num_classes": 3}, labels=LABELS,
                  preprocessing={"input_range": [0, 255], "color": "RGB", "layout": "NHWC", "in_graph": True,
                                 "resize": [32, 32]})
    add_artifact(run, "model.keras", format="keras", precision="fp32", runtime="keras", stage="train")
    record_onnx(run)
    add_artifact(run, "model.fp32.tflite", format="tflite", precision="fp32", runtime="litert", stage="export",
                 parent="model.keras", input=_spec("image", [None, 32, 32, 3]), output=_spec("probs", [None, 3]))
    return run


_RUNS: dict[str, Path] = {}


def shared_run(tmp_path_factory) -> Path:
    """``build_run`` once per test process, for every serve test module (converting costs seconds)."""
    if "tiny" not in _RUNS:
        _RUNS["tiny"] = build_run(tmp_path_factory.mktemp("serve"))
    return _RUNS["tiny"]


@pytest.fixture(scope="module", name="http")
def http_fixture(server):
    """An httpx client of the importing module's ``server`` fixture (one per module: building an SSL
    context per test costs ~0.2 s)."""
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m edgecnn.serve`` in a subprocess, logs in a file (never a pipe that could fill)."""

    def __init__(self, target: Path, *args: str, log_dir: Path, env: dict[str, str] | None = None,
                 scheme: str = "http"):
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecnn.serve", str(target), "--host", "127.0.0.1", "--port", str(self.port),
             "--threads", "1", *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )

    def wait_ready(self, timeout: float = 60.0, verify: bool | str = True) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0, verify=verify).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def stop_cleanly(self) -> None:
        """SIGTERM, then check it drained and exited: uvicorn re-raises the signal after a graceful
        shutdown, so the exit status is -SIGTERM (143 in a shell), after our "stopped" event."""
        code = self.stop()
        assert code in (0, -signal.SIGTERM), f"exit {code}:\n{self.log_text()[-3000:]}"
        assert any(e.get("event") == "stopped" for e in self.log_events()), self.log_text()[-3000:]

    def memory_kib(self, field: str = "VmRSS") -> int:
        """The server process's ``/proc/PID/status`` field (VmRSS: now, VmHWM: peak since reset_peak)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux: ``echo 5 > /proc/PID/clear_refs``)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return events


def png_bytes(size=(40, 30), color=(200, 30, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height but whose data is a few bytes (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))

"""What the arm64 runtimes share: the long-lived emulated child process and the runner over it.

:class:`Arm64Child` starts the arm64 root's Python under qemu-user once per runner
(``_arm64_worker.py``) and feeds it batches over pipes (raw arrays behind a JSON header);
:class:`Arm64Runner` is a :class:`~edgecnn.runtime.base.Runner` over it that

- quantises inputs and dequantises outputs on the host, with the same functions as the host runners,
  so the only difference between ``litert`` and ``litert-arm64`` is the kernels that ran;
- gives **no latency**: qemu-user emulates the instructions (exact numerics, ~60x slower than native),
  so its times say nothing of a device. ``measures_latency = False`` tells the evaluate loop not to time
  it, and its report entry has ``"latency": {}`` and a ``latency_note``;
- keeps, through :meth:`Runner.evaluated`, the split and its answers, and reports in ``extra_figures()``
  the agreement with the same file in the host runtime on the same images (``target``), which is what
  the ``min_target_agreement`` budget judges.
"""
from __future__ import annotations

import json
import logging
import struct
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgecnnError, RuntimeRefusal
from edgecnn.runtime import arm64_root
from edgecnn.runtime.base import Runner, TensorSpec, dequantize, quantize

log = logging.getLogger("edgecnn.runtime.arm64")
WORKER = Path(__file__).with_name("_arm64_worker.py")
LATENCY_NOTE = ("none: the arm64 kernels run emulated (qemu-user, ~60x slower than a device); this entry is for "
                "accuracy and agreement only - measure latency on the device")
MAX_CHANGED_LISTED = 50


def arm64_refusal() -> str | None:
    """Why the arm64 runtimes cannot run on this machine, or None (cheap; builds nothing)."""
    return arm64_root.root_refusal()


def smoke() -> None:
    """The registry's availability probe: raise when this machine can neither run nor build the root."""
    why = arm64_refusal()
    if why is not None:
        raise RuntimeRefusal(why)


def int8_refusal(path: Path) -> str | None:
    """None for an int8 artifact (the manifest's precision, or ``int8`` in the file name when there is no
    manifest), else why the arm64 runtimes leave it out: float kernels agree across ISAs (measured 1.0000 on
    model.fp32.tflite), and each file costs minutes under emulation."""
    manifest = path.parent / "manifest.json"
    precision = None
    if manifest.is_file():
        try:
            precision = (json.loads(manifest.read_text()).get("artifacts", {}).get(path.name) or {}).get("precision")
        except (OSError, ValueError):
            precision = None
    if precision is None:
        precision = "int8" if ".int8" in path.name else "float"
    return None if precision == "int8" else f"it runs int8 artifacts only (this one is {precision})"


class Arm64Child:
    """The emulated worker: ``open`` once, then ``run`` batches; ``close`` ends it."""

    def __init__(self, engine: str, path: Path, threads: int | None, *, command: list[str] | None = None):
        """Start the worker in the arm64 root (built on first use), or with ``command`` (a Python and
        :data:`WORKER`; the tests run the protocol with this machine's Python)."""
        env = cwd = None
        if command is None:
            root = arm64_root.ensure_root()
            command = arm64_root.python_command(root, str(WORKER))
            env, cwd = arm64_root.child_env(root, threads), str(root)
        self._stderr = tempfile.TemporaryFile()
        self._lock = threading.Lock()
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                         env=env, cwd=cwd)
        except OSError as e:
            raise RuntimeRefusal(f"could not start the arm64 Python under qemu-user: {e}") from e
        self.info = self.request({"op": "open", "engine": engine, "path": str(path.resolve()), "threads": threads})[0]

    def request(self, header: dict, arrays: tuple[np.ndarray, ...] = ()) -> tuple[dict, list[np.ndarray]]:
        with self._lock:
            meta = dict(header, arrays=[{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays])
            body = json.dumps(meta).encode()
            try:
                self.proc.stdin.write(struct.pack("<Q", len(body)) + body)
                for a in arrays:
                    self.proc.stdin.write(np.ascontiguousarray(a).tobytes())
                self.proc.stdin.flush()
                reply, out = self._read()
            except (BrokenPipeError, EOFError) as e:
                raise EdgecnnError(f"the arm64 worker ended (exit {self.proc.poll()}): {self._tail()}") from e
        if "error" in reply:
            raise EdgecnnError(f"arm64 worker: {reply['error']}")
        return reply, out

    def _read(self) -> tuple[dict, list[np.ndarray]]:
        raw = self._exact(8)
        header = json.loads(self._exact(struct.unpack("<Q", raw)[0]))
        arrays = []
        for a in header.get("arrays", []):
            dtype, shape = np.dtype(a["dtype"]), tuple(a["shape"])
            n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            arrays.append(np.frombuffer(self._exact(n), dtype=dtype).reshape(shape).copy())
        return header, arrays

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.proc.stdout.read(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _tail(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-4:]) or "no output"

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                body = b'{"op": "close"}'          # no reply: the worker returns
                proc.stdin.write(struct.pack("<Q", len(body)) + body)
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        self._stderr.close()


def register_arm64(name: str, *, suffix: str, package: str, description: str):
    """``register_runtime`` with what every arm64 runtime shares: opt-in (``evaluated_by_default=False``:
    emulated, ~60x slower than native), int8 files only, the root's availability probe, and ``package``
    naming the aarch64 wheel that runs (the host needs no copy of it)."""
    from edgecnn.runtime.arm64_root import WHEEL_VERSIONS
    from edgecnn.runtime.registry import register_runtime

    return register_runtime(name, suffixes=(suffix,), default_for=(), package=f"{package} (aarch64 "
                            f"{WHEEL_VERSIONS[package]})", module="edgecnn.runtime.arm64_root", thread_safe=False,
                            smoke=smoke, accepts=int8_refusal, evaluated_by_default=False,
                            pinned_version=WHEEL_VERSIONS[package],
                            install="qemu-user-static debootstrap (apt-get; a cached root is built on first use)",
                            description=f"{description} under qemu-user: int8 answers as an arm64 phone or board "
                                        "computes them; no latency")


def _spec(d: dict) -> TensorSpec:
    q = d.get("quantization")
    shape = tuple(None if s == -1 else int(s) for s in d["shape"])
    return TensorSpec(d["name"], shape, d["dtype"], (float(q[0]), int(q[1])) if q else None)


class Arm64Runner(Runner):
    """A runner whose kernels are the aarch64 build of ``engine``, emulated; subclasses name the engine."""

    engine: str = ""           # the worker's engine: "litert" or "onnxruntime"
    host_runtime: str = ""     # the registered host runtime of the same library, for the agreement figures
    measures_latency = False   # emulated: the evaluate loop does not time it

    def __init__(self, path, threads=None):
        super().__init__(path, threads)
        self.child = Arm64Child(self.engine, self.path, threads)
        info = self.child.info
        self.input = _spec(info["inputs"][0])
        self.outputs = [_spec(d) for d in info["outputs"]]
        self.output = self.outputs[0]
        self.version = info.get("version")
        self._evaluated: tuple[Any, np.ndarray] | None = None
        self._figures: dict | None = None

    def _raw_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        x = quantize(images, self.input) if self.input.quantization else images.astype(self.input.dtype)
        return self.child.request({"op": "run"}, (x,))[1]

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return dequantize(self._raw_outputs(images)[0], self.output)

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        outs = self._raw_outputs(self._check_input(images))
        return [dequantize(o, s) for o, s in zip(outs, self.outputs)]

    def evaluated(self, images, outputs: np.ndarray) -> None:
        """Keep the split and the arm64 answers: :meth:`extra_figures` compares them with the host runtime's."""
        self._evaluated = (images, outputs)
        self._figures = None

    def extra_figures(self) -> dict:
        """``{"target": {...}, "latency": {}, "latency_note": ...}`` for the evaluator's report.json entry."""
        if self._figures is None:
            target = target_figures(self.path, self.backend, self.host_runtime, self.version, self.threads,
                                    self._evaluated)
            self._figures = {"target": target, "latency": {}, "latency_note": LATENCY_NOTE}
        return self._figures

    def close(self) -> None:
        self.child.close()

    def __del__(self):
        child = getattr(self, "child", None)
        if child is not None:
            try:
                child.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown; nothing to report to
                pass


def target_figures(path: Path, runtime: str, host_runtime: str, version: str | None, threads: int | None,
                   evaluated: tuple[Any, np.ndarray] | None) -> dict:
    """Which CPU the entry's figures come from, and its answers against the host runtime's on the same images.

    Returns:
        ``{"cpu": "arm64", "kernels": ..., "emulator": ..., "runtime_version", "host_runtime",
        "host_runtime_version", "host_cpu", "images", "host_agreement", "max_abs_diff", "changed"}``;
        the comparison keys are absent (``error`` says why) when the host runtime cannot run the file.
    """
    from edgecnn.runtime.latency import machine_info  # measurement helpers; imports no runtime
    from edgecnn.runtime.registry import get_runtime, load_runner

    info = arm64_root.root_info()
    fig: dict = {"cpu": "arm64", "kernels": f"aarch64 build of {get_runtime(runtime).description.split(',')[0]}",
                 "emulator": arm64_root.qemu_version(), "runtime_version": version,
                 "root": {k: info.get(k) for k in ("python", "numpy")},
                 "host_runtime": host_runtime, "host_runtime_version": get_runtime(host_runtime).version(),
                 "host_cpu": machine_info()["cpu"]}
    if evaluated is None:
        return fig
    images, probs = evaluated
    try:
        host = load_runner(path, threads=threads, runtime=host_runtime)
    except EdgecnnError as e:
        return {**fig, "error": f"no host run to compare with: {e}"}
    try:
        native = np.concatenate([host(np.asarray(images[i:i + 64], dtype=np.float32))
                                 for i in range(0, len(images), 64)])
    finally:
        host.close()
    same = native.argmax(1) == probs.argmax(1)
    changed = np.flatnonzero(~same)
    return {**fig, "images": int(len(probs)), "host_agreement": float(same.mean()),
            "max_abs_diff": float(np.abs(native - probs).max()) if len(probs) else 0.0,
            "changed": [int(i) for i in changed[:MAX_CHANGED_LISTED]]}


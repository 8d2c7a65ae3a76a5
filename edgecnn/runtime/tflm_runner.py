"""TensorFlow Lite Micro (the ``tflite-micro`` package): int8 ``.tflite`` files in the MCU interpreter.

TFLM is what Cortex-M and ESP32 firmware runs: reference kernels, one static tensor arena, no
dynamic allocation. Its Python ``Interpreter`` is the same C++ interpreter, so running a file here
answers "does it give the same answers" (accuracy, agreement with LiteRT's XNNPACK kernels) and
"does it fit" (the arena) with measurements instead of estimates.

    runner = load_runner("export/run/model.int8.tflite", runtime="tflm")  # LiteRT stays the .tflite default
    runner(images)                    # float32 RGB 0-255 NHWC in, probabilities out (batch 1, looped)
    runner.extra_figures()["mcu"]     # {"arena_bytes", "flash_bytes", "ops", "tflm_version", ...}
    find_arena_size(data)             # the smallest arena that works, found with the interpreter
    activation_memory(data)           # per op, the activation bytes live while it runs (which layer sets the arena)

The runtime runs only files whose activations are quantised (int8/int16): a float, float16 or
dynamic-range file is refused by name (:func:`tflm_refusal`), so the evaluator never measures an
fp32 file in it. It also opens ``model.int8.tflm/`` (the firmware folder written by
``edgecnn.export.tflm_c``) by reading the bytes back out of its C array, so the evaluated model is
the one that is flashed.

Memory rules (:func:`mcu_figures`):
- ``arena_bytes``: the smallest ``arena_size`` with which the interpreter allocates and invokes: the
  RecordingMicroAllocator's total, confirmed by real tries (N works, N - 1 fails), else a bisection to
  the byte. Each try is one ``AllocateTensors`` + ``Invoke`` in a child process (:class:`ArenaProbe`),
  because TFLM can end its process on a failure. The Python
  interpreter is a 64-bit build: its per-tensor and per-node structs are larger than on a 32-bit
  MCU, so the figure is an upper bound for Cortex-M / ESP32 (reference kernels).
- alignment: TFLM aligns the arena's start to 16 bytes and loses up to 15 bytes otherwise; declare
  ``alignas(16) uint8_t tensor_arena[N]``.
- ``arena_recommended_bytes``: ``arena_bytes`` + 10 % headroom (optimised kernels such as CMSIS-NN
  or ESP-NN ask for scratch buffers the reference kernels do not) + 16 bytes of alignment slack,
  rounded up to 1 KiB.
- ``flash_bytes``: the model's bytes + an ESTIMATE of the code: the TFLM core runtime (16 KiB, the
  figure TFLM's README gives for a Cortex-M3) + per kernel used, 6 KiB for convolution-like ops and
  2 KiB for the others (int8 reference kernels, -Os). Link the firmware and read its map file for
  the exact number.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgecnnError, RuntimeRefusal
from edgecnn.runtime.base import Runner, TensorSpec, dequantize, quantize
from edgecnn.runtime.registry import register_runtime

FIRMWARE_FOLDER_SUFFIX = ".tflm"     # the folder edgecnn.export.tflm_c writes
FIRMWARE_ARRAY_FILE = "model_data.cc"
ARENA_ALIGNMENT = 16
ARENA_HEADROOM = 0.10
CORE_RUNTIME_BYTES = 16 * 1024       # TFLM README: "the core runtime just fits in 16 KB on an Arm Cortex M3"
KERNEL_BYTES_LARGE = 6 * 1024        # convolution-like reference kernels (estimate)
KERNEL_BYTES_SMALL = 2 * 1024        # every other kernel (estimate)
_LARGE_KERNELS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL",
                  "UNIDIRECTIONAL_SEQUENCE_LSTM", "SVDF"}
_MAX_ARENA = 512 * 1024 * 1024

# Ops TFLM lacks (or lacks in int8) and what to build instead; anything else gets the generic fix.
_FIXES = {
    "GELU": "use relu, relu6 or hard_swish (TFLM has HARD_SWISH) instead of gelu",
    "EXP": "TFLM's EXP is float-only: replace elu/selu/softplus/exp with relu or relu6",
    "REDUCE_PROD": "use a sum or mean reduction (GlobalAveragePooling2D) instead of a product",
    "SIGN": "drop the sign op or replace it with a relu-based step",
    "LOG": "TFLM's LOG is float-only: keep log out of the int8 graph",
}
_GENERIC_FIX = ("rebuild that layer from ops TFLM has in int8 (conv, depthwise conv, dense, relu/relu6/hard_swish, "
                "average/max pooling, add, mul, reshape, softmax), or register it as a custom op in the firmware")

_lock = threading.Lock()   # fd 2 is redirected while the interpreter is built: one at a time per process


@dataclass(frozen=True)
class OpUse:
    """One operator of the model: its position, TFLM name (``CONV_2D``; ``CUSTOM:<code>`` for custom ops),
    the Keras layer(s) it came from, and its output tensor's bytes (the activation it writes)."""

    index: int
    op: str
    layer: str
    output_bytes: int


# ----------------------------------------------------------------------------------------------
# Reading the flatbuffer (tflite_micro's runtime module carries the schema; no TensorFlow)
@lru_cache(maxsize=1)
def _enums() -> tuple[dict[int, str], dict[int, str]]:
    from tflite_micro import runtime

    fb = runtime.schema_fb
    ops = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    return ops, types


_TYPE_BYTES = {"INT8": 1, "UINT8": 1, "INT16": 2, "FLOAT16": 2, "INT32": 4, "FLOAT32": 4, "INT64": 8, "BOOL": 1}


def _layer(tensor_name: bytes | str | None) -> str:
    """Keras layer names in a TFLite tensor name.

    ``model/ds1_pw_relu/Relu6;model/ds1_pw/Conv2D`` -> ``ds1_pw+ds1_pw_relu`` (fused layers, first to last).
    """
    name = tensor_name.decode() if isinstance(tensor_name, bytes) else (tensor_name or "?")
    layers = []
    for part in name.split(";"):
        bits = part.split("/")
        layer = bits[1] if len(bits) > 2 else bits[0]
        if layer not in layers:
            layers.append(layer)
    return "+".join(reversed(layers))


def _parse(data: bytes):
    from tflite_micro import runtime

    return runtime.convert_bytearray_to_object(bytearray(data))


def model_ops(data: bytes) -> list[OpUse]:
    """Every operator of a ``.tflite`` flatbuffer in execution order (subgraph 0).

    Example:
        >>> [u.op for u in model_ops(open("model.int8.tflite", "rb").read())][:3]   # doctest: +SKIP
        ['SUB', 'MUL', 'PAD']
    """
    from tflite_micro import runtime

    ops, types = _enums()
    model = _parse(data)
    sg = model.subgraphs[0]
    out = []
    for i, op in enumerate(sg.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = ops.get(runtime.get_builtin_code_from_operator_code(code), "UNKNOWN")
        if builtin == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            builtin = f"CUSTOM:{custom}"
        t = sg.tensors[op.outputs[0]] if op.outputs is not None and len(op.outputs) else None
        nbytes = 0 if t is None else int(np.prod([max(int(s), 1) for s in t.shape])) * _TYPE_BYTES.get(
            types.get(t.type, ""), 4)
        out.append(OpUse(i, builtin, _layer(None if t is None else t.name), nbytes))
    return out


@dataclass(frozen=True)
class OpMemory:
    """The activation memory live while one operator runs: every tensor already written and still to be
    read (its inputs, its outputs, and earlier outputs that later ops read), each rounded up to 16 bytes."""

    index: int
    op: str
    layer: str
    live_bytes: int
    output_bytes: int
    live_tensors: int


def activation_memory(data: bytes) -> list[OpMemory]:
    """Per operator, in execution order, the activation bytes live while it runs (subgraph 0).

    A tensor is live from the op that writes it (the graph input: from the first op) to the last op
    that reads it (a graph output: to the end); weights (tensors with data in the flatbuffer) and
    variables (persistent) are not activations. Each tensor is rounded up to TFLM's 16-byte
    alignment. The largest ``live_bytes`` is a lower bound for the arena's planned part: TFLM's
    greedy planner may fragment, and the arena also holds persistent structs and kernels' scratch
    buffers (see :func:`mcu_figures`' ``activation_peak``).

    Example:
        >>> mem = activation_memory(open("model.int8.tflite", "rb").read())   # doctest: +SKIP
        >>> max(mem, key=lambda m: m.live_bytes).layer                         # doctest: +SKIP
        'stem+stem_relu'
    """
    _, types = _enums()
    model = _parse(data)
    sg = model.subgraphs[0]
    ops = model_ops(data)
    operators = list(sg.operators or [])
    end = len(operators) - 1

    def ids(seq) -> list[int]:
        return [int(i) for i in (seq if seq is not None else []) if int(i) >= 0]

    def nbytes(i: int) -> int:
        t = sg.tensors[i]
        raw = int(np.prod([max(int(d), 1) for d in t.shape])) * _TYPE_BYTES.get(types.get(t.type, ""), 4)
        return -(-raw // ARENA_ALIGNMENT) * ARENA_ALIGNMENT

    def constant(i: int) -> bool:
        t = sg.tensors[i]
        buf = model.buffers[t.buffer] if t.buffer is not None and t.buffer < len(model.buffers) else None
        has_data = buf is not None and ((buf.data is not None and len(buf.data)) or getattr(buf, "size", 0))
        return bool(has_data or t.isVariable)

    first: dict[int, int] = {i: 0 for i in ids(sg.inputs)}
    last: dict[int, int] = {i: end for i in ids(sg.outputs)}
    for k, op in enumerate(operators):
        for i in ids(op.outputs) + ids(getattr(op, "intermediates", None)):
            first.setdefault(i, k)
        for i in ids(op.inputs) + ids(getattr(op, "intermediates", None)):
            last[i] = max(last.get(i, k), k)
    live = {i: (first[i], last.get(i, first[i])) for i in first if not constant(i)}
    out = []
    for k, u in enumerate(ops):
        now = [i for i, (a, b) in live.items() if a <= k <= b]
        out.append(OpMemory(k, u.op, u.layer, sum(nbytes(i) for i in now), u.output_bytes, len(now)))
    return out


def activation_table(mem: list[OpMemory]) -> str:
    """A plain-text table of :func:`activation_memory`, the peak op marked with ``*``."""
    peak = max((m.live_bytes for m in mem), default=0)
    width = max((len(m.layer) for m in mem), default=5)
    lines = [f"{'#':>3}  {'op':<18} {'layer':<{width}}  {'output B':>9}  {'live B':>9}  live tensors"]
    for m in mem:
        mark = " *" if m.live_bytes == peak else ""
        lines.append(f"{m.index:>3}  {m.op:<18} {m.layer:<{width}}  {m.output_bytes:>9,}  {m.live_bytes:>9,}  "
                     f"{m.live_tensors}{mark}")
    return "\n".join(lines)


def tflm_refusal(path: str | os.PathLike) -> str | None:
    """None when TFLM runs this artifact, else why not (float, float16 or dynamic-range ``.tflite``).

    A path that does not exist yet, or a firmware folder, is judged by its name only (accepted).
    """
    p = Path(path)
    if p.suffix.lower() != ".tflite" or not p.is_file():
        return None
    st = p.stat()
    return _refusal_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _refusal_cached(path: str, _size: int, _mtime: int) -> str | None:
    return refusal_of_bytes(Path(path).read_bytes(), Path(path).name)


def refusal_of_bytes(data: bytes, name: str) -> str | None:
    """None when TFLM runs this flatbuffer (its activations are int8/int16), else why not, naming ``name``."""
    try:
        _, types = _enums()
        sg = _parse(data).subgraphs[0]
        quantised = any(types.get(sg.tensors[o].type) in ("INT8", "INT16")
                        for op in (sg.operators or []) for o in (op.outputs if op.outputs is not None else []))
    except Exception as e:  # noqa: BLE001 - an unreadable flatbuffer: LiteRT will say why; TFLM does not claim it
        return f"{name} is not a readable .tflite flatbuffer ({type(e).__name__}: {e})"
    if not quantised:
        return (f"{name} has float activations; TFLite Micro runs int8 models here. Export the "
                "'tflite-int8' format (model.int8.tflite) for microcontrollers.")
    return None


# ----------------------------------------------------------------------------------------------
# Building the interpreter, with TFLM's stderr captured for the error messages
@contextlib.contextmanager
def _captured_stderr():
    """Redirect fd 2 (where TFLM's MicroPrintf writes) into a buffer; yields a list that gets the text."""
    out: list[str] = []
    with _lock, tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def _try(data: bytes, arena: int):
    """(interpreter, "") when the model allocates and invokes in ``arena`` bytes, else (None, TFLM's log)."""
    from tflite_micro import runtime

    with _captured_stderr() as log:
        try:
            interp = runtime.Interpreter.from_bytes(data, arena_size=int(arena))
            d = interp.get_input_details(0)
            interp.set_input(np.zeros(tuple(int(s) for s in d["shape"]), d["dtype"]), 0)
            interp.invoke()
            ok = interp
        except (RuntimeError, ValueError):
            ok = None
    return ok, ("" if ok is not None else log[0])


def recorded_arena(interp) -> int | None:
    """The arena the RecordingMicroAllocator says an allocated interpreter uses (``Arena allocation total``)."""
    return recorded_allocations(interp).get("total")


def recorded_allocations(interp) -> dict[str, int]:
    """The RecordingMicroAllocator's ``total``, ``head`` (the planned, non-persistent part: activations and
    scratch buffers) and ``tail`` (persistent: tensor and node structs, quantisation data, kernels' state)."""
    with _captured_stderr() as log:
        interp.print_allocations()
    return {k: int(v) for k, v in re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", log[0])}


class ArenaProbe:
    """Tries arena sizes for one model in a child process (``edgecnn.runtime._tflm_probe``).

    TFLM can end the process on a failed try (a segfault after "Failed to allocate", an assertion in
    a kernel's prepare), so no try that may fail runs in the caller's process. A child that dies
    counts as a failed try, with the signal in its log, and the next try starts a new child.
    """

    def __init__(self, data: bytes):
        self._dir = tempfile.TemporaryDirectory(prefix="edgecnn-tflm-")
        self._model = Path(self._dir.name) / "model.tflite"
        self._model.write_bytes(data)
        self._proc: subprocess.Popen | None = None
        self.tries = 0

    def attempt(self, arena: int) -> tuple[bool, str, int | None]:
        """``(works, TFLM's log, the recording allocator's total or None)`` for one arena size."""
        self.tries += 1
        if self._proc is None or self._proc.poll() is not None:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self._proc = subprocess.Popen([sys.executable, "-m", "edgecnn.runtime._tflm_probe", str(self._model)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, env=env)
        try:
            self._proc.stdin.write(json.dumps({"arena": int(arena)}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            code = self._proc.wait()
            self._proc = None
            sig = -code if code < 0 else None
            name = signal.Signals(sig).name if sig else f"exit {code}"
            return False, f"the TFLM interpreter ended its process ({name})", None
        answer = json.loads(line)
        return bool(answer["ok"]), answer["log"], answer.get("recorded")

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self._dir.cleanup()

    def __enter__(self) -> ArenaProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def arena_works(data: bytes, arena: int) -> bool:
    """Whether the TFLM interpreter allocates and invokes the model in ``arena`` bytes (one try, in a child)."""
    with ArenaProbe(data) as probe:
        return probe.attempt(arena)[0]


def _missing_op_error(data: bytes, log: str, name: str) -> EdgecnnError | None:
    """The one clear error for an op TFLM lacks (or lacks for this type), naming the op and the layer."""
    uses = model_ops(data)
    m = re.search(r"Didn't find op for builtin opcode '(\w+)'", log)
    if m:
        op = m.group(1)
        layers = [u.layer for u in uses if u.op == op]
        what = f"TFLite Micro has no {op} kernel"
    else:
        m = re.search(r"Node (\w+) \(number (\d+)\) failed to prepare", log)
        if not m:
            m2 = re.search(r"custom op '?([\w.]+)'?", log, re.IGNORECASE)
            if not m2:
                return None
            op, layers = f"CUSTOM:{m2.group(1)}", [u.layer for u in uses if u.op.startswith("CUSTOM")]
            what = "TFLite Micro has no kernel for the custom op " + m2.group(1)
        else:
            op, idx = m.group(1), int(m.group(2))
            layers = [uses[idx].layer] if idx < len(uses) else [u.layer for u in uses if u.op == op]
            detail = next((ln.strip() for ln in log.splitlines() if ln.strip() and "failed to prepare" not in ln), "")
            what = f"TFLite Micro's {op} kernel cannot run this {op} ({detail})" if detail else \
                f"TFLite Micro's {op} kernel cannot run this {op}"
    fix = _FIXES.get(op, _GENERIC_FIX)
    layer = ", ".join(dict.fromkeys(layers)) or "?"
    return RuntimeRefusal(f"{name}: {what}; needed by layer {layer}. Fix: {fix}.")


def _failure(data: bytes, log: str, name: str, arena: int) -> EdgecnnError:
    err = _missing_op_error(data, log, name)
    if err is not None:
        return err
    last = " | ".join(ln.strip() for ln in log.strip().splitlines()[-3:]) or "no message"
    return EdgecnnError(f"{name}: TFLite Micro could not run the model with a {arena}-byte arena: {last}.")


def _working_arena(data: bytes, name: str, probe: ArenaProbe) -> tuple[int, int | None]:
    """An arena that works and the recording allocator's total, doubling from 10x the model (TFLM's default)."""
    arena = max(64 * 1024, 10 * len(data))
    while True:
        ok, log, recorded = probe.attempt(arena)
        if ok:
            return arena, recorded
        err = _missing_op_error(data, log, name)
        if err is not None:
            raise err
        if "ended its process" in log:
            raise EdgecnnError(
                f"{name}: {log} while preparing the model with a {arena}-byte arena: a kernel's prepare failed an "
                "assertion (TFLM aborts instead of returning an error), e.g. a softmax whose input scale is out of "
                "the int8 kernel's range, as an untrained model's near-constant logits give. Fix: train the model "
                "(or recalibrate it on real images) before quantising it for a microcontroller.")
        if arena >= _MAX_ARENA:
            raise _failure(data, log, name, arena)
        arena = min(arena * 2, _MAX_ARENA)


def find_arena_size(data: bytes, name: str = "model") -> int:
    """The smallest tensor arena (bytes) with which TFLM allocates and invokes the model.

    The recording allocator's total is tried first (N works, N - 1 fails: done in two tries);
    otherwise a bisection between 0 and a working arena, every try in a child process (ArenaProbe).

    Args:
        data: the ``.tflite`` flatbuffer.
        name: how errors name the model.

    Returns:
        The size N such that N bytes work and N - 1 do not (the interpreter's buffer is 16-byte aligned).

    Raises:
        EdgecnnError: an op TFLM lacks (naming the op, the layer and the fix), a model TFLM aborts on,
            or one that does not run even in a 512 MiB arena.
    """
    with ArenaProbe(data) as probe:
        hi, recorded = _working_arena(data, name, probe)
        lo = 0                      # lo fails (or is 0), hi works
        if recorded and recorded < hi:
            if probe.attempt(recorded)[0]:
                hi = recorded
                if not probe.attempt(recorded - 1)[0]:
                    return recorded
                lo = 0
            else:
                lo = recorded
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if probe.attempt(mid)[0]:
                hi = mid
            else:
                lo = mid
        return hi


def kernel_bytes_estimate(ops: list[str]) -> int:
    """Estimated flash for TFLM's core runtime and the kernels of these ops (see the module docstring)."""
    return CORE_RUNTIME_BYTES + sum(KERNEL_BYTES_LARGE if op in _LARGE_KERNELS else KERNEL_BYTES_SMALL
                                    for op in sorted(set(ops)))


def mcu_figures(data: bytes, name: str = "model") -> dict:
    """Arena, flash and ops of a model in TFLM, as written into report.json's ``"mcu"`` entry.

    Returns:
        ``arena_bytes`` (minimal, measured), ``arena_recommended_bytes``, ``flash_bytes`` (model +
        estimated code), ``model_bytes``, ``kernel_bytes_estimate``, ``ops`` (distinct, in first-use
        order), ``op_count``, ``peak_layer`` (the layer writing the largest activation),
        ``activations`` (per op: the live activation bytes, :func:`activation_memory`),
        ``activation_peak`` (the op and layer where that peaks, with the arena's planned ``head``
        and persistent ``tail`` parts and the arena minus the peak), ``tflm_version`` and
        ``rules`` (how each figure is found).
    """
    arena = find_arena_size(data, name)
    uses = model_ops(data)
    ops = list(dict.fromkeys(u.op for u in uses))
    kernels = kernel_bytes_estimate(ops)
    peak = max(uses, key=lambda u: u.output_bytes, default=None)
    mem = activation_memory(data)
    live_peak = max(mem, key=lambda m: m.live_bytes, default=None)
    interp, _ = _try(data, arena)            # arena works (found above): safe in this process
    alloc = recorded_allocations(interp) if interp is not None else {}
    del interp
    recommended = -(-int(arena * (1 + ARENA_HEADROOM) + ARENA_ALIGNMENT) // 1024) * 1024
    return {
        "arena_bytes": arena, "arena_recommended_bytes": recommended,
        "flash_bytes": len(data) + kernels, "model_bytes": len(data), "kernel_bytes_estimate": kernels,
        "ops": ops, "op_count": len(uses),
        "peak_layer": None if peak is None else {"layer": peak.layer, "op": peak.op, "output_bytes": peak.output_bytes},
        "activation_peak": None if live_peak is None else {
            "bytes": live_peak.live_bytes, "op_index": live_peak.index, "op": live_peak.op, "layer": live_peak.layer,
            "arena_head_bytes": alloc.get("head"), "arena_tail_bytes": alloc.get("tail"),
            "arena_minus_peak_bytes": arena - live_peak.live_bytes},
        "activations": [{"op_index": m.index, "op": m.op, "layer": m.layer, "output_bytes": m.output_bytes,
                         "live_bytes": m.live_bytes} for m in mem],
        "tflm_version": tflm_version(),
        "rules": {
            "arena": "smallest arena_size that allocates and invokes, by bisection with the TFLM interpreter "
                     "(64-bit build: an upper bound for 32-bit MCUs; reference kernels)",
            "alignment": f"declare alignas({ARENA_ALIGNMENT}) uint8_t tensor_arena[N]; unaligned arenas lose up "
                         f"to {ARENA_ALIGNMENT - 1} bytes",
            "recommended": f"arena_bytes + {ARENA_HEADROOM:.0%} (optimised kernels' scratch) + {ARENA_ALIGNMENT} "
                           "bytes, rounded up to 1 KiB",
            "activations": "per op, the activation tensors live while it runs (written by then, read at or after "
                           f"it; graph input and output included), each rounded up to {ARENA_ALIGNMENT} bytes. The "
                           "peak is a lower bound for the arena: the arena adds the planner's fragmentation and "
                           "kernels' scratch buffers (arena_head_bytes, the planned part) and persistent tensor, "
                           "node and quantisation structs (arena_tail_bytes)",
            "flash": f"model bytes + {CORE_RUNTIME_BYTES // 1024} KiB core runtime + {KERNEL_BYTES_LARGE // 1024} "
                     f"KiB per conv-like kernel + {KERNEL_BYTES_SMALL // 1024} KiB per other kernel (estimate)",
        },
    }


def tflm_version() -> str:
    try:
        return _dist_version("tflite-micro")
    except Exception:  # noqa: BLE001 - a version we cannot read is reported as unknown, not raised
        return "unknown"


def read_firmware_array(folder: str | os.PathLike) -> bytes:
    """The model bytes held in a firmware folder's ``model_data.cc`` C array."""
    src = Path(folder) / FIRMWARE_ARRAY_FILE
    if not src.is_file():
        raise EdgecnnError(f"{Path(folder).name}: no {FIRMWARE_ARRAY_FILE} in the firmware folder; export the "
                           "'tflm-c' format again.")
    text = src.read_text()
    body = text[text.index("{", text.index("[]")) + 1:text.index("};")]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-fA-F]{2})", body))


def read_model(artifact: str | os.PathLike) -> bytes:
    """The flatbuffer of an int8 ``.tflite`` file or of a ``.tflm`` firmware folder, refused by name when TFLM
    cannot run it (missing, float)."""
    p = Path(artifact)
    if not p.exists():
        raise EdgecnnError(f"{p}: no such file or folder; give an int8 .tflite file (model.int8.tflite) or a "
                           f"firmware folder (model.int8{FIRMWARE_FOLDER_SUFFIX}).")
    data = read_firmware_array(p) if p.is_dir() else p.read_bytes()
    why = refusal_of_bytes(data, p.name)
    if why:
        raise RuntimeRefusal(why)
    return data


def _smoke() -> None:
    """Load and run the interpreter's own bundled sine model (float, 16 KiB arena) once."""
    from tflite_micro import runtime

    sample = Path(runtime.__file__).with_name("sine_float.tflite")
    if sample.is_file():
        with _captured_stderr():
            interp = runtime.Interpreter.from_file(str(sample), arena_size=16 * 1024)
            interp.set_input(np.zeros((1, 1), np.float32), 0)
            interp.invoke()


# One interpreter holds one set of tensors: concurrent invoke() calls corrupt each other (thread_safe=False).
@register_runtime("tflm", suffixes=(".tflite", FIRMWARE_FOLDER_SUFFIX), default_for=(FIRMWARE_FOLDER_SUFFIX,),
                  package="tflite-micro", module="tflite_micro", thread_safe=False, smoke=_smoke,
                  accepts=tflm_refusal, evaluated_by_default=False,  # reference kernels: ~40x LiteRT's time
                  description="TensorFlow Lite Micro interpreter (reference kernels): int8 .tflite, exact arena size")
class TFLMRunner(Runner):
    """A TFLM interpreter at batch 1 (larger batches loop); ``threads`` is ignored (MCUs have one core)."""

    def __init__(self, path, threads=None):
        super().__init__(path, threads)
        from tflite_micro import runtime  # noqa: F401 - fail here, with the install hint, if it is missing

        p = Path(path)
        self.data = read_model(p)
        with ArenaProbe(self.data) as probe:   # a failing try may end the process: find a working arena in a child
            self.arena_size, _ = _working_arena(self.data, p.name, probe)
        self.interpreter, log = _try(self.data, self.arena_size)
        if self.interpreter is None:
            raise _failure(self.data, log, p.name, self.arena_size)
        uses = model_ops(self.data)
        model = _parse(self.data)
        sg = model.subgraphs[0]
        self.input = _spec(self.interpreter.get_input_details(0), sg.tensors[sg.inputs[0]].name)
        self.outputs = tuple(_spec(self.interpreter.get_output_details(k), sg.tensors[t].name)
                             for k, t in enumerate(sg.outputs))      # the flatbuffer's output order
        self.output = self.outputs[0]
        self.ops = list(dict.fromkeys(u.op for u in uses))
        self._figures: dict | None = None
        self._evaluated: tuple[Any, np.ndarray] | None = None   # the evaluated split and the answers to it

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self._run(images, 1)[0]

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        return self._run(self._check_input(images), len(self.outputs))

    def _run(self, images: np.ndarray, count: int) -> list[np.ndarray]:
        """The first ``count`` outputs for a checked batch, one invocation per image."""
        specs = self.outputs[:count]
        outs = [np.empty((len(images), *spec.shape[1:]), np.float32) for spec in specs]
        for i, img in enumerate(images):
            x = img[None]
            x = quantize(x, self.input) if self.input.quantization else x.astype(self.input.dtype)
            self.interpreter.set_input(x, 0)
            self.interpreter.invoke()
            for k, (out, spec) in enumerate(zip(outs, specs)):
                out[i] = dequantize(np.asarray(self.interpreter.get_output(k)), spec)[0]
        return outs

    def evaluated(self, images, outputs: np.ndarray) -> None:
        """Keep the evaluated split and TFLM's answers: :meth:`extra_figures` compares them with LiteRT's."""
        self._evaluated = (images, outputs)

    def extra_figures(self) -> dict:
        """``{"mcu": mcu_figures(...)}`` for the evaluator's report.json entry (computed once per runner), with
        ``litert_agreement`` (:func:`litert_agreement`) on the split the evaluator ran (:meth:`evaluated`)."""
        if self._figures is None:
            mcu = mcu_figures(self.data, self.path.name)
            if self._evaluated is not None:
                mcu["litert_agreement"] = litert_agreement(self.data, *self._evaluated, self.input, self.output)
            self._figures = {"mcu": mcu}
        return self._figures


LITERT_KERNELS = {"xnnpack": "AUTO", "reference": "BUILTIN_REF"}
"""LiteRT's kernels TFLM is compared with: its default (XNNPACK) and its reference kernels (TFLM's are ports)."""


def litert_agreement(data: bytes, images: np.ndarray, probs: np.ndarray, inp: TensorSpec,
                     out: TensorSpec) -> dict:
    """TFLM's answers (``probs`` on ``images``) against LiteRT's int8 answers on the same images.

    Returns:
        ``{"images": N, "xnnpack": {...}, "reference": {...}}``, per LiteRT kernel set
        (:data:`LITERT_KERNELS`): ``agreement`` (share of equal top-1 answers) and ``max_diff_steps``
        (the largest output difference, in steps of the int8 output); ``error`` instead when LiteRT is
        not installed. LiteRT's top-1 accuracy is the evaluator's own entry for the file.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as e:
        return {"images": int(len(images)), "error": f"LiteRT (ai-edge-litert) is not installed: {e}"}
    step = out.quantization[0] if out.quantization else 1.0
    res: dict = {"images": int(len(images))}
    for key, kind in LITERT_KERNELS.items():
        interp = Interpreter(model_content=data, num_threads=1,
                             experimental_op_resolver_type=getattr(OpResolverType, kind))
        interp.allocate_tensors()
        i, o = interp.get_input_details()[0], interp.get_output_details()[0]
        lite = np.empty_like(probs)
        for n, img in enumerate(images):
            interp.set_tensor(i["index"], quantize(img[None], inp) if inp.quantization else img[None].astype(inp.dtype))
            interp.invoke()
            lite[n] = dequantize(interp.get_tensor(o["index"]), out)[0]
        # the class of each row (a detector's (N, A, 4 + K): of each anchor's row)
        res[key] = {"agreement": float(np.mean(lite.argmax(-1) == probs.argmax(-1))),
                    "max_diff_steps": int(round(float(np.abs(lite - probs).max()) / step))}
    return res


def _spec(d: dict, name: bytes | str | None) -> TensorSpec:
    q = d.get("quantization_parameters") or {}
    scales, zeros = q.get("scales"), q.get("zero_points")
    quant = (float(scales[0]), int(zeros[0])) if scales is not None and len(scales) and float(scales[0]) else None
    nm = name.decode() if isinstance(name, bytes) else (name or "")
    return TensorSpec(nm, tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]).name, quant)

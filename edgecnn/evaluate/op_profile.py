"""Time per op: onnxruntime's profiler and OpenVINO's PERF_COUNT, beside the end-to-end time they add up to.

    prof = ort_profile("run/model.int8.onnx", image, runs=50, threads=1)
    prof.ops_us, prof.end_to_end_us          # the per-op sum and the measured wall time of one run
    group_ops(prof.events)                   # by export stage (input transpose, convs, Q/DQ, head, ...)
    op_types(prof.events)                    # by op type, with each op's precision (int8 / float / qdq / layout)

* onnxruntime: ``SessionOptions.enable_profiling`` (per-node kernel time from the JSON trace);
* OpenVINO: ``PERF_COUNT`` + ``InferRequest.get_profiling_info()`` (per-layer real time, exec type);
* LiteRT: the Python ``Interpreter`` has no per-op profiler (it is in the C++ ``benchmark_model``
  tool, ``--enable_op_profiling``, not in the pip wheel): only its end-to-end time is measured.

Both profilers run ``warmup`` untimed runs first, then ``runs`` runs that are both profiled and timed
by the wall clock around the call, so the per-op sum and the end-to-end figure describe the same runs
(those within 1.5x the median time: on a shared CPU a preempted run is slow by time no op accounts for).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["OpProfile", "ort_profile", "ov_profile", "group_ops", "op_types", "op_precision", "summarise_profile",
           "CONV", "QDQ"]

CONV = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NchwcConv", "Convolution", "GroupConvolution"}
HEAVY_HEAD = {"Gemm", "MatMul", "QGemm", "QLinearMatMul", "FullyConnected", "MatMulInteger"}
QDQ = {"QuantizeLinear", "DequantizeLinear", "FakeQuantize", "DynamicQuantizeLinear"}
LAYOUT = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Reorder", "ReorderInput", "ReorderOutput",
          "Concat", "Split", "VariadicSplit", "Expand", "Pad", "Gather", "Shape", "Slice", "Identity", "Constant"}


@dataclass
class OpProfile:
    """One artifact's per-op profile in one runtime.

    Attributes:
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        events: ``(name, op type, mean microseconds per run)`` in execution order. OpenVINO's names
            carry the exec type after a ``|`` (``conv1|brgconv_avx512_I8``): the kernel and its precision.
        end_to_end_us: mean wall-clock time of one profiled run (the call from Python, profiler on), over
            the typical runs (within 1.5x the median: a run the scheduler preempted is left out of both
            figures, since no op accounts for the time it was off the CPU).
        runs, threads: how it was measured.
    """

    runtime: str
    events: list[tuple[str, str, float]]
    end_to_end_us: float
    runs: int
    threads: int
    extra: dict = field(default_factory=dict)

    @property
    def ops_us(self) -> float:
        """The per-op times added up (one run)."""
        return float(sum(us for *_, us in self.events))

    @property
    def coverage(self) -> float:
        """``ops_us / end_to_end_us``: how much of the measured time the per-op figures account for."""
        return self.ops_us / self.end_to_end_us if self.end_to_end_us > 0 else 0.0


def ort_profile(path: str | os.PathLike, image: np.ndarray, runs: int = 50, threads: int = 1, *,
                warmup: int = 5) -> OpProfile:
    """Per-node mean time from onnxruntime's profiler, over ``runs`` runs after ``warmup`` untimed ones.

    A node's time is its kernel's, plus the executor's time from the kernel's end to the next node's
    start (output allocation, dispatch, and the profiler's own recording, a few microseconds per node):
    what the node costs the run. ``extra["kernels_us"]`` is the kernels alone, ``extra["model_run_us"]``
    onnxruntime's own time of the run. The trace's ``model_run`` events delimit the runs, so the warm-up
    runs' nodes are left out.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    image = np.asarray(image, np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(warmup):
            sess.run(None, {name: image})
        wall = np.empty(runs)
        for i in range(runs):
            t0 = time.perf_counter()
            sess.run(None, {name: image})
            wall[i] = (time.perf_counter() - t0) * 1e6
        trace = json.loads(Path(sess.end_profiling()).read_text())
    model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace if e.get("name") == "model_run")[-runs:]
    starts = [a for a, _ in model_runs]
    kernels: list[list[dict]] = [[] for _ in model_runs]
    for e in trace:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        k = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if k >= 0 and e["ts"] <= model_runs[k][1]:   # else a warm-up run's node
            kernels[k].append(e)
    per_run: list[dict[str, float]] = []
    order: dict[str, str] = {}
    kernel_us = []
    for run in kernels:
        run.sort(key=lambda e: e["ts"])
        steps: dict[str, float] = defaultdict(float)
        for i, e in enumerate(run):
            node = e["name"][: -len("_kernel_time")]
            # the kernel, then the executor's work until the next op starts (allocation, dispatch, the trace itself)
            steps[node] += (run[i + 1]["ts"] - e["ts"]) if i + 1 < len(run) else e["dur"]
            order.setdefault(node, e["args"].get("op_name", "?"))
        per_run.append(steps)
        kernel_us.append(sum(e["dur"] for e in run))
    keep = _typical(wall[-len(per_run):] if per_run else wall)
    events, e2e = _average(per_run, wall[-len(per_run):], keep, order)
    kept = list(keep)
    return OpProfile("onnxruntime", events, e2e, runs, threads,
                     {"typical_runs": int(keep.sum()),
                      "kernels_us": float(np.mean([u for u, k in zip(kernel_us, kept) if k])) if kernel_us else None,
                      "model_run_us": float(np.mean([b - a for (a, b), k in zip(model_runs, kept) if k]))
                      if len(model_runs) else None})


def _typical(wall: np.ndarray) -> np.ndarray:
    """The runs to average: those within 1.5x the median wall time. On a shared CPU a run the scheduler
    preempted is slow by time no op accounts for; it is left out of both figures, so they describe the same runs."""
    return np.asarray(wall) <= 1.5 * float(np.median(wall))


def _average(per_run: list[dict[str, float]], wall: np.ndarray, keep: np.ndarray,
             order: dict[str, str]) -> tuple[list[tuple[str, str, float]], float]:
    n = max(1, int(keep.sum()))
    events = [(nm, op, sum(r.get(nm, 0.0) for r, k in zip(per_run, keep) if k) / n) for nm, op in order.items()]
    return events, float(np.asarray(wall)[keep].mean()) if keep.any() else float(np.mean(wall))


def ov_profile(path: str | os.PathLike, image: np.ndarray, runs: int = 50, threads: int = 1, *,
               warmup: int = 5) -> OpProfile:
    """Per-layer mean real time from OpenVINO's PERF_COUNT, in execution order, with the runner's settings.

    PERF_COUNT times each executed node (the request reports each node's mean over all its infers so
    far, so the timed runs' mean is taken from the reports before and after them); the request's own
    work between and around the nodes (a few tens of microseconds) is in ``end_to_end_us`` only, so on
    a small model the per-op sum falls short of it. The runs go in ten chunks, each with its own
    per-node means, so a chunk the scheduler preempted is left out of the per-op figures; the
    end-to-end figure is the mean of the runs within 1.5x the median. On a loaded CPU the request's
    hand-off to its worker thread (waking it) adds time outside every node: the gap grows with the load.
    """
    import openvino as ov

    path = Path(path)
    xml = next(path.glob("*.xml")) if path.is_dir() else path
    core = ov.Core()
    model = core.read_model(str(xml))
    port = model.input(0)
    model.reshape({port.get_any_name(): [1, *[int(d.get_length()) for d in port.get_partial_shape()[1:]]]})
    # the settings edgecnn's OpenVINO runner uses (f32: on bf16/AMX CPUs the plugin would pick bf16)
    compiled = core.compile_model(model, "CPU", {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads,
                                                 "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                                                 "INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    image = np.ascontiguousarray(image, np.float32)
    req.set_input_tensor(ov.Tensor(image, shared_memory=True))   # no copy per call: the infer itself is timed

    def means() -> dict[str, tuple[str, float]]:
        # OpenVINO reports each node's mean over every infer of the request so far, not the last one's time
        return {p.node_name: (f"{p.node_type}:{p.exec_type}", p.real_time.total_seconds() * 1e6)
                for p in req.get_profiling_info() if p.status.name == "EXECUTED"}

    warmup = max(1, warmup)
    for _ in range(warmup):
        req.infer()
    # chunks of runs, each with its per-node means and wall time; a chunk the scheduler preempted is left out
    chunk = max(5, runs // 10)
    done, before = warmup, means()
    per_chunk: list[dict[str, float]] = []
    walls = []
    each: list[float] = []
    for _ in range(max(1, runs // chunk)):
        for _ in range(chunk):
            t0 = time.perf_counter()
            req.infer()
            each.append((time.perf_counter() - t0) * 1e6)
        walls.append(float(np.mean(each[-chunk:])))
        after = means()
        # the chunk's mean: (mean over all x all - mean before it x before) / chunk
        per_chunk.append({n: max(0.0, (us * (done + chunk) - before.get(n, ("", 0.0))[1] * done) / chunk)
                          for n, (_, us) in after.items()})
        done, before = done + chunk, after
    wall = np.asarray(walls)
    keep = _typical(wall)
    order = {n: t for n, (t, _) in before.items()}
    events, _ = _average(per_chunk, wall, keep, order)
    each_run = np.asarray(each)
    e2e = float(each_run[_typical(each_run)].mean())   # the typical runs, as for onnxruntime
    # the exec type (e.g. "jit_avx2_1x1_I8") rides in the name, where group_ops looks for the precision
    events = [(f"{n}|{order[n].split(':', 1)[1]}", order[n].split(":")[0], us) for n, _, us in events]
    return OpProfile("openvino", events, e2e, chunk * len(walls), threads,
                     {"chunks": len(walls), "typical_chunks": int(keep.sum())})


def op_precision(name: str, op: str) -> str:
    """What an executed op computes in: ``"int8"``, ``"qdq"`` (quantise / dequantise), ``"layout"`` (data
    movement) or ``"float"``. onnxruntime says it in the op type (``QLinearConv``, ``QGemm``,
    ``MatMulInteger``), OpenVINO in the exec type (``brgconv_avx512_I8``)."""
    exec_type = name.rpartition("|")[2] if "|" in name else ""
    if op in QDQ:
        return "qdq"
    if (op.startswith("QLinear") or op in ("QGemm", "QAttention") or "Integer" in op
            or exec_type.endswith(("_I8", "_U8")) or "_I8" in exec_type or "_U8" in exec_type):
        return "int8"
    if op in LAYOUT or op.startswith("Reorder"):
        return "layout"
    return "float"


def op_types(events: list[tuple[str, str, float]]) -> dict[str, dict]:
    """Per-op-type totals, slowest first: ``{op type: {"us", "count", "precision"}}``; an op type that ran in
    two precisions (OpenVINO's ``Convolution`` in I8 and FP32) gets one row per precision, ``"Convolution (float)"``."""
    rows: dict[tuple[str, str], dict] = {}
    for name, op, us in events:
        prec = op_precision(name, op)
        row = rows.setdefault((op, prec), {"us": 0.0, "count": 0, "precision": prec})
        row["us"] += us
        row["count"] += 1
    ops = [op for op, _ in rows]
    out = {(op if ops.count(op) == 1 else f"{op} ({prec})"): row for (op, prec), row in rows.items()}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["us"]))


def group_ops(events: list[tuple[str, str, float]]) -> dict[str, float]:
    """Sum (name, op type, microseconds) events, in execution order, into export-stage groups.

    ``input_transpose`` (the NHWC -> NCHW Transpose), ``normalisation`` (elementwise ops before the first
    convolution), ``quantize_input`` (the Q/DQ before the first convolution), ``conv_int8`` /
    ``conv_float``, ``qdq`` (the other QuantizeLinear/DequantizeLinear), ``head`` (everything after the
    last convolution) and ``other``.
    """
    convs = [i for i, (_, op, _) in enumerate(events) if op in CONV or "onv" in op]
    first, last = (convs[0], convs[-1]) if convs else (len(events), -1)
    out: dict[str, float] = defaultdict(float)
    for i, (name, op, us) in enumerate(events):
        if i > last:
            g = "head"
        elif op == "Transpose" or ("Reorder" in op and i < first):
            g = "input_transpose" if i < first else "other"
        elif i < first and op in QDQ:
            g = "quantize_input"
        elif i < first:
            g = "normalisation"
        elif op in QDQ:
            g = "qdq"
        elif i in convs:
            g = "conv_int8" if op.startswith("QLinear") or "Integer" in op or "I8" in name or "U8" in name.upper() \
                else "conv_float"
        else:
            g = "other"
        out[g] += us
    return dict(out)


def summarise_profile(profile: OpProfile, top: int = 8) -> dict:
    """A profile as JSON: end-to-end and per-op totals, the stage groups, the op types, the slowest ops,
    and the share of time in each precision (int8 / float / qdq / layout)."""
    groups = group_ops(profile.events)
    total = profile.ops_us
    share = defaultdict(float)
    for name, op, us in profile.events:
        share[op_precision(name, op)] += us
    return {"runtime": profile.runtime, "threads": profile.threads, "runs": profile.runs,
            "end_to_end_us": round(profile.end_to_end_us, 1), "total_us": round(total, 1),
            "ops_over_end_to_end": round(profile.coverage, 4),
            "groups_us": {k: round(v, 1) for k, v in groups.items()},
            "groups_share": {k: round(v / total, 4) for k, v in groups.items()} if total else {},
            "precision_share": {k: round(v / total, 4) for k, v in share.items()} if total else {},
            "op_types": {k: {**v, "us": round(v["us"], 1)} for k, v in op_types(profile.events).items()},
            "top_ops": [{"name": n, "op": op, "us": round(us, 1)} for n, op, us in
                        sorted(profile.events, key=lambda e: -e[2])[:top]]}

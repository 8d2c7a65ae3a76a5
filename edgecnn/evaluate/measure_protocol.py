"""Latency that holds on a noisy machine: warm-up, then windows until the last few agree.

The protocol follows Triton's perf_analyzer (repeat measurement windows until the last three
agree within a stability percentage, or give up at a time cap) and TFLite's benchmark_model
(warm-up runs, then timed runs, each window at least N runs *and* at least T seconds):

1. every artifact is timed in its own fresh subprocess (``python -m edgecnn.evaluate._measure``),
   so one artifact's allocations, thread pools and caches never disturb another's numbers;
2. warm-up: at least ``warmup_runs`` calls and ``warmup_s`` seconds;
3. windows of at least ``window_runs`` calls and ``window_s`` seconds are repeated until the last
   ``stable_windows`` windows' p50 *and* p95 have max/min - 1 <= ``tolerance_pct`` % (perf_analyzer's
   rule), or ``max_time_s`` has passed -- then the result is flagged ``stable: false``;
4. the estimate pools the last windows' samples; each percentile gets a distribution-free
   order-statistic confidence interval;
5. relative figures (candidate vs baseline, artifact vs the reference workload) come from
   subprocesses that stay alive side by side and take turns, window by window (A B A B ...), so a
   machine that slows down slows both; the ratio's interval comes from the per-round ratios.

Example:
    >>> from edgecnn.evaluate.measure_protocol import MeasureOptions, Subject, measure_group
    >>> [m] = measure_group([Subject("model.onnx", "export/run/model.onnx", threads=1)])  # doctest: +SKIP
    >>> m.stats["p95_ms"], m.ci["p95_ms"], m.stable                                        # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.runtime.latency import percentiles

log = logging.getLogger("edgecnn.check")

__all__ = ["MeasureOptions", "Subject", "Measurement", "measure_group", "paired_ratio", "quantile_ci",
           "build_conv_net", "reference_workload", "REFERENCE_VERSION"]

QUANTILES = {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0}


@dataclass(frozen=True)
class MeasureOptions:
    """How long and how carefully to time each artifact (the budget file's ``measurement:`` section).

    Attributes:
        warmup_runs, warmup_s: the warm-up lasts at least this many calls and this many seconds.
        window_runs, window_s: one measurement window is at least this many calls and seconds.
        tolerance_pct: the last ``stable_windows`` windows are stable when max/min - 1 of their
            p50s, and of their p95s, is at most this percentage.
        stable_windows: how many trailing windows must agree (perf_analyzer uses 3).
        min_rounds: for interleaved groups (baseline or reference), the fewest A-B rounds; their
            per-round ratios give the ratio's confidence interval.
        max_time_s: give up waiting for stability after this long per artifact (then ``unstable``).
        confidence: level of every confidence interval.
        processes: measure each group this many times, each time in fresh subprocesses, and pool
            the samples: the speed of one process depends on where its memory and code landed
            (a 2-core VM measured one process's p95 11 % over the median of twenty; in-process
            windows cannot see that), so two or more processes average it out.
        cpus: pin the measuring subprocesses to these CPU ids (None = inherit the affinity).
        unstable: "warn" flags an unstable measurement; "error" makes the check exit 2 instead.
    """

    warmup_runs: int = 20
    warmup_s: float = 0.5
    window_runs: int = 50
    window_s: float = 0.5
    tolerance_pct: float = 10.0
    stable_windows: int = 3
    min_rounds: int = 6
    max_time_s: float = 60.0
    processes: int = 2
    confidence: float = 0.95
    cpus: tuple[int, ...] | None = None
    unstable: str = "warn"

    def to_json(self) -> dict:
        d = asdict(self)
        d["cpus"] = list(self.cpus) if self.cpus is not None else None
        return d


@dataclass(frozen=True)
class Subject:
    """One artifact at one (threads, batch) setting, timed in its own subprocess."""

    label: str
    path: str | os.PathLike
    threads: int = 1
    batch: int = 1
    runtime: str | None = None        # a name from edgecnn.runtime.runtime_names(); None = the suffix's default


@dataclass
class Measurement:
    """What one subprocess measured. ``stats``/``ci`` pool the last ``used_windows`` windows."""

    label: str
    path: str
    backend: str
    threads: int
    batch: int
    stats: dict[str, float]
    ci: dict[str, tuple[float, float]]
    stable: bool
    spread_pct: dict[str, float]
    windows: list[dict]
    used_windows: int
    peak_rss_mb: float
    load_rss_mb: float
    affinity: list[int]
    pid: int
    load_ms: float
    duration_s: float
    window_samples: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self.window_samples[-self.used_windows:])

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "window_samples"}
        d["ci"] = {k: list(v) for k, v in self.ci.items()}
        return d


# ----------------------------------------------------------------------------------------------
# Statistics
def spread_pct(values) -> float:
    """perf_analyzer's stability figure: (max / min - 1) x 100 over the given windows."""
    v = np.asarray(values, dtype=np.float64)
    lo = float(v.min())
    return math.inf if lo <= 0 else (float(v.max()) / lo - 1.0) * 100.0


def quantile_ci(samples: np.ndarray, q: float, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the ``q``-th percentile from order statistics (normal approximation
    of the binomial count of samples below it). It assumes independent samples; consecutive
    latencies are mildly correlated, so read it together with the window-to-window spread."""
    s = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(s)
    if n == 0:
        return (math.nan, math.nan)
    p = q / 100.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * math.sqrt(n * p * (1 - p))
    lo = max(0, int(math.floor(n * p - half)) - 1)
    hi = min(n - 1, int(math.ceil(n * p + half)))
    return (float(s[lo]), float(s[hi]))


def paired_ratio(a: Measurement, b: Measurement, qa: float = 50.0, qb: float = 50.0,
                 confidence: float = 0.95) -> dict:
    """Ratio of ``a``'s qa-percentile to ``b``'s qb-percentile over interleaved windows.

    The estimate is the ratio of the pooled percentiles (robust: one window hit by a burst of
    contention moves a pooled median little). Its CI is a paired bootstrap over rounds (round i =
    a's window i and b's window i, measured back to back): rounds are resampled with replacement,
    both sides together, so the interval reflects round-to-round variation while drift common to
    both sides cancels.
    """
    n = min(a.used_windows, b.used_windows, len(a.window_samples), len(b.window_samples))
    wa, wb = a.window_samples[-n:], b.window_samples[-n:]
    est = float(np.percentile(np.concatenate(wa), qa) / np.percentile(np.concatenate(wb), qb))
    per_round = [float(np.percentile(x, qa) / np.percentile(y, qb)) for x, y in zip(wa, wb)]
    ci = (math.nan, math.nan)
    if n >= 2:
        # Each window is summarised by 201 quantiles weighted by its run count: exact enough for a
        # pooled percentile and ~100x cheaper than concatenating the raw samples per replicate.
        grid = np.linspace(0, 100, 201)
        qa_w = np.stack([np.percentile(x, grid) for x in wa])
        qb_w = np.stack([np.percentile(y, grid) for y in wb])
        na = np.asarray([len(x) for x in wa], dtype=np.float64)
        nb = np.asarray([len(y) for y in wb], dtype=np.float64)
        rng = np.random.default_rng(0)
        reps = np.empty(1000)
        for i in range(len(reps)):
            idx = rng.integers(0, n, n)
            reps[i] = (_weighted_percentile(qa_w[idx], na[idx], qa)
                       / _weighted_percentile(qb_w[idx], nb[idx], qb))
        lo, hi = np.percentile(reps, [50 * (1 - confidence), 50 * (1 + confidence)])
        ci = (float(min(lo, est)), float(max(hi, est)))
    return {"ratio": est, "ci": ci, "rounds": n, "per_round": per_round}


def _weighted_percentile(quantiles: np.ndarray, counts: np.ndarray, q: float) -> float:
    """The q-th percentile of windows given as rows of quantiles, each row weighted by its run count."""
    values = quantiles.ravel()
    weights = np.repeat(counts / quantiles.shape[1], quantiles.shape[1])
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][min(len(values) - 1, np.searchsorted(cum, q / 100 * cum[-1]))])


def _spread(windows: list[np.ndarray], k: int) -> dict[str, float]:
    last = windows[-k:]
    return {"p50": spread_pct([np.percentile(w, 50) for w in last]),
            "p95": spread_pct([np.percentile(w, 95) for w in last])}


def _is_stable(windows: list[np.ndarray], k: int, tolerance_pct: float) -> bool:
    return len(windows) >= k and max(_spread(windows, k).values()) <= tolerance_pct


# ----------------------------------------------------------------------------------------------
# The measuring subprocess
class MeasureProcess:
    """A long-lived ``python -m edgecnn.evaluate._measure`` child holding one loaded artifact."""

    def __init__(self, subject: Subject, options: MeasureOptions):
        self.subject = subject
        self.options = options
        self._stderr = tempfile.TemporaryFile()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "edgecnn.evaluate._measure"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        try:
            self.info = self.request({"cmd": "load", "path": str(subject.path), "threads": subject.threads,
                                      "batch": subject.batch, "cpus": list(options.cpus) if options.cpus else None,
                                      "runtime": subject.runtime}, timeout=120)
        except BaseException:
            self.close()
            raise

    def request(self, cmd: dict, timeout: float = 60.0) -> dict:
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise EdgecnnError(self._died("")) from None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            raise EdgecnnError(self._died(f"no answer to {cmd['cmd']!r} within {timeout:.0f} s" if not ready else ""))
        reply = json.loads(line)
        if not reply.get("ok"):
            raise EdgecnnError(f"measuring {self.subject.label} ({self.subject.path}) failed: {reply.get('error')}")
        return reply

    def _died(self, why: str) -> str:
        self.proc.poll()
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-5:]
        return (f"the measuring subprocess for {self.subject.label} ({self.subject.path}) stopped"
                f"{' (' + why + ')' if why else ''}, exit code {self.proc.returncode}: " + " | ".join(tail))

    def run(self, runs: int, min_s: float) -> np.ndarray:
        max_s = max(4 * min_s, 2.0)
        reply = self.request({"cmd": "window", "runs": runs, "min_s": min_s, "max_s": max_s}, timeout=max_s + 120)
        return np.asarray(reply["samples_ms"], dtype=np.float64)

    def close(self) -> dict:
        mem = {}
        try:
            if self.proc.poll() is None:
                mem = self.request({"cmd": "quit"}, timeout=10)
        except EdgecnnError:
            pass
        finally:
            if self.proc.poll() is None:
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout, self._stderr):
                if f is not None and not f.closed:
                    try:
                        f.close()
                    except OSError:
                        pass
        return mem


def measure_group(subjects: list[Subject], options: MeasureOptions | None = None) -> list[Measurement]:
    """Time the subjects, each in its own subprocess; two or more take turns window by window.

    The whole protocol runs ``options.processes`` times in fresh subprocesses; each subject's
    estimate pools the used windows of every repetition (and is stable only if every one was).

    Args:
        subjects: the first is the candidate; the others (baseline, reference workload) are
            interleaved with it, A B C A B C ..., so their ratios cancel machine drift.
        options: the protocol (defaults: see MeasureOptions).

    Returns:
        One Measurement per subject, in order.

    Raises:
        EdgecnnError: an artifact does not load or its subprocess dies.
    """
    o = options or MeasureOptions()
    reps = [_measure_group_once(subjects, o) for _ in range(max(1, o.processes))]
    if len(reps) == 1:
        return reps[0]
    out = []
    for per_subject in zip(*reps):
        first = per_subject[0]
        # the same number of windows from every process, so each weighs the same in the pool
        used = min(m.used_windows for m in per_subject)
        samples = [w for m in per_subject for w in m.window_samples[-used:]]
        pooled = np.concatenate(samples)
        out.append(Measurement(
            label=first.label, path=first.path, backend=first.backend, threads=first.threads, batch=first.batch,
            stats=percentiles(pooled),
            ci={name: quantile_ci(pooled, q, o.confidence) for name, q in QUANTILES.items()},
            stable=all(m.stable for m in per_subject),
            spread_pct={k: max(m.spread_pct[k] for m in per_subject) for k in first.spread_pct},
            windows=[w for m in per_subject for w in m.windows], used_windows=len(samples),
            peak_rss_mb=max(m.peak_rss_mb for m in per_subject), load_rss_mb=first.load_rss_mb,
            affinity=first.affinity, pid=first.pid, load_ms=first.load_ms,
            duration_s=sum(m.duration_s for m in per_subject), window_samples=samples))
    return out


def _measure_group_once(subjects: list[Subject], o: MeasureOptions) -> list[Measurement]:
    """One repetition of :func:`measure_group`'s protocol, in fresh subprocesses."""
    k = o.stable_windows
    min_rounds = k if len(subjects) == 1 else max(k, o.min_rounds)
    procs: list[MeasureProcess] = []
    t_start = time.perf_counter()
    try:
        for s in subjects:
            procs.append(MeasureProcess(s, o))
        for p in procs:
            p.run(o.warmup_runs, o.warmup_s)
        windows: list[list[np.ndarray]] = [[] for _ in procs]
        t0 = time.perf_counter()
        stable = False
        while True:
            for i, p in enumerate(procs):
                windows[i].append(p.run(o.window_runs, o.window_s))
            rounds = len(windows[0])
            stable = all(_is_stable(w, k, o.tolerance_pct) for w in windows)
            if stable and rounds >= min_rounds:
                break
            if time.perf_counter() - t0 >= o.max_time_s and rounds >= min(2, min_rounds):
                stable = False
                break
        mems = [p.close() for p in procs]
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.close()
    duration = time.perf_counter() - t_start
    used = min(len(windows[0]), min_rounds)
    out = []
    for s, p, w, mem in zip(subjects, procs, windows, mems):
        pooled = np.concatenate(w[-used:])
        stats = percentiles(pooled)
        ci = {name: quantile_ci(pooled, q, o.confidence) for name, q in QUANTILES.items()}
        spread = _spread(w, k)
        win = [{"p50_ms": float(np.percentile(x, 50)), "p95_ms": float(np.percentile(x, 95)), "runs": int(len(x)),
                "seconds": float(x.sum() / 1e3)} for x in w]
        out.append(Measurement(
            label=s.label, path=str(s.path), backend=p.info["backend"], threads=s.threads, batch=s.batch,
            stats=stats, ci=ci, stable=stable, spread_pct=spread, windows=win, used_windows=used,
            peak_rss_mb=float(mem.get("peak_rss_mb", math.nan)), load_rss_mb=float(p.info["rss_mb"]),
            affinity=p.info["affinity"], pid=p.info["pid"], load_ms=p.info["load_ms"], duration_s=duration,
            window_samples=w))
    return out


# ----------------------------------------------------------------------------------------------
# Reference workload (machine-speed calibration)
REFERENCE_VERSION = 1  # bump if the reference net changes: budgets in reference units change meaning


def build_conv_net(path: str | os.PathLike, *, depth: int = 6, channels: int = 32, size: int = 48,
                   classes: int = 4, seed: int = 0) -> Path:
    """Write a small fixed ONNX classifier (NHWC 0-255 float input -> softmax), built with onnx.helper.

    ``depth`` 3x3 convolutions with ReLU at ``channels`` channels: time grows linearly with depth,
    which makes it both the reference workload and an easy way to build a *measurably* slower
    artifact for tests (depth 12 vs 10 is ~20 % more work).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(np.asarray([1 / 127.5], np.float32), "scale"),
             numpy_helper.from_array(np.asarray([-1.0], np.float32), "shift")]
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["nchw", "scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "shift"], ["x0"])]
    c_in, x = 3, "x0"
    for i in range(depth):
        w = (rng.standard_normal((channels, c_in, 3, 3)) * math.sqrt(2 / (9 * c_in))).astype(np.float32)
        b = np.zeros(channels, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        c_in, x = channels, f"r{i}"
    wf = (rng.standard_normal((c_in, classes)) * 0.1).astype(np.float32)
    inits += [numpy_helper.from_array(wf, "wf"), numpy_helper.from_array(np.zeros(classes, np.float32), "bf")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(
        nodes, f"conv_net_d{depth}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgecnn")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def reference_workload(folder: str | os.PathLike) -> Path:
    """The fixed machine-speed reference (version ``REFERENCE_VERSION``): a 6-layer 32-channel 3x3
    conv net on 48x48 input in onnxruntime, a few ms per call on one core. Budgets in reference
    units (``p95_ref: 3.5``) divide an artifact's percentile by this workload's p50, measured
    interleaved with it in the same job."""
    return build_conv_net(Path(folder) / f"reference-v{REFERENCE_VERSION}.onnx", depth=6, channels=32, size=48)

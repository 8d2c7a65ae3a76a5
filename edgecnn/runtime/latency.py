"""Latency the way TFLite's benchmark_model measures it: warm-up, then many timed batch-1 runs."""
from __future__ import annotations

import os
import platform
import time

import numpy as np


def percentiles(samples_ms: np.ndarray) -> dict[str, float]:
    s = np.asarray(samples_ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(s, 50)), "p90_ms": float(np.percentile(s, 90)),
            "p95_ms": float(np.percentile(s, 95)), "p99_ms": float(np.percentile(s, 99)),
            "mean_ms": float(s.mean()), "std_ms": float(s.std()), "min_ms": float(s.min()),
            "max_ms": float(s.max()), "runs": int(len(s))}


def measure_latency(runner, image: np.ndarray, *, warmup: int = 20, runs: int = 200) -> dict[str, float]:
    """Time ``runner`` on one batch-1 image; returns p50/p90/p95/p99 (ms) over ``runs`` timed calls."""
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    for _ in range(warmup):
        runner(x)
    samples = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        runner(x)
        samples[i] = (time.perf_counter() - t0) * 1e3
    return percentiles(samples)


def interleaved_latency(runners: dict, image: np.ndarray, *, rounds: int = 5, runs: int = 20,
                        warmup: int = 5) -> dict[str, dict]:
    """p50/p95 ms per runner from ``rounds`` round-robin passes of ``runs`` timed batch-1 calls each: drift of a
    shared machine (another job starting, a frequency change) hits every runner alike, so their ratio holds."""
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for r in runners.values():
        for _ in range(warmup):
            r(image)
    for _ in range(rounds):
        for name, r in runners.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                r(image)
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: {"p50_ms": float(np.percentile(v, 50)), "p95_ms": float(np.percentile(v, 95)), "n": len(v)}
            for k, v in samples.items()}


def machine_info() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = list(range(os.cpu_count() or 1))
    return {"cpu": cpu, "cores": os.cpu_count(), "affinity": affinity, "machine": platform.machine(),
            "python": platform.python_version(), "system": platform.system()}


def resolve_threads(threads: int) -> int:
    """0 means every core this process may run on."""
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1

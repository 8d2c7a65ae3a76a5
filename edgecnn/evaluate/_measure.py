"""The measuring child process: holds one artifact and times it on request (no TensorFlow here).

Spawned by ``edgecnn.evaluate.measure_protocol.MeasureProcess``; speaks one JSON object per line on
stdin/stdout. stdout is kept private to the protocol (fd 1 is pointed at stderr, so banners
that runtimes print from C, such as XNNPACK's, cannot corrupt it). Requests::

    {"cmd": "load", "path": "...", "threads": 1, "batch": 1, "cpus": [0] | null, "runtime": "onnxruntime" | null}
        -> {"ok": true, "backend", "input_shape", "rss_mb", "affinity", "pid", "load_ms", "tensorflow"}
    {"cmd": "window", "runs": 50, "min_s": 0.5, "max_s": 2.0}
        -> {"ok": true, "samples_ms": [...]}     # >= runs calls and >= min_s, stop at max_s (>= 3 calls)
    {"cmd": "memory"} -> {"ok": true, "peak_rss_mb", "rss_mb"}
    {"cmd": "quit"}   -> {"ok": true, "peak_rss_mb", "rss_mb"} and exit

Peak memory is the process's RSS high-water mark (VmHWM), which includes the interpreter and
the runtime: what a deployment process running this artifact would need.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time


def memory_mb() -> dict[str, float]:
    """RSS now and its high-water mark, in MiB (VmRSS/VmHWM; getrusage where /proc is missing)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key = "peak_rss_mb" if line.startswith("VmHWM") else "rss_mb"
                    out[key] = int(line.split()[1]) / 1024
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_rss_mb"] = peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
        out["rss_mb"] = out["peak_rss_mb"]
    return out


class _Server:
    def __init__(self):
        self.runner = None
        self.x = None

    def load(self, path: str, threads: int, batch: int, cpus: list[int] | None = None,
             runtime: str | None = None) -> dict:
        if cpus:
            os.sched_setaffinity(0, cpus)
        t0 = time.perf_counter()
        import numpy as np

        from edgecnn.runtime import load_runner

        self.runner = load_runner(path, threads=threads or None, runtime=runtime)
        shape = [batch, *[int(s) for s in self.runner.input.shape[1:]]]
        self.x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
        self.runner(self.x)  # fail now, not in the first window
        try:
            affinity = sorted(os.sched_getaffinity(0))
        except AttributeError:
            affinity = list(range(os.cpu_count() or 1))
        return {"backend": self.runner.backend, "input_shape": shape, "rss_mb": memory_mb().get("rss_mb", 0.0),
                "affinity": affinity, "pid": os.getpid(), "load_ms": (time.perf_counter() - t0) * 1e3,
                "tensorflow": "tensorflow" in sys.modules}

    def window(self, runs: int, min_s: float, max_s: float) -> dict:
        if self.runner is None:
            raise RuntimeError("no artifact loaded; send 'load' first")
        runner, x, clock = self.runner, self.x, time.perf_counter_ns
        samples: list[int] = []
        gc.collect()
        gc.disable()  # as timeit does: a collection is not the model's latency
        try:
            start = clock()
            min_ns, max_ns = int(min_s * 1e9), int(max_s * 1e9)
            while True:
                t0 = clock()
                runner(x)
                t1 = clock()
                samples.append(t1 - t0)
                elapsed = t1 - start
                if (len(samples) >= runs and elapsed >= min_ns) or (elapsed >= max_ns and len(samples) >= 3):
                    break
        finally:
            gc.enable()
        return {"samples_ms": [round(s / 1e6, 6) for s in samples]}

    def memory(self) -> dict:
        return memory_mb()


def main() -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    server = _Server()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            cmd = req.pop("cmd")
            if cmd == "quit":
                reply = server.memory()
            elif cmd in ("load", "window", "memory"):
                reply = getattr(server, cmd)(**req)
            else:
                raise ValueError(f"unknown command {cmd!r}")
            reply["ok"] = True
        except Exception as e:  # reported to the parent, which turns it into an EdgecnnError
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            cmd = None
        proto.write(json.dumps(reply) + "\n")
        proto.flush()
        if cmd == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())

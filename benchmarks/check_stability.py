"""Does `edgecnn check` give the same verdict run after run on a noisy machine?

Builds small ONNX conv-net run directories (onnx.helper, no training), then runs the check
``--repeats`` times (default 10) for each question and writes every figure as JSON:

A. absolute budgets 15 % away from the measured value: p50/p95 budgets at 1.15x (must hold) and
   0.85x (must break) of the measured value, the median of ``--calibration-runs`` checks (one
   run alone is a poor estimate: the first check of a session measured 9 % under the median of
   the next twenty). Reports verdict agreement per budget and the
   spread of the reported p95/p50 across repeats next to the stated stability tolerance.
B. a relative budget (max_slowdown_vs, max_ratio 1.10, interleaved A/B measurement): a candidate
   with 20 % more convolutions (~20 % slower) must be caught every time, and a byte-identical
   candidate must pass every time.

    .venv/bin/python benchmarks/check_stability.py --out benchmarks/results/check_stability.json
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgecnn._io import write_json
from edgecnn.evaluate.check import check
from edgecnn.evaluate.measure_protocol import build_conv_net
from edgecnn.export.manifest import add_artifact, init_manifest
from edgecnn.runtime.latency import machine_info


def make_run(path: Path, depth: int, channels: int, size: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    init_manifest(path, name=path.name, model={"name": "conv_net", "input_size": size, "num_classes": 4},
                  labels=["a", "b", "c", "d"], preprocessing={"input_range": [0, 255], "resize": [size, size]})
    build_conv_net(path / "model.onnx", depth=depth, channels=channels, size=size, seed=0)
    spec = {"name": "image", "shape": [None, size, size, 3], "dtype": "float32", "quantization": None}
    add_artifact(path, "model.onnx", format="onnx", precision="fp32", runtime="onnxruntime", stage="export",
                 parent="model.keras", input=spec, output={**spec, "shape": [None, 4]})
    return path


def budget_file(path: Path, measurement: dict, budgets: str) -> Path:
    m = ", ".join(f"{k}: {v}" for k, v in measurement.items())
    path.write_text(f"version: 1\nmeasurement: {{{m}}}\ntargets:\n  - name: bench\n    artifacts: model.onnx\n"
                    f"    threads: 1\n    budgets: {{{budgets}}}\n")
    return path


def spread(values: list[float]) -> dict:
    v = np.asarray(values)
    med = float(np.median(v))
    return {"median": med, "min": float(v.min()), "max": float(v.max()),
            "range_pct_of_median": float((v.max() - v.min()) / med * 100),
            "max_abs_dev_pct_of_median": float(np.abs(v / med - 1).max() * 100),
            "cv_pct": float(v.std(ddof=1) / v.mean() * 100) if len(v) > 1 else 0.0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--depth", type=int, default=10, help="convolutions of the baseline net")
    p.add_argument("--slower", type=float, default=1.20, help="extra work of the slow candidate (depth factor)")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--window-s", type=float, default=0.25)
    p.add_argument("--tolerance", type=float, default=10.0)
    p.add_argument("--max-time", type=float, default=10.0)
    p.add_argument("--max-ratio", type=float, default=1.10)
    p.add_argument("--distance", type=float, default=0.15, help="absolute budgets this far from the measured value")
    p.add_argument("--calibration-runs", type=int, default=3, help="checks whose median is the measured value")
    p.add_argument("--out", default="benchmarks/results/check_stability.json")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    measurement = {"window_s": a.window_s, "warmup_s": a.window_s, "tolerance_pct": a.tolerance,
                   "max_time_s": a.max_time}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="check-stability-") as tmp:
        tmp = Path(tmp)
        base = make_run(tmp / "baseline", a.depth, a.channels, a.size)
        same = tmp / "identical"
        shutil.copytree(base, same)
        slow_depth = round(a.depth * a.slower)
        slow = make_run(tmp / "slower", slow_depth, a.channels, a.size)

        # A. absolute budgets +-15 % around the measured value (median of a few calibration checks)
        b_calib = budget_file(tmp / "calib.yaml", measurement, "p50_ms: 100000, p95_ms: 100000")
        calib_runs = []
        for _ in range(a.calibration_runs):
            calib = check(base, b_calib)
            assert calib.exit_code == 0, calib.error
            calib_runs.append([r.measured for r in calib.results])
        m50, m95 = (float(np.median([c[i] for c in calib_runs])) for i in (0, 1))
        hi, lo = 1 + a.distance, 1 - a.distance
        b_abs = budget_file(tmp / "abs.yaml", measurement, f"p50_ms: {m50 * hi:.6g}, p95_ms: {m95 * hi:.6g}")
        b_low = budget_file(tmp / "abs_low.yaml", measurement, f"p50_ms: {m50 * lo:.6g}, p95_ms: {m95 * lo:.6g}")
        runs_abs = []
        for i in range(a.repeats):
            r_hi = check(base, b_abs)
            r_lo = check(base, b_low)
            runs_abs.append({
                "p50_ms": r_hi.results[0].measured, "p95_ms": r_hi.results[1].measured,
                "p95_ci": r_hi.results[1].ci, "stable": not r_hi.results[1].unstable,
                "p50_ms_second": r_lo.results[0].measured, "p95_ms_second": r_lo.results[1].measured,
                "verdicts": {"p50 at +15%": r_hi.results[0].ok, "p95 at +15%": r_hi.results[1].ok,
                             "p50 at -15%": r_lo.results[0].ok, "p95 at -15%": r_lo.results[1].ok},
                "exit_codes": [r_hi.exit_code, r_lo.exit_code], "seconds": r_hi.duration_s + r_lo.duration_s})
            print(f"A {i + 1}/{a.repeats}: p50 {runs_abs[-1]['p50_ms']:.4f} ms, p95 {runs_abs[-1]['p95_ms']:.4f} ms, "
                  f"exit {runs_abs[-1]['exit_codes']}, stable {runs_abs[-1]['stable']}", flush=True)
        p95s = [x["p95_ms"] for x in runs_abs] + [x["p95_ms_second"] for x in runs_abs]
        p50s = [x["p50_ms"] for x in runs_abs] + [x["p50_ms_second"] for x in runs_abs]
        expected = {"p50 at +15%": True, "p95 at +15%": True, "p50 at -15%": False, "p95 at -15%": False}
        agree = {k: sum(x["verdicts"][k] == v for x in runs_abs) for k, v in expected.items()}

        # B. relative budget, interleaved A/B against the baseline
        b_rel = budget_file(tmp / "rel.yaml", measurement, f"max_slowdown_vs: {{max_ratio: {a.max_ratio}}}")
        runs_rel = {"slower": [], "identical": []}
        for i in range(a.repeats):
            for name, cand in (("slower", slow), ("identical", same)):
                r = check(cand, b_rel, baseline=base)
                res = r.results[0]
                runs_rel[name].append({"ratio": res.measured, "ci": res.ci, "ok": res.ok, "exit_code": r.exit_code,
                                       "unstable": res.unstable, "seconds": r.duration_s})
                print(f"B {i + 1}/{a.repeats} {name}: ratio {res.measured:.3f} (CI {res.ci[0]:.3f}-{res.ci[1]:.3f}) "
                      f"exit {r.exit_code}", flush=True)

    summary = {
        "absolute": {
            "calibration_ms": {"p50": m50, "p95": m95, "runs": calib_runs},
            "verdicts_as_expected": {k: f"{v}/{a.repeats}" for k, v in agree.items()},
            "p95_ms": spread(p95s), "p50_ms": spread(p50s),
            "stated_tolerance_pct": a.tolerance,
            "p95_within_tolerance_of_median": sum(abs(v / statistics.median(p95s) - 1) * 100 <= a.tolerance
                                                  for v in p95s),
            "runs_flagged_unstable": sum(not x["stable"] for x in runs_abs),
            "budget_distance_from_median_pct": {
                "p95 +15%": (m95 * hi / statistics.median(p95s) - 1) * 100,
                "p95 -15%": (m95 * lo / statistics.median(p95s) - 1) * 100,
                "p50 +15%": (m50 * hi / statistics.median(p50s) - 1) * 100,
                "p50 -15%": (m50 * lo / statistics.median(p50s) - 1) * 100},
        },
        "relative": {
            "max_ratio": a.max_ratio, "slow_depth": slow_depth, "base_depth": a.depth,
            "slower_caught": f"{sum(not x['ok'] for x in runs_rel['slower'])}/{a.repeats}",
            "identical_passed": f"{sum(x['ok'] for x in runs_rel['identical'])}/{a.repeats}",
            "slower_ratio": spread([x["ratio"] for x in runs_rel["slower"]]),
            "identical_ratio": spread([x["ratio"] for x in runs_rel["identical"]]),
            "runs_flagged_unstable": sum(x["unstable"] for v in runs_rel.values() for x in v),
        },
        "seconds": time.perf_counter() - t_start,
    }
    out = {"benchmark": "check_stability", "machine": machine_info(), "args": vars(a), "summary": summary,
           "absolute_runs": runs_abs, "relative_runs": runs_rel}
    write_json(a.out, out)
    print(json.dumps(summary, indent=2))
    print(f"written: {a.out}")
    ok = (all(v == a.repeats for v in agree.values())
          and summary["relative"]["slower_caught"] == f"{a.repeats}/{a.repeats}"
          and summary["relative"]["identical_passed"] == f"{a.repeats}/{a.repeats}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

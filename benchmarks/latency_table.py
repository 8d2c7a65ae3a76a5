"""Latency table of every artifact of a run directory, written as JSON.

    python benchmarks/latency_table.py export/defects-mobilenetv2 [--runs 300] [--threads 1 0] [--out FILE]

Batch 1, warm-up then timed runs, p50/p90/p95/p99 per artifact and thread count (0 = all cores),
plus each artifact's ratio to LiteRT fp32 at the same thread count, measured in the same run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME",
                    help="only these artifacts (model.keras included only if named; it needs TensorFlow)")
    ap.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/bench_latency.json")
    args = ap.parse_args(argv)

    from edgecnn._io import write_json
    from edgecnn.export.manifest import read_manifest, verify_artifact
    from edgecnn.runtime import load_runner
    from edgecnn.runtime.latency import machine_info, measure_latency, resolve_threads

    manifest = read_manifest(args.run_dir)
    size = manifest["model"]["input_size"]
    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    names = ["model.keras"] + list(manifest["artifacts"])
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            ap.error(f"--only {' '.join(unknown)}: not in {args.run_dir}; it has {', '.join(names)}")
        names = [n for n in names if n in args.only]
    threads = sorted({resolve_threads(t) for t in args.threads})
    rows = []
    for name in names:
        if name != "model.keras":
            verify_artifact(args.run_dir, name, manifest)
        for t in threads:
            if name == "model.keras" and t != max(threads):
                continue  # TF's thread pool is per process
            runner = load_runner(args.run_dir / name, threads=t)
            lat = measure_latency(runner, image, warmup=args.warmup, runs=args.runs)
            rows.append({"artifact": name, "runtime": runner.backend, "threads": t,
                         "bytes": (args.run_dir / name).stat().st_size, **lat})
            print(f"{name:<22} {runner.backend:<12} {t} thr  p50 {lat['p50_ms']:7.3f} ms  p95 {lat['p95_ms']:7.3f} ms",
                  file=sys.stderr)
    for row in rows:
        ref = next((r for r in rows if r["artifact"] == "model.fp32.tflite" and r["threads"] == row["threads"]), None)
        row["p50_ratio_to_litert_fp32"] = row["p50_ms"] / ref["p50_ms"] if ref else None
    out = args.out or args.run_dir / "bench_latency.json"
    write_json(out, {"run_dir": str(args.run_dir), "input_size": size, "batch": 1, "warmup": args.warmup,
                     "runs": args.runs, "threads": threads, "machine": machine_info(), "results": rows})
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

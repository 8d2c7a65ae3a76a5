"""A/B of the input normalisation's handling in int8 (onnxruntime, OpenVINO): 1 thread, interleaved, per-op profiles.

    python benchmarks/fold_ab.py DIR [--out FILE]

``DIR`` holds QDQ int8 ONNX files of one model, one per way of handling the in-graph normalisation
(for the record in ``results/openvino_fold_ab_vnni.json``: MobileNetV2-1.0/224 quantised with
``quantize_onnx(..., per_channel=True, reduce_range=False)`` from the unfolded export, from the
fold with Split -> Pad -> Concat padding, and from the fold with constant strips). Every ``*.onnx``
there runs in onnxruntime and, converted to IR, in OpenVINO (the runner's settings), round-robin
(12 rounds x 30 batch-1 runs each), then 200 profiled runs each (``int8_profile.py``'s groups).
Needs no TensorFlow, so it runs on the target machine.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fold_ab.json")
    args = ap.parse_args(argv)
    from edgecnn._io import write_json
    from edgecnn.evaluate.op_profile import ort_profile, ov_profile
    from edgecnn.evaluate.op_profile import summarise_profile as summarise
    from edgecnn.export.openvino import onnx_to_openvino_ir
    from edgecnn.runtime import load_runner
    from edgecnn.runtime.latency import interleaved_latency, machine_info

    work = Path(tempfile.mkdtemp(prefix="fold-ab-"))
    arts: dict[str, tuple[Path, str]] = {}
    for onnx_file in sorted(args.dir.glob("*.onnx")):
        arts[f"ov-{onnx_file.stem}"] = (onnx_to_openvino_ir(onnx_file, work / f"{onnx_file.stem}.openvino"), "openvino")
        arts[f"ort-{onnx_file.stem}"] = (onnx_file, "onnxruntime")
    size = load_runner(next(iter(arts.values()))[0], threads=1).input.shape[1]
    x = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    runners = {k: load_runner(p, threads=1, runtime=rt) for k, (p, rt) in arts.items()}
    lat = interleaved_latency(runners, x, rounds=args.rounds, runs=args.runs, warmup=10)
    out = {"p50_ms": {k: v["p50_ms"] for k, v in lat.items()}, "p95_ms": {k: v["p95_ms"] for k, v in lat.items()},
           "profile": {k: summarise(ov_profile(p, x, 200, 1) if rt == "openvino" else ort_profile(p, x, 200, 1))
                       for k, (p, rt) in arts.items()},
           "machine": machine_info(), "rounds": args.rounds, "runs_per_round": args.runs}
    for k, v in out["p50_ms"].items():
        print(f"{k:24s} p50 {v:.3f} ms", file=sys.stderr)
    write_json(args.out, out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

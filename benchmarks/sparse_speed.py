"""Does sparsity buy speed? LiteRT fp32 dense vs sparse-weight MobileNetV2, batch 1, written as JSON.

    python benchmarks/sparse_speed.py [--size 224] [--sparsity 0.75] [--runs 200] [--threads 1] [--out FILE]

MobileNetV2-1.0 with random weights (speed does not depend on the values, only on the zeros):
its 1x1 convolutions are pruned with tfmot to ``--sparsity`` (``layers='pointwise'``, what
XNNPACK's sparse kernels accelerate), stripped, and exported twice as float32 TFLite: dense, and
with ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` (sparse storage + DENSIFY ops, which make
XNNPACK consider sparse inference). Warm-up, then ``--runs`` timed invocations; p50/p95 and the
ratio sparse/dense, the file sizes, and whether this CPU can run XNNPACK's sparse kernels at all
(x86 with AVX cannot: XNNPACK then runs the sparse model dense; see docs/compression.md).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--sparsity", type=float, default=0.75)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sparse_speed.json"))
    args = ap.parse_args(argv)

    import tensorflow_model_optimization as tfmot

    from edgecnn._io import write_bytes, write_json
    from edgecnn._tf import keras, tf
    from edgecnn.arch import create_model
    from edgecnn.compress import (
        gzipped_size,
        overall_sparsity,
        prune,
        sparse_tflite,
        sparsity_report,
        strip,
        xnnpack_sparse_inference,
    )
    from edgecnn.runtime import load_runner
    from edgecnn.runtime.latency import machine_info, measure_latency, resolve_threads

    t0 = time.perf_counter()
    model = create_model("mobilenet_v2", num_classes=1000, input_size=args.size, alpha=1.0)
    # Reach the target at step 1: ConstantSparsity-like ramp, one zero-learning-rate step applies the masks.
    pruned = prune(model, target_sparsity=args.sparsity, initial_sparsity=args.sparsity, begin_step=0, end_step=1,
                   frequency=1, layers="pointwise")
    pruned.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (2, args.size, args.size, 3)).astype(np.float32)
    pruned.fit(x, np.zeros(2), epochs=1, batch_size=2, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    plain = strip(pruned)
    report = sparsity_report(plain)
    pointwise = [v for k, v in report.items() if k.endswith(("_expand", "_project")) or k == "head"]
    print(f"pruned 1x1 convs to {np.mean(pointwise):.3f} sparsity in {time.perf_counter() - t0:.0f}s", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="sparse-speed-"))
    dense = tf.lite.TFLiteConverter.from_keras_model(plain).convert()
    dense_path = write_bytes(tmp / "mobilenetv2.dense.tflite", dense)
    sparse_path = write_bytes(tmp / "mobilenetv2.sparse.tflite", sparse_tflite(plain))
    image = x[:1]
    ref = load_runner(dense_path, threads=1)(image)
    out_sparse = load_runner(sparse_path, threads=1)(image)
    rows = []
    for t in sorted({resolve_threads(t) for t in args.threads}):
        for name, path in (("dense", dense_path), ("sparse", sparse_path)):
            lat = measure_latency(load_runner(path, threads=t), image, warmup=args.warmup, runs=args.runs)
            rows.append({"model": name, "threads": t, "bytes": path.stat().st_size, "gzip_bytes": gzipped_size(path),
                         **lat})
            print(f"{name:<7} {t} thr  p50 {lat['p50_ms']:7.3f} ms  p95 {lat['p95_ms']:7.3f} ms", file=sys.stderr)
    for row in rows:
        dense = next(r for r in rows if r["model"] == "dense" and r["threads"] == row["threads"])
        row["p50_ratio_to_dense"] = row["p50_ms"] / dense["p50_ms"]
    possible, why = xnnpack_sparse_inference()
    result = {
        "model": f"mobilenet_v2 alpha 1.0, {args.size}x{args.size}, random weights, batch 1, float32",
        "pruned_layers": "1x1 Conv2D (layers='pointwise')", "target_sparsity": args.sparsity,
        "pointwise_sparsity": float(np.mean(pointwise)), "overall_conv_dense_sparsity": overall_sparsity(plain),
        "max_abs_diff_sparse_vs_dense": float(np.abs(out_sparse - ref).max()),
        "xnnpack_sparse_kernels_on_this_cpu": possible, "why": why,
        "warmup": args.warmup, "runs": args.runs, "machine": machine_info(), "results": rows,
    }
    write_json(args.out, result)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

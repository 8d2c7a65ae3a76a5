"""Compression benchmark: what the chooser keeps, what pruning + int8 saves, and how fast each runtime is.

    python benchmarks/compression.py export/defects-mobilenetv2 [--max-accuracy-drop 0.005]
           [--prune-epochs 2] [--runs 200] [--threads 1 0] [--skip chooser size latency] [--out FILE]

Reads ``model.keras`` and ``recipe.yaml`` of a trained run directory and never writes there; every
artifact goes to ``--work`` (default ``export/bench-compression``, git-ignored). Three parts:

1. **chooser**: :func:`edgecnn.compress.choose` on the validation split (train split for QAT);
   the chosen artifact's top-1 drop vs float on val and on the untouched test split.
2. **size**: int8 TFLite vs fp32 TFLite (target <= 26 %), and pruned-50 % (+ 16 or 8 clusters) + int8
   gzipped vs fp32 gzipped (target <= 12 %), with their test top-1; the same at 75 % sparsity.
3. **latency**: MobileNetV2-1.0 at 224, batch 1, at 1 and all threads: Keras float, LiteRT
   fp32 / int8 / sparse fp32 (75 % zeros in the 1x1 convs), ORT fp32 / int8 QDQ; p50/p95 and the
   ratio to LiteRT fp32 at the same thread count, measured in the same run (random weights:
   speed does not depend on the values).
"""
from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench")
KEEP_DENSE = ("stem", "classifier")  # the first conv and the classifier: small and the most sensitive


def _accuracy(runner, x, y) -> float:
    return float((runner(x).argmax(1) == y).mean())


def _keras_accuracy(model, data) -> float:
    return float((np.asarray(model.predict(data["test_x"], verbose=0)).argmax(1) == data["test_y"]).mean())


def part_chooser(model, data, work: Path, args) -> dict:
    from edgecnn.compress import choose
    from edgecnn.runtime import load_runner

    t0 = time.perf_counter()
    result = choose(model, data["val_x"], data["val_y"], data["calib"], work / "chooser",
                    max_accuracy_drop=args.max_accuracy_drop, min_agreement=args.min_agreement,
                    train=(data["train_x"], data["train_y"]), qat_epochs=args.qat_epochs, qat_lr=args.qat_lr,
                    float_onnx=data.get("float_onnx"), runs=args.chooser_runs,
                    warmup=10, exhaustive=args.exhaustive)
    out = result.to_json()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    float_test = float((np.asarray(model.predict(data["test_x"], verbose=0)).argmax(1) == data["test_y"]).mean())
    out["float_test_accuracy"] = float_test
    for cand, row in zip(result.candidates, out["candidates"]):
        if cand.artifact is not None:
            acc = _accuracy(load_runner(cand.artifact, threads=None), data["test_x"], data["test_y"])
            row["test_accuracy"], row["test_drop"] = acc, float_test - acc
    if result.chosen is not None:
        row = out["candidates"][result.candidates.index(result.chosen)]
        out["chosen_test_drop"] = row["test_drop"]
    return out


def part_size(model, data, work: Path, args) -> dict:
    from edgecnn._io import write_bytes
    from edgecnn._tf import tf
    from edgecnn.compress import (
        cluster,
        fine_tune_clustered,
        fine_tune_pruned,
        gzipped_size,
        overall_sparsity,
        prune,
        strip,
        strip_clusters,
        tflite_int8,
    )
    from edgecnn.runtime import load_runner

    work.mkdir(parents=True, exist_ok=True)
    train = (data["train_x"], data["train_y"])
    val = (data["val_x"], data["val_y"])
    fp32 = write_bytes(work / "model.fp32.tflite", tf.lite.TFLiteConverter.from_keras_model(model).convert())
    int8 = write_bytes(work / "model.int8.tflite", tflite_int8(model, data["calib"]))
    steps = math.ceil(len(train[0]) / 32)
    t0 = time.perf_counter()

    def pruned_to(sparsity: float, epochs: int, lr: float):
        # Reach the target half-way, recover for the other half (tfmot's guide does the same); fitted
        # to the float model's probabilities with BatchNorm re-estimated every epoch, as the
        # pipeline's compress stage does. The stem conv and the classifier stay dense (tfmot's advice).
        wrapped = prune(model, target_sparsity=sparsity, end_step=max(2, steps * max(1, epochs // 2)),
                        frequency=max(1, steps // 4), exclude=KEEP_DENSE)
        fine_tune_pruned(wrapped, train, val, epochs=epochs, lr=lr, teacher=model)
        return strip(wrapped)

    def clustered(pruned, clusters: int):
        wrapped = cluster(pruned, clusters=clusters, preserve_sparsity=True)
        fine_tune_clustered(wrapped, train, val, epochs=2, lr=3e-5 if clusters < 16 else 1e-5, teacher=model)
        return strip_clusters(wrapped)

    plain = pruned_to(0.5, args.prune_epochs, args.prune_lr)
    prune_s = time.perf_counter() - t0
    float_test = {"model.keras": _keras_accuracy(model, data), "model.pruned (float)": _keras_accuracy(plain, data)}
    files = [fp32, int8, write_bytes(work / "model.pruned.int8.tflite", tflite_int8(plain, data["calib"]))]
    t0 = time.perf_counter()
    for k in (16, 8):
        pc = clustered(plain, k)
        float_test[f"model.pruned.clustered{k} (float)"] = _keras_accuracy(pc, data)
        files.append(write_bytes(work / f"model.pruned.clustered{k}.int8.tflite", tflite_int8(pc, data["calib"])))
    cluster_s = time.perf_counter() - t0
    plain75 = pruned_to(0.75, args.prune75_epochs, args.prune75_lr)
    float_test["model.pruned75 (float)"] = _keras_accuracy(plain75, data)
    files.append(write_bytes(work / "model.pruned75.int8.tflite", tflite_int8(plain75, data["calib"])))
    pc75 = clustered(plain75, 16)
    float_test["model.pruned75.clustered16 (float)"] = _keras_accuracy(pc75, data)
    files.append(write_bytes(work / "model.pruned75.clustered16.int8.tflite", tflite_int8(pc75, data["calib"])))
    gz = {p.name: gzipped_size(p) for p in files}
    rows = {}
    for p in files:
        rows[p.name] = {"bytes": p.stat().st_size, "gzip_bytes": gz[p.name],
                        "bytes_vs_fp32": p.stat().st_size / fp32.stat().st_size,
                        "gzip_vs_fp32_gzip": gz[p.name] / gz[fp32.name],
                        "test_accuracy": _accuracy(load_runner(p, threads=None), data["test_x"], data["test_y"])}
    return {"artifacts": rows, "float_test_accuracy": float_test, "pruned_sparsity": overall_sparsity(plain),
            "pruned75_sparsity": overall_sparsity(plain75), "kept_dense": list(KEEP_DENSE),
            "prune_seconds": round(prune_s, 1), "cluster_seconds": round(cluster_s, 1),
            "prune_epochs": args.prune_epochs, "prune75_epochs": args.prune75_epochs, "prune_lr": args.prune_lr,
            "prune75_lr": args.prune75_lr,
            "batchnorm_adaptation": True,
            "targets": {"int8_tflite_vs_fp32": 0.26, "pruned_int8_gzip_vs_fp32_gzip": 0.12},
            "int8_tflite_vs_fp32": rows["model.int8.tflite"]["bytes_vs_fp32"],
            "pruned_int8_gzip_vs_fp32_gzip": rows["model.pruned.int8.tflite"]["gzip_vs_fp32_gzip"],
            **{f"{name.removeprefix('model.').removesuffix('.int8.tflite').replace('.', '_')}_int8_gzip_vs_fp32_gzip":
               row["gzip_vs_fp32_gzip"] for name, row in rows.items() if "pruned" in name}}


def part_latency(work: Path, args) -> dict:
    import tensorflow_model_optimization as tfmot

    from edgecnn._io import write_bytes
    from edgecnn._tf import keras, tf
    from edgecnn.arch import create_model
    from edgecnn.compress import prune, sparse_tflite, strip
    from edgecnn.export.onnx import export_onnx
    from edgecnn.export.registry import ExportContext
    from edgecnn.quantize import quantize_onnx, tflite_int8
    from edgecnn.runtime import load_runner
    from edgecnn.runtime.latency import measure_latency, resolve_threads

    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    model = create_model("mobilenet_v2", num_classes=1000, input_size=224, alpha=1.0)
    calib = rng.uniform(0, 255, (32, 224, 224, 3)).astype(np.float32)
    paths = {"keras": work / "mnv2.keras"}
    model.save(str(paths["keras"]))
    fp32 = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    paths["litert-fp32"] = write_bytes(work / "mnv2.fp32.tflite", fp32)
    paths["litert-int8"] = write_bytes(work / "mnv2.int8.tflite", tflite_int8(model, calib))
    pruned = prune(model, target_sparsity=0.75, initial_sparsity=0.75, end_step=1, frequency=1, layers="pointwise")
    pruned.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    pruned.fit(calib[:2], np.zeros(2), epochs=1, batch_size=2, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    paths["litert-sparse-fp32"] = write_bytes(work / "mnv2.sparse.tflite", sparse_tflite(strip(pruned)))
    paths["ort-fp32"] = export_onnx(model, work / "mnv2.onnx", ExportContext(work))
    paths["ort-int8-qdq"] = quantize_onnx(paths["ort-fp32"], work / "mnv2.int8.onnx", calib, method="minmax",
                                          per_channel=True)
    image = calib[:1]
    threads = sorted({resolve_threads(t) for t in args.threads})
    rows = []
    for name, path in paths.items():
        for t in threads:
            if name == "keras" and t != max(threads):
                continue  # TF's intra-op pool is per process: one measurement, at all cores
            runner = load_runner(path, threads=t)
            lat = measure_latency(runner, image, warmup=args.warmup, runs=args.runs)
            rows.append({"artifact": name, "file": path.name, "threads": t, "bytes": path.stat().st_size,
                         "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"], "p99_ms": lat["p99_ms"],
                         "std_ms": lat["std_ms"], "runs": lat["runs"]})
            log.info("%-20s %d thr p50 %7.3f ms p95 %7.3f ms", name, t, lat["p50_ms"], lat["p95_ms"])
    for row in rows:
        ref = next((r for r in rows if r["artifact"] == "litert-fp32" and r["threads"] == row["threads"]), None)
        row["p50_ratio_to_litert_fp32"] = row["p50_ms"] / ref["p50_ms"] if ref else None
        row["p95_ratio_to_litert_fp32"] = row["p95_ms"] / ref["p95_ms"] if ref else None
    return {"model": "mobilenet_v2 alpha 1.0, 224x224, random weights, batch 1", "threads": threads,
            "warmup": args.warmup, "runs": args.runs, "results": rows}


def load_data(run_dir: Path, args) -> dict:
    import yaml

    from edgecnn.config import DataConfig
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import calibration_arrays, load_arrays

    # Only the data section and the input size are needed; the raw YAML is read so that a run made by an
    # older or newer recipe schema still benchmarks.
    raw = yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}
    defaults = DataConfig()
    d = {k: raw.get("data", {}).get(k, getattr(defaults, k)) for k in
         ("path", "val_fraction", "test_fraction", "split_seed", "min_images_per_class", "skip_bad_images")}
    ds = discover(d["path"], val_fraction=d["val_fraction"], test_fraction=d["test_fraction"], seed=d["split_seed"],
                  min_images_per_class=d["min_images_per_class"], skip_bad_images=d["skip_bad_images"],
                  check_images=False)
    size = (raw.get("model") or {}).get("input_size") or 224
    seed = (raw.get("train") or {}).get("seed", 0)
    out = {"classes": ds.classes, "input_size": size}
    for split in ("train", "val", "test"):
        out[f"{split}_x"], out[f"{split}_y"] = load_arrays(ds, split, size)
    out["calib"] = calibration_arrays(ds, size, args.calibration_images, seed=seed)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--max-accuracy-drop", type=float, default=0.005)
    ap.add_argument("--calibration-images", type=int, default=200)
    ap.add_argument("--prune-epochs", type=int, default=6)
    ap.add_argument("--prune75-epochs", type=int, default=10)
    ap.add_argument("--prune75-lr", type=float, default=5e-4, help="75 %% needs a larger step than 50 %%")
    ap.add_argument("--prune-lr", type=float, default=1e-4)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--qat-lr", type=float, default=1e-4)
    ap.add_argument("--min-agreement", type=float, default=0.985)
    ap.add_argument("--exhaustive", action="store_true", help="chooser tries every route")
    ap.add_argument("--chooser-runs", type=int, default=50)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    ap.add_argument("--skip", nargs="*", default=[], choices=["chooser", "size", "latency"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compression.json"))
    ap.add_argument("--work", type=Path, default=Path("export/bench-compression"),
                    help="scratch folder for the artifacts (git-ignored under export/; emptied first)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from edgecnn._io import sha256_file, write_json
    from edgecnn.runtime.latency import machine_info

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result: dict = {"run_dir": str(args.run_dir), "machine": machine_info(),
                    "max_accuracy_drop": args.max_accuracy_drop}
    if args.skip and args.out.is_file():  # a skipped part keeps its last measurement
        import json

        last = json.loads(args.out.read_text())
        result |= {part: last[part] for part in args.skip if part in last}
    t0 = time.perf_counter()
    if "chooser" not in args.skip or "size" not in args.skip:
        from edgecnn._tf import keras

        src = args.run_dir / "model.keras"
        if not src.is_file():
            raise SystemExit(f"{src} not found: train the run first (edgecnn run models/defects-mobilenetv2.yaml)")
        shutil.copy(src, work / "model.keras")  # the run directory is never touched (nor read again: a
        if (args.run_dir / "model.onnx").is_file():  # concurrent re-run must not mix two models)
            shutil.copy(args.run_dir / "model.onnx", work / "model.onnx")
        model = keras.models.load_model(str(work / "model.keras"), compile=False)
        data = load_data(args.run_dir, args)
        if (work / "model.onnx").is_file():
            data["float_onnx"] = work / "model.onnx"
        result["model_sha256"] = sha256_file(work / "model.keras")
        result["data"] = {k: len(v) for k, v in data.items() if k.endswith("_y")} | {"input_size": data["input_size"]}
        if "chooser" not in args.skip:
            result["chooser"] = part_chooser(model, data, work, args)
            write_json(args.out, result)
        if "size" not in args.skip:
            result["size"] = part_size(model, data, work / "size", args)
            write_json(args.out, result)
    if "latency" not in args.skip:
        result["latency"] = part_latency(work / "latency", args)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, result)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MobileNetV2-1.0/224 (ImageNet weights) in every runtime, fp32 beside int8, batch 1, 1 thread and all cores.

    python benchmarks/mobilenetv2_224.py [--images 500] [--rounds 5] [--runs 20] [--out FILE]

Images are real: scikit-image's bundled photos (random crops, flips) and the bundled defect
generator's images, resized to 224 px; calibration uses a disjoint set of crops. Artifacts:
LiteRT fp32 / int8, onnxruntime fp32 / int8 (QDQ with this CPU's types, and with the other
``reduce_range``), OpenVINO fp32 / int8 (IR from the QDQ ONNX). For each: top-1 agreement with
Keras on every image, p50/p95 at 1 thread and at all cores, and the p50 as a ratio to LiteRT fp32
at the same thread count. Timing is interleaved (round-robin over the artifacts, ``--rounds``
times ``--runs`` calls each) so load from other processes hits every artifact alike: compare the
ratios, not the milliseconds. ``pick`` is the fastest int8 artifact at 1 thread whose agreement is
at least ``--min-agreement``. Writes benchmarks/results/mobilenetv2_224.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIZE = 224
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "cat", "colorwheel")


def real_images(n: int, seed: int) -> np.ndarray:
    """``n`` float32 RGB 0-255 224 px images: random crops/flips of scikit-image photos, then defect images."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [np.asarray(getattr(data, p)())[..., :3] for p in PHOTOS]
    with tempfile.TemporaryDirectory() as tmp:
        from edgecnn.data.defects import make_defects

        make_defects(Path(tmp), seed=seed, per_class=max(10, n // 8), size=SIZE)
        defects = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(tmp).rglob("*.png"))]
    out = []
    for i in range(n):
        if i % 2 and defects:
            img = defects[(i // 2) % len(defects)]
        else:
            img = photos[rng.integers(len(photos))]
        h, w = img.shape[:2]
        s = rng.uniform(0.35, 1.0)
        ch, cw = max(16, int(h * s)), max(16, int(w * s))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(np.ascontiguousarray(img[y:y + ch, x:x + cw])).resize((SIZE, SIZE), Image.BILINEAR)
        arr = np.asarray(crop, np.float32)
        out.append(arr[:, ::-1] if rng.random() < 0.5 else arr)
    return np.stack(out)


def build_artifacts(model, calib: np.ndarray, work: Path) -> dict[str, tuple[Path, str]]:
    """name -> (artifact, runtime) for every variant, built once in ``work``."""
    from edgecnn._io import write_bytes
    from edgecnn.export.openvino import onnx_to_openvino_ir
    from edgecnn.quantize import cpu_features, keras_to_onnx, quantize_onnx, tflite_converter, tflite_int8

    arts: dict[str, tuple[Path, str]] = {}
    write_bytes(work / "fp32.tflite", tflite_converter(model).convert())
    arts["litert-fp32"] = (work / "fp32.tflite", "litert")
    write_bytes(work / "int8.tflite", tflite_int8(model, calib))
    arts["litert-int8"] = (work / "int8.tflite", "litert")
    keras_to_onnx(model, work / "fp32.onnx")
    arts["ort-fp32"] = (work / "fp32.onnx", "onnxruntime")
    cpu = cpu_features()
    quantize_onnx(work / "fp32.onnx", work / "int8.onnx", calib, method="minmax", per_channel=True)
    arts[f"ort-int8-u8s8{'-reduce_range' if cpu.reduce_range else ''}"] = (work / "int8.onnx", "onnxruntime")
    quantize_onnx(work / "fp32.onnx", work / "int8b.onnx", calib, method="minmax", per_channel=True,
                  reduce_range=not cpu.reduce_range)
    arts[f"ort-int8-u8s8{'' if cpu.reduce_range else '-reduce_range'}"] = (work / "int8b.onnx", "onnxruntime")
    quantize_onnx(work / "fp32.onnx", work / "int8s.onnx", calib, method="minmax", per_channel=True,
                  activation_type="int8")
    arts["ort-int8-s8s8"] = (work / "int8s.onnx", "onnxruntime")
    try:
        onnx_to_openvino_ir(work / "fp32.onnx", work / "fp32.openvino")
        arts["openvino-fp32"] = (work / "fp32.openvino", "openvino")
        onnx_to_openvino_ir(work / "int8.onnx", work / "int8.openvino")
        arts["openvino-int8"] = (work / "int8.openvino", "openvino")
    except Exception as e:  # OpenVINO missing from this install: the rest still runs
        print(f"openvino skipped: {e}", file=sys.stderr)
    return arts


def interleaved_latency(runners: dict, image: np.ndarray, rounds: int, runs: int, warmup: int) -> dict:
    """p50/p95 ms per runner from ``rounds`` round-robin passes of ``runs`` timed batch-1 calls each."""
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--min-agreement", type=float, default=0.95)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/mobilenetv2_224.json")
    args = ap.parse_args(argv)

    from edgecnn._io import write_json
    from edgecnn.arch import create_model
    from edgecnn.evaluate.latency import machine_info, resolve_threads
    from edgecnn.quantize import cpu_features
    from edgecnn.runtime import load_runner

    t0 = time.perf_counter()
    model = create_model("mobilenet_v2", include_top=True, weights="imagenet", dropout=0.0, input_size=SIZE)
    images = real_images(args.images, seed=0)
    calib = real_images(args.calibration, seed=1)
    ref = np.concatenate([np.asarray(model(images[i:i + 32], training=False)) for i in range(0, len(images), 32)])
    ref_top1 = ref.argmax(1)
    with tempfile.TemporaryDirectory(prefix="mnv2-224-") as tmp:
        arts = build_artifacts(model, calib, Path(tmp))
        rows = {name: {"runtime": rt, "bytes": sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*")))}
                for name, (p, rt) in arts.items()}
        for name, (path, rt) in arts.items():
            runner = load_runner(path, threads=0, runtime=rt)
            rows[name]["agreement"] = float((runner(images).argmax(1) == ref_top1).mean())
            runner.close()
            print(f"{name:<28} agreement {rows[name]['agreement']:.4f}", file=sys.stderr)
        threads = sorted({1, resolve_threads(0)})
        for t in threads:
            runners = {name: load_runner(path, threads=t, runtime=rt) for name, (path, rt) in arts.items()}
            lat = interleaved_latency(runners, images[:1], args.rounds, args.runs, args.warmup)
            for r in runners.values():
                r.close()
            base = lat["litert-fp32"]["p50_ms"]
            for name, v in lat.items():
                rows[name][f"threads_{t}"] = {**v, "p50_ratio_to_litert_fp32": round(v["p50_ms"] / base, 4),
                                             "p95_ratio_to_litert_fp32": round(v["p95_ms"] / base, 4)}
                print(f"{name:<28} {t} thr p50 {v['p50_ms']:7.2f} ms  x{v['p50_ms'] / base:.3f} of LiteRT fp32",
                      file=sys.stderr)
    int8 = [n for n in rows if "int8" in n and rows[n]["agreement"] >= args.min_agreement]
    pick = min(int8, key=lambda n: rows[n]["threads_1"]["p50_ms"]) if int8 else None
    ort_int8 = [n for n in rows if n.startswith("ort-int8")]
    ort_best = min(ort_int8, key=lambda n: rows[n]["threads_1"]["p50_ms"]) if ort_int8 else None
    out = {"model": "mobilenet_v2 alpha 1.0, ImageNet (torchvision port), 224 px, batch 1",
           "images": len(images), "image_sources": {"photos": list(PHOTOS), "defects": "edgecnn.data.defects"},
           "calibration_images": len(calib), "rounds": args.rounds, "runs_per_round": args.runs,
           "threads": threads, "cpu": sorted(cpu_features().flags), "machine": machine_info(),
           "min_agreement": args.min_agreement, "results": rows,
           "pick": pick, "pick_ratio_1_thread": rows[pick]["threads_1"]["p50_ratio_to_litert_fp32"] if pick else None,
           "ort_int8_over_ort_fp32_1_thread": (rows[ort_best]["threads_1"]["p50_ms"]
                                               / rows["ort-fp32"]["threads_1"]["p50_ms"]) if ort_best else None,
           "targets": {"pick_le_litert_fp32": 0.45, "ort_int8_le_ort_fp32": 0.5},
           "seconds": round(time.perf_counter() - t0, 1)}
    write_json(args.out, out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

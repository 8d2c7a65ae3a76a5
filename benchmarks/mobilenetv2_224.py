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

On a target machine without TensorFlow (the CPU the numbers are for), split the run in two:

    python benchmarks/mobilenetv2_224.py --save DIR     # here: artifacts, images (JPEG), Keras logits
    python benchmarks/mobilenetv2_224.py --load DIR --out FILE [--profile]   # there: no TensorFlow

``--save`` keeps every onnxruntime int8 variant (8-bit weights, ``reduce_range``, S8S8), because
which one the CPU wants is decided where it runs (``cpu_features()``; ``cpu_pick`` in the JSON).
The images go as JPEG and the Keras reference is computed on the decoded JPEGs, so both sides see
the same pixels; ``--load`` checks that by hash (``images_identical``). OpenVINO IR is converted
from the ONNX on the target. ``--profile`` adds the per-op profiles of ``int8_profile.py`` for the
float and the CPU's int8 ONNX / IR at 1 thread.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgecnn.runtime.latency import interleaved_latency

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


def build_artifacts(model, calib: np.ndarray, work: Path, openvino: bool = True) -> dict[str, tuple[Path, str]]:
    """name -> (artifact, runtime) for every variant, built once in ``work``."""
    from edgecnn._io import write_bytes
    from edgecnn.quantize import keras_to_onnx, quantize_onnx, tflite_converter, tflite_int8

    arts: dict[str, tuple[Path, str]] = {}
    write_bytes(work / "fp32.tflite", tflite_converter(model).convert())
    arts["litert-fp32"] = (work / "fp32.tflite", "litert")
    write_bytes(work / "int8.tflite", tflite_int8(model, calib))
    arts["litert-int8"] = (work / "int8.tflite", "litert")
    keras_to_onnx(model, work / "fp32.onnx")
    arts["ort-fp32"] = (work / "fp32.onnx", "onnxruntime")
    for name, file, kw in ONNX_INT8:
        quantize_onnx(work / "fp32.onnx", work / file, calib, method="minmax", per_channel=True, **kw)
        arts[name] = (work / file, "onnxruntime")
    if openvino:
        add_openvino(arts, work)
    return arts


# every onnxruntime int8 variant: (name, file, quantize_onnx keywords); the CPU's own is ``cpu_pick``
ONNX_INT8 = (("ort-int8-u8s8", "int8.onnx", {"reduce_range": False, "activation_type": "uint8"}),
             ("ort-int8-u8s8-reduce_range", "int8r.onnx", {"reduce_range": True, "activation_type": "uint8"}),
             ("ort-int8-s8s8", "int8s.onnx", {"reduce_range": False, "activation_type": "int8"}))


def cpu_pick() -> str:
    """The onnxruntime int8 variant ``quantize_onnx`` would choose on this CPU."""
    from edgecnn.quantize import cpu_features

    cpu = cpu_features()
    if cpu.onnx_activation_type == "int8":
        return "ort-int8-s8s8"
    return "ort-int8-u8s8-reduce_range" if cpu.reduce_range else "ort-int8-u8s8"


def add_openvino(arts: dict[str, tuple[Path, str]], work: Path) -> None:
    """OpenVINO IR of the float ONNX and of this CPU's int8 QDQ ONNX, where OpenVINO is installed."""
    from edgecnn.export.openvino import onnx_to_openvino_ir

    try:
        onnx_to_openvino_ir(arts["ort-fp32"][0], work / "fp32.openvino")
        arts["openvino-fp32"] = (work / "fp32.openvino", "openvino")
        onnx_to_openvino_ir(arts[cpu_pick()][0], work / "int8.openvino")
        arts["openvino-int8"] = (work / "int8.openvino", "openvino")
    except Exception as e:  # OpenVINO missing from this install: the rest still runs
        print(f"openvino skipped: {e}", file=sys.stderr)


def save(model, images: np.ndarray, calib: np.ndarray, out: Path) -> None:
    """Write the artifacts (no OpenVINO IR), the images as JPEG and Keras' logits on them to ``out``."""
    import json

    from edgecnn._io import write_bytes

    out.mkdir(parents=True, exist_ok=True)
    arts = build_artifacts(model, calib, out, openvino=False)
    np.save(out / "keras_logits.npy", keras_logits(model, images))
    manifest = {"artifacts": {n: {"file": p.name, "runtime": rt} for n, (p, rt) in arts.items()},
                "images": len(images), "calibration_images": len(calib), "images_sha256": sha256(images)}
    write_bytes(out / "manifest.json", json.dumps(manifest, indent=1).encode())


def as_jpeg(images: np.ndarray, folder: Path | None = None, quality: int = 92) -> np.ndarray:
    """The images after a JPEG round trip (written to ``folder`` when given), as float32 0-255."""
    import io

    from PIL import Image

    out = []
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(buf, "JPEG", quality=quality)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:04d}.jpg").write_bytes(buf.getvalue())
        out.append(np.asarray(Image.open(buf).convert("RGB"), np.float32))
    return np.stack(out)


def read_jpegs(folder: Path) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in sorted(folder.glob("*.jpg"))])


def sha256(images: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(images.astype(np.uint8).tobytes()).hexdigest()


def keras_logits(model, images: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(model(images[i:i + 32], training=False)) for i in range(0, len(images), 32)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--min-agreement", type=float, default=0.95)
    ap.add_argument("--save", type=Path, help="build artifacts, JPEG images and Keras logits here, then stop")
    ap.add_argument("--load", type=Path, help="measure what --save wrote (no TensorFlow needed)")
    ap.add_argument("--profile", action="store_true", help="add per-op profiles of fp32 and int8 at 1 thread")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/mobilenetv2_224.json")
    args = ap.parse_args(argv)

    from edgecnn._io import write_json

    t0 = time.perf_counter()
    if args.load:
        images, ref, arts, calib_n, extra = load(args.load)
    else:
        from edgecnn.arch import create_model

        model = create_model("mobilenet_v2", include_top=True, weights="imagenet", dropout=0.0, input_size=SIZE)
        calib = real_images(args.calibration, seed=1)
        if args.save:
            images = as_jpeg(real_images(args.images, seed=0), args.save / "images")
            save(model, images, calib, args.save)
            print(args.save)
            return 0
        images = real_images(args.images, seed=0)
        ref, calib_n, extra = keras_logits(model, images), len(calib), {}
        tmp = tempfile.TemporaryDirectory(prefix="mnv2-224-")
        arts = build_artifacts(model, calib, Path(tmp.name))
    rows = measure(arts, images, ref, args)
    out = summarise(rows, images, ref, calib_n, args)
    out.update(extra)
    if args.profile:
        out["profile_1_thread"] = profile(arts, images[:1], args.runs * args.rounds)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, out)
    print(args.out)
    return 0


def load(folder: Path):
    """What ``save`` wrote, plus OpenVINO IR converted here: (images, Keras logits, artifacts, n calib, facts)."""
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    images = read_jpegs(folder / "images")
    arts = {n: (folder / a["file"], a["runtime"]) for n, a in manifest["artifacts"].items()}
    add_openvino(arts, folder)
    extra = {"built_elsewhere": True, "images_identical": sha256(images) == manifest["images_sha256"],
             "image_format": "JPEG (quality 92); the Keras reference was computed on the decoded JPEGs"}
    return images, np.load(folder / "keras_logits.npy"), arts, manifest["calibration_images"], extra


def measure(arts: dict[str, tuple[Path, str]], images: np.ndarray, ref: np.ndarray, args) -> dict:
    """Agreement with Keras (``ref``: its softmax) and interleaved p50/p95 at 1 thread and all cores, per artifact."""
    from edgecnn.runtime import load_runner
    from edgecnn.runtime.latency import resolve_threads

    rows = {name: {"runtime": rt, "bytes": sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*")))}
            for name, (p, rt) in arts.items()}
    for name, (path, rt) in arts.items():
        runner = load_runner(path, threads=0, runtime=rt)
        logits = np.concatenate([runner(images[i:i + 50]) for i in range(0, len(images), 50)])
        rows[name]["agreement"] = float((logits.argmax(1) == ref.argmax(1)).mean())
        # the images are mostly off-ImageNet with small top-1 margins (+-2 px noise alone moves fp32 to 0.76):
        # two views that a small margin does not decide
        confident = ref.max(1) >= 0.5
        rows[name]["agreement_keras_confident"] = float((logits.argmax(1) == ref.argmax(1))[confident].mean())
        top5 = np.argsort(-logits, 1)[:, :5]
        rows[name]["keras_top1_in_top5"] = float((top5 == ref.argmax(1)[:, None]).any(1).mean())
        runner.close()
        print(f"{name:<28} agreement {rows[name]['agreement']:.4f}", file=sys.stderr)
    for t in sorted({1, resolve_threads(0)}):
        runners = {name: load_runner(path, threads=t, runtime=rt) for name, (path, rt) in arts.items()}
        lat = interleaved_latency(runners, images[:1], rounds=args.rounds, runs=args.runs, warmup=args.warmup)
        for r in runners.values():
            r.close()
        base = lat["litert-fp32"]["p50_ms"]
        for name, v in lat.items():
            rows[name][f"threads_{t}"] = {**v, "p50_ratio_to_litert_fp32": round(v["p50_ms"] / base, 4),
                                         "p95_ratio_to_litert_fp32": round(v["p95_ms"] / base, 4)}
            print(f"{name:<28} {t} thr p50 {v['p50_ms']:7.2f} ms  x{v['p50_ms'] / base:.3f} of LiteRT fp32",
                  file=sys.stderr)
    return rows


def summarise(rows: dict, images: np.ndarray, ref: np.ndarray, calib_n: int, args) -> dict:
    from edgecnn.quantize import cpu_features
    from edgecnn.runtime.latency import machine_info

    int8 = [n for n in rows if "int8" in n and rows[n]["agreement"] >= args.min_agreement]
    pick = min(int8, key=lambda n: rows[n]["threads_1"]["p50_ms"]) if int8 else None
    fastest = min((n for n in rows if "int8" in n), key=lambda n: rows[n]["threads_1"]["p50_ms"])
    ort_pick = cpu_pick()
    threads = sorted(int(k.split("_")[1]) for k in rows["litert-fp32"] if k.startswith("threads_"))
    return {"model": "mobilenet_v2 alpha 1.0, ImageNet (torchvision port), 224 px, batch 1",
            "images": len(images), "image_sources": {"photos": list(PHOTOS), "defects": "edgecnn.data.defects"},
            "calibration_images": calib_n, "rounds": args.rounds, "runs_per_round": args.runs,
            "threads": threads, "cpu": sorted(cpu_features().flags), "machine": machine_info(),
            "versions": runtime_versions(), "min_agreement": args.min_agreement, "results": rows,
            "keras_confident_images": int((ref.max(1) >= 0.5).sum()),
            "cpu_pick": ort_pick, "pick": pick,
            "pick_ratio_1_thread": rows[pick]["threads_1"]["p50_ratio_to_litert_fp32"] if pick else None,
            "fastest_int8_1_thread": fastest,
            "fastest_int8_ratio_1_thread": rows[fastest]["threads_1"]["p50_ratio_to_litert_fp32"],
            "ort_int8_over_ort_fp32_1_thread": round(rows[ort_pick]["threads_1"]["p50_ms"]
                                                     / rows["ort-fp32"]["threads_1"]["p50_ms"], 4),
            "targets": {"pick_le_litert_fp32": 0.45, "ort_int8_le_ort_fp32": 0.5}}


def runtime_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("onnxruntime", "ai-edge-litert", "openvino", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def profile(arts: dict[str, tuple[Path, str]], image: np.ndarray, runs: int) -> dict:
    """``edgecnn.evaluate.op_profile``'s per-op groups for the float and this CPU's int8, onnxruntime and OpenVINO."""
    from edgecnn.evaluate.op_profile import ort_profile, ov_profile
    from edgecnn.evaluate.op_profile import summarise_profile as summarise_ops
    from edgecnn.quantize.onnx_graph import onnx_float_ops

    out: dict = {"float_ops_after_quantisation": onnx_float_ops(arts[cpu_pick()][0])}
    for prec, name in (("fp32", "ort-fp32"), ("int8", cpu_pick())):
        out[f"onnxruntime-{prec}"] = summarise_ops(ort_profile(arts[name][0], image, runs, 1))
        if f"openvino-{prec}" in arts:
            out[f"openvino-{prec}"] = summarise_ops(ov_profile(arts[f"openvino-{prec}"][0], image, runs, 1))
    for rt in ("onnxruntime", "openvino"):
        f, q = out.get(f"{rt}-fp32", {}), out.get(f"{rt}-int8", {})
        if f.get("total_us") and q.get("total_us"):
            out[f"{rt}_int8_over_fp32"] = round(q["total_us"] / f["total_us"], 4)
    return out


if __name__ == "__main__":
    sys.exit(main())

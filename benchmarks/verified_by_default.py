"""Verified by default on data the project does not bundle: `edgecnn run --data FOLDER` with no recipe.

Three real data sets that ship inside packages, none of which the code or its tests were tuned on:

* ``lfw``    scikit-image's ``lfw_subset``: 100 faces and 100 non-faces, 25x25 grey;
* ``digits`` scikit-learn's handwritten digits (1,797 8x8 scans, 10 classes) written as 28x28 grey PNGs;
* ``photos`` 64x64 crops of five scikit-image photographs (astronaut, chelsea, coffee, rocket,
  immunohistochemistry) at random places and scales, 150 per photo: which photo a crop came from.

Each folder goes through the path a user takes (the auto recipe, the chooser on by default, the
default budget); the script reads every run's report.json and compress.json and writes one row per
shipped or withheld int8 file: test top-1 against float, agreement, its runtime's latency against its
float twin, and the wall time of the run and of its compress stage.

    python benchmarks/verified_by_default.py [--only digits] [--out benchmarks/results/verified_by_default.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "export" / "bench-verified"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


def _save(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def make_lfw(root: Path) -> Path:
    from skimage.data import lfw_subset

    faces = lfw_subset()   # the first 100 are faces, the last 100 are not
    for i, img in enumerate(faces):
        _save((img * 255).clip(0, 255).astype(np.uint8), root / ("face" if i < 100 else "not_face") / f"{i:03d}.png")
    return root


def make_digits(root: Path) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        px = Image.fromarray((img * (255 / 16)).clip(0, 255).astype(np.uint8), mode="L").resize((28, 28),
                                                                                                Image.BILINEAR)
        _save(np.asarray(px), root / str(y) / f"{i:04d}.png")
    return root


def make_photos(root: Path, per_class: int = 150, size: int = 64, seed: int = 0) -> Path:
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        h, w = img.shape[:2]
        for i in range(per_class):
            side = int(rng.uniform(0.12, 0.35) * min(h, w))
            y, x = rng.integers(0, h - side), rng.integers(0, w - side)
            crop = Image.fromarray(img[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
            _save(np.asarray(crop), root / name / f"{i:03d}.png")
    return root


SETS = {"lfw": make_lfw, "digits": make_digits, "photos": make_photos}


def run_one(name: str) -> dict:
    data, out = WORK / "data" / name, WORK / "runs" / name
    if not data.exists():
        SETS[name](data)
    t0 = time.perf_counter()
    log = WORK / f"{name}.log"
    with open(log, "w") as f:
        p = subprocess.run([sys.executable, "-m", "edgecnn.cli", "run", "--data", str(data), "--output", str(out)],
                           stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text())
    comp = json.loads((out / "compress.json").read_text()) if (out / "compress.json").is_file() else {}
    arts = report["artifacts"]
    ref = arts[report["reference"]]["metrics"]["accuracy"]
    rows = []
    for fmt, pick in comp.get("picks", {}).items():
        file = {"tflite-int8": "model.int8.tflite", "onnx-int8": "model.int8.onnx",
                "openvino-int8": "model.int8.openvino"}[fmt]
        a = arts[file]
        twin = {"litert": "model.fp32.tflite", "onnxruntime": "model.onnx", "openvino": "model.openvino"}[a["runtime"]]
        lat, flat = a["latency"].get("1", {}), arts.get(twin, {}).get("latency", {}).get("1", {})
        rows.append({"file": file, "runtime": a["runtime"], "route": pick["route"], "shipped": True,
                     "test_top1": a["metrics"]["accuracy"], "float_test_top1": ref,
                     "test_drop_pp": round(100 * (ref - a["metrics"]["accuracy"]), 2),
                     "test_agreement": a["metrics"]["agreement"], "val_drop_pp": round(100 * pick["val_drop"], 2),
                     "val_agreement": pick["val_agreement"], "p50_ms": lat.get("p50_ms"), "p95_ms": lat.get("p95_ms"),
                     "float_p50_ms": flat.get("p50_ms"), "float_p95_ms": flat.get("p95_ms"),
                     "chooser_speedup": pick.get("speedup")})
    for fmt, w in comp.get("withheld", {}).items():
        rows.append({"format": fmt, "runtime": w["runtime"], "shipped": False, "reason": w["reason"],
                     "closest": w.get("closest")})
    candidates = [c for r in comp.get("runtimes", {}).values() for c in r["candidates"]]
    return {"data": name, "classes": len(report["classes"]), "test_images": report["test_images"],
            "val_images": comp.get("val_images"), "exit_code": p.returncode, "wall_s": round(wall, 1),
            "chooser_candidate_s": round(sum(c["seconds"] for c in candidates), 1),
            "candidates": [{k: c[k] for k in ("route", "runtime", "drop", "agreement", "latency_p50_ms",
                                               "float_p50_ms", "within_budget", "seconds")} for c in candidates],
            "model": json.loads((out / "manifest.json").read_text())["model"], "float_test_top1": ref, "rows": rows,
            "log": str(log.relative_to(ROOT))}


def main(argv: list[str] | None = None) -> int:
    from edgecnn._io import write_json
    from edgecnn.runtime.latency import machine_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=list(SETS), default=list(SETS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "verified_by_default.json")
    args = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine_info(), "sets": {}}
    if args.out.is_file():
        results["sets"] = json.loads(args.out.read_text()).get("sets", {})
    for name in args.only:
        print(f"== {name}", flush=True)
        results["sets"][name] = run_one(name)
        results["machine"] = machine_info()
        write_json(args.out, results)
        for r in results["sets"][name]["rows"]:
            print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

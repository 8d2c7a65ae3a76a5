"""The default run's int8 files on arm64 kernels (emulated), on the whole test split: accuracy, agreement with
the float model and with this machine's (x86) run of the same file; and an int8 ONNX quantised for the target.

    python benchmarks/arm64_agreement.py [RUN_DIR] [--threads 2] [--out benchmarks/results/arm64_agreement.json]

RUN_DIR is a run of the default recipe (``make run`` writes ``export/defects-mobilenetv2``). For every int8
artifact of its manifest: top-1 on the test split and agreement with ``model.keras`` in the host runtime and
in its arm64 twin (``litert-arm64`` / ``onnxruntime-arm64``: the aarch64 wheels in the arm64 root under
qemu-user), the top-1 agreement between the two and the largest probability difference, and the wall time
per image of each (batch throughput while evaluating, *not* a latency: the arm64 side is emulated).
Then ``model.onnx`` is quantised twice the way the default recipe's pick was (percentile, per-channel, the
recipe's calibration images) - for ``host`` (this CPU's flavour) and for ``arm64`` (S8S8) - and both files
are run on both sides: what ``compress.target_cpu: arm64`` changes on the device.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARM64_TWIN = {"litert": "litert-arm64", "onnxruntime": "onnxruntime-arm64"}


def _predict(runner, images) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = np.concatenate([runner(np.asarray(images[i:i + 32], np.float32)) for i in range(0, len(images), 32)])
    return out, (time.perf_counter() - t0) * 1e3 / len(images)


def _side(probs: np.ndarray, ms: float, labels: np.ndarray, ref: np.ndarray) -> dict:
    return {"top1": float((probs.argmax(1) == labels).mean()), "agreement_with_float": float(
        (probs.argmax(1) == ref.argmax(1)).mean()), "ms_per_image": round(ms, 2)}


def compare(path: Path, host_runtime: str, images, labels: np.ndarray, ref: np.ndarray, threads: int) -> dict:
    """One int8 file on this machine and on arm64 kernels."""
    from edgecnn.runtime import get_runtime, load_runner

    out: dict = {}
    probs = {}
    for side, runtime in (("x86", host_runtime), ("arm64", ARM64_TWIN[host_runtime])):
        runner = load_runner(path, threads=threads, runtime=runtime)
        probs[side], ms = _predict(runner, images)
        out[side] = {"runtime": runtime, "version": getattr(runner, "version", None) or get_runtime(runtime).version(),
                     **_side(probs[side], ms, labels, ref)}
        runner.close()
        print(f"  {path.name} {runtime}: top-1 {out[side]['top1']:.4f}, agreement with float "
              f"{out[side]['agreement_with_float']:.4f}, {ms:.1f} ms/image", flush=True)
    same = probs["x86"].argmax(1) == probs["arm64"].argmax(1)
    out["arm64_vs_x86"] = {"top1_agreement": float(same.mean()), "changed": int((~same).sum()),
                           "changed_indices": [int(i) for i in np.flatnonzero(~same)],
                           "max_abs_diff": float(np.abs(probs["x86"] - probs["arm64"]).max())}
    out["emulation_slowdown"] = round(out["arm64"]["ms_per_image"] / out["x86"]["ms_per_image"], 1)
    return out


def main(argv: list[str] | None = None) -> None:
    from edgecnn._trust import load_keras
    from edgecnn.config import load_recipe
    from edgecnn.data.decoded_split import SPLITS_DIR, decoded_split
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import calibration_arrays
    from edgecnn.quantize import cpu_features, quantize_onnx, target_features
    from edgecnn.runtime import arm64_root
    from edgecnn.runtime.latency import machine_info

    default = ROOT / "export" / "defects-mobilenetv2"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?", default=default)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "arm64_agreement.json")
    args = ap.parse_args(argv)
    if not (args.run / "manifest.json").is_file():
        raise SystemExit(f"{args.run} has no manifest.json: run `make run` first (it writes {default}).")
    t_build = time.perf_counter()
    built_before = arm64_root.is_built()
    root = arm64_root.ensure_root(log_to=print)
    build_s = None if built_before else round(time.perf_counter() - t_build, 1)

    recipe = load_recipe(args.run / "recipe.yaml")
    d = recipe.data
    ds = discover(Path(d.path), val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.split_seed,
                  min_images_per_class=d.min_images_per_class, channels=d.channels)
    size = recipe.model.input_size
    images = decoded_split(ds, "test", size, args.run / SPLITS_DIR)
    labels = np.asarray(ds.labels("test"))
    model = load_keras(args.run / "model.keras")
    ref = np.concatenate([model(np.asarray(images[i:i + 64], np.float32), training=False).numpy()
                          for i in range(0, len(images), 64)])
    manifest = json.loads((args.run / "manifest.json").read_text())
    result: dict = {
        "run": str(args.run), "recipe": recipe.name, "test_images": int(len(labels)), "threads": args.threads,
        "float_top1": float((ref.argmax(1) == labels).mean()),
        "machine": machine_info(), "host_cpu_flags": sorted(cpu_features().flags),
        "arm64": {"root": str(root), **arm64_root.root_info(root), "emulator": arm64_root.qemu_version(),
                  "emulated_cpu": arm64_root.QEMU_CPU, "root_build_s": build_s},
        "note": "ms_per_image is batch throughput while evaluating (32 images per call), not a latency; the arm64 "
                "side is emulated by qemu-user (exact numerics, not the device's speed)",
        "artifacts": {}}
    for name, entry in manifest["artifacts"].items():
        if entry.get("precision") != "int8" or entry.get("runtime") not in ARM64_TWIN:
            continue
        print(f"{name} ({entry['runtime']}):", flush=True)
        result["artifacts"][name] = compare(args.run / name, entry["runtime"], images, labels, ref, args.threads)

    if (args.run / "model.onnx").is_file():   # compress.target_cpu: the same recipe quantised for each CPU
        calib = calibration_arrays(ds, size, recipe.export.calibration_images, seed=recipe.train.seed)
        result["onnx_quantised_for"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for target in ("host", "arm64"):
                f = target_features(target)
                path = Path(tmp) / f"model.int8-{target}.onnx"
                quantize_onnx(args.run / "model.onnx", path, calib, method=recipe.export.onnx_calibration,
                              per_channel=True, target=target)
                print(f"model.onnx quantised for {target}:", flush=True)
                result["onnx_quantised_for"][target] = {
                    "activations": f.onnx_activation_type, "weights": f.onnx_weight_type,
                    "reduce_range": f.reduce_range,
                    **compare(path, "onnxruntime", images, labels, ref, args.threads)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()

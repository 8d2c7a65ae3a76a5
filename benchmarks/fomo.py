"""FOMO centroid detection on a microcontroller (issue 34, item 8): models/mcu-detect-fomo.yaml on the bundled set.

Runs the recipe (or resumes it: finished stages are skipped) once per input variant -- grey (the recipe's
``data.channels: 1``) and, with ``--channels 1 3``, colour -- each in its own run directory, and writes one JSON
with, per variant: centroid precision / recall / F1 of the float model and of the int8 file in LiteRT and in
TFLite Micro (test split, a cell fires at the recipe's ``detect.report_threshold``), the TFLite Micro arena and
flash (KiB), TFLite Micro's cell agreement with LiteRT on the same int8 file (the acceptance: >= 0.99), each
int8 file's cell agreement with the float model, the int8 pick, training's wall time and the budget verdict.
A cell's answer is read two ways (``edgecnn.detect.centroid.cell_classes``): the fired cells at the threshold
(what firmware acts on) and the threshold-free argmax over background and classes. ``tflm_vs_litert_kernels``
compares TFLite Micro's outputs with LiteRT's on both its kernel sets, XNNPACK (LiteRT's default, the report's
``model.int8.tflite``) and its reference kernels (which TFLite Micro's are ports of).
``footprints``: the arena and flash of the recipe's architecture, grey and colour, full width and with half the
expansion channels (``expand: 0.5``), from an int8 file of the ImageNet-initialised net (neither figure depends
on the trained weights: the arena on the tensors' shapes, the flash on the file's size) -- what each lever buys
without training each variant.

    python benchmarks/fomo.py                    # grey, the recipe as written
    python benchmarks/fomo.py --channels 1 3     # grey and colour

The JSON records the machine and the load average before and after (a 2-core VM shared with other jobs).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIN_RUNTIME_CELL_AGREEMENT = 0.99
CENTROID = ("centroid_precision", "centroid_recall", "centroid_f1", "centroid_tp", "centroid_fp", "centroid_fn")


def summarise(run_dir: Path, wall_s: float) -> dict:
    """One run directory's figures (report.json, history.json, int8.json)."""
    report = json.loads((run_dir / "report.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    arts = {}
    for key, a in report["artifacts"].items():
        if "metrics" not in a:
            arts[key] = {"skipped": a.get("skipped"), "error": a.get("error")}
            continue
        m, mcu = a["metrics"], a.get("mcu") or {}
        arts[key] = {"runtime": a["runtime"], "precision": a.get("precision"), "bytes": a["bytes"],
                     **{k: m[k] for k in CENTROID}, "cell_agreement_with_float": m.get("cell_agreement"),
                     "box_agreement_with_float": m.get("box_agreement"),
                     "cell_argmax_agreement_with_float": m.get("cell_argmax_agreement"),
                     **{k: m[k] for k in ("runtime_cell_agreement", "runtime_cell_argmax_agreement") if k in m},
                     **({"arena_kib": round(mcu["arena_bytes"] / 1024, 1),
                         "flash_kib": round(mcu["flash_bytes"] / 1024, 1), "peak_layer": mcu.get("peak_layer")}
                        if mcu else {})}
    micro = arts.get("model.int8.tflite@tflm", {})
    return {"run_dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
            "model": json.loads((run_dir / "manifest.json").read_text())["model"],
            "channels": json.loads((run_dir / "manifest.json").read_text())["preprocessing"].get("channels"),
            "evaluated_at": report["created"], "test_images": report["test_images"],
            "test_boxes": report["test_boxes"], "classes": report["classes"],
            "report_threshold": report["detect"]["report_threshold"], "artifacts": arts,
            "int8_pick": json.loads((run_dir / "int8.json").read_text()).get("picks"),
            "train_wall_s": history.get("wall_s"),
            "train_phases": [{k: p.get(k) for k in ("name", "epochs", "seconds")} for p in history.get("phases", [])],
            "pipeline_wall_s_this_invocation": wall_s,
            "acceptance": {"tflm_vs_litert_fired_cell_agreement_ge_0_99":
                           micro.get("runtime_cell_agreement", 0.0) >= MIN_RUNTIME_CELL_AGREEMENT,
                           "tflm_vs_litert_argmax_cell_agreement_ge_0_99":
                           micro.get("runtime_cell_argmax_agreement", 0.0) >= MIN_RUNTIME_CELL_AGREEMENT,
                           "fits_cortex_m7_1m": bool(micro) and micro.get("arena_kib", 1e9) <= 768
                           and micro.get("flash_kib", 1e9) <= 1536,
                           "budget_verdict": report.get("verdict")}}


def kernel_agreement(run_dir: Path, recipe) -> dict:
    """TFLite Micro vs LiteRT (XNNPACK and reference kernels) on the run's int8 file over the test split."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgecnn.detect.centroid import cell_agreement
    from edgecnn.detect.data import discover_detection, load_item
    from edgecnn.runtime import load_runner

    path, size, thr = run_dir / "model.int8.tflite", recipe.model.input_size, recipe.detect.report_threshold
    items = discover_detection(ROOT / recipe.data.path).splits["test"]
    images = np.stack([load_item(i, size, recipe.data.channels)[0] for i in items])
    runner = load_runner(path, runtime="tflm")
    try:
        micro = np.concatenate([runner(images[i:i + 16]) for i in range(0, len(images), 16)])
    finally:
        runner.close()
    out = {"images": len(images), "cells": int(micro.shape[0] * micro.shape[1]), "score_threshold": thr}
    for key, kind in (("xnnpack", "AUTO"), ("reference", "BUILTIN_REF")):
        it = Interpreter(model_path=str(path), num_threads=1,
                         experimental_op_resolver_type=getattr(OpResolverType, kind))
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        (si, zi), (so, zo) = i["quantization"], o["quantization"]
        lite = []
        for img in images:
            it.set_tensor(i["index"], np.clip(np.round(img[None] / si + zi), -128, 127).astype(np.int8))
            it.invoke()
            lite.append((it.get_tensor(o["index"]).astype(np.float32) - zo) * so)
        lite = np.concatenate(lite)
        out[key] = {"cell_agreement": cell_agreement(lite, micro, thr),
                    "cell_argmax_agreement": cell_agreement(lite, micro),
                    "max_abs_diff": float(np.abs(lite - micro).max())}
    return out


def footprint(recipe, channels: int, expand: float, tmp: Path) -> dict:
    """TFLite Micro arena and flash (KiB) of the recipe's model at ``channels`` and ``expand``, int8, untrained."""
    import numpy as np

    from edgecnn.arch import create_task_model
    from edgecnn.quantize.tflite_int8 import tflite_int8
    from edgecnn.runtime import load_runner
    from edgecnn.train import with_input_channels

    size = recipe.model.input_size
    model = create_task_model(recipe.model.name, "detect", {**recipe.model.args, "expand": expand}, num_classes=3,
                              input_size=size)
    model = with_input_channels(model, channels)
    calib = np.random.default_rng(0).uniform(0, 255, (32, size, size, channels)).astype(np.float32)
    path = tmp / f"fomo-c{channels}-e{expand}.int8.tflite"
    path.write_bytes(tflite_int8(model, calib))
    runner = load_runner(path, runtime="tflm")
    try:
        mcu = runner.extra_figures()["mcu"]
    finally:
        runner.close()
    return {"channels": channels, "expand": expand, "arena_kib": round(mcu["arena_bytes"] / 1024, 1),
            "flash_kib": round(mcu["flash_bytes"] / 1024, 1), "model_kib": round(mcu["model_bytes"] / 1024, 1),
            "peak_layer": mcu.get("peak_layer")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(ROOT / "models/mcu-detect-fomo.yaml"))
    ap.add_argument("--channels", nargs="*", type=int, default=[1], help="input variants: 1 (grey), 3 (colour)")
    ap.add_argument("--out-root", default=str(ROOT / "export"), help="run directories go here")
    ap.add_argument("--output", default=str(ROOT / "benchmarks/results/fomo.json"))
    ap.add_argument("--no-footprints", action="store_true", help="skip the grey/colour x expand footprint table")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import edgecnn
    from edgecnn.config import load_recipe
    from edgecnn.runtime.latency import machine_info

    out = {"benchmark": "fomo", "recipe": str(Path(args.recipe).relative_to(ROOT)), "machine": machine_info(),
           "load_average_before": os.getloadavg(), "variants": {}}
    for channels in args.channels:
        recipe = load_recipe(args.recipe)
        variant = "grey" if channels == 1 else "colour"
        own = recipe.data.channels == channels
        recipe.data.channels = channels
        run_dir = Path(args.out_root) / (recipe.name if own else f"{recipe.name}-{variant}")
        t0 = time.perf_counter()
        edgecnn.run(recipe, output=run_dir)
        out["variants"][variant] = summarise(run_dir, round(time.perf_counter() - t0, 1))
        out["variants"][variant]["tflm_vs_litert_kernels"] = kernel_agreement(run_dir, recipe)
        out["load_average_after"] = os.getloadavg()
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)   # after each variant: a partial file survives
        tmp = Path(args.output).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        os.replace(tmp, args.output)
    if not args.no_footprints:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out["footprints"] = [footprint(load_recipe(args.recipe), c, e, Path(tmp)) for c in (1, 3)
                                 for e in (1.0, 0.5)]
        tmp_out = Path(args.output).with_suffix(".tmp")
        tmp_out.write_text(json.dumps(out, indent=1))
        os.replace(tmp_out, args.output)
    print(json.dumps({v: r["acceptance"] for v, r in out["variants"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

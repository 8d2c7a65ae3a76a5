"""Export a segmentation model through the registered formats, int8 chosen within an mIoU budget.

Every format goes through the shared export loop (:func:`edgecnn.stages.export.export_formats`).
An int8 format with a calibration method (``tflite-int8``, ``onnx-int8``) is exported once per
method of ``segment.int8_calibrations`` that it knows, into ``int8_candidates/<method>/``, each
scored by mIoU on ``segment.int8_val_images`` validation pairs; the first whose drop below the
float model's mIoU on the same pairs is within ``segment.max_miou_drop`` becomes the artifact
(else the smallest drop, with a warning). Every candidate is recorded in ``int8.json``.
"""
from __future__ import annotations

import logging
import shutil
from typing import Any

import numpy as np

from edgecnn._io import sha256_file, write_json
from edgecnn.segment.data import SegmentData, load_pair, load_split, spread
from edgecnn.segment.metrics import confusion_matrix, mean_iou, pixel_agreement
from edgecnn.store import fingerprint as _fp

log = logging.getLogger("edgecnn.segment")
CANDIDATES = "int8_candidates"


def calibration_images(data: SegmentData, size: int, n: int) -> np.ndarray:
    """``n`` training images spread evenly over the train pairs (which are grouped by class)."""
    return np.stack([load_pair(p, size, data.classes, data.palette, data.channels)[0]
                     for p in spread(data.splits["train"], n)])


def predict_masks(runner: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Class-id masks (N, H, W) uint8: the argmax of a runner's (N, H, W, K) probabilities."""
    return np.concatenate([np.argmax(runner(images[i:i + batch]), axis=-1).astype(np.uint8)
                           for i in range(0, len(images), batch)])


def _methods(spec_name: str, wanted: list[str]) -> list[tuple[str, str]]:
    """(ExportContext field, method) pairs a calibrated int8 format takes, in the recipe's order."""
    from edgecnn.quantize import ONNX_CALIBRATION_METHODS, TFLITE_CALIBRATION_METHODS

    known = {"tflite-int8": ("tflite_calibration", TFLITE_CALIBRATION_METHODS),
             "onnx-int8": ("onnx_calibration", ONNX_CALIBRATION_METHODS)}.get(spec_name)
    return [(known[0], m) for m in wanted if m in known[1]] if known else []


def choose_int8(run, spec, model, ctx, val: tuple[np.ndarray, np.ndarray], float_masks: np.ndarray,
                classes: list[str]) -> dict:
    """Export ``spec`` with each calibration method and pick one within ``segment.max_miou_drop`` (see module)."""
    from dataclasses import replace

    from edgecnn.export import export
    from edgecnn.runtime import load_runner

    s = run.recipe.segment
    k = len(classes)
    float_miou = mean_iou(confusion_matrix(val[1], float_masks, k))
    candidates = []
    for field, method in _methods(spec.name, s.int8_calibrations):
        out_dir = run.dir / CANDIDATES / method
        out_dir.mkdir(parents=True, exist_ok=True)
        if spec.parent != "model.keras" and (run.dir / spec.parent).exists():
            shutil.copy2(run.dir / spec.parent, out_dir / spec.parent)  # onnx-int8 quantises model.onnx
        path = export(spec.name, model, replace(ctx, run_dir=out_dir, **{field: method}))
        masks = predict_masks(load_runner(path, threads=2), val[0])
        miou = mean_iou(confusion_matrix(val[1], masks, k))
        cand = {"method": method, "artifact": str(path.relative_to(run.dir)), "miou": miou,
                "miou_drop": float_miou - miou, "pixel_agreement": pixel_agreement(masks, float_masks)}
        candidates.append(cand)
        log.info("int8 %s %s: val mIoU %.4f (float %.4f, drop %.4f), agreement %.4f", spec.name, method, miou,
                 float_miou, cand["miou_drop"], cand["pixel_agreement"])
        if cand["miou_drop"] <= s.max_miou_drop:
            break
    if not candidates:
        return {}
    fits = [c for c in candidates if c["miou_drop"] <= s.max_miou_drop]
    pick = fits[0] if fits else min(candidates, key=lambda c: c["miou_drop"])
    if not fits:
        log.warning("int8 %s: no calibration within max_miou_drop %.3f on val; keeping %s (drop %.4f)", spec.name,
                    s.max_miou_drop, pick["method"], pick["miou_drop"])
    return {"format": spec.name, "float_miou": float_miou, "max_miou_drop": s.max_miou_drop,
            "within_budget": bool(fits), "pick": pick["method"], "artifact": pick["artifact"],
            "candidates": candidates}


def export_all(run, data: SegmentData, force: bool = False, formats: list[str] | None = None) -> list[str]:
    """Export every format of ``export.formats`` whose artifact is missing or stale (the shared export loop);
    an int8 format with calibration methods is the mIoU choice's pick. Returns the formats exported."""
    from edgecnn._tf import keras
    from edgecnn.arch import get_model_entry
    from edgecnn.arch.inspect import preprocessing_of
    from edgecnn.export import ExportContext, format_depth, get_format
    from edgecnn.export.manifest import init_manifest
    from edgecnn.runtime import load_runner
    from edgecnn.stages.export import export_formats

    r, e, s = run.recipe, run.recipe.export, run.recipe.segment
    specs = sorted((get_format(f) for f in formats or e.formats), key=format_depth)
    train_fp = run.store.fingerprint_of("train") or _fp(sha256_file(run.dir / "model.keras"))
    base_fp = _fp(train_fp, e.calibration_images, e.opset, e.onnx_per_channel)
    choice_fp = _fp(base_fp, s.max_miou_drop, s.int8_calibrations, s.int8_val_images)

    def fp_of(spec) -> str:
        return choice_fp if _methods(spec.name, s.int8_calibrations) else base_fp

    size = run.input_size
    entry = get_model_entry(r.model.name)
    init_manifest(run.dir, name=r.name, task="segment", labels=data.classes,
                  model={"name": r.model.name, "input_size": size, "num_classes": len(data.classes),
                         "family": entry.family, "task": "segment", **r.model.args})

    def load_model():
        model = keras.models.load_model(str(run.dir / "model.keras"), compile=False)
        init_manifest(run.dir, preprocessing={**preprocessing_of(model), "resize": [size, size],
                                              "channels": int(model.input_shape[-1])})
        return model

    def context(todo, model):
        calib = calibration_images(data, size, e.calibration_images) if any(
            t.needs_calibration for t in todo) else None
        return ExportContext(run.dir, calibration=calib, opset=e.opset, tflite_calibration=e.tflite_calibration,
                             onnx_calibration=e.onnx_calibration, onnx_per_channel=e.onnx_per_channel)

    choices: dict[str, Any] = {}
    val: dict[str, Any] = {}   # the val pairs and the float masks, loaded for the first int8 choice

    def pick_of(spec, model, ctx) -> dict | None:
        if not _methods(spec.name, s.int8_calibrations):
            return None
        if not val:
            val["pairs"] = load_split(data, "val", size, limit=s.int8_val_images)
            val["masks"] = predict_masks(load_runner(run.dir / "model.keras"), val["pairs"][0])
        choice = choose_int8(run, spec, model, ctx, val["pairs"], val["masks"], data.classes)
        if not choice:
            return None
        choices[spec.name] = choice
        return {"artifact": choice["artifact"], "route": f"{spec.name} {choice['pick']} calibration",
                "notes": [f"val mIoU {c['method']}: {c['miou']:.4f} (drop {c['miou_drop']:.4f})"
                          for c in choice["candidates"]]}

    done = export_formats(run.store, specs, fp_of, load_model=load_model, context=context, pick_of=pick_of,
                          verified_of=lambda spec: False, force=force)
    if choices:
        old = run.dir / "int8.json"
        merged = {**(_read_json(old) if old.is_file() else {}), **choices}
        write_json(old, {n: merged[n] for n in merged if n in e.formats})
    return done


def _read_json(path) -> dict:
    import json

    return json.loads(path.read_text())

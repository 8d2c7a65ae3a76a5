"""Export a segmentation model through the registered formats, int8 chosen within an mIoU budget.

Every format goes through the shared export loop (:func:`edgecnn.stages.export.export_formats`).
An int8 format with a calibration method (``tflite-int8``, ``onnx-int8``) is chosen by the shared
int8 chooser (:func:`edgecnn.compress.chooser.choose_with`) among the routes of the methods of
``segment.int8_calibrations`` it knows (in the chooser's escalation order: plain min/max first),
into ``int8_candidates/``, each scored by :class:`edgecnn.segment.metrics.MiouScorer` (mIoU and
pixel agreement on ``segment.int8_val_images`` validation pairs) and timed against its float twin
(``compress.prefer``); the first whose drop below the float model's mIoU on the same pairs is within
``segment.max_miou_drop`` becomes the artifact (else the smallest drop, with a warning: the shared
export loop has no withheld state yet). Every candidate is recorded in ``int8.json``.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgecnn._io import sha256_file, write_json
from edgecnn.segment.data import SegmentData, load_pair, load_split, spread
from edgecnn.segment.metrics import MiouScorer, predict_masks  # noqa: F401  (segment.evaluate reads it here)
from edgecnn.store import fingerprint as _fp

log = logging.getLogger("edgecnn.segment")
CANDIDATES = "int8_candidates"


def calibration_images(data: SegmentData, size: int, n: int) -> np.ndarray:
    """``n`` training images spread evenly over the train pairs (which are grouped by class)."""
    return np.stack([load_pair(p, size, data.classes, data.palette, data.channels)[0]
                     for p in spread(data.splits["train"], n)])


def _methods(spec_name: str, wanted: list[str], per_channel: bool = True) -> list[tuple[str, str]]:
    """(calibration method, the chooser's route) pairs a calibrated int8 format takes, in the recipe's order
    (the ONNX percentile and entropy routes quantise weights per channel whatever ``per_channel`` says)."""
    routes = {"tflite-int8": {"minmax": "tflite-int8", "percentile": "tflite-int8-percentile"},
              "onnx-int8": {"minmax": "onnx-int8-minmax-pc" if per_channel else "onnx-int8-minmax",
                            "percentile": "onnx-int8-percentile", "entropy": "onnx-int8-entropy"}}.get(spec_name, {})
    return [(m, routes[m]) for m in wanted if m in routes]


def choose_int8(run, spec, model, calibration: np.ndarray, scorer, cache: dict[str, Any]) -> dict:
    """The int8 file of ``spec`` through the shared chooser (:func:`edgecnn.compress.chooser.choose_with`) with the
    mIoU scorer: the routes of the recipe's calibration methods, escalated until one holds ``segment.max_miou_drop``
    on the val pairs (see the module). Returns int8.json's record of the format ({} when it has no methods)."""
    from edgecnn.compress.chooser import choose_with

    s, e = run.recipe.segment, run.recipe.export
    methods = _methods(spec.name, s.int8_calibrations, e.onnx_per_channel)
    if not methods:
        return {}
    method_of = {route: method for method, route in methods}
    float_onnx = run.dir / "model.onnx"
    result = choose_with(scorer, model, calibration, run.dir / CANDIDATES,
                         run.recipe.compress.choose_options(routes=list(method_of), runtimes=(spec.runtime,)),
                         float_onnx=float_onnx if float_onnx.is_file() else None, cache=cache)
    candidates = [{"method": method_of[c.route], "route": c.route,
                   "artifact": str(c.artifact.relative_to(run.dir)) if c.artifact else None, "miou": c.accuracy,
                   "miou_drop": c.drop, "pixel_agreement": c.agreement, "ok": c.within_budget, "error": c.error,
                   "latency_p50_ms": c.latency_p50_ms, "float_p50_ms": c.float_p50_ms,
                   "slower_than_float": c.slower_than_float} for c in result.candidates]
    pick = next((c for c in candidates if result.chosen and c["route"] == result.chosen.route), None)
    if pick is None:   # no route held: the format is withheld (the closest candidate is named, never shipped)
        measured = [c for c in candidates if c["artifact"]]
        closest = min(measured, key=lambda c: c["miou_drop"]) if measured else None
        log.error("int8 %s withheld: %s%s", spec.name, result.reason,
                  f" Closest: {closest['method']} (drop {closest['miou_drop']:.4f})." if closest else "")
    return {"format": spec.name, "float_miou": scorer.float_metric, "max_miou_drop": s.max_miou_drop,
            "within_budget": result.chosen is not None, "pick": pick["method"] if pick else None,
            "route": pick["route"] if pick else None, "artifact": pick["artifact"] if pick else None,
            "reason": result.reason, "skipped": result.skipped, "candidates": candidates}


def export_all(run, data: SegmentData, force: bool = False, formats: list[str] | None = None) -> list[str]:
    """Export every format of ``export.formats`` whose artifact is missing or stale (the shared export loop);
    an int8 format with calibration methods is the mIoU choice's pick. Returns the formats exported."""
    from edgecnn._tf import keras
    from edgecnn.arch import get_model_entry
    from edgecnn.arch.inspect import preprocessing_of
    from edgecnn.export import ExportContext, format_depth, get_format
    from edgecnn.export.manifest import init_manifest
    from edgecnn.stages.export import Withheld, export_formats

    r, e, s = run.recipe, run.recipe.export, run.recipe.segment
    specs = sorted((get_format(f) for f in formats or e.formats), key=format_depth)
    train_fp = run.store.fingerprint_of("train") or _fp(sha256_file(run.dir / "model.keras"))
    base_fp = _fp(train_fp, e.calibration_images, e.opset, e.onnx_per_channel)
    choice_fp = _fp(base_fp, s.max_miou_drop, s.int8_calibrations, s.int8_val_images,
                    r.compress.model_dump(mode="json"))   # the chooser's options (prefer, latency runs, ...)

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
                             onnx_calibration=e.onnx_calibration, onnx_per_channel=e.onnx_per_channel,
                             target_cpu=run.recipe.compress.target_cpu)

    choices: dict[str, Any] = {}
    shared: dict[str, Any] = {}   # the mIoU scorer (val pairs, float masks) and the chooser's cache, made once

    def pick_of(spec, model, ctx) -> dict | None:
        if not _methods(spec.name, s.int8_calibrations):
            return None
        if not shared:
            images, masks = load_split(data, "val", size, limit=s.int8_val_images)
            shared["scorer"] = MiouScorer(images, masks, len(data.classes), max_drop=s.max_miou_drop)
            shared["cache"] = {}
        choice = choose_int8(run, spec, model, ctx.calibration, shared["scorer"], shared["cache"])
        if not choice:
            return None
        choices[spec.name] = choice
        if not choice["within_budget"] or choice["artifact"] is None:   # verified by default: nothing ships
            return Withheld(f"no int8 route held the mIoU budget: {choice['reason']}")
        return {"artifact": choice["artifact"], "route": choice["route"],
                "notes": [f"val mIoU {c['method']}: {c['miou']:.4f} (drop {c['miou_drop']:.4f})" if c["miou"]
                          is not None else f"{c['method']}: {c['error']}" for c in choice["candidates"]]}

    done = export_formats(run.store, specs, fp_of, load_model=load_model, context=context, pick_of=pick_of,
                          verified_of=lambda spec: spec.parent in {
                              t.filename for t in specs if _methods(t.name, s.int8_calibrations)}, force=force)
    if choices:
        old = run.dir / "int8.json"
        merged = {**(_read_json(old) if old.is_file() else {}), **choices}
        write_json(old, {n: merged[n] for n in merged if n in e.formats})
    return done


def _read_json(path) -> dict:
    import json

    return json.loads(path.read_text())

"""``task: detect`` over a run directory: data -> train -> export (+ the int8 choice) -> evaluate -> report.

The task is this package on the stage core: discovery here, the shared export loop
(:func:`edgecnn.stages.export.export_formats`) with the shared int8 chooser held by :class:`MapScorer`,
the shared evaluate loop (:func:`edgecnn.evaluate.loop.evaluate_all`) with COCO mAP and box agreement,
the shared verdict (:func:`edgecnn.stages.verdict.finish_evaluation`). Every stage is recorded in the run
store and skipped while current.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import sha256_file, write_json
from edgecnn.errors import EdgecnnError
from edgecnn.stages.data import fresh_checkpoints, refuse_distribute, task_data_path
from edgecnn.stages.result import RunResult
from edgecnn.store import fingerprint as _fp

log = logging.getLogger("edgecnn.detect")
MODEL = "model.keras"
BATCH = 16
CANDIDATES = "int8_candidates"
HEAD_LAYERS = ("detections",)   # the float-head routes keep the box decoding float


def detect_data(run):
    """The run's images and boxes (the bundled set generated first where the recipe says so): the task's data
    discovery (``run.dataset()`` calls it once per run)."""
    from edgecnn.detect.data import discover_detection

    d, cfg = run.recipe.data, run.recipe.detect
    path = task_data_path(run, "detect")
    data = discover_detection(path, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.split_seed,
                              classes=cfg.classes)
    for p, why in data.skipped:
        log.warning("skipped %s (%s)", p, why)
    info = data.to_json()
    # counts as every task's dataset.json has them (boxes per class per split; the model card reads them), the
    # detection set's own (images, negatives, boxes per class) beside them
    info["detection_counts"] = info["counts"]
    info["counts"] = {s: {c: v["boxes"] for c, v in n["per_class"].items()} for s, n in info["counts"].items()}
    run.store.write_dataset(data.classes, {**info, "task": "detect"})
    log.info("detection data %s (%s): classes %s; %s", data.root, data.layout, data.classes,
             json.dumps(data.counts())[:300])
    return data


def _truth(items, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each item's boxes in the resized input's pixels, and classes."""
    out = []
    for i in items:
        scale = np.array([size / i.width, size / i.height] * 2, np.float32)
        out.append((np.asarray(i.boxes, np.float32).reshape(-1, 4) * scale, np.asarray(i.classes, np.int64)))
    return out


class _Images:
    """A split's images decoded a slice at a time (what the scorer and the evaluation slice)."""

    ndim = 4

    def __init__(self, items, size: int, channels: int):
        self.items, self.size, self.channels = list(items), size, channels

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.items), self.size, self.size, self.channels)

    def __getitem__(self, index):
        from edgecnn.detect.data import load_item

        if isinstance(index, slice):
            return np.stack([load_item(i, self.size, self.channels)[0] for i in self.items[index]])
        return load_item(self.items[index], self.size, self.channels)[0]

    def batches(self, batch: int = BATCH):
        for start in range(0, len(self), batch):
            yield self[start:start + batch]


def _nms(cfg) -> dict:
    return {"score_threshold": cfg.score_threshold, "iou_threshold": cfg.iou_threshold,
            "max_detections": cfg.max_detections}


def train_stage(run, force: bool = False) -> bool:
    """Train unless model.keras is current; returns True when it trained."""
    r = run.recipe
    refuse_distribute(run, "detect")
    data = run.dataset()
    fp = _fp("detect", data.fingerprint(), r.model.model_dump(mode="json"), r.train.model_dump(mode="json"),
             r.data.augment.flip, r.data.batch_size, r.data.channels, r.detect.mosaic, run.input_size)
    if not force and run.store.is_current("train", fp, [MODEL, "history.json"]):
        log.info("train: up to date (model.keras), skipped")
        return False
    fresh_checkpoints(run.dir, fp, force)
    from edgecnn.detect.train import train_detector

    train_detector(r, data, run.input_size, run.dir)
    run.store.record("train", fp, [MODEL, "history.json"])
    return True


def _load_model(run):
    from edgecnn._trust import load_keras
    from edgecnn.arch import detection  # noqa: F401  (registers DetectionOutput for load_model)

    return load_keras(run.dir / MODEL)


def _spread(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` (a split is grouped by class: the first ``n`` would miss some)."""
    if n >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def choose_int8(run, spec, model, ctx, fp: str) -> dict | None:
    """``spec``'s int8 file through the shared chooser, held by :class:`MapScorer`; the pick, or None (withheld:
    int8.json says why no route held)."""
    from edgecnn.compress.chooser import choose_with, list_routes
    from edgecnn.compress.stage import int8_format_of
    from edgecnn.detect.scorer import MapScorer
    from edgecnn.tasks.detect import INT8_RUNTIMES

    cfg, size = run.recipe.detect, run.input_size
    runtime = next((rt for rt in INT8_RUNTIMES if int8_format_of(rt) == spec.name), None)
    if runtime is None:
        return None
    routes = [n.name for n in list_routes() if n.runtime == runtime and n.name in cfg.int8_routes]
    record = _read_json(run.dir / "int8.json")
    if not routes:
        record.setdefault("withheld", {})[spec.filename] = {"runtime": runtime, "fingerprint": fp,
                                                            "reason": f"detect.int8_routes names no {runtime} route"}
        write_json(run.dir / "int8.json", record)
        return None
    val = _spread(run.dataset().splits["val"], cfg.int8_val_images)
    scorer = MapScorer(_Images(val, size, run.recipe.data.channels), _truth(val, size), len(run.dataset().classes),
                       max_drop=cfg.max_int8_map_drop, min_agreement=cfg.min_int8_box_agreement, nms=_nms(cfg),
                       report_threshold=cfg.report_threshold, head_layers=HEAD_LAYERS, batch=BATCH)
    result = choose_with(scorer, model, ctx.calibration, run.dir / CANDIDATES,
                         run.recipe.compress.choose_options(routes=routes, runtimes=(runtime,)),
                         float_onnx=run.dir / "model.onnx" if (run.dir / "model.onnx").is_file() else None)
    record.setdefault("runtimes", {})[runtime] = result.to_json()
    record.setdefault("withheld", {}).pop(spec.filename, None)
    record.setdefault("picks", {}).pop(spec.filename, None)
    if result.chosen is None:
        log.error("export: %s withheld: %s", spec.filename, result.reason)
        record["withheld"][spec.filename] = {"runtime": runtime, "reason": result.reason, "fingerprint": fp}
        write_json(run.dir / "int8.json", record)
        return None
    c = result.chosen
    record["picks"][spec.filename] = {"route": c.route, "runtime": runtime, "map50": c.accuracy, "map50_drop": c.drop,
                                      "box_agreement": c.agreement, "reason": result.reason}
    write_json(run.dir / "int8.json", record)
    return {"artifact": str(Path(c.artifact).relative_to(run.dir)), "route": c.route,
            "notes": [f"val mAP@0.5 {c.accuracy:.4f} (drop {c.drop:+.4f}), box agreement {c.agreement:.4f}"]}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def withheld(run) -> dict[str, dict]:
    """int8 files no route held for the current settings (the export loop's record; int8.json says why): not
    shipped, and the run fails."""
    from edgecnn.stages.export import withheld_files

    details = _read_json(run.dir / "int8.json").get("withheld", {})
    return {f: {**w, **details.get(f, {})}
            for f, w in withheld_files(run.store, run.recipe.export.formats).items()}


def export_stage(run, force: bool = False, formats: list[str] | None = None) -> list[str]:
    """Every format of ``export.formats`` through the shared export loop; an int8 format is the chooser's pick or
    is withheld (no file, the run fails)."""
    from edgecnn.arch import get_model_entry
    from edgecnn.compress.stage import int8_format_of
    from edgecnn.export import ExportContext, format_depth, get_format
    from edgecnn.export.manifest import init_manifest
    from edgecnn.stages.export import Withheld, export_formats, withdraw
    from edgecnn.tasks.detect import INT8_RUNTIMES

    r, e, cfg = run.recipe, run.recipe.export, run.recipe.detect
    if not (run.dir / MODEL).is_file():
        raise EdgecnnError(f"no model.keras in {str(run.dir)!r}; run `edgecnn train {run.dir}` first.")
    data, size = run.dataset(), run.input_size
    specs = sorted((get_format(f) for f in formats or e.formats), key=format_depth)
    int8 = {int8_format_of(rt) for rt in INT8_RUNTIMES}   # the formats only the chooser may write
    base_fp = _fp(run.store.fingerprint_of("train"), e.calibration_images, e.opset, e.onnx_per_channel)
    choice_fp = _fp(base_fp, cfg.model_dump(mode="json"), r.compress.model_dump(mode="json"))
    if not cfg.int8:   # the recipe opts out of int8 detection files: none is made
        for s in [s for s in specs if s.precision == "int8"]:
            withdraw(run.store, s, "detect.int8 is false")
        specs = [s for s in specs if s.precision != "int8"]
    def fp_of(spec) -> str:
        return choice_fp if spec.name in int8 else base_fp

    entry = get_model_entry(r.model.name)
    init_manifest(run.dir, name=r.name, task="detect", labels=data.classes,
                  model={"name": r.model.name, "input_size": size, "num_classes": len(data.classes),
                         "family": entry.family, "task": "detect", **r.model.args},
                  detect={"output": "detections (N, A, 4 + K): boxes [x0, y0, x1, y1] / input side, then K class "
                                    "probabilities", "box_scale": size, **_nms(cfg),
                          "report_threshold": cfg.report_threshold})

    def load_model():
        from edgecnn.arch.inspect import preprocessing_of

        model = _load_model(run)
        init_manifest(run.dir, preprocessing={**preprocessing_of(model), "resize": [size, size],
                                              "channels": int(model.input_shape[-1])})
        return model

    def context(todo, model):
        calib = None
        if any(t.needs_calibration or t.name in int8 for t in todo):
            items = _spread(data.splits["train"], e.calibration_images)
            calib = _Images(items, size, r.data.channels)[0:len(items)]
        return ExportContext(run.dir, calibration=calib, opset=e.opset, tflite_calibration=e.tflite_calibration,
                             onnx_calibration=e.onnx_calibration, onnx_per_channel=e.onnx_per_channel,
                             target_cpu=run.recipe.compress.target_cpu)

    def pick_of(spec, model, ctx):
        if spec.name not in int8:
            return None
        pick = choose_int8(run, spec, model, ctx, choice_fp)
        return Withheld("no int8 route held the budget (int8.json 'withheld')") if pick is None else pick

    chosen = {get_format(n).filename for n in int8}   # an int8 file made from a pick (tflm-c) is held through it
    return export_formats(run.store, specs, fp_of, load_model=load_model, context=context, pick_of=pick_of,
                          verified_of=lambda spec: spec.parent in chosen, force=force)


def evaluate_stage(run, force: bool = False) -> RunResult:
    """Every artifact in every runtime on the test split (the shared loop): COCO mAP, precision/recall at the
    report threshold, box agreement with model.keras; the budgets; the report."""
    from edgecnn.evaluate.loop import evaluate_all
    from edgecnn.export.manifest import read_manifest
    from edgecnn.report import render_report
    from edgecnn.runtime import list_runtimes
    from edgecnn.runtime.latency import machine_info, resolve_threads
    from edgecnn.stages.verdict import finish_evaluation

    data, size, cfg, ecfg = run.dataset(), run.input_size, run.recipe.detect, run.recipe.evaluate
    manifest = read_manifest(run.dir)
    fp = _fp({n: a["sha256"] for n, a in manifest["artifacts"].items()}, sha256_file(run.dir / MODEL),
             ecfg.model_dump(mode="json"), data.fingerprint(), cfg.model_dump(mode="json"))
    if not force and run.store.is_current("evaluate", fp, ["report.json", "detections.json"]):
        log.info("evaluate: up to date (report.json), skipped measuring; re-checking budgets")
        report = json.loads(run.store.path("report.json").read_text())
    else:
        from edgecnn.arch import detection  # noqa: F401  (the decode layer, for the Keras reference)
        from edgecnn.detect.centroid import OutputRecorder, centroid_figures, is_centroid
        from edgecnn.detect.metrics import box_agreement, coco_map
        from edgecnn.detect.outputs import predict_detections

        test = _Images(data.splits["test"], size, run.recipe.data.channels)
        if not len(test):
            raise EdgecnnError(f"the test split of {str(data.root)!r} has no images.")
        truth = _truth(test.items, size)
        k = len(data.classes)
        report: dict[str, Any] = {
            "task": "detect", "name": run.recipe.name, "reference": MODEL, "classes": data.classes,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "test_images": len(test),
            "test_boxes": int(sum(len(t[1]) for t in truth)), "machine": machine_info(),
            "detect": {**_nms(cfg), "report_threshold": cfg.report_threshold},
            "latency_protocol": {"batch": 1, "warmup": ecfg.warmup, "runs": ecfg.runs,
                                 "threads": sorted({resolve_threads(t) for t in ecfg.threads})},
            "runtimes": {rt.name: {"version": rt.version(), "available": rt.available()[0]} for rt in list_runtimes()},
            "artifacts": {}}
        ref: list = []
        kept: dict[str, list] = {}
        centroid = is_centroid(manifest)   # FOMO: its raw cells are kept for the centroid figures
        cells: dict[str, np.ndarray] = {}

        def measure(job, runner) -> dict:
            recorder = OutputRecorder(runner) if centroid else runner
            dets = predict_detections(recorder, test.batches(), size, **_nms(cfg))
            m = coco_map(truth, dets, k, score_threshold=cfg.report_threshold)
            if not ref:
                ref.extend(dets)
            metrics = {"map": max(m["map"], 0.0), "map50": max(m["map50"], 0.0), "map75": max(m["map75"], 0.0),
                       "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
                       "per_class": {data.classes[c]: v for c, v in m["per_class"].items()},
                       "box_agreement": box_agreement(ref, dets, iou=0.5, score_threshold=cfg.report_threshold),
                       "detections_per_image": float(np.mean([d.above(cfg.report_threshold).count for d in dets]))}
            reference = report["artifacts"].get(MODEL, {"metrics": metrics})["metrics"]
            metrics["map_drop"] = reference["map"] - metrics["map"]
            if centroid:
                cells[job.key] = recorder.output()
                own = None if job.own else cells.get(job.file)   # TFLite Micro vs the file in LiteRT
                metrics.update(centroid_figures(cells[job.key], truth, size, cfg.report_threshold,
                                                reference=cells[MODEL], own_runtime=own))
            if job.key == MODEL:
                report["artifacts"][MODEL] = {"metrics": metrics}
            kept[job.key] = [d.above(cfg.report_threshold).to_json() for d in dets]
            return {"metrics": metrics, "pr_curves": {data.classes[c]: v for c, v in m["pr_curves"].items()}}

        report["artifacts"], errors = evaluate_all(
            run.dir, manifest, MODEL, ecfg, measure, test[0],
            describe=lambda m: f"mAP={m['map']:.4f} mAP50={m['map50']:.4f} agree={m['box_agreement']:.4f}")
        if errors:
            report["errors"] = errors
        report["reference_map"] = report["artifacts"][MODEL]["metrics"]["map"]
        write_json(run.dir / "detections.json", {"images": [i.image for i in test.items],
                                                 "truth": [[b.tolist(), c.tolist()] for b, c in truth],
                                                 "detections": kept})
    report["int8_choice"] = _read_json(run.dir / "int8.json")
    result = finish_evaluation(run.store, report, run.recipe.budgets, fp, manifest=manifest, withheld=withheld(run),
                               outputs=("report.json", "detections.json"))
    render_report(run.dir)
    return result

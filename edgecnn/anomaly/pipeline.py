"""``task: anomaly``: fit -> export -> evaluate over a run directory, each stage resumable.

* **fit**: patch features of at most ``max_train_images`` good training images, streamed in batches
  (so are the validation scores here and in the int8 choice);
  PatchCore's coreset or PaDiM's Gaussians (:mod:`edgecnn.anomaly.fit`); the threshold from the
  validation images (:mod:`edgecnn.anomaly.threshold`), written into the graph so 0.5 is the threshold;
  ``model.keras`` and ``fit.json``.
* **export**: ``model.fp32.tflite`` and ``model.onnx`` (the shared exporters), then the int8 choice through
  the shared chooser (:func:`choose_int8`): per runtime (LiteRT, onnxruntime; OpenVINO runs the ONNX file)
  the routes of ``anomaly.int8_routes`` (PTQ, percentile calibration, then an int8 backbone under a float
  head), the first whose validation AUROC is within ``max_int8_auroc_drop`` of the float model's, and whose
  scores keep a rank correlation of ``min_int8_score_correlation`` with the float model's, becomes
  ``model.int8.tflite`` / ``model.int8.onnx``; ``int8.json`` records every candidate and why a file is
  withheld. ``manifest.json`` records the method, threshold and map scale.
* **evaluate**: every artifact on the test split (:mod:`edgecnn.anomaly.evaluate`), budgets, the report.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from edgecnn._io import atomic_path, write_json
from edgecnn.anomaly.data import AnomalySet, discover_anomaly, load_images
from edgecnn.errors import EdgecnnError
from edgecnn.stages.data import task_data_path
from edgecnn.store import fingerprint as _fp

log = logging.getLogger("edgecnn.anomaly")
BATCH = 16
MODEL = "model.keras"
FLOAT_FORMATS = ("tflite-fp32", "onnx")
CANDIDATES = "int8_candidates"                          # the chooser's workdir
CALIBRATION_IMAGES = 64
HEAD_LAYERS = ("anomaly_distance/", "anomaly_map/", "anomaly_inner/", "/score/")  # kept float by the float-head routes


def anomaly_dataset(r) -> AnomalySet:
    """The recipe's data folder (generated first when ``data.generate: defects`` and it is missing): the task's
    data discovery (``run.dataset()`` calls it once per run)."""
    d, cfg = r.recipe.data, r.recipe.anomaly
    path = task_data_path(r, "anomaly")
    ds = discover_anomaly(path, normal=cfg.normal, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                          seed=d.split_seed)
    r.store.write_dataset(None, {**ds.to_json(), "fingerprint": ds.fingerprint(),
                                 "test_files": [[i.path, i.kind] for i in ds.test]})
    return ds


def _batches(paths: list[str], size: int, predict):
    """A function giving a fresh iterator of ``predict`` over ``paths``, decoded ``BATCH`` at a time (one call
    per pass over the images; memory does not grow with their number)."""
    def gen():
        for i in range(0, len(paths), BATCH):
            yield predict(load_images(paths[i:i + BATCH], size))
    return gen


def _scores(predict, paths: list[str], size: int) -> np.ndarray:
    """Image scores over ``paths``; ``predict`` maps a batch of images to its scores (N,)."""
    return np.concatenate(list(_batches(paths, size, predict)()))


def _keras_scores(model):
    return lambda x: model.predict(x, verbose=0)[0][:, 0]


def fit_stage(r, force: bool = False) -> bool:
    """The train stage: fit the statistics and the threshold; write model.keras and fit.json. Returns True when
    it fitted. A memory bank or per-position Gaussians are sums over all images, not gradient steps:
    ``train.distribute`` is refused."""
    ds = r.dataset()
    cfg = r.recipe.anomaly
    if r.recipe.train.distribute.strategy != "none":
        raise EdgecnnError(f"train.distribute.strategy is {r.recipe.train.distribute.strategy!r}, but task: anomaly "
                           f"fits {cfg.method}'s statistics in one pass on one machine (no gradient steps to "
                           "distribute). Set train.distribute.strategy: none.")
    fp = _fp(ds.fingerprint(), cfg.model_dump(mode="json"))
    if not force and r.store.is_current("train", fp, [MODEL, "fit.json"]):
        log.info("fit: up to date (model.keras), skipped")
        return False
    from edgecnn.anomaly.fit import fit_padim, fit_patchcore
    from edgecnn.anomaly.graph import build_anomaly_model, build_feature_model, set_normalisation
    from edgecnn.anomaly.threshold import choose_threshold

    size = cfg.input_size
    train = ds.train[:cfg.max_train_images]
    t0 = time.perf_counter()
    features = build_feature_model(cfg.backbone, size, cfg.method)
    batches = _batches(train, size, lambda x: features.predict(x, verbose=0))
    if cfg.method == "patchcore":
        stats = fit_patchcore(batches, fraction=cfg.coreset_fraction, seed=cfg.seed)
    else:
        stats = fit_padim(batches, dims=cfg.padim_dims, seed=cfg.seed)
    fit_s = time.perf_counter() - t0
    model = build_anomaly_model(cfg.backbone, size, cfg.method, stats, map_size=size, sigma=cfg.blur_sigma,
                                score_margin=cfg.score_margin)
    raw = _scores(_keras_scores(model), [i.path for i in ds.val], size)  # normalisation is the identity here
    thr = choose_threshold(raw, np.array([i.defect for i in ds.val]), rule=cfg.threshold, quantile=cfg.quantile)
    set_normalisation(model, thr["threshold"], thr["scale"])
    with atomic_path(r.dir / MODEL, suffix=".keras") as tmp:
        model.save(str(tmp))
    stat_bytes = int(sum(v.nbytes for v in stats.values()))
    write_json(r.dir / "fit.json", {
        "method": cfg.method, "backbone": cfg.backbone, "input_size": size, "map_size": size,
        "train_images": len(train), "fit_seconds": round(fit_s, 2), "statistics_bytes": stat_bytes,
        "statistics": {k: list(v.shape) for k, v in stats.items()}, "threshold": thr,
        "score_margin": cfg.score_margin, "blur_sigma": cfg.blur_sigma})
    log.info("fit: %s on %s, %d good images, %.1fs; threshold %.4f (%s), statistics %.1f MB", cfg.method,
             cfg.backbone, len(train), fit_s, thr["threshold"], thr["rule"], stat_bytes / 2 ** 20)
    r.store.record("train", fp, [MODEL, "fit.json"])
    return True


def split_outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N,), maps (N, M, M)) from a runner's outputs, in whatever order the converter left them."""
    from edgecnn.anomaly.serve import split_outputs as split

    return split(outputs)


class _ValImages:
    """The val images, decoded a slice at a time: what the int8 scorer slices (memory holds one batch)."""

    ndim = 4

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.size, self.size, 3)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return load_images(self.paths[index], self.size)
        return load_images([self.paths[index]], self.size)[0]


def _int8_row(c, run_dir: Path, float_auroc: float) -> dict:
    """One chooser candidate as int8.json lists it (the anomaly names of its figures)."""
    return {"route": c.route, "runtime": c.runtime, "tier": c.tier,
            "artifact": str(Path(c.artifact).relative_to(run_dir)) if c.artifact else None,
            "auroc": c.accuracy, "auroc_float": float_auroc, "auroc_drop": c.drop, "score_correlation": c.agreement,
            "size_bytes": c.size_bytes, "latency_p50_ms": c.latency_p50_ms, "float_p50_ms": c.float_p50_ms,
            "slower_than_float": c.slower_than_float, "ok": c.within_budget, "error": c.error,
            "float_nodes": len(c.notes.get("float_nodes", []))}


def choose_int8(r, model, ds: AnomalySet, calib: np.ndarray) -> dict:
    """The int8 files of an anomaly model through the shared chooser (:func:`edgecnn.compress.chooser.choose_with`):
    for each runtime of ``INT8_RUNTIMES`` its routes in ``anomaly.int8_routes``, escalated until one keeps the
    val image AUROC within ``anomaly.max_int8_auroc_drop`` of the float model's and the scores' rank correlation
    at ``anomaly.min_int8_score_correlation`` (:class:`AurocScorer`) and,
    unless ``compress.prefer`` says size for the runtime, is not slower than its float twin.

    Returns int8.json's content: ``picks`` and ``withheld`` by file name (a withheld file says why no route
    held), ``runtimes`` (each chooser result), every candidate in ``candidates`` and ``pick``, the LiteRT route.
    """
    from edgecnn.anomaly.metrics import AurocScorer
    from edgecnn.compress.chooser import choose_with, list_routes
    from edgecnn.compress.stage import int8_format_of
    from edgecnn.export import get_format
    from edgecnn.tasks.anomaly import INT8_RUNTIMES

    cfg = r.recipe.anomaly
    scorer = AurocScorer(_ValImages([i.path for i in ds.val], cfg.input_size), [i.defect for i in ds.val],
                         max_drop=cfg.max_int8_auroc_drop, min_agreement=cfg.min_int8_score_correlation,
                         head_layers=HEAD_LAYERS, batch=BATCH)
    runtime_of = {route.name: route.runtime for route in list_routes()}
    out: dict = {"criterion": "", "runtimes": {}, "picks": {}, "withheld": {}, "candidates": []}
    cache: dict = {}   # the float twins and their latencies, shared by the runtimes
    for runtime in INT8_RUNTIMES:
        fmt = get_format(int8_format_of(runtime))
        routes = [n for n in cfg.int8_routes if runtime_of[n] == runtime]
        if not routes:
            offered = [n for n, rt in runtime_of.items() if rt == runtime]
            out["withheld"][fmt.filename] = {"runtime": runtime,
                                             "reason": f"anomaly.int8_routes names no {runtime} route; {offered}"}
            continue
        result = choose_with(scorer, model, calib, r.dir / CANDIDATES,
                             r.recipe.compress.choose_options(routes=routes, runtimes=(runtime,)),
                             float_onnx=r.dir / "model.onnx", cache=cache)
        out["runtimes"][runtime] = result.to_json()
        out["candidates"] += [_int8_row(c, r.dir, scorer.float_metric) for c in result.candidates]
        if result.chosen is None:
            log.error("export: %s withheld: %s", fmt.filename, result.reason)
            out["withheld"][fmt.filename] = {"runtime": runtime, "reason": result.reason}
            continue
        c = result.chosen
        out["picks"][fmt.filename] = {**_int8_row(c, r.dir, scorer.float_metric), "format": fmt.name,
                                      "precision": "int8+fp32-head" if c.notes.get("float_nodes") else "int8",
                                      "reason": result.reason}
    out["criterion"] = (f"val {scorer.budget_text()}" + (" (the float ranking is held: val has no defects)"
                                                         if not scorer.ranked else "")
                        + "; not slower than the float twin unless compress.prefer says size")
    out["max_auroc_drop"], out["float_auroc"] = cfg.max_int8_auroc_drop, scorer.float_metric
    out["pick"] = out["picks"].get(get_format(int8_format_of("litert")).filename, {}).get("route")
    return out


def export_stage(r, force: bool = False, formats: list[str] | None = None) -> list[str]:
    """model.fp32.tflite, model.onnx and (where a route holds) model.int8.tflite and model.int8.onnx through the
    shared export loop, with the manifest; an int8 file no route held is withheld (int8.json says why)."""
    from edgecnn.compress.stage import int8_format_of
    from edgecnn.export import ExportContext, get_format
    from edgecnn.export.manifest import init_manifest
    from edgecnn.stages.export import Withheld, export_formats, withdraw
    from edgecnn.tasks.anomaly import INT8_RUNTIMES

    cfg = r.recipe.anomaly
    if formats:
        raise EdgecnnError(f"task: anomaly exports a fixed set (float TFLite and ONNX, and the int8 picks); "
                           f"received --format {formats}. Leave --format out.")
    ds = r.dataset()
    int8 = [get_format(int8_format_of(rt)) for rt in INT8_RUNTIMES]
    specs = [get_format(n) for n in FLOAT_FORMATS] + (int8 if cfg.int8 else [])
    if not cfg.int8:
        for spec in int8:
            withdraw(r.store, spec, "anomaly.int8 is false")
    base_fp = _fp(r.store.fingerprint_of("train"), r.recipe.export.opset)
    choice_fp = _fp(base_fp, cfg.max_int8_auroc_drop, cfg.min_int8_score_correlation, cfg.int8_routes,
                    r.recipe.compress.model_dump(mode="json"))   # the chooser's routes and options

    def fp_of(spec) -> str:
        return choice_fp if spec in int8 else base_fp

    size = cfg.input_size
    fit = __import__("json").loads((r.dir / "fit.json").read_text())
    init_manifest(r.dir, name=r.recipe.name, task="anomaly", labels=[cfg.normal, "defect"],
                  model={"name": f"{cfg.method}_{cfg.backbone}", "input_size": size, "family": cfg.backbone},
                  preprocessing={"input": "RGB 0-255", "normalisation": "inside the graph (the backbone's)",
                                 "resize": [size, size], "channels": 3},
                  anomaly={"method": cfg.method, "backbone": cfg.backbone, "threshold": fit["threshold"]["threshold"],
                           "scale": fit["threshold"]["scale"], "threshold_rule": fit["threshold"]["rule"],
                           "normalised_threshold": 0.5, "map_size": fit["map_size"],
                           "map_scale": fit["map_size"] / size, "score_margin": cfg.score_margin,
                           "outputs": {"score": "(N, 1): max of the map inside the margin",
                                       "anomaly_map": f"(N, {fit['map_size']}, {fit['map_size']}, 1)"},
                           "normalisation": "(raw - threshold) / scale + 0.5"})

    def load_model():
        from edgecnn._tf import keras
        from edgecnn.anomaly import graph  # noqa: F401  (registers the custom layers for load_model)

        return keras.models.load_model(str(r.dir / MODEL), compile=False)

    def context(todo, model):
        calib = None
        if any(spec in int8 for spec in todo):   # good images only (what a line has); val's good ones too
            good = ds.train[:cfg.max_train_images] + [i.path for i in ds.val if not i.defect]
            calib = load_images(good[:CALIBRATION_IMAGES], size)
        return ExportContext(r.dir, opset=r.recipe.export.opset, calibration=calib,
                             target_cpu=r.recipe.compress.target_cpu)

    choice: dict = {}

    def pick_of(spec, model, ctx):
        if spec not in int8:
            return None
        if not choice:   # both runtimes' choice at once, the first time an int8 file is due
            choice.update(choose_int8(r, model, ds, ctx.calibration))
            write_json(r.dir / "int8.json", choice)
        pick = choice["picks"].get(spec.filename)
        if pick is None:
            why = choice["withheld"].get(spec.filename, {}).get("reason", "no int8 route held")
            return Withheld(f"no int8 route held the AUROC budget: {why}")
        return {"artifact": pick["artifact"], "route": pick["route"], "precision": pick["precision"],
                "notes": [f"val AUROC {pick['auroc']:.4f} (drop {pick['auroc_drop']:+.4f}), score rank correlation "
                          f"{pick['score_correlation']:.4f}"]}

    return export_formats(r.store, specs, fp_of, load_model=load_model, context=context, pick_of=pick_of,
                          force=force)

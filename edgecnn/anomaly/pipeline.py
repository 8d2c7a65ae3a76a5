"""``task: anomaly``: fit -> export -> evaluate over a run directory, each stage resumable.

* **fit**: patch features of at most ``max_train_images`` good training images, streamed in batches
  (so are the validation scores here and in the int8 choice);
  PatchCore's coreset or PaDiM's Gaussians (:mod:`edgecnn.anomaly.fit`); the threshold from the
  validation images (:mod:`edgecnn.anomaly.threshold`), written into the graph so 0.5 is the threshold;
  ``model.keras`` and ``fit.json``.
* **export**: ``model.fp32.tflite`` and ``model.onnx`` (the shared exporters), then the int8 choice: full
  int8, else an int8 backbone under a float head (TFLite selective quantisation), the first whose
  validation AUROC is within ``max_int8_auroc_drop`` of the float model's becomes ``model.int8.tflite``
  (``int8.json`` records every candidate). ``manifest.json`` records the method, threshold and map scale.
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
from edgecnn.stages.data import generate_defects
from edgecnn.store import fingerprint as _fp

log = logging.getLogger("edgecnn.anomaly")
BATCH = 16
MODEL = "model.keras"
FLOAT_FORMATS = ("tflite-fp32", "onnx")
INT8_FILE = "model.int8.tflite"
CALIBRATION_IMAGES = 64
HEAD_LAYERS = ("anomaly_distance/", "anomaly_map/", "anomaly_inner/", "/score/")  # kept float by the mixed route


def anomaly_dataset(r) -> AnomalySet:
    """The recipe's data folder (generated first when ``data.generate: defects`` and it is missing): the task's
    data discovery (``run.dataset()`` calls it once per run)."""
    if r.recipe.import_ is not None:
        raise EdgecnnError("task: anomaly fits its own model from good images; `edgecnn import` is for classifiers.")
    d, cfg = r.recipe.data, r.recipe.anomaly
    path = Path(d.path)
    if not path.exists() and d.generate == "defects":
        generate_defects(path, d.generate_seed)
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


def _runner_scores(runner):
    return lambda x: split_outputs(runner.predict_outputs(x))[0]


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


def _head_nodes(fp32_tflite: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    names = [t["name"] for t in Interpreter(model_path=str(fp32_tflite)).get_tensor_details()]
    return [n for n in names if any(h in n for h in HEAD_LAYERS)]


def _candidate_failures() -> tuple[type[BaseException], ...]:
    """What drops an int8 candidate rather than the run: the TFLite converter's ``ConverterError``, the
    interpreter's ``RuntimeError`` (a converted graph it cannot allocate or invoke) and a readable
    :class:`EdgecnnError` (too few calibration images, an artifact the runner refuses). Anything else
    (``TypeError``, ``AttributeError``, ``KeyError``, ...) is a bug in this code and propagates."""
    from tensorflow.lite.python.convert_phase import ConverterError

    return EdgecnnError, ConverterError, RuntimeError


def _choose_int8(r, model, ds: AnomalySet, calib: np.ndarray) -> dict:
    """Full int8, then int8 backbone + float head; the first within max_int8_auroc_drop on val is kept."""
    from edgecnn._io import write_bytes
    from edgecnn.anomaly.metrics import rank_correlation
    from edgecnn.quantize import tflite_int8
    from edgecnn.runtime import load_runner

    cfg = r.recipe.anomaly
    val = [i.path for i in ds.val]
    defect = np.array([i.defect for i in ds.val])
    ref = _scores(_keras_scores(model), val, cfg.input_size)

    def quality(scores):
        out = {"score_correlation": rank_correlation(ref, scores)}
        if defect.any() and (~defect).any():
            from sklearn.metrics import roc_auc_score

            out["auroc"], out["auroc_float"] = float(roc_auc_score(defect, scores)), float(roc_auc_score(defect, ref))
            out["auroc_drop"] = out["auroc_float"] - out["auroc"]
            out["ok"] = out["auroc_drop"] <= cfg.max_int8_auroc_drop
        else:  # a good-only val split: keep the float model's ranking instead
            out["ok"] = out["score_correlation"] >= 0.99
        return out

    candidates = []
    for route, deny in (("full-int8", None), ("int8-backbone-float-head", _head_nodes(r.dir / "model.fp32.tflite"))):
        tmp = r.dir / f"int8_candidates/{route}.tflite"
        tmp.parent.mkdir(exist_ok=True)
        try:
            write_bytes(tmp, tflite_int8(model, calib, denylisted_nodes=deny or ()))
            scores = _scores(_runner_scores(load_runner(tmp, threads=1)), val, cfg.input_size)
            cand = {"route": route, "artifact": str(tmp.relative_to(r.dir)), **quality(scores)}
        except _candidate_failures() as e:  # a converter or interpreter failure drops the candidate, not the run
            cand = {"route": route, "ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        log.info("int8 candidate %s: %s", route, {k: v for k, v in cand.items() if k != "artifact"})
        candidates.append(cand)
        if cand["ok"]:
            break
    pick = next((c for c in candidates if c["ok"]), None)
    return {"candidates": candidates, "pick": pick["route"] if pick else None,
            "criterion": f"val AUROC drop <= {cfg.max_int8_auroc_drop} (score rank correlation >= 0.99 when val "
                         "has no defects)"}


def export_stage(r, force: bool = False, formats: list[str] | None = None) -> list[str]:
    """model.fp32.tflite, model.onnx and (when one fits) model.int8.tflite, with the manifest."""
    from edgecnn._io import copy_artifact
    from edgecnn.export import ExportContext, export, get_format
    from edgecnn.export.manifest import add_artifact, init_manifest, remove_artifact

    cfg = r.recipe.anomaly
    if formats:
        raise EdgecnnError(f"task: anomaly exports a fixed set (float TFLite and ONNX, and the int8 picks); "
                           f"received --format {formats}. Leave --format out.")
    ds = r.dataset()
    fp = _fp(r.store.fingerprint_of("train"), r.recipe.export.opset, cfg.int8, cfg.max_int8_auroc_drop)
    if not force and r.store.is_current("export", fp, ["manifest.json", *r.store.outputs_of("export")]):
        log.info("export: all artifacts up to date, skipped")
        return []
    from edgecnn._tf import keras
    from edgecnn.anomaly import graph  # noqa: F401  (registers the custom layers for load_model)
    from edgecnn.runtime import load_runner

    fit = __import__("json").loads((r.dir / "fit.json").read_text())
    model = keras.models.load_model(str(r.dir / MODEL), compile=False)
    size = cfg.input_size
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
    ctx = ExportContext(r.dir, opset=r.recipe.export.opset)
    written = []
    for name in FLOAT_FORMATS:
        spec = get_format(name)
        remove_artifact(r.dir, spec.filename)
        path = export(name, model, ctx)
        runner = load_runner(path, threads=1)
        add_artifact(r.dir, spec.filename, format=spec.name, precision=spec.precision, runtime=spec.runtime,
                     stage="export", parent=MODEL, input=runner.input.to_json(), output=runner.output.to_json())
        written.append(spec.filename)
    remove_artifact(r.dir, INT8_FILE)
    (r.dir / INT8_FILE).unlink(missing_ok=True)
    if cfg.int8:
        # good images only (what a line has); val's good ones too when train is tiny
        good = ds.train[:cfg.max_train_images] + [i.path for i in ds.val if not i.defect]
        calib = load_images(good[:CALIBRATION_IMAGES], size)
        choice = _choose_int8(r, model, ds, calib)
        write_json(r.dir / "int8.json", choice)
        if choice["pick"]:
            cand = next(c for c in choice["candidates"] if c["route"] == choice["pick"])
            copy_artifact(r.dir / cand["artifact"], r.dir / INT8_FILE)
            runner = load_runner(r.dir / INT8_FILE, threads=1)
            add_artifact(r.dir, INT8_FILE, format="tflite-int8", precision="int8" if cand["route"] == "full-int8"
                         else "int8+fp32-head", runtime="litert", stage="export", parent=MODEL, route=cand["route"],
                         input=runner.input.to_json(), output=runner.output.to_json(),
                         calibration_images=len(calib))
            written.append(INT8_FILE)
        else:
            log.warning("export: no int8 candidate within the budget (%s); no %s", choice["criterion"], INT8_FILE)
    r.store.record("export", fp, written)
    return written

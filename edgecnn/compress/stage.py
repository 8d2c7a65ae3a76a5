"""The pipeline's ``compress`` stage: prune / cluster (optional), then the int8 chooser per runtime.

    compress:                     # on by default: verified by default
      max_accuracy_drop: 0.005
      min_agreement: 0.985
      prefer: {litert: size}      # the TFLite file is for a phone: this x86 CPU's int8 speed says nothing

Runs after ``train`` and before ``export``, for every runtime whose int8 format the recipe exports
(LiteRT ``model.int8.tflite``, onnxruntime ``model.int8.onnx``, OpenVINO ``model.int8.openvino``): the
chooser escalates through that runtime's routes, cheapest first, until one holds the budget (top-1 drop
and agreement on the val split; not slower than float unless ``prefer`` says size); the pick becomes the
runtime's int8 file at export (see :meth:`edgecnn.pipeline.Run.export`). Every candidate, with accuracy,
drop, agreement, size, latency and its float twin's latency, goes to ``compress.json`` and from there
into the report. When no route holds, that runtime's int8 file is **withheld**: nothing is exported for
it, the closest candidate stays under ``compress/`` with its figures, ``compress.json``'s ``withheld``
says why, and the run fails.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from edgecnn._io import atomic_path, write_json
from edgecnn.errors import EdgecnnError

log = logging.getLogger("edgecnn.compress")

COMPRESS_JSON = "compress.json"
WORKDIR = "compress"
# Agreement is judged on at least this many images: val, then training images (labels not needed). On
# lfw_subset's 30 val images one flip is 3.3 points, and a per-tensor ONNX pick that agreed on all 30 flipped
# one of 30 test images.
AGREEMENT_IMAGES = 400


def int8_format_of(runtime: str) -> str:
    """The export format a runtime's pick becomes (``litert`` -> ``tflite-int8``), from the format registry."""
    from edgecnn.export import list_formats

    names = [f.name for f in list_formats() if f.runtime == runtime and f.precision == "int8"]
    if len(names) != 1:
        raise EdgecnnError(f"compress: runtime {runtime!r} has {len(names)} int8 export formats ({names}); the "
                           "chooser's pick needs exactly one to replace.")
    return names[0]


def _save_keras(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(str(tmp))


def _pick(result, min_agreement: float | None) -> tuple[Any, bool]:
    """The chooser's pick, or (when nothing fits) the candidate closest to the budget, and whether it fits.

    Closest = the smallest total excess over the budget: top-1 points lost beyond ``max_accuracy_drop``
    plus agreement points missing below ``min_agreement``.
    """
    if result.chosen is not None:
        return result.chosen, True
    measured = [c for c in result.candidates if c.drop is not None and c.artifact is not None]
    if not measured:
        return None, False

    def excess(c) -> float:
        short = max(0.0, min_agreement - c.agreement) if min_agreement is not None else 0.0
        return max(0.0, c.drop - result.max_accuracy_drop) + short

    return min(measured, key=lambda c: (excess(c), c.drop, c.latency_p50_ms or math.inf)), False


def run_compress(recipe: Any, dataset, run_dir: str | Path, input_size: int) -> dict:  # recipe: edgecnn.config.Recipe
    """Compress ``run_dir/model.keras`` as ``recipe.compress`` says; writes ``compress.json`` and returns it.

    Raises:
        EdgecnnError: no trained model, too few calibration images, or no route produced an artifact.
    """
    from edgecnn._trust import load_keras
    from edgecnn.compress.chooser import choose, float_top1, list_routes
    from edgecnn.data.decoded_split import SPLITS_DIR, decoded_split
    from edgecnn.data.loader import calibration_arrays, make_dataset

    cfg = recipe.compress
    run_dir = Path(run_dir)
    if not (run_dir / "model.keras").is_file():
        raise EdgecnnError(f"no model.keras in {str(run_dir)!r}; run `edgecnn train {run_dir}` first.")
    workdir = run_dir / WORKDIR
    workdir.mkdir(parents=True, exist_ok=True)
    seed = recipe.train.seed
    model = load_keras(run_dir / "model.keras")
    calib = calibration_arrays(dataset, input_size, recipe.export.calibration_images, seed=seed)
    val_x = decoded_split(dataset, "val", input_size, run_dir / SPLITS_DIR)   # read a batch at a time
    val_y = val_x.labels
    # Shuffled, not augmented: QAT distilled on augmented images (teacher labelling each one) did
    # worse on the default recipe (test agreement 0.967 vs 0.981 without augmentation).
    train = make_dataset(dataset, "train", input_size, recipe.data.batch_size, training=True, seed=seed)
    shared: dict[str, Any] = {}  # QAT model, float predictions and twins: computed once for every runtime
    float_acc = float((float_top1(model, val_x, shared) == val_y).mean())
    extra = _agreement_images(dataset, input_size, len(val_y), seed)
    out: dict[str, Any] = {"max_accuracy_drop": cfg.max_accuracy_drop, "min_agreement": cfg.min_agreement,
                           "float_val_accuracy": float_acc,
                           "val_images": int(len(val_y)), "calibration_images": int(len(calib))}
    teacher = model if cfg.qat.distill else None
    subject = model
    if cfg.prune.enabled:
        subject, out["prune"] = _prune(model, train, cfg, teacher, seed)
        _save_keras(subject, workdir / "model.pruned.keras")
    if cfg.cluster.enabled:
        subject, out["cluster"] = _cluster(subject, train, cfg, teacher, seed)
        _save_keras(subject, workdir / "model.clustered.keras")

    out["runtimes"], out["picks"], out["withheld"] = {}, {}, {}
    for runtime, routes in chooser_plan(recipe).items():
        if not routes:
            _withhold(out, runtime, f"no route in compress.routes runs in {runtime}; add one of "
                                    f"{[r.name for r in list_routes() if r.runtime == runtime]}")
            continue
        log.info("compress: choosing the %s int8 artifact among %s (prefer %s)", runtime, ", ".join(routes),
                 cfg.prefer_for(runtime))
        result = choose(subject, val_x, val_y, calib, workdir, cfg.choose_options(routes=routes, runtimes=(runtime,)),
                        train=train, reference_accuracy=float_acc, cache=shared, agreement_images=extra)
        _record_pick(out, runtime, result, run_dir, cfg.min_agreement)
    if subject is model:   # a pruned or clustered subject's twins are not model.keras's
        out["float_twins"] = float_twins(workdir, run_dir, recipe.export.opset)
    return _finish(out, run_dir, cfg.prefer_for)


# The export formats the chooser converts model.keras to as float twins (chooser._float_twin), under their export
# file names (get_format(...).filename there too), with the same converter and settings.
FLOAT_TWINS = ("onnx", "tflite-fp32")


def float_twins(workdir: Path, run_dir: Path, opset: int) -> dict[str, str]:
    """``{export format: file under run_dir}`` of the float twins the chooser converted, for export to copy in;
    the ONNX one only when the recipe's ``export.opset`` is the chooser's."""
    from edgecnn.compress.chooser import ChooseContext
    from edgecnn.export import get_format

    paths = {fmt: workdir / get_format(fmt).filename for fmt in FLOAT_TWINS}
    return {fmt: str(path.relative_to(run_dir)) for fmt, path in paths.items()
            if path.is_file() and (fmt != "onnx" or opset == ChooseContext.opset)}


def _agreement_images(dataset, input_size: int, n_val: int, seed: int):
    """Training images (a draw other than calibration's) that bring the agreement check up to AGREEMENT_IMAGES."""
    from edgecnn.data.loader import calibration_arrays

    n = min(AGREEMENT_IMAGES - n_val, len(dataset.labels("train")))
    return calibration_arrays(dataset, input_size, n, seed=seed + 1) if n > 0 else None


def chooser_plan(recipe: Any, *, needs_model: bool = True) -> dict[str, list[str]]:
    """``{runtime: its routes in compress.routes}`` for every runtime whose int8 format the recipe exports.

    ``needs_model=False`` keeps only the routes that run on a float ONNX alone (an import without tf_keras).
    """
    from edgecnn.compress.chooser import list_routes

    cfg = recipe.compress
    usable = {r.name: r.runtime for r in list_routes() if needs_model or not r.needs_model}
    offered = sorted({r.runtime for r in list_routes()})
    return {rt: [r for r in cfg.routes if usable.get(r) == rt] for rt in offered
            if rt in cfg.runtimes and int8_format_of(rt) in recipe.export.formats}


def run_compress_onnx(recipe: Any, dataset, run_dir: str | Path, input_size: int) -> dict:
    """The compress stage of an imported model that has no tf_keras graph (an ONNX file, or a Keras 3 /
    SavedModel exported through ONNX): the chooser's routes that run on ``run_dir/model.onnx`` alone.

    Only runtimes whose int8 artifact is an ONNX file are chosen for (onnxruntime: ``model.int8.onnx``);
    the drop and agreement are measured against ``model.onnx`` in onnxruntime on the val split.
    Writes ``compress.json`` (same schema as :func:`run_compress`) and returns it.

    Raises:
        EdgecnnError: no model.onnx, or none of the recipe's routes runs without a Keras model.
    """
    from edgecnn.compress.chooser import choose_onnx, list_routes
    from edgecnn.data.decoded_split import SPLITS_DIR, decoded_split
    from edgecnn.data.loader import calibration_arrays
    from edgecnn.export import get_format

    cfg = recipe.compress
    run_dir = Path(run_dir)
    float_onnx = run_dir / "model.onnx"
    if not float_onnx.is_file():
        raise EdgecnnError(f"no model.onnx in {str(run_dir)!r}: an imported model without a tf_keras graph is "
                           "compressed from its float ONNX; this import has none (a TFLite source), so set "
                           "compress.enabled to false.")
    onnx_only = {r.name: r.runtime for r in list_routes() if not r.needs_model}
    plan = {rt: routes for rt, routes in chooser_plan(recipe, needs_model=False).items()
            if get_format(int8_format_of(rt)).filename.endswith(".onnx")}
    if plan and not any(plan.values()):
        raise EdgecnnError(f"compress: none of the routes {list(cfg.routes)} runs on an ONNX file alone, and "
                           f"this imported model has no tf_keras graph. Routes that do: "
                           f"{sorted(onnx_only)}; put them in compress.routes.")
    for step in ("prune", "cluster"):
        if getattr(cfg, step).enabled:
            log.warning("compress: %s needs a tf_keras model; this import has none, so compress.%s is ignored",
                        step, step)
    workdir = run_dir / WORKDIR
    workdir.mkdir(parents=True, exist_ok=True)
    seed = recipe.train.seed
    calib = calibration_arrays(dataset, input_size, recipe.export.calibration_images, seed=seed)
    val_x = decoded_split(dataset, "val", input_size, run_dir / SPLITS_DIR)
    val_y = val_x.labels
    out: dict[str, Any] = {"max_accuracy_drop": cfg.max_accuracy_drop, "min_agreement": cfg.min_agreement,
                           "reference": "model.onnx", "val_images": int(len(val_y)),
                           "calibration_images": int(len(calib)), "runtimes": {}, "picks": {}, "withheld": {}}
    shared: dict[str, Any] = {}
    extra = _agreement_images(dataset, input_size, len(val_y), seed)
    for runtime, routes in plan.items():
        if not routes:
            _withhold(out, runtime, f"no route in compress.routes runs in {runtime} on an ONNX file alone")
            continue
        log.info("compress: choosing the %s int8 artifact of the float ONNX among %s", runtime, ", ".join(routes))
        result = choose_onnx(float_onnx, val_x, val_y, calib, workdir,
                             cfg.choose_options(routes=routes, runtimes=(runtime,)), cache=shared,
                             agreement_images=extra)
        out["float_val_accuracy"] = result.float_accuracy
        _record_pick(out, runtime, result, run_dir, cfg.min_agreement)
    # An int8 file the import stage wrote for a runtime with no ONNX-only routes (model.int8.tflite from a
    # SavedModel or Keras 3 source): no chooser can remake it, so it is held to the same budget as it is.
    for runtime in chooser_plan(recipe):
        fmt = int8_format_of(runtime)
        if runtime in plan or fmt in out["picks"] or fmt in out["withheld"]:
            continue
        twin = {"litert": "model.fp32.tflite"}.get(runtime)
        filename = get_format(fmt).filename
        if twin and (run_dir / filename).is_file() and (run_dir / twin).is_file():
            _judge_fixed(out, runtime, run_dir / filename, run_dir / twin, val_x, val_y, cfg)
        else:
            _withhold(out, runtime, f"no route runs in {runtime} on an import without a tf_keras graph")
    return _finish(out, run_dir, cfg.prefer_for)


def _judge_fixed(out: dict, runtime: str, artifact: Path, twin: Path, val_x, val_y, cfg) -> None:
    """Hold an int8 file no route can remake to the budget: its val top-1 drop and agreement against its float
    twin in ``runtime`` (and, preferring latency, its speed against the twin's), as candidate ``import-ptq``."""
    from edgecnn.compress.chooser import SPEED_RESOLUTION, Candidate, ChooseResult, measure_candidate

    o = cfg.choose_options(runtimes=(runtime,))
    ref = Candidate("float", "ptq", runtime, artifact=twin)
    ref_pred = measure_candidate(ref, val_x, val_y, None, None, o)
    c = Candidate("import-ptq", "ptq", runtime, artifact=artifact, notes={"from": "the import stage"})
    measure_candidate(c, val_x, val_y, ref_pred, ref.accuracy, o)
    c.within_budget = c.drop <= o.max_accuracy_drop + 1e-9 and (
        o.min_agreement is None or c.agreement >= o.min_agreement - 1e-9)
    if o.prefer == "latency" and o.runs and c.within_budget:
        c.float_p50_ms = ref.latency_p50_ms
        c.slower_than_float = c.latency_p50_ms > c.float_p50_ms * (1 + SPEED_RESOLUTION)
        c.within_budget = not c.slower_than_float
    reason = (f"{artifact.name} from the import: top-1 drop {c.drop:+.4f}, agreement {c.agreement:.4f} against "
              f"{twin.name}" + (f", p50 {c.latency_p50_ms:.3f} ms vs {c.float_p50_ms:.3f} ms"
                                if c.float_p50_ms else "")
              + (" (within budget)" if c.within_budget else
                 f"; budget unreachable: drop <= {o.max_accuracy_drop:.4f}, agreement >= {o.min_agreement}"
                 + (", not slower than float" if c.slower_than_float else "")))
    result = ChooseResult(c if c.within_budget else None, reason, o.max_accuracy_drop, ref.accuracy, ref.accuracy,
                          [c], {}, o.threads, val_images=len(val_y))
    _record_pick(out, runtime, result, artifact.parent, o.min_agreement)


def _record_pick(out: dict, runtime: str, result, run_dir: Path, min_agreement: float | None) -> None:
    """Put one runtime's chooser result into ``out``: its pick, or (no route held) what is withheld and why."""
    out["runtimes"][runtime] = result.to_json()
    pick, fits = _pick(result, min_agreement)
    if not fits:
        log.error("compress: %s int8 withheld: %s", runtime, result.reason)
        closest = None if pick is None else {
            "route": pick.route, "artifact": str(Path(pick.artifact).relative_to(run_dir)),
            "val_accuracy": pick.accuracy, "val_drop": pick.drop, "val_agreement": pick.agreement,
            "latency_p50_ms": pick.latency_p50_ms, "float_p50_ms": pick.float_p50_ms,
            "slower_than_float": pick.slower_than_float}
        _withhold(out, runtime, result.reason, closest)
        return
    out["picks"][int8_format_of(runtime)] = {
        "route": pick.route, "tier": pick.tier, "artifact": str(Path(pick.artifact).relative_to(run_dir)),
        "within_budget": True, "val_accuracy": pick.accuracy, "val_drop": pick.drop,
        "val_agreement": pick.agreement, "latency_p50_ms": pick.latency_p50_ms, "float_p50_ms": pick.float_p50_ms,
        "speedup": pick.speedup, "notes": pick.notes, "reason": result.reason}


def _withhold(out: dict, runtime: str, reason: str, closest: dict | None = None) -> None:
    """No int8 file for ``runtime``: the float artifacts ship, the run fails, ``closest`` stays in compress/."""
    out["withheld"][int8_format_of(runtime)] = {"runtime": runtime, "reason": reason, "closest": closest}


def _finish(out: dict, run_dir: Path, prefer_for) -> dict:
    """The overall choice among the runtimes' picks (``prefer_for(runtime)``: latency or size); writes
    compress.json."""
    fitting = list(out["picks"].values())
    out["chosen"] = None
    if fitting:
        by_route = {c["route"]: c for r in out["runtimes"].values() for c in r["candidates"]}
        prefer = {prefer_for(by_route[p["route"]]["runtime"]) for p in fitting}
        key = "latency_p50_ms" if prefer == {"latency"} else "size_bytes"
        best = min(fitting, key=lambda p: by_route[p["route"]][key] or math.inf)
        out["chosen"] = best["route"]
    write_json(run_dir / COMPRESS_JSON, out)
    return out


def _prune(model, train, cfg, teacher, seed: int) -> tuple[Any, dict]:
    from edgecnn.compress.pruning import fine_tune_pruned, overall_sparsity, prune, strip

    p = cfg.prune
    steps = max(1, int(train.cardinality())) * p.epochs
    # reach the target a little before the end, so the last steps fine-tune at the final sparsity
    end = max(1, int(steps * 0.75))
    wrapped = prune(model, target_sparsity=p.target_sparsity, end_step=end, frequency=min(p.frequency, end),
                    structured_2_4=p.structured_2_4, layers=p.layers, exclude=p.exclude)
    history = fine_tune_pruned(wrapped, train, epochs=p.epochs, lr=p.lr, seed=seed, teacher=teacher)
    stripped = strip(wrapped)
    info = {"target_sparsity": p.target_sparsity, "structured_2_4": p.structured_2_4, "layers": p.layers,
            "epochs": p.epochs, "sparsity": round(overall_sparsity(stripped), 4),
            "final": {k: round(v[-1], 4) for k, v in history.items()}}
    log.info("compress: pruned to %.1f %% sparsity", 100 * info["sparsity"])
    return stripped, info


def _cluster(model, train, cfg, teacher, seed: int) -> tuple[Any, dict]:
    from edgecnn.compress.clustering import cluster, fine_tune_clustered, strip_clusters

    c = cfg.cluster
    wrapped = cluster(model, clusters=c.clusters, init=c.init, preserve_sparsity=cfg.prune.enabled)
    history = fine_tune_clustered(wrapped, train, epochs=c.epochs, lr=c.lr, seed=seed, teacher=teacher)
    info = {"clusters": c.clusters, "init": c.init, "epochs": c.epochs,
            "final": {k: round(v[-1], 4) for k, v in history.items()}}
    return strip_clusters(wrapped), info


__all__ = ["run_compress", "int8_format_of", "COMPRESS_JSON"]

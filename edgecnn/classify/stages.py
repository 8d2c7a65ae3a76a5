"""``task: classify``'s stages over a run directory: import or train -> compress (the int8 chooser) -> export
-> evaluate (+ budgets, findings, the report).

Each stage is a function of the run (:class:`edgecnn.pipeline.Run`: the recipe, the run store, the
dataset) and keeps its bookkeeping in the run store (:mod:`edgecnn.store`): a stage whose fingerprint is
unchanged and whose outputs are intact is skipped, so re-running a finished recipe is cheap and a killed
run resumes (training resumes mid-phase).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from edgecnn._io import copy_artifact, sha256_file, write_json
from edgecnn.errors import EdgecnnError
from edgecnn.stages.data import fresh_checkpoints, generate_defects
from edgecnn.stages.result import RunResult
from edgecnn.store import fingerprint as _fp

log = logging.getLogger("edgecnn")


def import_stage(run, force: bool = False) -> bool:
    """The train stage of an imported run: write model.keras (Keras sources) or the ONNX/TFLite
    artifacts from ``recipe.import_``. Returns True when it imported."""
    from edgecnn.importing import import_source

    imp = run.recipe.import_
    src = Path(imp.source)
    digest = sha256_file(src) if src.is_file() else _fp(sorted(
        (str(p.relative_to(src)), sha256_file(p)) for p in src.rglob("*") if p.is_file()))
    e = run.recipe.export
    fp = _fp(digest, imp.model_dump(mode="json"), run.dataset().fingerprint(), e.calibration_images,
             e.onnx_calibration, e.onnx_per_channel)
    rec = run.store.stage_record("train")
    if not force and rec.get("imported") and run.store.is_current("train", fp, list(rec.get("outputs", {}))):
        log.info("import: up to date, skipped")
        return False
    from edgecnn.export.manifest import add_artifact, init_manifest
    from edgecnn.runtime import load_runner
    from edgecnn.stages.export import io_fields

    ds = run.dataset()

    def calibration(size: int):  # TensorFlow (the loader) only when an int8 artifact is made
        from edgecnn.data.loader import calibration_arrays

        return calibration_arrays(ds, size, e.calibration_images, seed=run.recipe.train.seed)

    result = import_source(src, run.dir, classes=ds.classes, input_size=imp.input_size,
                           preprocess=imp.preprocess, bgr=imp.bgr, trust_code=imp.trust_code,
                           calibration=calibration,
                           opset=e.opset, onnx_calibration=e.onnx_calibration,
                           onnx_per_channel=e.onnx_per_channel)
    for note in result.notes:
        log.info("import: %s", note)
    run.recipe.model.input_size = result.input_size
    run.save_recipe()
    from edgecnn.importing.labels import choose_labels

    labels_from = choose_labels(src, imp.labels)[1]
    log.info("import: labels from %s", labels_from)
    record = {**result.to_json(), "source": str(src), "preprocessing": result.preprocessing,
              "labels_from": labels_from}
    init_manifest(run.dir, name=run.recipe.name, labels=ds.classes,
                  model={"name": src.name, "input_size": result.input_size, "num_classes": len(ds.classes),
                         "family": f"imported ({result.source_format})"},
                  preprocessing={**result.preprocessing, "resize": [result.input_size] * 2})
    init_manifest(run.dir, **{"import": record})
    run.store.forget("export")
    for name, art in result.artifacts.items():
        runner = load_runner(run.dir / name, threads=1)
        add_artifact(run.dir, name, stage="import", **io_fields(runner),
                     **({"verified": False} if art["precision"] == "int8" else {}),
                     calibration_images=e.calibration_images if art["precision"] == "int8" and
                     result.source_format != "tflite" else None, **art)
    outputs = ["model.keras"] if result.route == "keras" else list(result.artifacts)
    run.store.record("train", fp, outputs, imported=True, **{"import": record})
    return True


def classify_data(run):
    """The run's class-per-folder images (generated first where the recipe says so), split into train, val
    and test; an import orders the classes as the model's outputs (``--labels``, else its metadata)."""
    d = run.recipe.data
    path = Path(d.path)
    if not path.exists() and d.generate == "defects":
        generate_defects(path, d.generate_seed)
    from edgecnn.data.folders import discover

    ds = discover(path, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.split_seed,
                  min_images_per_class=d.min_images_per_class, skip_bad_images=d.skip_bad_images,
                  channels=d.channels)
    if run.recipe.import_ is not None:
        from edgecnn.importing.labels import choose_labels, order_classes

        labels, origin = choose_labels(run.recipe.import_.source, run.recipe.import_.labels)
        if labels is not None:
            ds = order_classes(ds, labels, origin)
    for p, why in ds.skipped:
        log.warning("skipped unreadable image %s (%s)", p, why)
    run.store.write_dataset(ds.classes, {"root": str(ds.root), "layout": ds.layout, "classes": ds.classes,
                                         "counts": ds.counts(), "skipped": ds.skipped,
                                         "fingerprint": ds.fingerprint(),
                                         "test_files": [[str(p), ds.classes[y]] for p, y in
                                                        zip(ds.paths("test"), ds.labels("test"))]})
    log.info("dataset %s (%s): %s", ds.root, ds.layout,
             ", ".join(f"{s} {sum(c.values())}" for s, c in ds.counts().items()))
    return ds


def train_fingerprint(run) -> str:
    r = run.recipe
    train = r.train.model_dump(mode="json")
    if r.train.distill.teacher is None:
        del train["distill"]   # runs made before distillation existed stay current
    else:   # a retrained teacher retrains the student
        from edgecnn.distill import resolve_teacher

        train["distill"]["teacher_sha256"] = sha256_file(resolve_teacher(run.teacher())[0])
    return _fp(run.dataset().fingerprint(), r.model.model_dump(mode="json"), train,
               r.data.augment.model_dump(mode="json"), r.data.batch_size)


def train(run, force: bool = False) -> bool:
    """Train unless model.keras is current. Returns True when it trained.

    An imported run's train stage is the import itself (:func:`import_stage`): nothing to train."""
    if run.recipe.import_ is not None:
        rec = run.store.stage_record("train")
        if not rec.get("imported") or not run.store.is_current("train", rec["fingerprint"], list(rec["outputs"])):
            raise EdgecnnError(f"{str(run.dir)!r} is an imported run whose imported files are missing or "
                               f"changed; import again with `edgecnn import {run.recipe.import_.source} ...`.")
        log.info("train: imported model (%s), nothing to train", run.recipe.import_.source_format)
        return False
    fp = train_fingerprint(run)
    if not force and run.store.is_current("train", fp, ["model.keras", "history.json"]):
        log.info("train: up to date (model.keras), skipped")
        return False
    if not run.recipe.train.distribute.is_chief:  # a multi_worker non-chief: trains, writes nothing here
        from edgecnn.train import train as fit

        fit(run.recipe, run.dataset(), run.dir)
        return True
    fresh_checkpoints(run.dir, fp, force)   # checkpoints of another config must not be resumed
    from edgecnn.train import train as fit

    recipe = run.recipe
    if recipe.train.distill.teacher is not None:   # a recipe teacher: its run directory
        recipe = recipe.model_copy(deep=True)
        recipe.train.distill.teacher = run.teacher()
    result = fit(recipe, run.dataset(), run.dir)
    run.store.record("train", fp, ["model.keras", "history.json"])
    if result.resumed:
        log.info("train: resumed from checkpoints")
    return True


def compress_fingerprint(run) -> str | None:
    """None when the recipe opts out of the chooser (``compress.enabled: false``) or exports no int8 format
    the chooser picks for."""
    from edgecnn.compress.stage import chooser_plan

    c = run.recipe.compress
    plan = chooser_plan(run.recipe)
    if not c.enabled or not plan:
        return None
    train_fp = run.store.fingerprint_of("train") or _fp(sha256_file(run.dir / "model.keras"))
    e = run.recipe.export
    return _fp(train_fp, c.model_dump(mode="json"), e.calibration_images, e.opset, run.recipe.train.seed,
               run.recipe.data.batch_size, sorted(plan))


def _compress_json(run) -> dict:
    path = run.dir / "compress.json"
    if compress_fingerprint(run) is None or not path.is_file():
        return {}
    return json.loads(path.read_text())


def compress_picks(run) -> dict[str, dict]:
    """``{format name: pick}`` from compress.json (empty when compression is off or has not run)."""
    return _compress_json(run).get("picks", {})


def withheld(run) -> dict[str, dict]:
    """``{format name: why}`` for every int8 format the chooser ran for and found no route that held
    (compress.json's ``withheld``): those files are not shipped, and the run fails."""
    return _compress_json(run).get("withheld", {})


def chosen_formats(run) -> set[str]:
    """The int8 formats only the chooser may write (empty when the recipe opts out of it)."""
    from edgecnn.compress.stage import chooser_plan, int8_format_of

    if compress_fingerprint(run) is None:
        return set()
    return {int8_format_of(rt) for rt in chooser_plan(run.recipe)}


def compress(run, force: bool = False) -> bool:
    """Run the compress stage (recipe ``compress.enabled``) unless compress.json is current."""
    fp = compress_fingerprint(run)
    if fp is None:
        return False
    imported = run.import_record()
    if imported and imported["route"] != "keras":
        return _compress_imported_onnx(run, fp, force)
    if not (run.dir / "model.keras").is_file():
        raise EdgecnnError(f"no model.keras in {str(run.dir)!r}; run `edgecnn train {run.dir}` first.")
    picks = compress_picks(run)
    outputs = ["compress.json"] + [p["artifact"] for p in picks.values()]
    if not force and run.store.is_current("compress", fp, outputs):
        log.info("compress: up to date (compress.json), skipped")
        return False
    from edgecnn.compress.stage import run_compress

    out = run_compress(run.recipe, run.dataset(), run.dir, run.input_size)
    _diagnose_withheld(run, out)
    # export notices new picks itself (their fingerprint changed); evaluate runs again
    run.store.record("compress", fp, ["compress.json"] + [p["artifact"] for p in out["picks"].values()])
    return True


def _diagnose_withheld(run, out: dict) -> None:
    """The doctor's per-layer summary of each withheld runtime's closest candidate, in compress.json and the
    CLI's message: where the int8 error enters, so the user sees why no route held."""
    from edgecnn.compress.stage import COMPRESS_JSON
    from edgecnn.evaluate.doctor import diagnose, format_diagnosis

    for w in out.get("withheld", {}).values():
        closest = w.get("closest")
        if not closest:
            continue
        try:
            d = diagnose(run.dir, closest["artifact"], runtime=w["runtime"], profile=False)
            w["doctor"] = format_diagnosis(d)
        except EdgecnnError as e:   # a candidate the doctor cannot read: say so, the run fails anyway
            w["doctor"] = f"the doctor could not read {closest['artifact']}: {e}"
    if out.get("withheld"):
        write_json(run.dir / COMPRESS_JSON, out)


def _compress_imported_onnx(run, fp: str, force: bool) -> bool:
    """An import without a tf_keras graph: the chooser's ONNX-only routes on model.onnx; the onnxruntime
    pick replaces the import's model.int8.onnx (there is no export stage to copy it in), an int8 file no
    route can remake (its model.int8.tflite) is held to the budget as it is, and a withheld one leaves."""
    from edgecnn.compress.stage import run_compress_onnx
    from edgecnn.export import get_format
    from edgecnn.export.manifest import add_artifact
    from edgecnn.runtime import load_runner
    from edgecnn.stages.export import io_fields, withdraw

    picks = compress_picks(run)
    if not force and run.store.is_current("compress", fp, ["compress.json"] + [p["artifact"] for p in picks.values()]):
        log.info("compress: up to date (compress.json), skipped")
        return False
    out = run_compress_onnx(run.recipe, run.dataset(), run.dir, run.input_size)
    _diagnose_withheld(run, out)
    for fmt, pick in out["picks"].items():
        spec = get_format(fmt)
        if pick["artifact"] != spec.filename:
            copy_artifact(run.dir / pick["artifact"], run.dir / spec.filename)
        runner = load_runner(run.dir / spec.filename, threads=1)
        add_artifact(run.dir, spec.filename, stage="compress", format=fmt, precision="int8",
                     runtime=spec.runtime, parent="model.onnx" if spec.filename.endswith(".onnx")
                     else "model.fp32.tflite", **io_fields(runner),
                     calibration_images=run.recipe.export.calibration_images,
                     route=pick["route"], chooser_artifact=pick["artifact"], notes=pick["notes"], verified=True)
        log.info("compress: %s is the chooser's pick, %s", spec.filename, pick["route"])
    for fmt in out["withheld"]:
        withdraw(run.store, get_format(fmt), "no int8 route held the budget (compress.json 'withheld')")
    run.store.record("compress", fp, ["compress.json"] + [p["artifact"] for p in out["picks"].values()])
    return True


def export(run, formats: list[str] | None = None, force: bool = False) -> list[str]:
    """Export every configured format whose artifact is missing or stale; returns the names exported."""
    from edgecnn.export import ExportContext, format_depth, get_format
    from edgecnn.export.manifest import init_manifest

    imported = run.import_record()
    if imported and imported["route"] != "keras":
        log.info("export: the %s artifacts were written by the import stage; nothing to export",
                 imported["source_format"])
        return []
    if not (run.dir / "model.keras").is_file():
        raise EdgecnnError(f"no model.keras in {str(run.dir)!r}; run `edgecnn train {run.dir}` first.")
    formats = formats or run.recipe.export.formats
    specs = [get_format(f) for f in formats]
    # A format made from another's file (onnx-int8 from model.onnx) is exported after its parent.
    specs.sort(key=format_depth)
    specs = _drop_unverified(run, specs)
    train_fp = run.store.fingerprint_of("train") or _fp(sha256_file(run.dir / "model.keras"))
    e = run.recipe.export
    base_fp = _fp(train_fp, e.calibration_images, e.opset, e.onnx_calibration, e.onnx_per_channel,
                  e.tflite_calibration)
    picks = compress_picks(run)
    compress_fp = run.store.fingerprint_of("compress")

    def fp_of(spec) -> str:  # a picked int8 artifact is current only for this compress stage's result
        return _fp(base_fp, compress_fp, picks[spec.name]) if spec.name in picks else base_fp

    from edgecnn.arch import get_model_entry
    from edgecnn.arch.inspect import preprocessing_of

    ds = run.dataset()
    size = run.input_size
    if not imported:
        entry = get_model_entry(run.recipe.model.name)
        init_manifest(run.dir, name=run.recipe.name,
                      model={"name": run.recipe.model.name, "input_size": size, "num_classes": len(ds.classes),
                             "family": entry.family, **run.recipe.model.args},
                      labels=ds.classes)
    from edgecnn._trust import load_keras
    from edgecnn.data.loader import calibration_arrays
    from edgecnn.stages.export import export_formats

    def load_model():
        model = load_keras(run.dir / "model.keras")
        # What the graph's own normalize layer does (ImageNet mean/std, [-1, 1], Caffe mean...).
        pre = imported["preprocessing"] if imported else preprocessing_of(model)
        init_manifest(run.dir, preprocessing={**pre, "resize": [size, size],
                                               "channels": int(model.input_shape[-1])})
        return model

    def context(todo, model):
        calib = None
        if any(s.needs_calibration for s in todo):
            calib = calibration_arrays(ds, size, e.calibration_images, seed=run.recipe.train.seed)
        return ExportContext(run.dir, calibration=calib, opset=e.opset, tflite_calibration=e.tflite_calibration,
                             onnx_calibration=e.onnx_calibration, onnx_per_channel=e.onnx_per_channel,
                             target_cpu=run.recipe.compress.target_cpu)

    picked_files = {get_format(n).filename for n in picks}
    # the chooser's float twins of this model.keras (a current compress stage): copied, not converted again
    twins = ({fmt: run.dir / rel for fmt, rel in _compress_json(run).get("float_twins", {}).items()}
             if compress_fp is not None and compress_fp == compress_fingerprint(run) else {})
    # an int8 file made here is held by the chooser only through its parent (tflm-c), else it is plain PTQ
    return export_formats(run.store, specs, fp_of, load_model=load_model, context=context,
                          pick_of=lambda spec, model, ctx: picks.get(spec.name),
                          verified_of=lambda spec: spec.parent in picked_files,
                          made_of=lambda spec: twins.get(spec.name), force=force)


def _drop_unverified(run, specs: list) -> list:
    """The formats to export, less the int8 ones no chooser route held (withheld) and those made from a
    withheld file (tflm-c from model.int8.tflite); a stale copy of either leaves the run directory."""
    from edgecnn.export import get_format
    from edgecnn.stages.export import withdraw

    chosen, picks = chosen_formats(run), compress_picks(run)
    dropped = {s.name for s in specs if s.name in chosen and s.name not in picks}
    filenames = {get_format(n).filename for n in dropped}
    dropped |= {s.name for s in specs if s.parent in filenames}
    for s in specs:
        if s.name in dropped:
            withdraw(run.store, s, "no int8 route held the budget (compress.json 'withheld')")
    return [s for s in specs if s.name not in dropped]


def evaluate(run, force: bool = False) -> RunResult:
    """Evaluate every artifact (unless report.json is current), apply the budgets, write the findings
    (``findings/``: what the report shows of the model on images), then render the report."""
    from edgecnn.evaluate.findings import write_findings
    from edgecnn.evaluate.run import evaluate_artifacts
    from edgecnn.export.manifest import read_manifest
    from edgecnn.report import render_markdown, render_report
    from edgecnn.stages.verdict import finish_evaluation

    manifest = read_manifest(run.dir)
    reference = run.reference
    fp = _fp({n: a["sha256"] for n, a in manifest["artifacts"].items()},
             sha256_file(run.dir / reference), run.recipe.evaluate.model_dump(mode="json"),
             run.dataset().fingerprint())
    report_path = run.dir / "report.json"
    if not force and run.store.is_current("evaluate", fp, ["report.json"]):
        log.info("evaluate: up to date (report.json), skipped measuring; re-checking budgets")
        report = json.loads(report_path.read_text())
    else:
        from edgecnn.data.decoded_split import SPLITS_DIR, decoded_split

        # decoded once into the run directory, read a batch at a time (memory flat in the split's size)
        test = decoded_split(run.dataset(), "test", run.input_size, run.dir / SPLITS_DIR)
        # an imported ONNX/TFLite source is its own float reference
        report = evaluate_artifacts(run.recipe, run.dir, test, test.labels, run.dataset().classes,
                                    reference=reference)
        if run.import_record():
            report["import"] = run.import_record()
    report.pop("compress", None)
    if run.recipe.compress.enabled and (run.dir / "compress.json").is_file():
        report["compress"] = json.loads((run.dir / "compress.json").read_text())
    result = finish_evaluation(run.store, report, run.recipe.budgets, fp, manifest=manifest,
                               withheld=withheld(run), markdown=render_markdown)
    write_findings(run.dir, run.dataset())  # gallery, Grad-CAM, layer table; skipped while unchanged
    render_report(run.dir)  # report.html, plots/, MODEL_CARD.md: renders only what is in the run directory
    return result

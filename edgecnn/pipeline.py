"""Chains the stages over a run directory: data -> train -> compress -> export -> evaluate (+ budgets).

Each stage records a fingerprint of its inputs and config in ``state.json``; a stage whose
fingerprint is unchanged and whose outputs are intact is skipped, so re-running a finished
recipe is cheap and a killed run resumes where it stopped (training resumes mid-phase).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecnn._io import copy_artifact, remove_artifact_path, sha256_file, write_json, write_text
from edgecnn.config import Recipe, dump_recipe, load_recipe
from edgecnn.errors import EdgecnnError

log = logging.getLogger("edgecnn")
STATE = "state.json"


def _trust_scope(method):
    """Run a stage of an import made with ``--trust-code`` inside :func:`edgecnn._trust.trusted_code`, so its
    Keras model (which may hold a Lambda) loads; every other run keeps tf_keras' safe mode."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        from edgecnn._trust import trusted_code

        imp = self.recipe.import_
        with trusted_code(imp is not None and imp.trust_code):
            return method(self, *args, **kwargs)

    return wrapper


def _fp(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class RunResult:
    run_dir: Path
    report: dict | None = None
    violations: list = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[dict]:
        """Artifacts that failed while running (report.json's ``errors``): each fails the run like a broken budget."""
        return list((self.report or {}).get("errors", []))

    @property
    def withheld(self) -> dict[str, dict]:
        """int8 formats no chooser route held (report.json's ``withheld``): not shipped, and the run fails."""
        return dict((self.report or {}).get("withheld", {}))

    @property
    def ok(self) -> bool:
        return not self.violations and not self.errors and not self.withheld


class Run:
    """A run directory and its recipe; the stage methods can be called alone (``edgecnn train RUN``)."""

    def __init__(self, recipe: Recipe, run_dir: str | os.PathLike):
        self.recipe = recipe
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._dataset = None
        self._teacher: str | None = None
        self.state = self._read_state()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> Run:
        """Reopen a run directory made by ``edgecnn run`` (its recipe.yaml is the resolved recipe)."""
        run_dir = Path(run_dir)
        if not (run_dir / "recipe.yaml").is_file():
            raise EdgecnnError(f"{str(run_dir)!r} is not a run directory (no recipe.yaml). "
                               "Create one with `edgecnn run RECIPE --output DIR`.")
        return cls(load_recipe(run_dir / "recipe.yaml"), run_dir)

    def _read_state(self) -> dict:
        path = self.dir / STATE
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                log.warning("%s is unreadable; every stage will run again", path)
        return {}

    def _save_state(self) -> None:
        write_json(self.dir / STATE, self.state)

    def _done(self, stage: str, fp: str, outputs: list[str]) -> bool:
        rec = self.state.get(stage)
        if not rec or rec.get("fingerprint") != fp:
            return False
        for name, digest in rec.get("outputs", {}).items():
            p = self.dir / name
            if not p.exists() or (digest and sha256_file(p) != digest):  # a file or a folder artifact
                return False
        return all((self.dir / o).exists() for o in outputs)

    def _mark(self, stage: str, fp: str, outputs: list[str], hashed: bool = True) -> None:
        self.state[stage] = {"fingerprint": fp,
                             "outputs": {o: sha256_file(self.dir / o) if hashed else "" for o in outputs}}
        self._save_state()

    # -- imported runs ------------------------------------------------------------------------
    def import_record(self) -> dict | None:
        """What the import stage did (route, reference, preprocessing), or None for a trained run."""
        if self.recipe.import_ is None:
            return None
        return self.state.get("train", {}).get("import")

    @property
    def reference(self) -> str:
        """The float model agreement is measured against: model.keras, or an imported ONNX/TFLite source."""
        rec = self.import_record()
        return rec["reference"] if rec else "model.keras"

    @_trust_scope
    def import_source(self, force: bool = False) -> bool:
        """The train stage of an imported run: write model.keras (Keras sources) or the ONNX/TFLite
        artifacts from ``recipe.import_``. Returns True when it imported."""
        from edgecnn.importing import import_source

        imp = self.recipe.import_
        src = Path(imp.source)
        digest = sha256_file(src) if src.is_file() else _fp(sorted(
            (str(p.relative_to(src)), sha256_file(p)) for p in src.rglob("*") if p.is_file()))
        e = self.recipe.export
        fp = _fp(digest, imp.model_dump(mode="json"), self.dataset().fingerprint(), e.calibration_images,
                 e.onnx_calibration, e.onnx_per_channel)
        rec = self.state.get("train", {})
        if not force and rec.get("imported") and self._done("train", fp, list(rec.get("outputs", {}))):
            log.info("import: up to date, skipped")
            return False
        from edgecnn.export.manifest import add_artifact, init_manifest
        from edgecnn.runtime import load_runner

        ds = self.dataset()

        def calibration(size: int):  # TensorFlow (the loader) only when an int8 artifact is made
            from edgecnn.data.loader import calibration_arrays

            return calibration_arrays(ds, size, e.calibration_images, seed=self.recipe.train.seed)

        result = import_source(src, self.dir, classes=ds.classes, input_size=imp.input_size,
                               preprocess=imp.preprocess, bgr=imp.bgr, trust_code=imp.trust_code,
                               calibration=calibration,
                               opset=e.opset, onnx_calibration=e.onnx_calibration,
                               onnx_per_channel=e.onnx_per_channel)
        for note in result.notes:
            log.info("import: %s", note)
        self.recipe.model.input_size = result.input_size
        write_text(self.dir / "recipe.yaml", dump_recipe(self.recipe))
        from edgecnn.importing.labels import choose_labels

        labels_from = choose_labels(src, imp.labels)[1]
        log.info("import: labels from %s", labels_from)
        record = {**result.to_json(), "source": str(src), "preprocessing": result.preprocessing,
                  "labels_from": labels_from}
        init_manifest(self.dir, name=self.recipe.name, labels=ds.classes,
                      model={"name": src.name, "input_size": result.input_size, "num_classes": len(ds.classes),
                             "family": f"imported ({result.source_format})"},
                      preprocessing={**result.preprocessing, "resize": [result.input_size] * 2})
        init_manifest(self.dir, **{"import": record})
        self.state.pop("export", None)
        for name, art in result.artifacts.items():
            runner = load_runner(self.dir / name, threads=1)
            add_artifact(self.dir, name, stage="import", input=runner.input.to_json(),
                         output=runner.output.to_json(),
                         **({"verified": False} if art["precision"] == "int8" else {}),
                         calibration_images=e.calibration_images if art["precision"] == "int8" and
                         result.source_format != "tflite" else None, **art)
        outputs = ["model.keras"] if result.route == "keras" else list(result.artifacts)
        self._mark("train", fp, outputs)
        self.state["train"].update({"imported": True, "import": record})
        for stage in ("compress", "export", "evaluate"):
            self.state.pop(stage, None)
        self._save_state()
        return True

    # -- stages --------------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        from edgecnn.arch import get_model_entry

        return self.recipe.model.input_size or get_model_entry(self.recipe.model.name).default_input_size

    def dataset(self):
        """Discover (and if the recipe says so, generate) the dataset; cached per Run."""
        if self._dataset is None:
            d = self.recipe.data
            path = Path(d.path)
            if not path.exists() and d.generate == "defects":
                from edgecnn.data.defects import CLASSES, make_defects
                from edgecnn.progress import progress

                log.info("generating the bundled defect set at %s (seed %d)", path, d.generate_seed)
                with progress("generating defect images", 450 * len(CLASSES)) as update:
                    make_defects(path, seed=d.generate_seed, progress=lambda done, total: update(done))
            from edgecnn.data.folders import discover

            self._dataset = discover(path, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                                     seed=d.split_seed, min_images_per_class=d.min_images_per_class,
                                     skip_bad_images=d.skip_bad_images, channels=d.channels)
            if self.recipe.import_ is not None:  # the model's output order: --labels, else its metadata
                from edgecnn.importing.labels import choose_labels, order_classes

                labels, origin = choose_labels(self.recipe.import_.source, self.recipe.import_.labels)
                if labels is not None:
                    self._dataset = order_classes(self._dataset, labels, origin)
            ds = self._dataset
            for p, why in ds.skipped:
                log.warning("skipped unreadable image %s (%s)", p, why)
            write_text(self.dir / "labels.txt", "\n".join(ds.classes) + "\n")
            write_json(self.dir / "dataset.json", {"root": str(ds.root), "layout": ds.layout, "classes": ds.classes,
                                                   "counts": ds.counts(), "skipped": ds.skipped,
                                                   "fingerprint": ds.fingerprint()})
            log.info("dataset %s (%s): %s", ds.root, ds.layout,
                     ", ".join(f"{s} {sum(c.values())}" for s, c in ds.counts().items()))
        return self._dataset

    def teacher(self) -> str | None:
        """``train.distill.teacher`` as a model file or run directory (:func:`teacher_run`: a recipe teacher is
        trained first unless current), resolved once per Run; None without a teacher."""
        spec = self.recipe.train.distill.teacher
        if spec is not None and self._teacher is None:
            self._teacher = teacher_run(spec)
        return self._teacher if spec is not None else None

    def train_fingerprint(self) -> str:
        r = self.recipe
        train = r.train.model_dump(mode="json")
        if r.train.distill.teacher is None:
            del train["distill"]   # runs made before distillation existed stay current
        else:   # a retrained teacher retrains the student
            from edgecnn.distill import resolve_teacher

            train["distill"]["teacher_sha256"] = sha256_file(resolve_teacher(self.teacher())[0])
        return _fp(self.dataset().fingerprint(), r.model.model_dump(mode="json"), train,
                   r.data.augment.model_dump(mode="json"), r.data.batch_size)

    def train(self, force: bool = False) -> bool:
        """Train unless model.keras is current. Returns True when it trained.

        An imported run's train stage is the import itself (:meth:`import_source`): nothing to train."""
        if self.recipe.import_ is not None:
            rec = self.state.get("train", {})
            if not rec.get("imported") or not self._done("train", rec["fingerprint"], list(rec["outputs"])):
                raise EdgecnnError(f"{str(self.dir)!r} is an imported run whose imported files are missing or "
                                   f"changed; import again with `edgecnn import {self.recipe.import_.source} ...`.")
            log.info("train: imported model (%s), nothing to train", self.recipe.import_.source_format)
            return False
        fp = self.train_fingerprint()
        if not force and self._done("train", fp, ["model.keras", "history.json"]):
            log.info("train: up to date (model.keras), skipped")
            return False
        if not self.recipe.train.distribute.is_chief:  # a multi_worker non-chief: trains, writes nothing here
            from edgecnn.train import train

            train(self.recipe, self.dataset(), self.dir)
            return True
        ckpt = self.dir / "checkpoints"
        marker = ckpt / "fingerprint.txt"
        if ckpt.exists() and (force or not marker.is_file() or marker.read_text() != fp):
            shutil.rmtree(ckpt)  # checkpoints of another config must not be resumed
        ckpt.mkdir(parents=True, exist_ok=True)
        write_text(marker, fp)
        from edgecnn.train import train

        recipe = self.recipe
        if recipe.train.distill.teacher is not None:   # a recipe teacher: its run directory
            recipe = recipe.model_copy(deep=True)
            recipe.train.distill.teacher = self.teacher()
        result = train(recipe, self.dataset(), self.dir)
        self._mark("train", fp, ["model.keras", "history.json"])
        self.state.pop("compress", None)
        self.state.pop("export", None)
        self.state.pop("evaluate", None)
        self._save_state()
        if result.resumed:
            log.info("train: resumed from checkpoints")
        return True

    def compress_fingerprint(self) -> str | None:
        """None when the recipe opts out of the chooser (``compress.enabled: false``) or exports no int8 format
        the chooser picks for."""
        from edgecnn.compress.stage import chooser_plan

        c = self.recipe.compress
        plan = chooser_plan(self.recipe)
        if not c.enabled or not plan:
            return None
        train_fp = self.state.get("train", {}).get("fingerprint") or _fp(sha256_file(self.dir / "model.keras"))
        e = self.recipe.export
        return _fp(train_fp, c.model_dump(mode="json"), e.calibration_images, e.opset, self.recipe.train.seed,
                   self.recipe.data.batch_size, sorted(plan))

    def _compress_json(self) -> dict:
        path = self.dir / "compress.json"
        if self.compress_fingerprint() is None or not path.is_file():
            return {}
        return json.loads(path.read_text())

    def compress_picks(self) -> dict[str, dict]:
        """``{format name: pick}`` from compress.json (empty when compression is off or has not run)."""
        return self._compress_json().get("picks", {})

    def withheld(self) -> dict[str, dict]:
        """``{format name: why}`` for every int8 format the chooser ran for and found no route that held
        (compress.json's ``withheld``): those files are not shipped, and the run fails."""
        return self._compress_json().get("withheld", {})

    def chosen_formats(self) -> set[str]:
        """The int8 formats only the chooser may write (empty when the recipe opts out of it)."""
        from edgecnn.compress.stage import chooser_plan, int8_format_of

        if self.compress_fingerprint() is None:
            return set()
        return {int8_format_of(rt) for rt in chooser_plan(self.recipe)}

    @_trust_scope
    def compress(self, force: bool = False) -> bool:
        """Run the compress stage (recipe ``compress.enabled``) unless compress.json is current."""
        fp = self.compress_fingerprint()
        if fp is None:
            return False
        imported = self.import_record()
        if imported and imported["route"] != "keras":
            return self._compress_imported_onnx(fp, force)
        if not (self.dir / "model.keras").is_file():
            raise EdgecnnError(f"no model.keras in {str(self.dir)!r}; run `edgecnn train {self.dir}` first.")
        picks = self.compress_picks()
        outputs = ["compress.json"] + [p["artifact"] for p in picks.values()]
        if not force and self._done("compress", fp, outputs):
            log.info("compress: up to date (compress.json), skipped")
            return False
        from edgecnn.compress.stage import run_compress

        out = run_compress(self.recipe, self.dataset(), self.dir, self.input_size)
        self._diagnose_withheld(out)
        self._mark("compress", fp, ["compress.json"] + [p["artifact"] for p in out["picks"].values()])
        self.state.pop("evaluate", None)  # export notices new picks itself (their fingerprint changed)
        self._save_state()
        return True

    def _diagnose_withheld(self, out: dict) -> None:
        """The doctor's per-layer summary of each withheld runtime's closest candidate, in compress.json and the
        CLI's message: where the int8 error enters, so the user sees why no route held."""
        from edgecnn.compress.stage import COMPRESS_JSON
        from edgecnn.evaluate.doctor import diagnose, format_diagnosis

        for w in out.get("withheld", {}).values():
            closest = w.get("closest")
            if not closest:
                continue
            try:
                d = diagnose(self.dir, closest["artifact"], runtime=w["runtime"], profile=False)
                w["doctor"] = format_diagnosis(d)
            except EdgecnnError as e:   # a candidate the doctor cannot read: say so, the run fails anyway
                w["doctor"] = f"the doctor could not read {closest['artifact']}: {e}"
        if out.get("withheld"):
            write_json(self.dir / COMPRESS_JSON, out)

    def _compress_imported_onnx(self, fp: str, force: bool) -> bool:
        """An import without a tf_keras graph: the chooser's ONNX-only routes on model.onnx; the onnxruntime
        pick replaces the import's model.int8.onnx (there is no export stage to copy it in), an int8 file no
        route can remake (its model.int8.tflite) is held to the budget as it is, and a withheld one leaves."""
        from edgecnn.compress.stage import run_compress_onnx
        from edgecnn.export import get_format
        from edgecnn.export.manifest import add_artifact
        from edgecnn.runtime import load_runner

        picks = self.compress_picks()
        if not force and self._done("compress", fp, ["compress.json"] + [p["artifact"] for p in picks.values()]):
            log.info("compress: up to date (compress.json), skipped")
            return False
        out = run_compress_onnx(self.recipe, self.dataset(), self.dir, self.input_size)
        self._diagnose_withheld(out)
        for fmt, pick in out["picks"].items():
            spec = get_format(fmt)
            if pick["artifact"] != spec.filename:
                copy_artifact(self.dir / pick["artifact"], self.dir / spec.filename)
            runner = load_runner(self.dir / spec.filename, threads=1)
            add_artifact(self.dir, spec.filename, stage="compress", format=fmt, precision="int8",
                         runtime=spec.runtime, parent="model.onnx" if spec.filename.endswith(".onnx")
                         else "model.fp32.tflite", input=runner.input.to_json(),
                         output=runner.output.to_json(), calibration_images=self.recipe.export.calibration_images,
                         route=pick["route"], chooser_artifact=pick["artifact"], notes=pick["notes"], verified=True)
            log.info("compress: %s is the chooser's pick, %s", spec.filename, pick["route"])
        for fmt in out["withheld"]:
            self._withdraw(get_format(fmt))
        self._mark("compress", fp, ["compress.json"] + [p["artifact"] for p in out["picks"].values()])
        self.state.pop("evaluate", None)
        self._save_state()
        return True

    @_trust_scope
    def export(self, formats: list[str] | None = None, force: bool = False) -> list[str]:
        """Export every configured format whose artifact is missing or stale; returns the names exported."""
        from edgecnn.export import ExportContext, format_depth, get_format
        from edgecnn.export.manifest import init_manifest

        imported = self.import_record()
        if imported and imported["route"] != "keras":
            log.info("export: the %s artifacts were written by the import stage; nothing to export",
                     imported["source_format"])
            return []
        if not (self.dir / "model.keras").is_file():
            raise EdgecnnError(f"no model.keras in {str(self.dir)!r}; run `edgecnn train {self.dir}` first.")
        formats = formats or self.recipe.export.formats
        specs = [get_format(f) for f in formats]
        # A format made from another's file (onnx-int8 from model.onnx) is exported after its parent.
        specs.sort(key=format_depth)
        specs = self._drop_unverified(specs)
        train_fp = self.state.get("train", {}).get("fingerprint") or _fp(sha256_file(self.dir / "model.keras"))
        e = self.recipe.export
        base_fp = _fp(train_fp, e.calibration_images, e.opset, e.onnx_calibration, e.onnx_per_channel,
                      e.tflite_calibration)
        picks = self.compress_picks()
        compress_fp = self.state.get("compress", {}).get("fingerprint")

        def fp_of(spec) -> str:  # a picked int8 artifact is current only for this compress stage's result
            return _fp(base_fp, compress_fp, picks[spec.name]) if spec.name in picks else base_fp

        from edgecnn.arch import get_model_entry
        from edgecnn.arch.inspect import preprocessing_of

        ds = self.dataset()
        size = self.input_size
        if not imported:
            entry = get_model_entry(self.recipe.model.name)
            init_manifest(self.dir, name=self.recipe.name,
                          model={"name": self.recipe.model.name, "input_size": size, "num_classes": len(ds.classes),
                                 "family": entry.family, **self.recipe.model.args},
                          labels=ds.classes)
        todo = [s for s in specs if force or not self._export_current(s, fp_of(s))]
        if not todo:
            log.info("export: all %d artifacts up to date, skipped", len(specs))
            return []
        from edgecnn._trust import load_keras
        from edgecnn.data.loader import calibration_arrays
        from edgecnn.progress import progress

        model = load_keras(self.dir / "model.keras")
        # What the graph's own normalize layer does (ImageNet mean/std, [-1, 1], Caffe mean...).
        pre = imported["preprocessing"] if imported else preprocessing_of(model)
        init_manifest(self.dir, preprocessing={**pre, "resize": [size, size], "channels": int(model.input_shape[-1])})
        calib = None
        if any(s.needs_calibration for s in todo):
            calib = calibration_arrays(ds, size, e.calibration_images, seed=self.recipe.train.seed)
        picked_files = {get_format(n).filename for n in picks}
        ctx = ExportContext(self.dir, calibration=calib, opset=e.opset, tflite_calibration=e.tflite_calibration,
                            onnx_calibration=e.onnx_calibration,
                            onnx_per_channel=e.onnx_per_channel)
        with progress("exporting", len(todo)) as update:
            for i, spec in enumerate(todo):
                update(i, spec.name)
                self._export_one(spec, model, ctx, fp_of(spec), picks.get(spec.name), picked_files)
            update(len(todo))
        self.state.pop("evaluate", None)
        self._save_state()
        return [s.name for s in todo]

    def _drop_unverified(self, specs: list) -> list:
        """The formats to export, less the int8 ones no chooser route held (withheld) and those made from a
        withheld file (tflm-c from model.int8.tflite); a stale copy of either leaves the run directory."""
        from edgecnn.export import get_format

        chosen, picks = self.chosen_formats(), self.compress_picks()
        dropped = {s.name for s in specs if s.name in chosen and s.name not in picks}
        filenames = {get_format(n).filename for n in dropped}
        dropped |= {s.name for s in specs if s.parent in filenames}
        for s in specs:
            if s.name in dropped:
                self._withdraw(s)
        return [s for s in specs if s.name not in dropped]

    def _withdraw(self, spec) -> None:
        """A withheld int8 format leaves the run: its file, its manifest entry and its export record."""
        from edgecnn.export.manifest import MANIFEST, remove_artifact

        log.warning("%s withheld: no int8 route held the budget (compress.json 'withheld')", spec.filename)
        if (self.dir / MANIFEST).is_file():   # a first run has no manifest yet
            remove_artifact(self.dir, spec.filename)
        self.state.get("export", {}).pop(spec.name, None)
        remove_artifact_path(self.dir / spec.filename)

    def _export_one(self, spec, model, ctx, fp: str, pick: dict | None = None,
                    picked_files: set[str] = frozenset()) -> None:
        """Export one format, record it in the manifest (hash, io specs) and in state.json.

        With a compress-stage ``pick`` for this format, the chooser's artifact is copied in instead
        of converting ``model`` again (it may come from QAT or a pruned model).
        """
        from edgecnn.export import export
        from edgecnn.export.manifest import add_artifact, remove_artifact
        from edgecnn.runtime import load_runner

        done_state = self.state.setdefault("export", {})
        remove_artifact(self.dir, spec.filename)
        done_state.pop(spec.name, None)
        extra = {}
        if pick is None:
            path = export(spec.name, model, ctx)
            if spec.precision == "int8":   # held by the chooser through its parent (tflm-c), else plain PTQ
                extra = {"verified": spec.parent in picked_files}
        else:
            path = copy_artifact(self.dir / pick["artifact"], self.dir / spec.filename)
            extra = {"route": pick["route"], "chooser_artifact": pick["artifact"], "notes": pick["notes"],
                     "verified": True}
            log.info("export: %s is the compress stage's pick, %s (%s)", spec.filename, pick["route"],
                     pick["artifact"])
        runner = load_runner(path, threads=1)
        add_artifact(self.dir, spec.filename, format=spec.name, precision=spec.precision, runtime=spec.runtime,
                     stage="compress" if pick else "export", parent=spec.parent, input=runner.input.to_json(),
                     output=runner.output.to_json(),
                     calibration_images=len(ctx.calibration) if spec.needs_calibration else None, **extra)
        done_state[spec.name] = {"fingerprint": fp, "sha256": sha256_file(path)}
        self._save_state()

    def _export_current(self, spec, fp: str) -> bool:
        rec = self.state.get("export", {}).get(spec.name)
        p = self.dir / spec.filename
        return bool(rec and rec["fingerprint"] == fp and p.exists() and sha256_file(p) == rec["sha256"])

    @_trust_scope
    def evaluate(self, force: bool = False) -> RunResult:
        """Evaluate every artifact (unless report.json is current), apply the budgets, write the findings
        (``findings/``: what the report shows of the model on images), then render the report."""
        from edgecnn.evaluate.budgets import check_budgets
        from edgecnn.evaluate.findings import write_findings
        from edgecnn.evaluate.run import evaluate_artifacts
        from edgecnn.export.manifest import read_manifest
        from edgecnn.report import render_markdown, render_report

        manifest = read_manifest(self.dir)
        reference = self.reference
        fp = _fp({n: a["sha256"] for n, a in manifest["artifacts"].items()},
                 sha256_file(self.dir / reference), self.recipe.evaluate.model_dump(mode="json"),
                 self.dataset().fingerprint())
        report_path = self.dir / "report.json"
        if not force and self._done("evaluate", fp, ["report.json"]):
            log.info("evaluate: up to date (report.json), skipped measuring; re-checking budgets")
            report = json.loads(report_path.read_text())
        else:
            from edgecnn.data.decoded_split import SPLITS_DIR, decoded_split

            # decoded once into the run directory, read a batch at a time (memory flat in the split's size)
            test = decoded_split(self.dataset(), "test", self.input_size, self.dir / SPLITS_DIR)
            # an imported ONNX/TFLite source is its own float reference
            report = evaluate_artifacts(self.recipe, self.dir, test, test.labels, self.dataset().classes,
                                        reference=reference)
            if self.import_record():
                report["import"] = self.import_record()
        report.pop("compress", None)
        if self.recipe.compress.enabled and (self.dir / "compress.json").is_file():
            report["compress"] = json.loads((self.dir / "compress.json").read_text())
        checks, violations = check_budgets(report, self.recipe.budgets)
        report["budgets"] = {"checks": checks, "violations": [v.to_json() for v in violations]}
        report.pop("withheld", None)
        withheld = self.withheld()
        if withheld:
            report["withheld"] = withheld
        report["unverified"] = sorted(n for n, a in manifest["artifacts"].items() if a.get("verified") is False)
        report["verdict"] = "pass" if not violations and not report.get("errors") and not withheld else "fail"
        write_json(report_path, report)
        write_text(self.dir / "report.md", render_markdown(report))
        self._mark("evaluate", fp, ["report.json"], hashed=False)
        write_findings(self.dir, self.dataset())  # gallery, Grad-CAM, layer table; skipped while unchanged
        render_report(self.dir)  # report.html, plots/, MODEL_CARD.md: renders only what is in the run directory
        return RunResult(self.dir, report, violations)


def teacher_run(spec: str) -> str:
    """``train.distill.teacher`` as a model file or run directory: a recipe YAML becomes its run directory
    (``export/<name>``, where ``edgecnn run`` of that recipe puts it), trained first unless current."""
    p = Path(spec)
    if p.suffix not in (".yaml", ".yml"):
        return spec
    if not p.is_file():
        raise EdgecnnError(f"train.distill.teacher: no recipe at {spec!r}. Give a recipe YAML, a run directory "
                           "with model.keras, or a Keras model file.")
    recipe = load_recipe(p)
    recipe.data.path = str(Path(recipe.data.path).resolve())
    teacher = Run(recipe, Path("export") / recipe.name)
    write_text(teacher.dir / "recipe.yaml", dump_recipe(recipe))
    log.info("distill: the teacher is %s's model in %s (trained now unless current)", spec, teacher.dir)
    teacher.train()
    return str(teacher.dir)


def run(recipe: Recipe | str | os.PathLike, *, data: str | None = None, output: str | os.PathLike | None = None,
        skip_bad_images: bool | None = None, force: bool = False) -> RunResult:
    """Run the whole pipeline for a recipe.

    Args:
        recipe: a Recipe or the path of a recipe YAML file.
        data: dataset folder overriding ``data.path``.
        output: run directory (default ``export/<recipe name>``).
        skip_bad_images: drop unreadable images instead of failing.
        force: redo every stage even when its outputs are current.

    Returns:
        RunResult with the report and any budget violations (``result.ok`` is False when a budget broke).

    Example:
        >>> result = edgecnn.run("models/defects-mobilenetv2.yaml")   # doctest: +SKIP
        >>> result.report["artifacts"]["model.int8.tflite"]["metrics"]["accuracy"]  # doctest: +SKIP
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if data is not None:
        recipe.data.path = str(data)
        recipe.data.generate = None  # a user's folder is never overwritten by the generator
    recipe.data.path = str(Path(recipe.data.path).resolve())  # recipe.yaml must work from any cwd
    if recipe.train.distill.teacher is not None:
        recipe.train.distill.teacher = str(Path(recipe.train.distill.teacher).resolve())
    if skip_bad_images is not None:
        recipe.data.skip_bad_images = skip_bad_images
    run_dir = Path(output) if output else Path("export") / recipe.name
    r = Run(recipe, run_dir)
    write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
    from edgecnn.tasks import get_task

    return get_task(recipe.task).run(r, force=force)


def run_classify(r: Run, force: bool = False) -> RunResult:
    """``task: classify``: data -> train -> compress -> export -> evaluate over ``r``'s run directory."""
    r.dataset()
    r.train(force=force)
    if not r.recipe.train.distribute.is_chief:  # the chief alone runs the stages after training
        return RunResult(r.dir)
    r.compress(force=force)
    r.export(force=force)
    return r.evaluate(force=force)


def import_model(model: str | os.PathLike, *, data: str | os.PathLike, output: str | os.PathLike,
                 labels: str | os.PathLike | None = None, input_size: int | None = None, preprocess: str = "raw",
                 bgr: bool = False, trust_code: bool = False, recipe: Recipe | str | os.PathLike | dict | None = None,
                 evaluate: bool = True) -> RunResult:
    """Import a model trained elsewhere into a new run directory and export/evaluate it like a trained one.

    The run is built in a temporary folder beside ``output`` and renamed at the end, so a failure
    leaves nothing behind. Later stages (``edgecnn compress/export/evaluate/check/serve``) work on it
    unchanged.

    Args:
        model: a tf_keras ``.h5``/``.keras``, a Keras 3 ``.keras``, a SavedModel folder, ``.onnx`` or ``.tflite``.
        data: a class-per-folder image tree (evaluation, calibration, compression).
        output: the run directory to create (must not exist).
        labels: labels.txt, one class per model output in output order (default: the data's folder names).
        input_size: the square side, needed when the model's input size is dynamic.
        preprocess: what the model expects: ``raw`` (0-255), ``unit`` (0-1), ``symmetric`` (-1..1),
            ``imagenet`` (mean/std), ``caffe`` (BGR minus mean); a leading Rescaling/Normalization
            layer is detected and wins.
        bgr: the model expects BGR channel order.
        trust_code: allow Lambda layers (arbitrary code) in Keras files.
        recipe: a base recipe (Recipe, YAML path or dict) for export/compress/evaluate/budgets settings.
        evaluate: export and evaluate now (False: only the import stage).

    Returns:
        RunResult of the evaluation (``report`` None when ``evaluate`` is False).

    Raises:
        EdgecnnError: not a model file, custom or Lambda layers, several inputs, a dynamic size without
            ``input_size``, or a class-count mismatch.

    Example:
        >>> edgecnn.import_model("net.onnx", data="data/defects", output="export/net")  # doctest: +SKIP
    """
    import tempfile

    from edgecnn.config import ImportConfig, recipe_from_dict

    output = Path(output)
    if output.exists():
        raise EdgecnnError(f"output {str(output)!r} already exists; pass a new --output folder (an import never "
                           "writes into an existing directory).")
    if isinstance(recipe, Recipe):
        base = recipe.model_dump(mode="json")
    elif isinstance(recipe, dict):
        base = dict(recipe)
    elif recipe is not None:
        base = load_recipe(recipe).model_dump(mode="json")
    else:
        base = {}
    base.setdefault("name", "".join(c if c.isalnum() or c in "._-" else "-" for c in output.resolve().name))
    source = str(Path(model).resolve())
    base["import"] = ImportConfig(source=source, source_format=_detect(model), preprocess=preprocess, bgr=bgr,
                                  trust_code=trust_code, input_size=input_size,
                                  labels=str(Path(labels).resolve()) if labels else None).model_dump(mode="json")
    base.setdefault("data", {})
    base["data"] = {**base["data"], "path": str(Path(data).resolve()), "generate": None}
    base.setdefault("model", {})["name"] = "imported"
    r_cfg = recipe_from_dict(base, source="<import>")
    if r_cfg.import_.source_format == "tflite" and r_cfg.compress.enabled:
        log.warning("compress: a TFLite source is evaluated as it is; compress.enabled ignored")
        r_cfg.compress.enabled = False
    output.parent.mkdir(parents=True, exist_ok=True)
    # The import stage (where bad input is found) runs in a hidden folder renamed to `output` when it
    # succeeds; the later stages run in `output` itself (they record its path), and if one fails the
    # whole folder goes too: an import leaves a complete run directory or none.
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.importing-", dir=output.parent))
    made = tmp
    try:
        r = Run(r_cfg, tmp)
        write_text(tmp / "recipe.yaml", dump_recipe(r_cfg))
        r.dataset()
        r.import_source()
        if r.import_record()["route"] != "keras" and r.recipe.compress.enabled:
            log.info("compress: this %s import has no tf_keras graph: the chooser tries the routes that run on "
                     "model.onnx alone (post-training; pruning, clustering and QAT need a tf_keras model)",
                     r_cfg.import_.source_format)
        os.replace(tmp, output)
        made = output
        r = Run.open(output)
        result = RunResult(output)
        if evaluate:
            r.compress()
            r.export()
            result = r.evaluate()
    except BaseException:
        shutil.rmtree(made, ignore_errors=True)
        raise
    return result


def _detect(model) -> str:
    from edgecnn.importing import detect_source

    return detect_source(model)

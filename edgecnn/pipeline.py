"""Orchestration only: a run directory and its recipe (:class:`Run`), the recipe's task's stages run over it
(``edgecnn run``), and an import of a model trained elsewhere (:func:`import_model`).

The stages themselves belong to the tasks (``edgecnn.classify``, ``edgecnn.segment``,
``edgecnn.anomaly``) and the stage core they share (``edgecnn.stages``); their bookkeeping lives in
the run store (:mod:`edgecnn.store`), so a finished recipe re-runs cheaply and a killed one resumes.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from edgecnn._io import write_text
from edgecnn.config import Recipe, dump_recipe, load_recipe
from edgecnn.errors import EdgecnnError
from edgecnn.stages.result import RunResult
from edgecnn.store import RunStore

__all__ = ["Run", "RunResult", "import_model", "run", "teacher_run"]

log = logging.getLogger("edgecnn")


class Run:
    """A run directory (its :class:`~edgecnn.store.RunStore`) and its recipe; the task's stages run over it.

    ``edgecnn run`` runs every stage of the recipe's task; ``edgecnn train|compress|export|evaluate RUN``
    runs exactly that one (:meth:`stage`), for every task.
    """

    def __init__(self, recipe: Recipe, run_dir: str | os.PathLike):
        self.recipe = recipe
        self.store = RunStore(run_dir)
        self.dir = self.store.dir
        self._dataset = None
        self._teacher: str | None = None

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> Run:
        """Reopen a run directory made by ``edgecnn run`` (its recipe.yaml is the resolved recipe)."""
        run_dir = Path(run_dir)
        if not (run_dir / "recipe.yaml").is_file():
            raise EdgecnnError(f"{str(run_dir)!r} is not a run directory (no recipe.yaml). "
                               "Create one with `edgecnn run RECIPE --output DIR`.")
        return cls(load_recipe(run_dir / "recipe.yaml"), run_dir)

    @property
    def task(self):
        """The recipe's :class:`edgecnn.tasks.TaskSpec`."""
        from edgecnn.tasks import get_task

        return get_task(self.recipe.task)

    def save_recipe(self) -> None:
        """Write the resolved recipe to recipe.yaml (a stage that changes it, e.g. an import's input size)."""
        write_text(self.dir / "recipe.yaml", dump_recipe(self.recipe))

    # -- what the stages share -------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        from edgecnn.arch import get_model_entry

        return self.recipe.model.input_size or get_model_entry(self.recipe.model.name).default_input_size

    def dataset(self):
        """The task's data (discovered, and generated where the recipe says so), once per Run."""
        if self._dataset is None:
            self._dataset = self.task.discover_data(self)
        return self._dataset

    def import_record(self) -> dict | None:
        """What the import stage did (route, reference, preprocessing), or None for a trained run."""
        if self.recipe.import_ is None:
            return None
        return self.store.stage_record("train").get("import")

    @property
    def reference(self) -> str:
        """The float model agreement is measured against: model.keras, or an imported ONNX/TFLite source."""
        rec = self.import_record()
        return rec["reference"] if rec else "model.keras"

    def teacher(self) -> str | None:
        """``train.distill.teacher`` as a model file or run directory (:func:`teacher_run`: a recipe teacher is
        trained first unless current), resolved once per Run; None without a teacher."""
        spec = self.recipe.train.distill.teacher
        if spec is not None and self._teacher is None:
            self._teacher = teacher_run(spec)
        return self._teacher if spec is not None else None

    def train_fingerprint(self) -> str:
        """The classifier's train-stage fingerprint (data, model, training settings, the teacher's weights)."""
        from edgecnn.classify.stages import train_fingerprint

        return train_fingerprint(self)

    # -- the stages ----------------------------------------------------------------------------
    def stage(self, name: str, force: bool = False, **options):
        """Run one stage of the recipe's task (``train``, ``compress``, ``export``, ``evaluate``); a stage the task
        does not have is an :class:`EdgecnnError` naming those it has. An import made with ``--trust-code``
        runs its stages inside :func:`edgecnn._trust.trusted_code` (its Keras model may hold a Lambda)."""
        from edgecnn._trust import trusted_code

        imp = self.recipe.import_
        with trusted_code(imp is not None and imp.trust_code):
            return self.task.run_stage(self, name, force=force, **options)

    def train(self, force: bool = False):
        """The task's train stage (an import's is the import itself): True when it trained."""
        return self.stage("train", force=force)

    def compress(self, force: bool = False):
        """The task's compress stage (the int8 chooser): True when it ran."""
        return self.stage("compress", force=force)

    def export(self, formats: list[str] | None = None, force: bool = False):
        """The task's export stage: the names of the formats exported."""
        return self.stage("export", force=force, **({"formats": formats} if formats else {}))

    def evaluate(self, force: bool = False) -> RunResult:
        """The task's evaluate stage: every artifact measured, the budgets applied, the report rendered."""
        return self.stage("evaluate", force=force)

    def import_source(self, force: bool = False) -> bool:
        """The import stage of an ``edgecnn import`` run (the train stage's place): True when it imported."""
        from edgecnn._trust import trusted_code
        from edgecnn.classify.stages import import_stage

        with trusted_code(self.recipe.import_.trust_code):
            return import_stage(self, force=force)

    def run_all(self, force: bool = False) -> RunResult:
        """Every stage of the task in order; a non-chief worker of distributed training stops after training.
        A run gated on a microcontroller profile also gets its latency estimate (``mcu_latency.json``)."""
        from edgecnn._memory import peak_rss_mb, release, rss_mb

        t0 = time.perf_counter()
        self.dataset()
        result = RunResult(self.dir)
        for name in self.task.stage_names:
            t = time.perf_counter()
            out = self.stage(name, force=force)
            if name == "train" and not self.recipe.train.distribute.is_chief:
                return RunResult(self.dir)   # the chief alone runs the stages after training
            if isinstance(out, RunResult):
                result = out
            release()   # the next stage reads what it needs from the run directory: peak = the largest stage's
            log.info("stage %-8s %6.1f s   RSS %5.0f MB after, peak %5.0f MB", name, time.perf_counter() - t,
                     rss_mb(), peak_rss_mb())
        self._mcu_latency()
        log.info("run: %.1f s, peak RSS %.0f MB", time.perf_counter() - t0, peak_rss_mb())
        return result

    def _mcu_latency(self) -> None:
        """The estimated time per image on the cores the budgets' microcontroller profiles name, from the shipped
        model.int8.tflite (an estimate with its basis, never a measurement); the report shows it."""
        profiles = [t.profile for t in self.recipe.budgets if getattr(t, "profile", None)]
        if not profiles or not (self.dir / "model.int8.tflite").is_file():
            return
        from edgecnn.mcu.latency import PROFILE_CORES, write_run_latency
        from edgecnn.report import render_report

        known = [p for p in profiles if p in PROFILE_CORES]
        if known:
            write_run_latency(self.dir, known)
            render_report(self.dir)


def run_dir_of(recipe: Recipe, output: str | os.PathLike | None = None) -> Path:
    """Where a recipe's run goes: ``output``, else ``export/<recipe name>``."""
    return Path(output) if output else Path("export") / recipe.name


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
    teacher = Run(recipe, run_dir_of(recipe))
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
    run_dir = run_dir_of(recipe, output)
    r = Run(recipe, run_dir)
    write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
    return r.run_all(force=force)


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

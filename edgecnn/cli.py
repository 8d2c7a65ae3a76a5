"""The `edgecnn` command: a thin typer layer that parses arguments and calls the library.

Errors the user can fix print one line and exit 2; a broken budget exits 1; success exits 0.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from edgecnn import console
from edgecnn.errors import EdgecnnError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="From a folder of labelled images to small, fast, verified TFLite/ONNX classifiers.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: generate the bundled defect set.")
weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weights, resolved offline.")
app.add_typer(data_app, name="data")
app.add_typer(weights_app, name="weights")
err = console.rich_stderr()          # the terminal, also while a command's other output goes to its run's log
out = Console(file=console.STDOUT)   # file (edgecnn/console.py)

EXIT_BUDGET = 1
EXIT_ERROR = 2


def _setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if console.STDERR.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:  # CI: plain timestamped lines
        handler = logging.StreamHandler(console.STDERR)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger("edgecnn")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _capture(run_dir: Optional[Path] = None) -> None:
    """From here to the command's end, output that is not edgecnn's (TensorFlow's C++ logging, converters' prints,
    third-party loggers, warnings) goes to RUN_DIR/edgecnn.log; without a run directory, to a buffer dropped at
    the end unless an unexpected error's traceback went there (edgecnn/console.py)."""
    has_recipe = run_dir is not None and (run_dir / "recipe.yaml").is_file()
    console.capture(run_dir if has_recipe and _writes_run_dir(run_dir) else None)


def _writes_run_dir(run_dir: Path) -> bool:
    """False on a multi_worker task other than the chief: it writes nothing to the run directory, its log neither
    (docs/distributed.md)."""
    from edgecnn.config import load_recipe

    try:
        return load_recipe(run_dir / "recipe.yaml").train.distribute.is_chief
    except EdgecnnError:   # the command itself reports a bad recipe or TF_CONFIG
        return True


def _print_result(result) -> None:
    rep = result.report
    out.print(f"report: {result.run_dir / 'report.html'}  (also report.md, report.json, MODEL_CARD.md)")
    out.print(f"artifacts: {result.run_dir}  (manifest: {result.run_dir / 'manifest.json'})")
    if rep is not None:
        from edgecnn.tasks import get_task

        headline = get_task(rep.get("task") or "classify").headline   # top-1/agree, mIoU, AUROC, ...
        for name, a in rep["artifacts"].items():
            if a.get("skipped"):  # a runtime that cannot run here: the reason, not a crash
                out.print(f"  {name:<22} skipped: {a['skipped']}", highlight=False, markup=False)
                continue
            if a.get("error"):  # it failed while running: a failure of the run
                err.print(f"[red]failed[/red] {escape(name)} in {escape(a['runtime'])}: {escape(a['error'])}")
                continue
            m = a.get("metrics", {})
            figures = "  ".join(f"{label} {m[key]:.4f}" for label, key in headline
                                if isinstance(m.get(key), (int, float)))
            lat = a.get("latency", {}).get("1") or next(iter(a.get("latency", {}).values()), None)
            timing = f"  p95 {lat['p95_ms']:.2f} ms" if lat else ""
            size = f"  {a['bytes'] / 1024:.0f} KB" if a.get("bytes") is not None else ""
            out.print(f"  {name:<22} {figures}{timing}{size}", highlight=False, markup=False)
    for v in result.violations:
        what = "budget not measured" if v.measured is None else "budget broken"
        err.print(f"[red]{what}[/red] {escape(str(v))}")
    if result.violations:
        err.print(f"{len(result.violations)} budget(s) broken or not measured; exit code {EXIT_BUDGET}")
    if getattr(result, "errors", None):
        err.print(f"{len(result.errors)} artifact run(s) failed; exit code {EXIT_BUDGET}")
    for fmt, w in (getattr(result, "withheld", None) or {}).items():
        err.print(f"[red]int8 withheld[/red] {escape(fmt)} ({escape(w['runtime'])}): no int8 route held the budget, "
                  f"so no int8 file ships for it; the float artifacts do. {escape(w['reason'])}")
        if w.get("doctor"):
            err.print(escape(w["doctor"]), highlight=False)
    if getattr(result, "withheld", None):
        err.print(f"int8 withheld for {len(result.withheld)} runtime(s) (compress.json, `edgecnn doctor "
                  f"{result.run_dir}`); exit code {EXIT_BUDGET}")
    for name in (rep or {}).get("unverified", []):
        err.print(f"[yellow]unverified[/yellow] {escape(name)}: plain int8 PTQ, no chooser and no quality budget "
                  "held it (the recipe says compress.enabled: false)")


def _apply_sets(recipe, assignments: list[str]):
    """The recipe with ``--set a.b.c=VALUE`` overrides (VALUE read as YAML), validated like a recipe file."""
    import yaml

    from edgecnn.config import recipe_from_dict

    raw = recipe.model_dump(mode="json")
    for item in assignments:
        key, sep, text = item.partition("=")
        *sections, leaf = key.strip().split(".")
        if not sep or not leaf or not all(sections):
            raise EdgecnnError(f"--set {item!r}: expected KEY=VALUE with a dotted recipe key, "
                               "e.g. --set train.head.epochs=1 or --set data.augment.flip=horizontal.")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise EdgecnnError(f"--set {item!r}: the value is not valid YAML ({e}); quote it.") from None
        node = raw
        for i, part in enumerate(sections):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise EdgecnnError(f"--set {item!r}: {'.'.join(sections[:i + 1])} is a value, not a section; "
                                   "see README 'Recipe reference' for the keys.")
        node[leaf] = value
    return recipe_from_dict(raw, source="--set")


@app.command()
def run(recipe: Optional[Path] = typer.Argument(
            None, help="recipe YAML, e.g. models/defects-mobilenetv2.yaml; without one, --data is required and "
                       "a recipe is chosen from the folder (see models/classify.yaml)"),
        data: Optional[Path] = typer.Option(None, help="dataset folder (overrides data.path)"),
        output: Optional[Path] = typer.Option(None, help="run directory (default export/<recipe name>)"),
        sets: Optional[list[str]] = typer.Option(
            None, "--set", help="override a recipe key, VALUE read as YAML (repeatable), "
                                "e.g. --set data.augment.flip=horizontal --set train.finetune.epochs=5"),
        skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help="skip unreadable images"),
        force: bool = typer.Option(False, help="redo every stage"),
        target: Optional[str] = typer.Option(
            None, help="with --data: a microcontroller profile (cortex-m4-256k, cortex-m7-1m, esp32-s3, ...); "
                       "the model is searched among candidates that fit it (docs/mcu.md)"),
        verbose: bool = typer.Option(False, "-v", "--verbose")):
    """Run the whole pipeline: data, train, export, evaluate, budgets."""
    _setup_logging(verbose)
    _capture()
    from edgecnn.config import load_recipe
    from edgecnn.pipeline import run as run_pipeline
    from edgecnn.pipeline import run_dir_of

    if target and (recipe is not None or data is None):
        raise EdgecnnError(f"--target {target} picks a model for --data FOLDER and needs no recipe; a recipe names its "
                           f"own model (gate it with a budget `profile: {target}`). Run `edgecnn run --data FOLDER "
                           f"--target {target}`.")
    if recipe is not None:
        chosen = load_recipe(recipe)
    elif data is None:
        raise EdgecnnError("edgecnn run needs a recipe or --data FOLDER; received neither. Run "
                           "`edgecnn run --data /my/images` to have one chosen from the folder, or "
                           "`edgecnn run models/defects-mobilenetv2.yaml`.")
    else:
        from edgecnn.auto_recipe import recipe_for_folder, recipe_for_target

        if target:
            auto = recipe_for_target(data, target, (output or Path("export") / f"auto-{data.name}-{target}") / "search")
        else:
            auto = recipe_for_folder(data)
        chosen = auto.recipe
        out.print(f"no recipe given; chosen from {data} (saved as the run's recipe.yaml):", highlight=False,
                  markup=False, soft_wrap=True)
        for key, why in auto.reasons.items():
            out.print(f"  {key} = {why}", highlight=False, markup=False, soft_wrap=True)
    if sets:
        chosen = _apply_sets(chosen, sets)
        out.print("  overridden: " + ", ".join(sets), highlight=False, markup=False, soft_wrap=True)
    console.capture(run_dir_of(chosen, output))
    result = run_pipeline(chosen, data=str(data) if data else None, output=output,
                          skip_bad_images=skip_bad_images or None, force=force)
    _print_result(result)
    if target and (result.run_dir / "model.int8.tflite").exists():   # an estimate, labelled so, beside the report
        from edgecnn.mcu.latency import write_run_latency

        out.print(f"estimated latency (not measured): {write_run_latency(result.run_dir, [target])}")
    raise typer.Exit(0 if result.ok else EXIT_BUDGET)


@app.command()
def train(run_dir: Path = typer.Argument(..., help="run directory made by `edgecnn run`"),
          force: bool = typer.Option(False, help="train even if model.keras is current")):
    """Train (or resume training) the model of a run directory."""
    _setup_logging()
    _capture(run_dir)
    from edgecnn.pipeline import Run

    r = Run.open(run_dir)
    r.train(force=force)   # the task's train stage alone (anomaly: the fit)
    out.print(f"model: {run_dir / 'model.keras'}")


@app.command()
def compress(run_dir: Path = typer.Argument(..., help="run directory with model.keras"),
             force: bool = typer.Option(False, help="compress again even if compress.json is current")):
    """Prune / cluster, then choose the int8 artifact per runtime within the recipe's accuracy budget."""
    _setup_logging()
    _capture(run_dir)
    from edgecnn.classify.stages import compress_fingerprint
    from edgecnn.pipeline import Run

    r = Run.open(run_dir)
    if "compress" not in r.task.stage_names:
        r.compress(force=force)   # the task's readable refusal: it names the stages it has
    if compress_fingerprint(r) is None:
        raise EdgecnnError(f"the recipe of {str(run_dir)!r} opts out of the int8 chooser (compress.enabled: false) "
                           "or exports no int8 format; remove `enabled: false` from its compress section or add "
                           "tflite-int8 / onnx-int8 to export.formats (see README 'Models and compression').")
    r.compress(force=force)
    summary = json.loads((run_dir / "compress.json").read_text())
    for fmt, pick in summary["picks"].items():
        out.print(f"{fmt}: {pick['route']} (val drop {pick['val_drop']:+.4f}, agreement {pick['val_agreement']:.4f}, "
                  f"within budget) -> {pick['artifact']}")
    for fmt, w in summary.get("withheld", {}).items():
        err.print(f"[red]int8 withheld[/red] {escape(fmt)}: {escape(w['reason'])}")
    out.print(f"candidates: {run_dir / 'compress.json'}; export with `edgecnn export {run_dir}`")
    if summary.get("withheld"):
        raise typer.Exit(EXIT_BUDGET)


@app.command()
def export(run_dir: Path = typer.Argument(..., help="run directory with model.keras"),
           formats: Optional[list[str]] = typer.Option(None, "--format", "-f", help="format name (repeatable)"),
           force: bool = typer.Option(False, help="export even if current")):
    """Export a trained run to TFLite / ONNX (every format of the recipe by default)."""
    _setup_logging()
    _capture(run_dir)
    from edgecnn.pipeline import Run

    r = Run.open(run_dir)
    done = r.export(formats or None, force=force)
    out.print(f"exported: {', '.join(done) or 'nothing (all current)'}; manifest: {run_dir / 'manifest.json'}")


@app.command()
def evaluate(run_dir: Path = typer.Argument(..., help="run directory with exported artifacts"),
             force: bool = typer.Option(False, help="measure again even if report.json is current"),
             url: Optional[str] = typer.Option(None, help="evaluate through a running service at this URL"),
             model: Optional[str] = typer.Option(None, help="with --url: the served model name (default: the run's)"),
             version: Optional[str] = typer.Option(None, help="with --url: the artifact version to call"),
             concurrency: list[int] = typer.Option([1, 2, 4, 8], help="with --url: client concurrency levels"),
             binary: bool = typer.Option(True, "--binary/--json", help="with --url: binary tensors (default) or JSON")):
    """Accuracy, agreement, latency and size of every artifact; exit 1 if a budget breaks."""
    _setup_logging()
    _capture(run_dir)
    from edgecnn.pipeline import Run

    r = Run.open(run_dir)
    if url:
        import json

        from edgecnn.serve import evaluate_via_http

        result = evaluate_via_http(url, run_dir, model=model, version=version, concurrency=tuple(concurrency),
                                   binary=binary)
        from edgecnn.evaluate.budgets import check_http_result

        violations = check_http_result(result, r.dir, r.recipe.budgets)
        from edgecnn._io import write_json

        write_json(run_dir / "report.http.json", {**result, "violations": [v.to_json() for v in violations]})
        out.print(json.dumps(result, indent=2))
        out.print(f"written: {run_dir / 'report.http.json'}")
        for v in violations:
            err.print(f"[red]budget broken[/red] {v} (through {url})")
        raise typer.Exit(EXIT_BUDGET if violations else 0)
    result = r.evaluate(force=force)
    _print_result(result)
    raise typer.Exit(0 if result.ok else EXIT_BUDGET)


@app.command()
def check(run_dir: Path = typer.Argument(..., help="run directory with exported artifacts and report.json"),
          budgets: Path = typer.Option(..., "--budgets", "-b", help="budgets.yaml (see docs/ci.md)"),
          baseline: Optional[Path] = typer.Option(None, help="baseline run directory for max_slowdown_vs"),
          junit: Optional[Path] = typer.Option(None, help="write JUnit XML here"),
          summary: Optional[Path] = typer.Option(None, help="write a Markdown summary here ($GITHUB_STEP_SUMMARY)"),
          json_out: Optional[Path] = typer.Option(None, "--json", help="write the full result as JSON here"),
          tolerance: Optional[float] = typer.Option(None, help="window agreement needed, percent"),
          max_time: Optional[float] = typer.Option(None, help="time cap per measurement, seconds")):
    """CI gate: measure with noise control and check budgets. Exit 0 hold, 1 broken, 2 could not check."""
    _setup_logging()
    _capture(run_dir)
    from edgecnn.evaluate.check import check as run_check
    from edgecnn.evaluate.check import format_text

    measurement = {k: v for k, v in {"tolerance_pct": tolerance, "max_time_s": max_time}.items() if v is not None}
    result = run_check(run_dir, budgets, baseline=baseline, junit=junit, summary=summary, json_out=json_out,
                       measurement=measurement or None)
    out.print(format_text(result), highlight=False)
    raise typer.Exit(result.exit_code)


@app.command()
def doctor(run_dir: Path = typer.Argument(..., help="run directory with int8 artifacts"),
           artifact: Optional[str] = typer.Argument(
               None, help="one int8 artifact, e.g. model.int8.onnx or compress/model.int8-minmax.onnx "
                          "(default: every int8 artifact of the run)"),
           runtime: Optional[str] = typer.Option(None, help="only this runtime (default: every one that runs it)"),
           top: int = typer.Option(5, help="how many layers to list"),
           profile: bool = typer.Option(True, "--profile/--no-profile",
                                        help="time int8 against float and profile per op (--no-profile: error only)")):
    """Why an int8 artifact is worse or slower than float: error per layer, time per op, a verdict (docs/int8.md)."""
    _setup_logging()
    _capture(run_dir)
    from edgecnn.evaluate.doctor import DOCTOR_JSON, diagnose, format_diagnosis

    result = diagnose(run_dir, artifact, runtime=runtime, top=top, profile=profile)
    out.print(escape(format_diagnosis(result)), highlight=False, soft_wrap=True)
    out.print(f"written: {run_dir / DOCTOR_JSON}" + (" (and report.json's \"doctor\")"
                                                     if (run_dir / "report.json").is_file() else ""))


@app.command("import")
def import_(model: Path = typer.Argument(..., help="a .keras/.h5 file, a SavedModel folder, an .onnx or a .tflite"),
            data: Path = typer.Option(..., help="class-per-folder images (evaluation, calibration)"),
            output: Path = typer.Option(..., help="the run directory to create (must not exist)"),
            labels: Optional[Path] = typer.Option(None, help="labels.txt, one class per model output, in order "
                                                  "(default: the model's metadata, else the data's folders)"),
            input_size: Optional[int] = typer.Option(None, "--input-size", help="side, for dynamic-size models"),
            preprocess: str = typer.Option("raw", help="what the model expects: raw|unit|symmetric|imagenet|caffe"),
            bgr: bool = typer.Option(False, "--bgr", help="the model expects BGR channel order"),
            trust_code: bool = typer.Option(False, "--trust-code", help="allow Lambda layers (runs their code)"),
            recipe: Optional[Path] = typer.Option(None, help="a recipe YAML for export/compress/evaluate/budgets"),
            verbose: bool = typer.Option(False, "-v", "--verbose")):
    """Import a model trained elsewhere into a run directory, export and evaluate it (exit 1 if a budget breaks)."""
    _setup_logging(verbose)
    _capture()   # the run directory appears when the import is done
    from edgecnn.pipeline import import_model

    result = import_model(model, data=data, output=output, labels=labels, input_size=input_size,
                          preprocess=preprocess, bgr=bgr, trust_code=trust_code, recipe=recipe)
    _capture(output)
    _print_result(result)
    raise typer.Exit(0 if result.ok else EXIT_BUDGET)


@app.command()
def report(run_dirs: list[Path] = typer.Argument(..., help="one run directory, or several to compare"),
           out_dir: Path = typer.Option(Path("export/compare"), "--out", help="where a comparison is written")):
    """Regenerate report.html (and MODEL_CARD.md) of a run, or compare several runs side by side."""
    _setup_logging()
    _capture(run_dirs[0])
    from edgecnn.report import compare_runs, render_report

    pages = [render_report(d) for d in run_dirs]
    if len(run_dirs) > 1:
        pages.append(compare_runs(run_dirs, out_dir))
    for page in pages:
        out.print(f"report: {page}")


@app.command()
def models(pattern: str = typer.Argument("*", help="shell pattern, e.g. 'mobilenet*'"),
           task: Optional[str] = typer.Option(None, help="only the builders of this task (classify, detect, "
                                                         "segment)")):
    """Registered builders: default input, parameters and MACs (computed from the built graph), description."""
    _capture()
    from edgecnn.arch import list_models
    from edgecnn.arch.inspect import model_summary, render_models_table

    names = list_models(pattern, task=task)
    if not names:
        raise EdgecnnError(f"no registered model matches {pattern!r}" + (f" for task {task!r}" if task else "") +
                           "; run `edgecnn models` for the list.")
    out.print(render_models_table([model_summary(n) for n in names]))


@app.command()
def inspect(model: str = typer.Argument(..., help="registered model name"),
            input_size: Optional[int] = typer.Option(None, "--input-size",
                                                     help="square input side (default: the model's)"),
            num_classes: int = typer.Option(1000, help="classes of the head")):
    """Per layer: output shape, kernel, stride, padding, dilation, receptive field, jump, params, MACs."""
    _capture()
    from edgecnn.arch.inspect import inspect_model, render_table

    _, rows, stats = inspect_model(model, input_size, num_classes)
    out.print(render_table(rows, stats, title=f"{model} @ {input_size or stats.input_shape[1]} px"))


@app.command("tflm-info")
def tflm_info(artifact: Path = typer.Argument(..., help="an int8 .tflite file or a model.int8.tflm firmware folder")):
    """TFLite Micro: ops, minimal arena, flash, and per op the live activation memory (which layer sets the arena)."""
    _capture()
    from edgecnn.runtime.tflm_runner import activation_memory, activation_table, mcu_figures, read_model

    data = read_model(artifact)
    f = mcu_figures(data, artifact.name)
    peak = f["activation_peak"]
    out.print(activation_table(activation_memory(data)), highlight=False, markup=False)
    out.print(f"ops ({f['op_count']} operators): {', '.join(f['ops'])}\n"
              f"arena: {f['arena_bytes']:,} B minimal (TFLM {f['tflm_version']}), declare "
              f"{f['arena_recommended_bytes']:,} B; activation peak {peak['bytes']:,} B at op {peak['op_index']} "
              f"{peak['op']} (layer {peak['layer']}); the arena adds {peak['arena_minus_peak_bytes']:,} B: "
              f"planned part {peak['arena_head_bytes']:,} B, persistent structs {peak['arena_tail_bytes']:,} B\n"
              f"flash: {f['flash_bytes']:,} B = {f['model_bytes']:,} B model + {f['kernel_bytes_estimate']:,} B "
              "kernels (estimate)", highlight=False, markup=False)


@data_app.command("make-defects")
def make_defects(out_dir: Path = typer.Argument(Path("data/defects"), help="where to write the set"),
                 seed: int = typer.Option(0, help="generator seed"),
                 per_class: int = typer.Option(450, help="images per class"),
                 size: int = typer.Option(128, help="image side in pixels"),
                 overwrite: bool = typer.Option(False, help="replace an existing set")):
    """Generate the bundled defect-inspection set (good, scratch, crack, spot) from scikit-image textures."""
    _setup_logging()
    from edgecnn.data.defects import make_defects as make

    summary = make(out_dir, seed=seed, per_class=per_class, size=size, overwrite=overwrite)
    out.print(f"defect set: {out_dir} ({summary.get('total', '')} images); "
              f"contact sheet: {out_dir / 'contact_sheet.png'}")


@weights_app.command("fetch")
def weights_fetch(name: str = typer.Argument("mobilenet_v2"),
                  file: Optional[Path] = typer.Option(None, "--file", help="a local copy of the checkpoint")):
    """Resolve, verify (sha256) and convert pretrained weights into the cache."""
    _setup_logging()
    from edgecnn.arch.weights import fetch

    path = fetch(name, source=file)
    out.print(f"weights: {path}")


@app.command()
def predict(model: str = typer.Argument(..., help="'imagenet', a run directory, or an artifact file"),
            images: list[Path] = typer.Argument(..., help="image files"),
            top: int = typer.Option(5, help="how many classes to print"),
            imagenet_model: Optional[str] = typer.Option(
                None, "--model", help="with 'imagenet': a backbone with offline weights (default mobilenet_v2; "
                                      "see the ImageNet column of `edgecnn models`)"),
            threshold: Optional[float] = typer.Option(None, help="a detection run: the lowest score printed "
                                                                 "(default: the run's report threshold)"),
            draw: Optional[Path] = typer.Option(None, help="a detection run: write each image with its boxes here")):
    """Classify images (or find their objects, for a detection run) with a run directory, an artifact
    (.keras/.tflite/.onnx) or `imagenet [--model NAME]`."""
    _capture()
    from edgecnn.predict import detect_files, is_detector, predict_files

    if is_detector(model):
        for path, found in detect_files(model, [str(p) for p in images], threshold=threshold, draw=draw):
            out.print(f"{path}: {len(found)} object(s)")
            for f in found:
                out.print(f"  {f['score']:7.4f}  {f['label']:<12} [{', '.join(f'{v:.1f}' for v in f['box'])}]")
        if draw is not None:
            out.print(f"drawn: {draw}")
        return

    for path, preds in predict_files(model, [str(p) for p in images], top=top, imagenet_model=imagenet_model):
        out.print(f"{path}:")
        for label, p in preds:
            out.print(f"  {p:7.4f}  {label}")


def _serve_command():
    from edgecnn.serve.__main__ import main as serve_main

    return serve_main


app.command("serve", help="Serve a run's ONNX/TFLite artifacts over the KServe v2 protocol (docs/serving.md).")(
    _serve_command())


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    session = console.Session()   # a command's other output goes to its run's log file, not the terminal
    try:
        with session:
            app()
    except EdgecnnError as e:
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        err.print("interrupted; re-run the same command to resume")
        sys.exit(130)
    except Exception as e:
        if not session.crashed:
            raise
        err.print(f"[bold red]error:[/bold red] {escape(type(e).__name__)}: {escape(str(e))} (unexpected: the "
                  f"traceback is in {escape(str(session.log))})", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()

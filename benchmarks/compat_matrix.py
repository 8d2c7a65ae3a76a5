"""Compatibility matrix: which registered model survives which pipeline step.

For every registered model, in its small configuration (``edgecnn.arch._small``: 32 px and the
smallest width; the input is random, the weights random with BatchNorm statistics set from one
batch), in a fresh subprocess each (a converter crash costs one row, not the run):

1. build + forward pass (probabilities sum to 1);
2. one training step (Adam, sparse cross-entropy; the loss must be finite);
3. export through the format registry to ``tflite-fp32``, ``tflite-int8`` (16 random calibration
   images) and ``onnx``, run each in its runtime and compare with Keras (max |delta probability|;
   int8 also top-1 agreement);
4. pruning (``edgecnn.compress.pruning``): 50 % magnitude pruning reached at step 2 of three fine-tuning steps, strip,
   measure the sparsity reached and export the pruned model to int8 TFLite;
5. QAT (``edgecnn.compress.quantize_aware``): wrap, one fine-tuning step, convert to full-int8
   TFLite and run it; the layers QAT had to leave float are listed by name.

Writes JSON (everything, including timings and error messages) and a Markdown table (✓ / ✗ with
the error under the table).

    python benchmarks/compat_matrix.py                        # all models -> docs/compatibility.{md,json}
    python benchmarks/compat_matrix.py --models 'mobilenet*' --md /tmp/c.md --json /tmp/c.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("build", "train_step", "tflite-fp32", "tflite-int8", "onnx", "prune", "qat")
HEADERS = {"build": "build + forward", "train_step": "train step", "tflite-fp32": "TFLite fp32",
           "tflite-int8": "TFLite int8", "onnx": "ONNX", "prune": "pruning 50 % → int8", "qat": "QAT → int8"}
# fp32: the test suite's tolerance. int8 on random weights and random images says little about accuracy
# (tests/test_export.py checks 0.08; `edgecnn evaluate` measures real data): here it must convert, run,
# and still depend on its input; top-1 agreement with Keras is reported.
TOLERANCE = {"tflite-fp32": 1e-4, "onnx": 1e-4}
NUM_CLASSES = 5


def check_one(name: str) -> dict:
    """Run every step for one model in this process; never raises."""
    import numpy as np

    from edgecnn._tf import keras
    from edgecnn.arch import create_model
    from edgecnn.arch._small import calibrate_for_comparison, small_config
    from edgecnn.arch.inspect import count_macs
    from edgecnn.export import ExportContext, export
    from edgecnn.runtime import load_runner

    result: dict = {"model": name, "config": small_config(name), "steps": {}}

    def step(key, fn):
        t0 = time.perf_counter()
        try:
            info = fn() or {}
            result["steps"][key] = {"ok": True, "seconds": round(time.perf_counter() - t0, 2), **info}
        except Exception as e:  # the matrix records every failure instead of stopping
            msg = f"{type(e).__name__}: {e}".strip().splitlines()
            result["steps"][key] = {"ok": False, "seconds": round(time.perf_counter() - t0, 2),
                                    "error": " ".join(line.strip() for line in msg[:3])[:400]}
        return result["steps"][key]["ok"]

    keras.utils.set_random_seed(0)
    state: dict = {}
    rng = np.random.default_rng(0)

    def build():
        cfg = small_config(name)
        model = create_model(name, num_classes=NUM_CLASSES, **cfg)
        size = cfg["input_size"]
        images = rng.uniform(0, 255, (32, size, size, 3)).astype(np.float32)
        calibrate_for_comparison(model, images)  # BatchNorm statistics from one batch of 32, logits std 2
        images = images[:8]
        probs = model(images, training=False).numpy()
        if not np.allclose(probs.sum(1), 1, atol=1e-4):
            raise AssertionError("probabilities do not sum to 1")
        state.update(model=model, images=images, ref=probs,
                     calib=np.concatenate([images, rng.uniform(0, 255, (8, size, size, 3)).astype(np.float32)]))
        result.update(params=int(model.count_params()), macs=int(count_macs(model)), layers=len(model.layers))
        return {}

    def exporter(fmt):
        def run():
            with tempfile.TemporaryDirectory() as tmp:
                path = export(fmt, state["model"], ExportContext(Path(tmp), calibration=state["calib"]))
                got = load_runner(path, threads=2)(state["images"])
                size_kb = round(path.stat().st_size / 1024, 1)
            err = float(np.abs(got - state["ref"]).max())
            agree = float((got.argmax(1) == state["ref"].argmax(1)).mean())
            if not np.isfinite(got).all():
                raise AssertionError("non-finite outputs")
            if fmt in TOLERANCE and err > TOLERANCE[fmt]:
                raise AssertionError(f"max |dprob| vs Keras {err:.2e} > tolerance {TOLERANCE[fmt]}")
            if fmt not in TOLERANCE and got.std(axis=0).max() < 1e-3 < state["ref"].std(axis=0).max():
                raise AssertionError("int8 outputs do not depend on the input (collapsed quantisation)")
            return {"max_abs_diff": err, "top1_agreement": agree, "kb": size_kb}
        return run

    def train_step():
        model = state["model"]
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        labels = np.arange(len(state["images"])) % NUM_CLASSES
        loss = float(model.train_on_batch(state["images"], labels))
        if not np.isfinite(loss):
            raise AssertionError(f"loss is {loss}")
        return {"loss": round(loss, 4)}

    def int8_runs(model) -> dict:
        from edgecnn.quantize import tflite_int8

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.tflite"
            path.write_bytes(tflite_int8(model, state["calib"]))
            got = load_runner(path, threads=2)(state["images"])
        if not np.isfinite(got).all():
            raise AssertionError("non-finite int8 outputs")
        return {"top1_agreement": float((got.argmax(1) == state["ref"].argmax(1)).mean())}

    labels = np.arange(8) % NUM_CLASSES

    def pruning():
        from edgecnn.compress import fine_tune_pruned, overall_sparsity, prune, strip

        wrapped = prune(state["model"], target_sparsity=0.5, end_step=2, frequency=1)
        fine_tune_pruned(wrapped, (state["images"], labels), epochs=3, lr=1e-6, batch_size=8)
        plain = strip(wrapped)
        sparsity = overall_sparsity(plain)
        if not 0.45 <= sparsity <= 0.55:
            raise AssertionError(f"sparsity reached {sparsity:.3f}, expected 0.5")
        return {"sparsity": round(sparsity, 4), **int8_runs(plain)}

    def qat():
        from edgecnn.compress import fine_tune_qat, quantize_aware, to_tflite_int8, unsupported_layers

        left_float = [n for n, _, _ in unsupported_layers(state["model"])]
        model = quantize_aware(state["model"])
        fine_tune_qat(model, (state["images"], labels), epochs=1, lr=1e-6, batch_size=8)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.tflite"
            path.write_bytes(to_tflite_int8(model, state["calib"]))
            runner = load_runner(path, threads=2)
            if runner.input.dtype != "int8":
                raise AssertionError(f"QAT model input is {runner.input.dtype}, expected int8")
            got = runner(state["images"])
        if not np.isfinite(got).all():
            raise AssertionError("non-finite QAT int8 outputs")
        return {"left_float": len(left_float), "left_float_names": left_float[:5],
                "top1_agreement": float((got.argmax(1) == state["ref"].argmax(1)).mean())}

    if step("build", build):
        for fmt in ("tflite-fp32", "tflite-int8", "onnx"):
            step(fmt, exporter(fmt))
        step("prune", pruning)
        step("qat", qat)
        step("train_step", train_step)  # last: it changes the weights the exports were compared with
    return result


def run_isolated(name: str, timeout: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"model": name, "steps": {}, "error": f"timed out after {timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"model": name, "steps": {}, "error": f"process exited {proc.returncode}: {' '.join(tail)[:400]}"}
    result = json.loads(lines[-1])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _fmt_count(n) -> str:
    from edgecnn.arch.inspect import format_count

    return format_count(n) if n is not None else ""


def to_markdown(results: list[dict], meta: dict) -> str:
    out = ["# Compatibility matrix", "",
           "Generated by `python benchmarks/compat_matrix.py`; do not edit by hand. Each model in its small "
           "configuration (`edgecnn/arch/_small.py`: 32 px and the smallest width; AlexNet 67 px, Xception 71 px), "
           f"{NUM_CLASSES} classes, random weights with BatchNorm statistics from one batch of 32 and logits scaled to "
           "std 2, random images. "
           "✓: the step ran and, for exports, the artifact's probabilities agree with Keras within the tolerance "
           f"of the test suite (fp32: {TOLERANCE['tflite-fp32']:g} max |Δprob|; the number is the measured max "
           "|Δprob|). For int8, random weights and images say little about accuracy: ✓ means it converted to "
           "full integer (int8 in/out), ran, and its output still depends on the input; the number is top-1 "
           "agreement with Keras on the 8 test images. ✗: see the error below the table. Params and MACs "
           "are at the test size.", "",
           f"Run {meta['date']} on {meta['machine']}; " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
           + ".", ""]
    cols = ["model", "input", "params", "MACs", *(HEADERS[s] for s in STEPS)]
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    errors = []
    for r in results:
        cells = [f"`{r['model']}`", str(r.get("config", {}).get("input_size", "")), _fmt_count(r.get("params")),
                 _fmt_count(r.get("macs"))]
        for s in STEPS:
            st = r["steps"].get(s)
            if st is None:
                cells.append("–" if "error" not in r else "✗")
            elif st["ok"] and s == "tflite-int8":
                cells.append(f"✓ {st['top1_agreement']:.0%}")
            elif st["ok"] and s == "prune":
                cells.append(f"✓ {st['sparsity']:.0%} zeros")
            elif st["ok"] and s == "qat":
                cells.append("✓" + (f" ({st['left_float']} ops float)" if st["left_float"] else ""))
            elif st["ok"]:
                cells.append("✓" + (f" {st['max_abs_diff']:.0e}" if "max_abs_diff" in st else ""))
            else:
                errors.append(f"- `{r['model']}` {HEADERS[s]}: {st['error']}")
                cells.append(f"✗ [{len(errors)}]")
        if "error" in r:
            errors.append(f"- `{r['model']}`: {r['error']}")
        out.append("| " + " | ".join(cells) + " |")
    complete = [r for r in results if all(s in r["steps"] for s in STEPS)]
    ok = sum(all(r["steps"][s]["ok"] for s in STEPS) for r in complete)
    line = f"{ok} of the {len(complete)} models measured on every step pass every step"
    if len(complete) < len(results):
        line += f"; {len(results) - len(complete)} rows lack a measurement (–)"
    out += ["", line + ".", ""]
    if errors:
        out += ["## Failures", "", *[f"{i}. {e[2:]}" for i, e in enumerate(errors, 1)], ""]
    out += ["## Notes", "",
            "- Pruning: `edgecnn.compress.pruning` at 50 % over two steps, stripped, then full-int8 TFLite; the "
            "number is the share of zeros reached in the pruned Conv2D/Dense kernels. QAT: "
            "`edgecnn.compress.quantize_aware`, one fine-tuning step, full-int8 TFLite (int8 in/out) that must run; "
            "\"ops float\" counts the layers QAT could not wrap (they are quantised from the calibration set at "
            "conversion instead). Every zoo model is one flat functional graph (no nested `keras.applications` "
            "Model), as tfmot needs; whole-model `tfmot` calls (`prune_low_magnitude(model)`, "
            "`quantize_model(model)`) reject the in-graph `normalize` layer of every model, which is why "
            "`edgecnn.compress` wraps layer by layer. `edgecnn.compress.unsupported_layers` finds what QAT leaves "
            "float in three models: MobileNetV3-Small/Large (56/58 TFOpLambda ops of hard-swish, `x + 3`, "
            "`x * 1/6`; the minimalistic variants have none) and Xception (34 SeparableConv2D, no tfmot "
            "QuantizeConfig); the other 26 have none.",
            "- int8 accuracy on real data is what `edgecnn evaluate` measures (tolerance 0.08 on trained models).",
            "- –: not measured for that row (rows are re-measured model by model with `--merge`; a row whose "
            "last run predates a column shows – there).",
            ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="*", help="shell pattern over registered names")
    p.add_argument("--md", type=Path, default=ROOT / "docs" / "compatibility.md")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "compatibility.json")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per model")
    p.add_argument("--from-json", action="store_true", help="only re-render --md from an existing --json")
    p.add_argument("--merge", action="store_true",
                   help="keep the other models' rows of the existing --json and replace only those run now")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.one:
        print(json.dumps(check_one(args.one)))
        return 0
    if args.from_json:
        from edgecnn._io import write_text

        data = json.loads(args.json.read_text())
        write_text(args.md, to_markdown(data["results"], data["meta"]))
        return 0

    from edgecnn._io import write_json, write_text
    from edgecnn.arch import list_models
    from edgecnn.export.manifest import library_versions

    names = list_models(args.models)
    by_model = {}
    if args.merge and args.json.is_file():
        by_model = {r["model"]: r for r in json.loads(args.json.read_text())["results"]}
    versions = library_versions()
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
            "versions": {k: versions[k] for k in ("tensorflow", "tf-keras", "tf2onnx", "onnxruntime", "ai-edge-litert")
                         if k in versions}}
    results = []
    for i, name in enumerate(names, 1):
        r = run_isolated(name, args.timeout)
        by_model[name] = r
        marks = " ".join(f"{s}:{'ok' if r['steps'].get(s, {}).get('ok') else 'FAIL'}" for s in STEPS)
        print(f"[{i}/{len(names)}] {name:34s} {r.get('seconds', '?')}s {marks} {r.get('error', '')}", flush=True)
        # written after every model, so an interrupted run keeps what it measured
        results = [by_model[n] for n in sorted(by_model)]
        write_json(args.json, {"meta": meta, "results": results})
        write_text(args.md, to_markdown(results, meta))
    print(f"wrote {args.md} and {args.json}")
    return 0 if all(all(r["steps"].get(s, {}).get("ok") for s in STEPS) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

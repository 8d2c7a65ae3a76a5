"""Issue 14's acceptance run: a Keras 3 MobileNetV2 imported with `edgecnn import` keeps its top-1 in int8.

    python benchmarks/import_keras3_mobilenetv2.py [--data data/defects] [--input-size 128]
        [--head-epochs 3] [--finetune-epochs 2] [--out benchmarks/results/import_keras3_mobilenetv2.json]

1. Builds ``keras.applications.MobileNetV2`` in the **Keras 3** package (``import keras``; under
   ``TF_USE_LEGACY_KERAS=1`` ``tf.keras`` is tf_keras) behind an ImageNet mean/std ``Normalization``
   layer, and ports edgecnn's offline ImageNet weights (torchvision's checkpoint, see
   ``edgecnn.arch.weights``) into it by layer order: the 52 conv and 52 BatchNorm layers of both
   graphs line up one to one (shapes checked), BatchNorm epsilon set to torchvision's 1e-5. The
   padding differs (keras.applications pads stride-2 convolutions bottom/right only, torchvision on
   every side), which the training below absorbs.
2. Trains it briefly in Keras 3 on the bundled defect set: the head on frozen features, then
   every layer at a tenth of the rate. Saves ``mobilenet_v2_k3.keras``.
3. Runs ``edgecnn import`` (the CLI, in a subprocess) with the default recipe's
   (``models/defects-mobilenetv2.yaml``) ``compress:`` and ``export:`` settings, formats cut to the
   four the criterion names, a short latency protocol and no budgets.
4. Reads ``report.json`` and writes JSON: the Keras 3 model's own test top-1, each artifact's test
   top-1, drop and agreement, the route the import took (rebuilt in tf_keras or not), the
   chooser's picks, wall times and the machine.

Wall times are on whatever machine runs it (2 shared cores when the README figures were taken).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
IMAGENET_MEAN = [123.675, 116.28, 103.53]   # 0-255 units, as edgecnn.arch._layers
IMAGENET_STD = [58.395, 57.12, 57.375]
_PORTED = ("Conv2D", "DepthwiseConv2D", "BatchNormalization")


def build_keras3_mobilenet_v2(num_classes: int, size: int, *, alpha: float = 1.0, imagenet: bool = True,
                              bn_momentum: float | None = None):
    """``keras.applications.MobileNetV2`` (Keras 3) taking RGB 0-255, ImageNet-normalised in the graph,
    with a new softmax head; ``imagenet`` ports edgecnn's offline ImageNet weights (alpha 1.0 only);
    ``bn_momentum`` overrides BatchNorm's 0.999 (a model trained a few steps needs its statistics to follow)."""
    import keras  # callers import edgecnn first (it sets TF_USE_LEGACY_KERAS before TensorFlow loads)

    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD],
                                   name="imagenet_norm")(inp)
    base = keras.applications.MobileNetV2(input_tensor=x, include_top=False, weights=None, alpha=alpha,
                                          pooling="avg")
    h = keras.layers.Dropout(0.2)(base.output)
    model = keras.Model(inp, keras.layers.Dense(num_classes, activation="softmax", name="head")(h),
                        name="mobilenet_v2_k3")
    cfg = model.get_config()
    for layer in cfg["layers"]:
        if layer["class_name"] == "BatchNormalization":
            if imagenet:  # torchvision's epsilon (some running variances are ~1e-44)
                layer["config"]["epsilon"] = 1e-5
            if bn_momentum is not None:
                layer["config"]["momentum"] = bn_momentum
    model = keras.Model.from_config(cfg)
    if not imagenet:
        return model
    from edgecnn.arch.mobilenet import mobilenet_v2

    src = mobilenet_v2(num_classes=num_classes, input_size=size, alpha=alpha, weights="imagenet")
    pairs = list(zip([ly for ly in src.layers if type(ly).__name__ in _PORTED],
                     [ly for ly in model.layers if type(ly).__name__ in _PORTED], strict=True))
    for a, b in pairs:
        wa = a.get_weights()
        if [w.shape for w in wa] != [tuple(w.shape) for w in b.get_weights()]:
            raise SystemExit(f"weights of {a.name} do not fit {b.name}: the graphs do not line up")
        b.set_weights(wa)
    return model


def train_keras3(model, x, y, vx, vy, *, head_epochs: int, finetune_epochs: int, lr: float = 3e-3,
                 batch_size: int = 32, seed: int = 0, optimizer: str = "adam",
                 jit_compile: bool | str = "auto") -> list[dict]:
    """Head on frozen features, then every layer at lr/10 (Keras 3 ``fit``); returns the histories.

    The tests pass ``optimizer="sgd", jit_compile=False``: tracing Adam's per-variable update and XLA's
    compile of MobileNetV2 cost 40 of a 49 s three-epoch fit at 48 px on 2 cores (SGD, no XLA: 11 s)."""
    import keras

    keras.utils.set_random_seed(seed)
    phases = []
    for epochs, rate, head_only in ((head_epochs, lr, True), (finetune_epochs, lr / 10, False)):
        if epochs <= 0:
            continue
        for layer in model.layers:
            layer.trainable = (not head_only) or layer.name == "head"
        opt = keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": rate}})
        model.compile(opt, "sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit_compile)
        hist = model.fit(x, y, validation_data=(vx, vy) if vx is not None else None, epochs=epochs,
                         batch_size=batch_size, verbose=0, shuffle=True)
        phases.append({"phase": "head" if head_only else "finetune", "epochs": epochs, "lr": rate,
                       **{k: [round(float(v), 4) for v in vals] for k, vals in hist.history.items()}})
    for layer in model.layers:
        layer.trainable = True
    return phases


def import_recipe(path: Path, *, runs: int) -> Path:
    """The default recipe's compress/export settings (formats cut to the criterion's four), short timing."""
    import yaml

    default = yaml.safe_load((ROOT / "models" / "defects-mobilenetv2.yaml").read_text())
    export = {**default["export"], "formats": ["tflite-fp32", "tflite-int8", "onnx", "onnx-int8"]}
    recipe = {"name": "import-keras3-mobilenetv2", "export": export, "compress": default["compress"],
              "evaluate": {"warmup": 5, "runs": runs, "threads": [1]}, "budgets": []}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "defects")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--head-epochs", type=int, default=3)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--bn-momentum", type=float, default=None,
                    help="BatchNorm momentum (default keras.applications' 0.999, slow to follow a short fine-tune)")
    ap.add_argument("--model", type=Path, default=None,
                    help="a Keras 3 .keras file made by an earlier run: skip building and training")
    ap.add_argument("--runs", type=int, default=50, help="timed runs per artifact in the import's evaluation")
    ap.add_argument("--work", type=Path, default=ROOT / "export" / "bench-import-k3")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "import_keras3_mobilenetv2.json")
    args = ap.parse_args(argv)

    import shutil

    from edgecnn._io import write_json
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import load_arrays

    if not args.data.exists():
        from edgecnn.data.defects import make_defects

        make_defects(args.data)
    keras_file = args.model.resolve() if args.model is not None else args.work / "mobilenet_v2_k3.keras"
    shutil.rmtree(args.work / "run", ignore_errors=True)  # the import's output must not exist
    args.work.mkdir(parents=True, exist_ok=True)
    ds = discover(args.data)
    size = args.input_size
    (x, y), (vx, vy), (tx, ty) = (load_arrays(ds, s, size) for s in ("train", "val", "test"))

    import keras

    t0 = time.perf_counter()
    if args.model is None:
        model = build_keras3_mobilenet_v2(len(ds.classes), size, bn_momentum=args.bn_momentum)
        phases = train_keras3(model, x, y, vx, vy, head_epochs=args.head_epochs,
                              finetune_epochs=args.finetune_epochs)
        model.save(keras_file)
    else:
        model, phases = keras.saving.load_model(keras_file), [{"phase": f"loaded from {keras_file}"}]
    train_s = time.perf_counter() - t0
    source_top1 = float(np.mean(np.asarray(model.predict(tx, batch_size=64, verbose=0)).argmax(1) == ty))
    print(f"[bench] Keras 3 MobileNetV2 trained in {train_s:.0f} s, test top-1 {source_top1:.4f}", flush=True)

    recipe = import_recipe(args.work / "import.yaml", runs=args.runs)
    run_dir = args.work / "run"
    cmd = [sys.executable, "-m", "edgecnn.cli", "import", str(keras_file), "--data", str(args.data),
           "--output", str(run_dir), "--recipe", str(recipe)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
                          cwd=args.work)
    import_s = time.perf_counter() - t0
    (args.work / "import.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode not in (0, 1):
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"edgecnn import failed (exit {proc.returncode}); log in {args.work / 'import.log'}")
    report = json.loads((run_dir / "report.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    compress = json.loads((run_dir / "compress.json").read_text()) if (run_dir / "compress.json").exists() else {}
    max_drop = float(compress.get("max_accuracy_drop", 0.005))
    artifacts = {}
    for name, art in report["artifacts"].items():
        m = art.get("metrics") or {}
        if "accuracy" not in m:
            continue
        artifacts[name] = {"precision": art.get("precision"), "runtime": art.get("runtime"),
                           "test_top1": m["accuracy"], "drop_vs_source": source_top1 - m["accuracy"],
                           "agreement_with_reference": m.get("agreement"), "kib": art.get("bytes", 0) / 1024,
                           "p50_ms_1thread": ((art.get("latency") or {}).get("1") or {}).get("p50_ms")}
    within = {n: artifacts[n]["drop_vs_source"] <= max_drop + 1e-9 for n in ("model.int8.tflite", "model.int8.onnx")
              if n in artifacts}
    result = {
        "what": "Keras 3 keras.applications.MobileNetV2 (ImageNet weights ported, trained briefly on the defect "
                "set) imported with `edgecnn import`; top-1 on the test split",
        "input_size": size, "classes": ds.classes, "test_images": int(len(ty)),
        "training": {"phases": phases, "bn_momentum": args.bn_momentum or 0.999, "wall_s": round(train_s, 1)},
        "source_test_top1": source_top1,
        "reference": report.get("reference"),
        "route": manifest.get("import", {}).get("route"),
        "rebuilt_in_tf_keras": manifest.get("import", {}).get("route") == "keras",
        "import_notes": manifest.get("import", {}).get("notes"),
        "max_accuracy_drop": max_drop, "within_max_accuracy_drop": within,
        "artifacts": artifacts,
        "chooser": {rt: {"chosen": c.get("chosen"), "reason": c.get("reason")}
                    for rt, c in (compress.get("runtimes") or {}).items()},
        "import_wall_s": round(import_s, 1), "import_exit_code": proc.returncode,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "python": platform.python_version(), "note": "shared, loaded CI-class machine"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("source_test_top1", "route", "within_max_accuracy_drop")}, indent=1))
    for name, a in artifacts.items():
        print(f"  {name:22s} top-1 {a['test_top1']:.4f}  drop {a['drop_vs_source']:+.4f}  "
              f"agreement {a['agreement_with_reference']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

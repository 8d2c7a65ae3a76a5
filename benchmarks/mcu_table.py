"""Microcontroller table: small nets at 96 px, int8, run in the real TFLite Micro interpreter.

    python benchmarks/mcu_table.py             # benchmarks/results/mcu_table.json + docs/microcontrollers.md's table
    python benchmarks/mcu_table.py --epochs 3  # quicker, lower accuracy
    python benchmarks/mcu_table.py --only dsconv --merge   # rerun some nets, keep the JSON's other rows

For each net: train from scratch on the bundled defect set at 96 px (``--epochs``, Adam 1e-3, flips), full-int8
with ``edgecnn.quantize.tflite_int8`` (min/max calibration on 64 training images), then on the test
split: top-1 of the Keras float model, LiteRT int8 and TFLM int8, the TFLM/LiteRT agreement, and the
MCU figures of ``edgecnn.runtime.tflm_runner.mcu_figures`` (minimal arena by bisection with the
interpreter, flash = model + estimated kernels). MACs from ``edgecnn.arch.inspect.count_macs``.

The MLPerf Tiny visual-wake-words reference (MobileNetV1 0.25, 96x96, int8, 2 classes) is measured the
same way: the same architecture with a 2-class head trained on good-vs-defect. The grey row is the recipe's
net with one input channel (``data.channels: 1``, ``edgecnn.train.with_input_channels``). Per net, the
activation peak (``tflm_runner.activation_memory``: the op and layer where the live activations peak) is
set beside the measured minimal arena; the difference is TFLM's persistent structs (the recording
allocator's tail) plus any planner fragmentation and scratch.
Only the text between ``<!-- BEGIN mcu -->`` and ``<!-- END mcu -->`` in the doc is replaced.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = 96
NETS = [  # (row label, model name, builder args, binary head, input channels)
    ("dsconv 0.25 (recipe mcu-dsconv-96)", "dsconv", {"alpha": 0.25}, False, 3),
    ("dsconv 0.25 grey (recipe mcu-dsconv-96-gray)", "dsconv", {"alpha": 0.25}, False, 1),
    ("mobilenet_v1 0.25", "mobilenet_v1", {"alpha": 0.25}, False, 3),
    ("ds_cnn (S)", "ds_cnn", {"size": "s"}, False, 3),
    ("mobilenet_v2 0.35", "mobilenet_v2", {"alpha": 0.35, "weights": None}, False, 3),
    ("MLPerf Tiny VWW shape: mobilenet_v1 0.25, 2 classes", "mobilenet_v1", {"alpha": 0.25}, True, 3),
]


def _row(label, name, args, binary, channels, data, epochs):
    import numpy as np

    from edgecnn._tf import keras, tf
    from edgecnn.arch import create_model
    from edgecnn.arch.inspect import count_macs
    from edgecnn.quantize import tflite_int8
    from edgecnn.runtime import load_runner
    from edgecnn.runtime.tflm_runner import mcu_figures
    from edgecnn.train import with_input_channels

    (xtr, ytr), (xte, yte), good = data
    if binary:  # good (class index of "good") vs any defect
        ytr, yte = (ytr != good).astype("int64"), (yte != good).astype("int64")
    classes = 2 if binary else int(ytr.max()) + 1
    tf.keras.utils.set_random_seed(0)
    model = with_input_channels(create_model(name, num_classes=classes, input_size=SIZE, **args), channels)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    # the flips the defect recipes use, as copies (lossless); without them these nets memorise the train split
    xaug = np.concatenate([xtr, xtr[:, ::-1], xtr[:, :, ::-1], xtr[:, ::-1, ::-1]])
    model.fit(xaug, np.tile(ytr, 4), epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    train_s = time.perf_counter() - t0
    float_acc = float(np.mean(model.predict(xte, verbose=0).argmax(1) == yte))
    cal = xtr[np.random.default_rng(0).permutation(len(xtr))[:64]]
    data_int8 = tflite_int8(model, cal)
    path = ROOT / "benchmarks" / "results" / f".mcu_{name}_{classes}.int8.tflite"
    path.write_bytes(data_int8)
    p_lite = load_runner(path, threads=1, runtime="litert")(xte)
    lite = p_lite.argmax(1)
    tflm_runner = load_runner(path, runtime="tflm")
    t0 = time.perf_counter()
    p_tflm = tflm_runner(xte)
    tflm = p_tflm.argmax(1)
    tflm_ms = (time.perf_counter() - t0) / len(xte) * 1e3
    mcu = mcu_figures(data_int8, path.name)
    ref = _litert_reference_kernels(path, xte, tflm_runner)
    step = tflm_runner.output.quantization[0]
    top2 = np.sort(p_lite, 1)[:, -2:]
    path.unlink()
    row = {"label": label, "model": name, "args": args, "classes": classes, "input": SIZE, "channels": channels,
           "params": int(model.count_params()), "macs": int(count_macs(model)), "epochs": epochs,
           "train_s": round(train_s, 1), "float_top1": float_acc, "litert_int8_top1": float(np.mean(lite == yte)),
           "tflm_int8_top1": float(np.mean(tflm == yte)), "tflm_litert_agreement": float(np.mean(tflm == lite)),
           "tflm_litert_ref_agreement": float(np.mean(tflm == ref.argmax(1))),
           "tflm_litert_max_diff_steps": float(np.abs(p_tflm - p_lite).max() / step),
           "tflm_litert_ref_max_diff_steps": float(np.abs(p_tflm - ref).max() / step),
           "median_top2_margin": float(np.median(top2[:, 1] - top2[:, 0])),
           "tflm_x86_ms_per_image": round(tflm_ms, 2), "test_images": int(len(yte)), "mcu": mcu}
    keras.backend.clear_session()
    gc.collect()
    return row


def _litert_reference_kernels(path, x, like):
    """Probabilities from LiteRT's reference kernels (BUILTIN_REF, no XNNPACK): the kernels TFLM's are ported from."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgecnn.runtime.base import dequantize, quantize

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    out = []
    for img in x:
        interp.set_tensor(i["index"], quantize(img[None], like.input))
        interp.invoke()
        out.append(dequantize(interp.get_tensor(o["index"]), like.output)[0])
    return np.stack(out)


def _table(rows: list[dict]) -> str:
    head = ("| net (96×96 int8) | classes | epochs | MACs | params | arena (min) | arena (recommended) | model "
            "| flash (est.) | float top-1 | LiteRT int8 top-1 | TFLM int8 top-1 | TFLM = LiteRT (XNNPACK) "
            "| TFLM = LiteRT (reference kernels) | activation peak (layer) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        m = r["mcu"]
        lines.append(f"| {r['label']} | {r['classes']} | {r['epochs']} | {r['macs'] / 1e6:.1f} M | {r['params']:,} | "
                     f"{m['arena_bytes'] / 1024:.1f} KiB | {m['arena_recommended_bytes'] // 1024} KiB | "
                     f"{m['model_bytes'] / 1024:.1f} KiB | {m['flash_bytes'] / 1024:.1f} KiB | {r['float_top1']:.3f} | "
                     f"{r['litert_int8_top1']:.3f} | {r['tflm_int8_top1']:.3f} | {r['tflm_litert_agreement']:.3f} | "
                     f"{r['tflm_litert_ref_agreement']:.3f} | {_peak(m)} |")
    return "\n".join(lines)


def _peak(mcu: dict) -> str:
    p = mcu.get("activation_peak")
    if not p:
        return "-"
    return f"{p['bytes'] / 1024:.1f} KiB ({p['layer']}); arena − peak {p['arena_minus_peak_bytes'] / 1024:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--per-class", type=int, default=150, help="images per class of the generated defect set")
    p.add_argument("--only", nargs="*", help="row labels' model names to run (default: all)")
    p.add_argument("--merge", action="store_true", help="keep the JSON's rows of the nets not rerun")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "mcu_table.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "microcontrollers.md")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgecnn._io import write_json, write_text
    from edgecnn.data.defects import make_defects
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import load_arrays
    from edgecnn.runtime.tflm_runner import tflm_version

    root = ROOT / "benchmarks" / "results" / f".defects-{SIZE}-{args.per_class}"
    make_defects(root, seed=0, per_class=args.per_class, size=SIZE)
    arrays = {}
    for ch in sorted({n[4] for n in NETS}):
        ds = discover(root, channels=ch)
        arrays[ch] = load_arrays(ds, "train", SIZE), load_arrays(ds, "test", SIZE)
    train, test = arrays[3]
    good = ds.classes.index("good")
    kept = {r["label"]: r for r in json.loads(args.json.read_text())["rows"]} if args.merge and args.json.is_file() \
        else {}
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count()}
    dataset = {"name": "bundled defects", "per_class": args.per_class, "size": SIZE, "classes": ds.classes,
               "train": int(len(train[1])), "test": int(len(test[1]))}
    done: dict[str, dict] = {}
    for label, name, bargs, binary, ch in NETS:
        if args.only and name not in args.only:
            continue
        r = done[label] = _row(label, name, bargs, binary, ch, (*arrays[ch], good), args.epochs)
        print(f"{label:52s} arena {r['mcu']['arena_bytes']:>8} B  flash {r['mcu']['flash_bytes']:>8} B  "
              f"tflm {r['tflm_int8_top1']:.3f} litert {r['litert_int8_top1']:.3f} agree "
              f"{r['tflm_litert_agreement']:.3f} (ref kernels {r['tflm_litert_ref_agreement']:.3f}, max diff "
              f"{r['tflm_litert_max_diff_steps']:.0f}/{r['tflm_litert_ref_max_diff_steps']:.0f} steps)", flush=True)
        # written after every row, so a long run that is stopped keeps what it measured
        rows = [done.get(n[0]) or kept.get(n[0]) for n in NETS if n[0] in done or n[0] in kept]
        write_json(args.json, {"machine": machine, "tflm_version": tflm_version(), "dataset": dataset, "rows": rows})
        if args.doc.is_file():
            table = _table(rows)
            new = re.sub(r"(<!-- BEGIN mcu -->\n).*?(\n<!-- END mcu -->)",
                         lambda m, t=table: m.group(1) + t + m.group(2), args.doc.read_text(), flags=re.S)
            write_text(args.doc, new)
    print(json.dumps({"json": str(args.json), "rows": len(done)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

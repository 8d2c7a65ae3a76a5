"""Microcontroller table: small nets at 96 px, int8, run in the real TFLite Micro interpreter.

    python benchmarks/mcu_table.py                  # benchmarks/results/mcu_table.json + docs/microcontrollers.md
    python benchmarks/mcu_table.py --epochs 3       # quicker, lower accuracy
    python benchmarks/mcu_table.py --only ds_cnn vww --merge   # rerun some nets (in that order), keep the rest

For each net: train from scratch on the bundled defect set (``data/defects``: 128 px images, 450 per class,
1080 train / 360 test, resized to 96 px as the MCU recipes do; ``--per-class`` generates a smaller one)
for ``--epochs`` (Adam, ``LR`` cosine-decayed to 0, batches in random flips/transposes), full-int8 with
``edgecnn.quantize.tflite_int8`` (min/max calibration on 64 training images), then on the test split:
top-1 of the Keras float model, LiteRT int8 and TFLM int8, TFLM's agreement with LiteRT's XNNPACK and
reference kernels (``tflm_runner.litert_agreement``), and the MCU figures of
``edgecnn.runtime.tflm_runner.mcu_figures`` (minimal arena by bisection with the interpreter, flash =
model + estimated kernels). MACs from ``edgecnn.arch.inspect.count_macs``.

The MLPerf Tiny visual-wake-words reference model (MobileNetV1 0.25, 96x96, int8, 2 classes) is not
shipped here (no network): its shape is measured the same way (a 2-class head trained on good-vs-defect),
and its published figures (:data:`MLPERF_VWW_PUBLISHED`) are written beside the table. The grey row is the
recipe's net with one input channel (``data.channels: 1``, ``edgecnn.train.with_input_channels``). Per
net, the activation peak (``tflm_runner.activation_memory``: the op and layer where the live activations
peak) is set beside the measured minimal arena; the difference is TFLM's persistent structs (the
recording allocator's tail) plus any planner fragmentation and scratch. Rows keep their own epochs and
image counts, so a ``--merge`` run may mix settings (the table shows them).
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
BATCH = 32
LR = 2e-3   # Adam, cosine-decayed to 0 over the run
BUNDLED = ROOT / "data" / "defects"   # what `make run` generates: make_defects(seed=0) at its defaults
MLPERF_VWW_PUBLISHED = {   # published, not measured here; sources in docs/microcontrollers.md
    "model": "MLPerf Tiny VWW reference vww_96_int8.tflite: MobileNetV1 0.25, 96x96x3, int8, 2 classes",
    "model_kb": 325, "quality_target_top1": 0.80, "dataset": "Visual Wake Words (COCO 2014, person / no person)",
    "tflm_example_arena_kb": 136,   # kTensorArenaSize of TFLM's person_detection example (same net, grey 96x96)
}
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
    from edgecnn.runtime.tflm_runner import litert_agreement, mcu_figures
    from edgecnn.train import with_input_channels

    (xtr, ytr), (xte, yte), good = data
    if binary:  # good (class index of "good") vs any defect
        ytr, yte = (ytr != good).astype("int64"), (yte != good).astype("int64")
    classes = 2 if binary else int(ytr.max()) + 1
    tf.keras.utils.set_random_seed(0)
    model = with_input_channels(create_model(name, num_classes=classes, input_size=SIZE, **args), channels)
    steps = max(1, len(xtr) // BATCH)
    lr = keras.optimizers.schedules.CosineDecay(LR, decay_steps=epochs * steps, alpha=0.0)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(_dihedral_batches(xtr, ytr), steps_per_epoch=steps, epochs=epochs, verbose=0)
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
    agree = litert_agreement(data_int8, xte, p_tflm, tflm_runner.input, tflm_runner.output)
    top2 = np.sort(p_lite, 1)[:, -2:]
    path.unlink()
    row = {"label": label, "model": name, "args": args, "classes": classes, "input": SIZE, "channels": channels,
           "params": int(model.count_params()), "macs": int(count_macs(model)), "epochs": epochs,
           "train_s": round(train_s, 1), "float_top1": float_acc, "litert_int8_top1": float(np.mean(lite == yte)),
           "tflm_int8_top1": float(np.mean(tflm == yte)), "tflm_litert_agreement": agree["xnnpack"]["agreement"],
           "tflm_litert_ref_agreement": agree["reference"]["agreement"],
           "tflm_litert_max_diff_steps": agree["xnnpack"]["max_diff_steps"],
           "tflm_litert_ref_max_diff_steps": agree["reference"]["max_diff_steps"],
           "median_top2_margin": float(np.median(top2[:, 1] - top2[:, 0])),
           "tflm_x86_ms_per_image": round(tflm_ms, 2), "train_images": int(len(ytr)), "test_images": int(len(yte)),
           "mcu": mcu}
    keras.backend.clear_session()
    gc.collect()
    return row


def _dihedral_batches(x, y, seed: int = 0):
    """Endless shuffled batches, each in one of the 8 flips/transposes of the square (a texture's defect stays
    a defect under all of them): the nets see 8x the images without 8x the memory."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bs = min(BATCH, len(x))
    while True:
        order = rng.permutation(len(x))
        for i in range(0, len(order) - bs + 1, bs):
            b = x[order[i:i + bs]]
            if rng.random() < 0.5:
                b = b[:, ::-1]
            if rng.random() < 0.5:
                b = b[:, :, ::-1]
            if rng.random() < 0.5:
                b = b.transpose(0, 2, 1, 3)
            yield np.ascontiguousarray(b), y[order[i:i + bs]]


def _table(rows: list[dict]) -> str:
    head = ("| net (96×96 int8) | classes | epochs (train / test images) | MACs | params | arena (min) "
            "| arena (recommended) | model | flash (est.) | float top-1 | LiteRT int8 top-1 | TFLM int8 top-1 "
            "| TFLM = LiteRT (XNNPACK) | TFLM = LiteRT (reference kernels) | activation peak (layer) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        m = r["mcu"]
        images = f"{r.get('train_images', '?')} / {r['test_images']}"
        lines.append(f"| {r['label']} | {r['classes']} | {r['epochs']} ({images}) | {r['macs'] / 1e6:.1f} M | "
                     f"{r['params']:,} | "
                     f"{m['arena_bytes'] / 1024:.1f} KiB | {m['arena_recommended_bytes'] // 1024} KiB | "
                     f"{m['model_bytes'] / 1024:.1f} KiB | {m['flash_bytes'] / 1024:.1f} KiB | {r['float_top1']:.3f} | "
                     f"{r['litert_int8_top1']:.3f} | {r['tflm_int8_top1']:.3f} | {r['tflm_litert_agreement']:.3f} | "
                     f"{r['tflm_litert_ref_agreement']:.3f} | {_peak(m)} |")
    v = MLPERF_VWW_PUBLISHED
    lines.append(f"| published: MLPerf Tiny VWW reference (not run here) | 2 | — | — | — | — | "
                 f"{v['tflm_example_arena_kb']} KiB (TFLM person_detection example) | {v['model_kb']} KB | — | "
                 f"quality target {v['quality_target_top1']:.2f} on VWW | — | — | — | — | — |")
    return "\n".join(lines)


def _peak(mcu: dict) -> str:
    p = mcu.get("activation_peak")
    if not p:
        return "-"
    return f"{p['bytes'] / 1024:.1f} KiB ({p['layer']}); arena − peak {p['arena_minus_peak_bytes'] / 1024:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--per-class", type=int, default=450,
                   help="images per class: 450 is the bundled set (data/defects); fewer generates a smaller one")
    p.add_argument("--only", nargs="*", help="model names ('vww': the 2-class reference shape) to run, in this "
                                             "order (default: all, in table order)")
    p.add_argument("--merge", action="store_true", help="keep the JSON's rows of the nets not rerun")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "mcu_table.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "microcontrollers.md")
    p.add_argument("--table-only", action="store_true", help="only rewrite the doc's table from the JSON")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.table_only:
        saved = json.loads(args.json.read_text())
        for r in saved["rows"]:   # rows from before per-row counts: the run's split sizes
            r.setdefault("train_images", saved["dataset"]["train"])
        _write_doc(args.doc, saved["rows"])
        return 0
    from edgecnn._io import write_json
    from edgecnn.data.defects import make_defects
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import load_arrays
    from edgecnn.runtime.tflm_runner import tflm_version

    root = BUNDLED if args.per_class == 450 else ROOT / "benchmarks" / "results" / f".defects-{args.per_class}"
    make_defects(root, seed=0, per_class=args.per_class)   # reuses an identical set
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
    dataset = {"name": "bundled defects", "folder": root.name, "per_class": args.per_class, "input": SIZE,
               "classes": ds.classes, "train": int(len(train[1])), "test": int(len(test[1])), "lr": LR,
               "published_reference": MLPERF_VWW_PUBLISHED}
    done: dict[str, dict] = {}
    def key(net: tuple) -> str:   # what --only names: the model, or "vww" for the 2-class reference shape
        return "vww" if net[3] else net[1]

    order = sorted(NETS, key=lambda n: args.only.index(key(n)) if args.only and key(n) in args.only else -1)
    for net in order:
        label, name, bargs, binary, ch = net
        if args.only and key(net) not in args.only:
            continue
        r = done[label] = _row(label, name, bargs, binary, ch, (*arrays[ch], good), args.epochs)
        print(f"{label:52s} arena {r['mcu']['arena_bytes']:>8} B  flash {r['mcu']['flash_bytes']:>8} B  "
              f"tflm {r['tflm_int8_top1']:.3f} litert {r['litert_int8_top1']:.3f} agree "
              f"{r['tflm_litert_agreement']:.3f} (ref kernels {r['tflm_litert_ref_agreement']:.3f}, max diff "
              f"{r['tflm_litert_max_diff_steps']:.0f}/{r['tflm_litert_ref_max_diff_steps']:.0f} steps)", flush=True)
        # written after every row, so a long run that is stopped keeps what it measured
        rows = [done.get(n[0]) or kept.get(n[0]) for n in NETS if n[0] in done or n[0] in kept]
        write_json(args.json, {"machine": machine, "tflm_version": tflm_version(), "dataset": dataset, "rows": rows})
        _write_doc(args.doc, rows)
    print(json.dumps({"json": str(args.json), "rows": len(done)}))
    return 0


def _write_doc(doc: Path, rows: list[dict]) -> None:
    """Replace the table between the doc's markers (nothing happens when the doc is missing)."""
    from edgecnn._io import write_text

    if doc.is_file():
        table = _table(rows)
        write_text(doc, re.sub(r"(<!-- BEGIN mcu -->\n).*?(\n<!-- END mcu -->)",
                               lambda m: m.group(1) + table + m.group(2), doc.read_text(), flags=re.S))


if __name__ == "__main__":
    raise SystemExit(main())

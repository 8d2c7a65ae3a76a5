"""Convert once: the four TFLite formats of one model converted from a SavedModel saved once
(``edgecnn.quantize.tflite_source.converter_source``, what the exporters do) against
``TFLiteConverter.from_keras_model`` per format (what they did: every conversion saved the model again).

    python benchmarks/tflite_convert_once.py                              # dsconv 0.5 x 7 blocks, 64 px
    python benchmarks/tflite_convert_once.py --model mobilenet_v2 --size 128

Both ways run in this process, alternating, after one untimed warm-up conversion; each way's artifacts
must run the same in LiteRT (equal outputs on the calibration images). Writes
``benchmarks/results/tflite_convert_once.json``: seconds per format and in total, per repeat, and the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FORMATS = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8")


def from_keras_each_time(model, fmt: str, calib: np.ndarray) -> bytes:
    """The exporters before: a converter made from the Keras model for every format."""
    from edgecnn._tf import tf
    from edgecnn.quantize import representative_dataset, share_quantization_vectors

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt != "tflite-fp32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "tflite-fp16":
        conv.target_spec.supported_types = [tf.float16]
    if fmt == "tflite-int8":
        conv.representative_dataset = representative_dataset(calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    data = bytes(conv.convert())
    return share_quantization_vectors(data) if fmt in ("tflite-dynamic", "tflite-int8") else data


def outputs(data: bytes, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    from edgecnn.runtime.base import TensorSpec, dequantize, quantize

    it = Interpreter(model_content=data, num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]

    def spec(d):
        s, z = d["quantization"]
        return TensorSpec(d["name"], tuple(d["shape"]), np.dtype(d["dtype"]).name, (s, z) if s else None)

    out = []
    for img in images:
        x = img[None]
        it.set_tensor(i["index"], quantize(x, spec(i)) if i["dtype"] != np.float32 else x)
        it.invoke()
        out.append(dequantize(it.get_tensor(o["index"]), spec(o))[0] if o["dtype"] != np.float32
                   else it.get_tensor(o["index"])[0])
    return np.stack(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="dsconv")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tflite_convert_once.json"))
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    from edgecnn._tf import keras
    from edgecnn.arch import create_model
    from edgecnn.export import ExportContext, export
    from edgecnn.runtime.latency import machine_info

    extra = {"alpha": 0.5, "depth": 7} if args.model == "dsconv" else {"weights": None}
    keras.utils.set_random_seed(0)
    calib = np.random.default_rng(0).uniform(0, 255, (32, args.size, args.size, 3)).astype(np.float32)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "edgecnn-convert-once"
    work.mkdir(parents=True, exist_ok=True)
    ctx = ExportContext(work, calibration=calib)
    warm = create_model(args.model, num_classes=4, input_size=args.size, **extra)
    from_keras_each_time(warm, "tflite-fp32", calib)        # TF's one-time costs, untimed
    runs = []
    for r in range(args.repeats):
        model = create_model(args.model, num_classes=4, input_size=args.size, **extra)  # a fresh object: no cache
        row: dict = {"repeat": r, "before_s": {}, "after_s": {}, "same_outputs": {}}
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        made: dict = {"before": {}, "after": {}}
        for way in order:
            for fmt in FORMATS:
                t0 = time.perf_counter()
                if way == "before":
                    made[way][fmt] = from_keras_each_time(model, fmt, calib)
                else:
                    made[way][fmt] = export(fmt, model, ctx).read_bytes()
                row[f"{way}_s"][fmt] = round(time.perf_counter() - t0, 2)
                print(r, way, fmt, row[f"{way}_s"][fmt], flush=True)
        for fmt in FORMATS:
            row["same_outputs"][fmt] = bool(np.array_equal(outputs(made["before"][fmt], calib),
                                                           outputs(made["after"][fmt], calib)))
        row["before_total_s"] = round(sum(row["before_s"].values()), 2)
        row["after_total_s"] = round(sum(row["after_s"].values()), 2)
        row["after_over_before"] = round(row["after_total_s"] / row["before_total_s"], 3)
        runs.append(row)
    result = {"benchmark": "tflite_convert_once", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine_info(), "threads": {"cpu_count": os.cpu_count()},
              "model": {"name": args.model, "input_size": args.size, **extra}, "formats": list(FORMATS),
              "note": args.note, "runs": runs,
              "after_over_before_median": float(np.median([r["after_over_before"] for r in runs]))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0 if all(all(r["same_outputs"].values()) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

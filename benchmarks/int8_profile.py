"""Where int8 loses: per-op profiles, fp32 beside int8, in onnxruntime and OpenVINO, grouped by export stage.

    python benchmarks/int8_profile.py [--sizes 128 224] [--runs 100] [--threads 1] [--out FILE]

For MobileNetV2-1.0 with ImageNet weights at each size (128 px is the default recipe's input; the
head is ImageNet's 1000 classes, which only the head's cost depends on), built as edgecnn exports
it (NHWC RGB 0-255 input, the normalisation in the graph): the float ONNX, its QDQ int8
(``quantize_onnx``, this CPU's types) and both as OpenVINO IR. Each runs ``--runs`` batch-1
inferences with the runtime's profiler on:

* onnxruntime ``SessionOptions.enable_profiling`` (per-node kernel time from the JSON trace);
* OpenVINO ``PERF_COUNT`` + ``InferRequest.get_profiling_info()`` (per-layer real time);
* LiteRT: the Python ``Interpreter`` exposes no per-op profiler (the op profiler is in the C++
  ``benchmark_model`` tool, ``--enable_op_profiling``, not in the pip wheel), so LiteRT is not
  profiled here; its totals are in ``mobilenetv2_224.py``.

The profilers live in ``edgecnn.evaluate.op_profile`` (``edgecnn doctor`` uses them too). Per-op time is
grouped into: ``input_transpose`` (the NHWC -> NCHW Transpose), ``normalisation``
(elementwise ops before the first convolution), ``quantize_input`` (the Q/DQ before the first
convolution), ``conv_int8`` / ``conv_float``, ``qdq`` (the other QuantizeLinear/DequantizeLinear),
``head`` (everything after the last convolution) and ``other``; each group's share of the total.
Also written: how many Conv/MatMul run in float after onnxruntime's optimisation. fp32 and int8
are profiled one after the other, not interleaved: on a loaded machine compare the shares within
one profile, not the totals (``mobilenetv2_224.py`` gives interleaved end-to-end ratios).
Writes benchmarks/results/int8_profile.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from edgecnn.evaluate.op_profile import ort_profile, ov_profile, summarise_profile

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/int8_profile.json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from edgecnn._io import write_json
    from edgecnn.arch import create_model
    from edgecnn.export.openvino import onnx_to_openvino_ir
    from edgecnn.quantize import cpu_features, keras_to_onnx, quantize_onnx
    from edgecnn.quantize.onnx_graph import onnx_float_ops
    from edgecnn.runtime.latency import machine_info
    from mobilenetv2_224 import real_images

    results = {}
    for size in args.sizes:
        model = create_model("mobilenet_v2", include_top=True, weights="imagenet", dropout=0.0, input_size=size)
        calib = real_images(args.calibration, seed=1)
        if size != calib.shape[1]:
            from edgecnn._tf import tf

            calib = tf.image.resize(calib, (size, size)).numpy()
        image = calib[:1]
        with tempfile.TemporaryDirectory(prefix="int8-profile-") as tmp:
            work = Path(tmp)
            keras_to_onnx(model, work / "fp32.onnx")
            quantize_onnx(work / "fp32.onnx", work / "int8.onnx", calib, method="minmax", per_channel=True)
            row: dict = {"float_ops_after_quantisation": onnx_float_ops(work / "int8.onnx")}
            for prec in ("fp32", "int8"):
                onnx_path = work / f"{prec}.onnx"
                row[f"onnxruntime-{prec}"] = summarise_profile(ort_profile(onnx_path, image, args.runs, args.threads))
                try:
                    ir = onnx_to_openvino_ir(onnx_path, work / f"{prec}.openvino")
                    row[f"openvino-{prec}"] = summarise_profile(ov_profile(ir, image, args.runs, args.threads))
                except Exception as e:  # OpenVINO missing: onnxruntime's profile still stands
                    row[f"openvino-{prec}"] = {"error": f"{type(e).__name__}: {e}"}
            for rt in ("onnxruntime", "openvino"):
                f, q = row.get(f"{rt}-fp32", {}), row.get(f"{rt}-int8", {})
                if f.get("total_us") and q.get("total_us"):
                    row[f"{rt}_int8_over_fp32"] = round(q["total_us"] / f["total_us"], 4)
            results[f"mobilenet_v2_{size}"] = row
            print(f"{size}px: " + ", ".join(f"{k} {v}" for k, v in row.items() if k.endswith("_over_fp32")),
                  file=sys.stderr)
    write_json(args.out, {"model": "mobilenet_v2 1.0 ImageNet, NHWC RGB 0-255 input, in-graph normalisation",
                          "threads": args.threads, "runs": args.runs, "cpu": sorted(cpu_features().flags),
                          "litert": "not profiled: the Python Interpreter has no per-op profiler",
                          "machine": machine_info(), "results": results})
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

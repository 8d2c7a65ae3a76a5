"""TFLite exporters: fp32, fp16, dynamic-range and full-integer int8 (int8 input and output).

The conversions themselves live in :mod:`edgecnn.quantize` (shared with compression); TensorFlow
is imported only when an exporter runs, so listing formats needs no TensorFlow. Every format converts
the same SavedModel of the model, saved once by ``tflite_converter`` (:mod:`edgecnn.quantize.tflite_source`).
"""
from __future__ import annotations

from pathlib import Path

from edgecnn._io import write_bytes
from edgecnn.export.registry import ExportContext, register_format
from edgecnn.quantize import quantize_scope, share_quantization_vectors, tflite_converter, tflite_int8


@register_format("tflite-fp32", filename="model.fp32.tflite", runtime="litert", precision="fp32",
                 description="float32 TFLite, the reference for every other TFLite artifact")
def export_tflite_fp32(model, path: Path, ctx: ExportContext) -> Path:
    with quantize_scope():
        return write_bytes(path, tflite_converter(model).convert())


@register_format("tflite-fp16", filename="model.fp16.tflite", runtime="litert", precision="fp16",
                 description="float16 weights (half the size; GPU delegates run it natively)")
def export_tflite_fp16(model, path: Path, ctx: ExportContext) -> Path:
    from edgecnn._tf import tf

    conv = tflite_converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    with quantize_scope():
        return write_bytes(path, conv.convert())


@register_format("tflite-dynamic", filename="model.dynamic.tflite", runtime="litert", precision="dynamic-int8",
                 description="int8 weights, float activations quantised on the fly; no calibration")
def export_tflite_dynamic(model, path: Path, ctx: ExportContext) -> Path:
    from edgecnn._tf import tf

    conv = tflite_converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    with quantize_scope():
        return write_bytes(path, share_quantization_vectors(conv.convert()))


@register_format("tflite-int8", filename="model.int8.tflite", runtime="litert", precision="int8",
                 needs_calibration=True,
                 description="full-integer int8 (int8 input/output), calibrated on training images")
def export_tflite_int8(model, path: Path, ctx: ExportContext) -> Path:
    return write_bytes(path, tflite_int8(model, ctx.calibration, method=ctx.tflite_calibration))

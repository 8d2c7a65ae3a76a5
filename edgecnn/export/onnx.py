"""ONNX exporters: float32 via tf2onnx, and static QDQ int8 via onnxruntime.quantization.

Both conversions live in :mod:`edgecnn.quantize` (shared with compression), which imports
TensorFlow and onnxruntime only when they run.
"""
from __future__ import annotations

from pathlib import Path

from edgecnn.export.registry import ExportContext, register_format
from edgecnn.quantize import keras_to_onnx, quantize_onnx


@register_format("onnx", filename="model.onnx", runtime="onnxruntime", precision="fp32",
                 description="float32 ONNX (tf2onnx), dynamic batch, checked by onnx.checker")
def export_onnx(model, path: Path, ctx: ExportContext) -> Path:
    return keras_to_onnx(model, path, opset=ctx.opset)


@register_format("onnx-int8", filename="model.int8.onnx", runtime="onnxruntime", precision="int8",
                 parent="model.onnx", needs_calibration=True,
                 description="static QDQ int8 (onnxruntime.quantization), per-channel, calibrated; "
                             "activation type and reduce_range chosen for the target CPU")
def export_onnx_int8(model, path: Path, ctx: ExportContext) -> Path:
    src = ctx.run_dir / "model.onnx"
    if not src.is_file():
        export_onnx(model, src, ctx)
    return quantize_onnx(src, path, ctx.calibration, method=ctx.onnx_calibration, per_channel=ctx.onnx_per_channel,
                         target=ctx.target_cpu)

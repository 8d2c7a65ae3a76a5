"""ONNX exporters: float32 via tf2onnx, and static QDQ int8 via onnxruntime.quantization."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgecnn._io import atomic_path
from edgecnn._tf import tf
from edgecnn.export.registry import ExportContext, register_format

INPUT_NAME = "image"


@register_format("onnx", filename="model.onnx", runtime="onnxruntime", precision="fp32",
                 description="float32 ONNX (tf2onnx), dynamic batch, checked by onnx.checker")
def export_onnx(model, path: Path, ctx: ExportContext) -> Path:
    import onnx
    import tf2onnx

    spec = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=ctx.opset)
    proto.graph.output[0].name  # noqa: B018  (touch: fails early on an empty graph)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def cpu_needs_reduce_range() -> bool:
    """True on x86 CPUs with AVX2 but without VNNI: their u8s8 dot products can saturate (ORT docs)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    has_vnni = "avx512_vnni" in flags or "avx_vnni" in flags or "amx" in flags
    return "avx2" in flags and not has_vnni


class _Calibration:
    """onnxruntime CalibrationDataReader over an in-memory image array."""

    def __init__(self, images: np.ndarray, name: str):
        self._it = iter([{name: img[None].astype(np.float32)} for img in images])

    def get_next(self):
        return next(self._it, None)


@register_format("onnx-int8", filename="model.int8.onnx", runtime="onnxruntime", precision="int8",
                 parent="model.onnx", needs_calibration=True,
                 description="static QDQ int8 (onnxruntime.quantization), per-channel, calibrated")
def export_onnx_int8(model, path: Path, ctx: ExportContext) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = ctx.run_dir / "model.onnx"
    if not src.is_file():
        export_onnx(model, src, ctx)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[ctx.onnx_calibration]
    with tempfile.TemporaryDirectory(dir=ctx.run_dir, prefix=".onnx-int8-") as tmpdir:
        prep = Path(tmpdir) / "prep.onnx"
        quant_pre_process(str(src), str(prep), skip_symbolic_shape=True)
        with atomic_path(path) as tmp:
            quantize_static(str(prep), str(tmp), _Calibration(ctx.calibration, INPUT_NAME),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=ctx.onnx_per_channel,
                            reduce_range=cpu_needs_reduce_range(), calibrate_method=method,
                            extra_options={"CalibTensorRangeSymmetric": False})
    return path

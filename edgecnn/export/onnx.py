"""ONNX exporters: float32 via tf2onnx, and static QDQ int8 via onnxruntime.quantization."""
from __future__ import annotations

from pathlib import Path

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


@register_format("onnx-int8", filename="model.int8.onnx", runtime="onnxruntime", precision="int8",
                 parent="model.onnx", needs_calibration=True,
                 description="static QDQ int8 (onnxruntime.quantization), per-channel, calibrated")
def export_onnx_int8(model, path: Path, ctx: ExportContext) -> Path:
    # One implementation of static QDQ quantisation: the compression library's (pre-processing,
    # calibration method, per-channel, CPU-detected reduce_range, atomic write).
    from edgecnn.compress.ptq import quantize_onnx

    src = ctx.run_dir / "model.onnx"
    if not src.is_file():
        export_onnx(model, src, ctx)
    return quantize_onnx(src, path, ctx.calibration, method=ctx.onnx_calibration, per_channel=ctx.onnx_per_channel)

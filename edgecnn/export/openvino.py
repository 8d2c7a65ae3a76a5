"""OpenVINO IR exporters: ``model.openvino/`` (from ``model.onnx``) and ``model.int8.openvino/``
(from the QDQ ``model.int8.onnx``, whose quantise/dequantise pairs become OpenVINO FakeQuantize).

OpenVINO runs the ONNX files as they are, so IR is optional (``default=False``: a recipe lists
``openvino`` / ``openvino-int8`` in ``export.formats`` to get it). IR skips the ONNX frontend at load
time and is what OpenVINO Model Server and anomalib deployments expect. Each artifact is a folder
holding ``model.xml`` and ``model.bin``; the manifest hashes both.
"""
from __future__ import annotations

from pathlib import Path

from edgecnn._io import atomic_dir
from edgecnn.errors import EdgecnnError
from edgecnn.export.registry import ExportContext, get_format, register_format

IR_XML = "model.xml"


def onnx_to_openvino_ir(onnx_path: str | Path, out_dir: str | Path) -> Path:
    """Convert an ONNX file to an OpenVINO IR folder (``model.xml`` + ``model.bin``, fp32 weights), atomically.

    Raises:
        EdgecnnError: the ONNX file is missing, or OpenVINO cannot read it.
    """
    import openvino as ov

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise EdgecnnError(f"OpenVINO IR needs {onnx_path.name}; export the format that writes it first.")
    with atomic_dir(out_dir) as tmp:
        model = ov.Core().read_model(str(onnx_path))
        # fp32 weights: compress_to_fp16 would halve the size but change the numbers the report compares
        ov.save_model(model, str(tmp / IR_XML), compress_to_fp16=False)
    return out_dir


def _from_parent(parent_format: str, model, path: Path, ctx: ExportContext) -> Path:
    parent = get_format(parent_format)
    src = ctx.run_dir / parent.filename
    if not src.is_file():
        parent.fn(model, src, ctx)
    return onnx_to_openvino_ir(src, path)


@register_format("openvino", filename="model.openvino", runtime="openvino", precision="fp32", parent="model.onnx",
                 default=False, description="OpenVINO IR folder (model.xml + model.bin) from model.onnx")
def export_openvino(model, path: Path, ctx: ExportContext) -> Path:
    return _from_parent("onnx", model, path, ctx)


@register_format("openvino-int8", filename="model.int8.openvino", runtime="openvino", precision="int8",
                 parent="model.int8.onnx", needs_calibration=True, default=False,
                 description="OpenVINO IR folder from the QDQ model.int8.onnx (FakeQuantize int8)")
def export_openvino_int8(model, path: Path, ctx: ExportContext) -> Path:
    return _from_parent("onnx-int8", model, path, ctx)

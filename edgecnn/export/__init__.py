"""Exporters: a registry of formats keyed by name, one module per format.

    from edgecnn.export import ExportContext, export, list_formats

    [f.name for f in list_formats()]                 # 'tflite-fp32', ..., 'onnx-int8' (no TensorFlow imported)
    path = export("tflite-int8", model, ExportContext(run_dir, calibration=images))

The conversions and quantisers themselves live in :mod:`edgecnn.quantize`, shared with compression.
"""
from edgecnn.export.registry import (
                                     ExportContext,
                                     FormatSpec,
                                     export,
                                     format_depth,
                                     get_format,
                                     list_formats,
                                     register_format,
)

__all__ = ["ExportContext", "FormatSpec", "export", "format_depth", "get_format", "list_formats", "register_format"]

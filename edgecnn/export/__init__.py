"""Exporters: a registry of formats keyed by name, one module per format.

    from edgecnn.export import export, list_formats
    export("tflite-int8", model, run_dir, calibration=images)
"""
from edgecnn.export.registry import ExportContext, FormatSpec, export, get_format, list_formats

__all__ = ["ExportContext", "FormatSpec", "export", "get_format", "list_formats"]

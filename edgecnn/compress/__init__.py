"""Compression that keeps accuracy: pruning, clustering, QAT (and combinations), and a chooser.

Every verb returns a new model and leaves its argument alone (tfmot style):

    from edgecnn.compress import prune, fine_tune_pruned, strip, quantize_aware, choose

    pruned = prune(model, target_sparsity=0.5, end_step=500)
    fine_tune_pruned(pruned, train, val, epochs=2)
    qat = quantize_aware(strip(pruned), scheme="pqat")
    result = choose(model, val_x, val_y, calib, "export/run/compress", max_accuracy_drop=0.005, train=(x, y))

Nested ``keras.applications`` backbones are flattened first (:func:`flatten`); layers tfmot cannot
quantise are listed up front by :func:`unsupported_layers`. Post-training quantisation (TFLite and
ONNX int8, calibration, sensitivity) is :mod:`edgecnn.quantize`. See docs/compression.md.
"""
from __future__ import annotations

import importlib

# Where each public name lives. Loaded on first use (PEP 562), so that importing the chooser's route
# registry (recipe validation, a serving install) does not import TensorFlow and tfmot.
_EXPORTS = {
    "edgecnn.compress.pruning": ("prune", "fine_tune_pruned", "strip", "sparsity_report", "overall_sparsity",
                               "prunable_layers", "gzipped_size", "sparse_tflite", "xnnpack_sparse_inference"),
    "edgecnn.compress.clustering": ("cluster", "fine_tune_clustered", "strip_clusters", "unique_values"),
    "edgecnn.compress.qat": ("quantize_aware", "fine_tune_qat", "to_tflite_int8", "unsupported_layers", "save_qat",
                             "load_qat"),
    "edgecnn.compress._flatten": ("flatten", "is_nested"),
    "edgecnn.compress._fold": ("fold_normalization",),
    "edgecnn.compress.chooser": ("choose", "choose_with", "ChooseOptions", "ChooseResult", "Candidate", "list_routes",
                                 "register_route", "copy_chosen"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'edgecnn.compress' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

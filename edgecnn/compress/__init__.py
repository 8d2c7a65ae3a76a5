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
from edgecnn.compress._flatten import flatten, is_nested
from edgecnn.compress._fold import fold_normalization
from edgecnn.compress.chooser import Candidate, ChooseResult, choose, copy_chosen, list_routes, register_route
from edgecnn.compress.cluster import cluster, fine_tune_clustered, strip_clusters, unique_values
from edgecnn.compress.config import CompressConfig
from edgecnn.compress.prune import (fine_tune_pruned, gzipped_size, overall_sparsity, prunable_layers, prune,
                                    sparse_tflite, sparsity_report, strip, xnnpack_sparse_inference)
from edgecnn.compress.qat import (fine_tune_qat, load_qat, quantize_aware, save_qat, to_tflite_int8,
                                  unsupported_layers)

__all__ = [
    # pruning
    "prune", "fine_tune_pruned", "strip", "sparsity_report", "overall_sparsity", "prunable_layers", "gzipped_size",
    "sparse_tflite", "xnnpack_sparse_inference",
    # clustering
    "cluster", "fine_tune_clustered", "strip_clusters", "unique_values",
    # QAT
    "quantize_aware", "fine_tune_qat", "to_tflite_int8", "unsupported_layers", "flatten", "is_nested",
    "fold_normalization", "save_qat", "load_qat",
    # chooser
    "choose", "ChooseResult", "Candidate", "list_routes", "register_route", "copy_chosen",
    # config
    "CompressConfig",
]

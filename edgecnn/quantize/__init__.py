"""Quantisation: the layer below export and compress that both use, and that imports neither.

    from edgecnn.quantize import check_calibration, quantize_onnx, tflite_int8

    cal = check_calibration(images)                              # >= MIN_CALIBRATION RGB 0-255 images
    data = tflite_int8(model, cal, method="percentile")          # full-int8 TFLite flatbuffer
    quantize_onnx("model.onnx", "model.int8.onnx", cal)          # static QDQ, types chosen for this CPU
    nodes = onnx_sensitive_nodes("model.onnx", "model.int8.onnx", cal, top_k=3)

Modules, each named for what it holds: ``calibration`` (the minimum, the check, the feeders),
``cpu`` (CPU features -> ONNX int8 types), ``converters`` (Keras -> TFLite converter / ONNX, the
QAT scope), ``onnx_qdq`` and ``onnx_sensitivity``, ``tflite_int8``, ``tflite_percentile``,
``tflite_sensitivity``, ``layer_error`` (SQNR, cosine and the per-layer ranking both sensitivities
share) and ``tflite_pack``. TensorFlow and onnxruntime are imported inside the
functions, so importing this package (e.g. for :data:`MIN_CALIBRATION`) stays light.
"""
from edgecnn.quantize.calibration import MIN_CALIBRATION, CalibrationReader, check_calibration, representative_dataset
from edgecnn.quantize.converters import (
    ONNX_INPUT_NAME,
    keras_to_onnx,
    quantize_scope,
    register_quantize_config,
    tflite_converter,
)
from edgecnn.quantize.cpu import TARGET_CPUS, CpuFeatures, cpu_features, parse_cpuinfo, target_features
from edgecnn.quantize.onnx_qdq import (
    ONNX_CALIBRATION_METHODS,
    ONNX_INT8_TYPES,
    onnx_input_name,
    onnx_node_names,
    quantize_onnx,
)
from edgecnn.quantize.onnx_sensitivity import onnx_node_sensitivity, onnx_sensitive_nodes
from edgecnn.quantize.tflite_int8 import TFLITE_CALIBRATION_METHODS, tflite_int8
from edgecnn.quantize.tflite_pack import share_quantization_vectors
from edgecnn.quantize.tflite_percentile import narrow_to_percentile, percentile_ranges, quantize_calibrated
from edgecnn.quantize.tflite_sensitivity import (
    tflite_layer_statistics,
    tflite_sensitive_nodes,
    tflite_tensor_sensitivity,
)

__all__ = [
    # calibration
    "MIN_CALIBRATION", "check_calibration", "representative_dataset", "CalibrationReader",
    # CPU
    "CpuFeatures", "cpu_features", "parse_cpuinfo", "TARGET_CPUS", "target_features",
    # converters
    "tflite_converter", "keras_to_onnx", "quantize_scope", "register_quantize_config", "ONNX_INPUT_NAME",
    # ONNX
    "quantize_onnx", "ONNX_CALIBRATION_METHODS", "ONNX_INT8_TYPES", "onnx_input_name", "onnx_node_names",
    "onnx_node_sensitivity", "onnx_sensitive_nodes",
    # TFLite
    "tflite_int8", "TFLITE_CALIBRATION_METHODS", "narrow_to_percentile", "percentile_ranges", "quantize_calibrated",
    "tflite_layer_statistics", "tflite_sensitive_nodes", "tflite_tensor_sensitivity", "share_quantization_vectors",
]

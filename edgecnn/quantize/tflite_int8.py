"""Full-integer TFLite from a float, pruned or QAT Keras model: min/max or percentile calibration, or mixed.

    data = tflite_int8(model, images)                               # int8 in/out, per-channel weights
    data = tflite_int8(model, images, method="percentile")          # activation ranges at their 99.999th pct
    data = tflite_int8(model, images, denylisted_nodes=nodes)       # those ops float, float in/out

Repeated quantisation vectors are stored once (:mod:`edgecnn.quantize.tflite_pack`).
"""
from __future__ import annotations

from collections.abc import Iterable

from edgecnn.errors import EdgecnnError, did_you_mean
from edgecnn.quantize.calibration import MIN_CALIBRATION, check_calibration, representative_dataset
from edgecnn.quantize.converters import quantize_scope, tflite_converter
from edgecnn.quantize.tflite_pack import share_quantization_vectors

TFLITE_CALIBRATION_METHODS = ("minmax", "percentile")


def tflite_int8(model, calibration, *, method: str = "minmax", percentile: float = 99.999,
                denylisted_nodes: Iterable[str] = (), int8_io: bool = True) -> bytes:
    """Full-integer TFLite from a float, pruned or QAT Keras model; returns the flatbuffer.

    Args:
        model: a ``tf_keras`` model taking NHWC RGB 0-255 (QAT models: their ranges are used), or a SavedModel
            folder; a model is saved for the converter once and reused (``tflite_converter``).
        calibration: (N, H, W, 3) float32 0-255, N >= ``MIN_CALIBRATION``; fills every range QAT did not learn.
        method: ``'minmax'`` (the converter's) or ``'percentile'`` (:mod:`edgecnn.quantize.tflite_percentile`).
        percentile: the percentile for ``method='percentile'``, in [99, 100).
        denylisted_nodes: TFLite tensor names (from :func:`~edgecnn.quantize.tflite_sensitive_nodes`) kept
            float through ``QuantizationDebugger``'s selective quantisation; input and output are then float32.
        int8_io: int8 input and output (the runners accept float32 too).

    Returns:
        The ``.tflite`` flatbuffer.

    Raises:
        EdgecnnError: too few calibration images, or an unknown method / percentile.

    Example:
        >>> open("model.int8.tflite", "wb").write(tflite_int8(model, calib))  # doctest: +SKIP
    """
    from edgecnn._tf import tf

    cal = check_calibration(calibration, what="TFLite int8")
    if method not in TFLITE_CALIBRATION_METHODS:
        raise EdgecnnError(f"TFLite calibration method must be one of {list(TFLITE_CALIBRATION_METHODS)}; received "
                           f"{method!r}.{did_you_mean(method, TFLITE_CALIBRATION_METHODS)}")
    if not 99.0 <= percentile < 100.0:
        raise EdgecnnError(f"percentile must be in [99, 100) (99.999 keeps all but 1 value in 100,000); "
                           f"received percentile={percentile!r}.")
    deny = list(denylisted_nodes)
    with quantize_scope():
        conv = tflite_converter(model)   # the model saved once, reused by every route
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative_dataset(cal)
        if deny:
            options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny)
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=conv, debug_dataset=representative_dataset(cal[:MIN_CALIBRATION]), debug_options=options)
            return share_quantization_vectors(bytes(debugger.get_nondebug_quantized_model()))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        if method == "minmax":
            return share_quantization_vectors(bytes(conv.convert()))
        from edgecnn.quantize.tflite_percentile import narrow_to_percentile, quantize_calibrated

        conv._experimental_calibrate_only = True  # the converter's first step; QuantizationDebugger uses it too
        calibrated, _ = narrow_to_percentile(bytes(conv.convert()), cal, percentile)
    return share_quantization_vectors(quantize_calibrated(calibrated, int8_io=int8_io))


__all__ = ["TFLITE_CALIBRATION_METHODS", "tflite_int8"]

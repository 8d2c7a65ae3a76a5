"""Which TFLite ops quantisation hurts most (``tf.lite.experimental.QuantizationDebugger``).

    nodes = tflite_sensitive_nodes(model, images, top_k=3)      # by RMSE / scale of each op's output
    data = tflite_int8(model, images, denylisted_nodes=nodes)   # mixed int8/float, float in/out

The measure is *local*: the debugger runs each float op on the dequantised inputs of the
quantised op, so an op is not blamed for the error that reached it.
"""
from __future__ import annotations

import csv
import io
import math

from edgecnn.errors import EdgecnnError
from edgecnn.quantize.calibration import check_calibration, representative_dataset
from edgecnn.quantize.converters import quantize_scope, tflite_converter


def tflite_layer_statistics(model, calibration, *, max_images: int = 16) -> list[dict]:
    """Per-op quantisation error of the int8 TFLite model (``QuantizationDebugger``), worst first.

    Each row: ``tensor_name`` (what ``denylisted_nodes`` takes), ``op_name``, ``rmse_over_scale``
    (root-mean-square error of the op's int8 output in units of its quantisation step; TF's guide
    flags > 0.7), ``mean_squared_error``, ``scale``.
    """
    from edgecnn._tf import tf

    cal = check_calibration(calibration, what="TFLite sensitivity analysis")
    with quantize_scope():
        conv = tflite_converter(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative_dataset(cal)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=conv, debug_dataset=representative_dataset(cal[:max_images]))
        debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(r.get("scale") or 0)
        mse = float(r.get("mean_squared_error") or 0)
        rows.append({"tensor_name": r["tensor_name"], "op_name": r["op_name"], "scale": scale,
                     "mean_squared_error": mse,
                     "rmse_over_scale": math.sqrt(mse) / scale if scale > 0 else 0.0})
    rows.sort(key=lambda r: r["rmse_over_scale"], reverse=True)
    return rows


def tflite_sensitive_nodes(model, calibration, *, top_k: int = 3, threshold: float = 0.0,
                           max_images: int = 16) -> list[str]:
    """Tensor names of the ``top_k`` ops with the largest RMSE/scale above ``threshold`` (for ``denylisted_nodes``)."""
    if top_k < 1:
        raise EdgecnnError(f"top_k must be >= 1; received top_k={top_k}.")
    rows = tflite_layer_statistics(model, calibration, max_images=max_images)
    return [r["tensor_name"] for r in rows if r["rmse_over_scale"] > threshold][:top_k]


__all__ = ["tflite_layer_statistics", "tflite_sensitive_nodes"]

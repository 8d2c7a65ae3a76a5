"""Percentile calibration for TFLite full-int8, which the converter itself only does by min/max.

The converter records each activation's [min, max] over the representative dataset and quantises
to that range, so one outlier pixel-activation in 200 images stretches the int8 grid for every
image. onnxruntime offers percentile calibration for exactly this reason; TFLite does not, but its
two-step path (``_experimental_calibrate_only`` -> ``mlir_quantize``, the one
``tf.lite.experimental.QuantizationDebugger`` uses) lets us narrow the recorded ranges in between:

1. calibrate: the float model with min/max statistics on every activation tensor;
2. run that model in LiteRT on the calibration images, keeping every intermediate tensor, and
   find each activation's ``percentile`` range exactly (a running top-k / bottom-k, no histogram);
3. shrink each recorded range to it (never widen; the model's input and outputs keep theirs);
4. quantise with ``mlir_quantize``, per-channel weights as usual.

Measured on the default recipe (MobileNetV2, 360 test images): min/max 0.942 top-1 and 0.978
agreement with the float model (0.961); percentile 99.999: 0.961 and 0.992.
"""
from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger("edgecnn.quantize")


def _stat_tensors(model_t) -> list[int]:
    """Indices of activation tensors with a recorded [min, max], except the model's inputs and outputs."""
    sg = model_t.subgraphs[0]
    io = {int(i) for i in sg.inputs} | {int(i) for i in sg.outputs}
    return [i for i, t in enumerate(sg.tensors)
            if i not in io and t.quantization is not None and t.quantization.min is not None
            and t.quantization.max is not None and len(t.quantization.min) == 1]


def percentile_ranges(calibrated: bytes, images: np.ndarray, percentile: float,
                      tensors: list[int]) -> dict[int, tuple[float, float]]:
    """``{tensor index: (low, high)}``: each tensor's ``100 - percentile`` / ``percentile`` values over ``images``."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], images[:1].astype(inp["dtype"]))
    interp.invoke()
    sizes = {}
    for i in tensors:
        try:
            sizes[i] = int(np.prod(interp.get_tensor(i).shape))
        except ValueError:   # a tensor the converter recorded a range for but no op writes (e.g. folded away)
            continue
    tensors = list(sizes)
    # exact tail order statistics: keep the k largest and k smallest values seen so far
    k = {i: max(1, math.floor(sizes[i] * len(images) * (1.0 - percentile / 100.0))) for i in tensors}
    top: dict[int, np.ndarray] = {}
    bottom: dict[int, np.ndarray] = {}
    for img in images:
        interp.set_tensor(inp["index"], img[None].astype(inp["dtype"]))
        interp.invoke()
        for i in tensors:
            v = interp.get_tensor(i).ravel()
            n = k[i]
            hi = np.concatenate([top[i], v]) if i in top else v
            lo = np.concatenate([bottom[i], v]) if i in bottom else v
            top[i] = np.partition(hi, len(hi) - n)[len(hi) - n:] if len(hi) > n else hi
            bottom[i] = np.partition(lo, n - 1)[:n] if len(lo) > n else lo
    return {i: (float(bottom[i].max()), float(top[i].min())) for i in tensors}


def narrow_to_percentile(calibrated: bytes, images: np.ndarray, percentile: float = 99.999) -> tuple[bytes, int]:
    """The calibrated model with activation ranges shrunk to their percentiles; also how many changed."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model_t = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(calibrated, 0))
    tensors = _stat_tensors(model_t)
    ranges = percentile_ranges(calibrated, images, percentile, tensors)
    changed = 0
    for i, (lo, hi) in ranges.items():
        q = model_t.subgraphs[0].tensors[i].quantization
        old_lo, old_hi = float(q.min[0]), float(q.max[0])
        # the range must hold 0 (exact zero padding) and is only ever narrowed
        new_lo, new_hi = max(min(lo, 0.0), old_lo), min(max(hi, 0.0), old_hi)
        if new_hi <= new_lo:
            continue
        if (new_lo, new_hi) != (old_lo, old_hi):
            changed += 1
        q.min = np.array([new_lo], np.float32)
        q.max = np.array([new_hi], np.float32)
    builder = flatbuffers.Builder(len(calibrated))
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    log.info("TFLite percentile calibration (%s): narrowed %d of %d activation ranges", percentile, changed,
             len(tensors))
    return bytes(builder.Output()), changed


def quantize_calibrated(calibrated: bytes, *, int8_io: bool = True) -> bytes:
    """Full-int8 flatbuffer from a calibrated model (the converter's own second step)."""
    from tensorflow.lite.python import convert

    from edgecnn._tf import tf

    io_type = tf.int8 if int8_io else tf.float32
    return bytes(convert.mlir_quantize(calibrated, False, input_data_type=io_type, output_data_type=io_type))


__all__ = ["narrow_to_percentile", "percentile_ranges", "quantize_calibrated"]

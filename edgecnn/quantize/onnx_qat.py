"""A QAT model to fully fused QDQ int8 ONNX: the trained weights and the learned activation ranges.

    qat_to_onnx_int8(qat_model, "model.qat.int8.onnx", calibration)

tf2onnx turns a tfmot QAT model's FakeQuant ops into QuantizeLinear/DequantizeLinear pairs on the
activations but folds the weights' fake-quant (and the BatchNorm) into float weights, and leaves a
Clip between each Conv and its QuantizeLinear: onnxruntime then runs every convolution in float
(measured on a dsconv: 5 of 5 Conv float after optimisation). So the pairs are stripped, their
ranges kept, and the float graph, which carries the QAT-trained weights, is quantised again by
:func:`~edgecnn.quantize.quantize_onnx` with those ranges as ``TensorQuantOverrides`` (rmin/rmax):
the result fuses like any PTQ model while keeping what QAT learned.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def strip_qdq(model) -> tuple[object, dict[str, tuple[float, float]]]:
    """Remove every QuantizeLinear -> DequantizeLinear pair from an ONNX model (in place).

    Returns:
        ``(model, ranges)``: ``ranges[tensor] = (rmin, rmax)``, the real range each removed pair encoded
        for the tensor it quantised.
    """
    from edgecnn.quantize.onnx_graph import activation_bounds, graph_index

    g = model.graph
    inits, consumers = graph_index(g)
    rename: dict[str, str] = {}
    drop, ranges = [], {}
    for q in g.node:
        if q.op_type != "QuantizeLinear":
            continue
        users = consumers.get(q.output[0], [])
        if len(users) != 1 or users[0].op_type != "DequantizeLinear" or q.input[1] not in inits:
            continue
        scale = inits[q.input[1]].astype(np.float64)
        zp_arr = inits.get(q.input[2]) if len(q.input) > 2 else None
        zp = zp_arr.astype(np.float64) if zp_arr is not None else np.zeros_like(scale)
        info = np.iinfo(zp_arr.dtype if zp_arr is not None else np.uint8)
        if scale.size == 1:  # per-tensor ranges only (activations); weights were folded by tf2onnx
            ranges[q.input[0]] = (float((info.min - zp.item()) * scale.item()),
                                  float((info.max - zp.item()) * scale.item()))
        rename[users[0].output[0]] = q.input[0]
        drop += [q, users[0]]
    for n in drop:
        g.node.remove(n)
    for n in g.node:
        for k, name in enumerate(n.input):
            while name in rename:
                name = rename[name]
            n.input[k] = name
    for o in g.output:
        if o.name in rename:  # an output fed by a removed pair: re-route through an Identity
            from onnx import helper

            g.node.append(helper.make_node("Identity", [rename[o.name]], [o.name]))
    # A short QAT leaves a ReLU6's moving-average range near its [-6, 6] start; onnxruntime drops the Clip before
    # a QuantizeLinear, assuming the range starts at 0, so the range must be cut to what the activation emits.
    for n in g.node:
        if n.op_type in ("Relu", "Clip") and n.output[0] in ranges:
            (lo, hi), (a, b) = ranges[n.output[0]], activation_bounds(n, inits)
            ranges[n.output[0]] = (max(lo, a), min(hi, b))
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:  # the removed pairs' scales / zero points
        g.initializer.remove(init)
    return model, ranges


def qat_to_onnx_int8(qat_model, dst: str | os.PathLike, calibration_images, *, method: str = "minmax",
                     opset: int = 17, keep_float_onnx: str | os.PathLike | None = None, target: str = "host") -> dict:
    """QDQ int8 ONNX from a tfmot QAT ``tf_keras`` model, with the activation ranges it learned.

    Args:
        qat_model: a QAT model (``edgecnn.compress.quantize_aware`` + fine-tuning).
        dst: the int8 ONNX to write (atomically).
        calibration_images: calibrates the tensors QAT left without a range (e.g. the logits' input).
        method: calibration for those tensors (``quantize_onnx``'s ``method``).
        opset: ONNX opset for tf2onnx.
        keep_float_onnx: also keep the stripped float ONNX (QAT weights, no Q/DQ) here.
        target: the CPU the file is for (``quantize_onnx``'s ``target``).

    Returns:
        ``{"learned_ranges": n}``: the Q/DQ pairs found in the QAT graph (their ranges are fixed).
    """
    import onnx

    from edgecnn.quantize.converters import keras_to_onnx, quantize_scope
    from edgecnn.quantize.onnx_qdq import quantize_onnx

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".qat-onnx-") as tmp:
        raw = Path(tmp) / "qat.onnx"
        with quantize_scope():
            keras_to_onnx(qat_model, raw, opset=opset)
        model, ranges = strip_qdq(onnx.load(str(raw)))
        flt = Path(keep_float_onnx) if keep_float_onnx else Path(tmp) / "qat.float.onnx"
        onnx.save(model, str(flt))
        quantize_onnx(flt, dst, calibration_images, method=method, per_channel=True, tensor_ranges=ranges,
                      target=target)
    return {"learned_ranges": len(ranges)}


__all__ = ["qat_to_onnx_int8", "strip_qdq"]

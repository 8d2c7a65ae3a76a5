"""Which ONNX nodes quantisation hurts most: per-node SQNR loss of a QDQ model against its float source.

    nodes = onnx_sensitive_nodes("model.onnx", "model.int8.onnx", images, top_k=3)
    quantize_onnx("model.onnx", "model.mixed.onnx", images, exclude_nodes=nodes)      # those stay float

The measure is *local*: onnxruntime's ``qdq_loss_debug`` gives the cumulative SQNR of every
tensor, and a layer is charged with the drop from its inputs to its output, so it is not blamed
for the error that reached it. Each row also says how the layer was quantised (output scale, share
of values clipped at the calibrated range, per-tensor or per-channel weights and their SQNR): what
``edgecnn doctor`` prints.
"""
from __future__ import annotations

import os

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.quantize.calibration import CalibrationReader, check_calibration
from edgecnn.quantize.layer_error import clipped_share, cosine, rank_layers, sqnr_db, weight_error
from edgecnn.quantize.onnx_qdq import onnx_input_name, preprocessed


def onnx_node_sensitivity(float_onnx: str | os.PathLike, qdq_onnx: str | os.PathLike, images, *,
                          max_images: int = 16) -> list[dict]:
    """Per-node quantisation damage of a QDQ model against its float source, worst first.

    Uses onnxruntime's ``qdq_loss_debug`` to record every intermediate tensor of both models on
    ``images``, takes the SQNR of each quantised tensor against the float one, and ranks layers by
    the SQNR *lost* inside them (worst input SQNR minus output SQNR, capped at 80 dB).

    Returns:
        ``[{"node", "nodes", "op_type", "tensor", "sqnr_db", "loss_db", ...}]`` sorted by ``loss_db``
        descending; ``nodes`` is the anchor op plus the activations that follow it. Also:
        ``input_sqnr_db`` (the worst input's), ``cosine`` (of the output against float), ``nsr_added`` and
        ``share`` (the layer's part of the error, :func:`edgecnn.quantize.layer_error.rank_layers`),
        ``scale`` / ``zero_point`` of the output's quantiser, ``clipped`` (share of the float model's values
        of that tensor beyond the calibrated range), ``weights`` (``"per-channel"``, ``"per-tensor"``, ``"float"`` or
        None for an op without weights), ``weight_bits`` and ``weight_sqnr_db``. A node kept float has
        ``scale`` None.
    """
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    cal = check_calibration(images, minimum=1, what="sensitivity analysis")[:max_images]
    with preprocessed(float_onnx) as prep:
        tmp = prep.parent
        graph = onnx.load(str(prep)).graph
        f_aug, q_aug = tmp / "f.onnx", tmp / "q.onnx"
        modify_model_output_intermediate_tensors(str(prep), str(f_aug))
        modify_model_output_intermediate_tensors(str(qdq_onnx), str(q_aug))
        name = onnx_input_name(prep)
        f_act = collect_activations(str(f_aug), CalibrationReader(cal, name))
        q_act = collect_activations(str(q_aug), CalibrationReader(cal, name))
    qgraph = onnx.load(str(qdq_onnx)).graph
    quant = _output_quantisers(qgraph)
    sqnr: dict[str, float] = {}
    extra: dict[str, dict] = {}
    for tensor, match in create_activation_matching(q_act, f_act).items():
        f_vals, q_vals = match.get("float"), match.get("post_qdq")
        if f_vals is None or q_vals is None or len(f_vals) != len(q_vals):
            continue
        f_all = np.concatenate([v.ravel() for v in f_vals])
        q_all = np.concatenate([v.ravel() for v in q_vals])
        sqnr[tensor] = sqnr_db(f_all, q_all)
        info = {"cosine": round(cosine(f_all, q_all), 6)}
        if tensor in quant:   # the float values beyond the range: the quantiser may stand in for a removed Relu/Clip
            s, zp, qmin, qmax = quant[tensor]
            info.update(scale=s, zero_point=zp, clipped=round(clipped_share(f_all, s, zp, qmin, qmax), 5))
        extra[tensor] = info
    inits = {i.name for i in graph.initializer}
    rows = rank_layers(graph.node, sqnr, inits, anchors=_ANCHOR_OPS, activations=_ACTIVATION_OPS)
    weights = _weight_facts(graph, qgraph)
    for r in rows:
        r.update({"cosine": None, "scale": None, "zero_point": None, "clipped": None}, **extra.get(r["tensor"], {}))
        r.update(weights.get(r["node"], {"weights": None, "weight_bits": None, "weight_sqnr_db": None,
                                         "weight_dead_channels": None}))
    return rows


# Nodes a layer is made of: an anchor op, then the unary activations ORT fuses into it.
_ANCHOR_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Sub", "Div", "Softmax", "Concat",
               "GlobalAveragePool", "AveragePool", "HardSigmoid", "HardSwish", "Sigmoid"}
_ACTIVATION_OPS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"}
_WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_INT_RANGE = {onnx_dtype: r for onnx_dtype, r in ((2, (0, 255)), (3, (-128, 127)))}   # UINT8, INT8


def _init_array(graph, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for i in graph.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    return None


def _output_quantisers(qgraph) -> dict[str, tuple[float, int, int, int]]:
    """``{tensor: (scale, zero point, qmin, qmax)}`` of every per-tensor QuantizeLinear in a QDQ graph."""
    inits = {i.name: i for i in qgraph.initializer}
    out = {}
    for n in qgraph.node:
        if n.op_type != "QuantizeLinear" or len(n.input) < 3 or n.input[1] not in inits or n.input[2] not in inits:
            continue
        scale, zp = _init_array(qgraph, n.input[1]), _init_array(qgraph, n.input[2])
        if scale is None or zp is None or scale.size != 1:
            continue
        qmin, qmax = _INT_RANGE.get(inits[n.input[2]].data_type, (0, 255))
        out[n.input[0]] = (float(scale.ravel()[0]), int(zp.ravel()[0]), qmin, qmax)
    return out


def _output_axis(node) -> int:
    """The output-channel axis of a node's weight: Conv 0, ConvTranspose 1, Gemm 1 (0 when transB), MatMul 1."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
    return 1


def _weight_facts(graph, qgraph) -> dict[str, dict]:
    """Per weighted node: weights per-channel / per-tensor / float, their bits and SQNR against the float weights."""
    producer = {o: n for n in qgraph.node for o in n.output}
    qnodes = {n.name: n for n in qgraph.node}
    out = {}
    for node in graph.node:
        if node.op_type not in _WEIGHTED_OPS or len(node.input) < 2 or node.name not in qnodes:
            continue
        w_float = _init_array(graph, node.input[1])
        if w_float is None:
            continue
        dq = producer.get(qnodes[node.name].input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            out[node.name] = {"weights": "float", "weight_bits": 32, "weight_sqnr_db": None, "weight_dead_channels": 0}
            continue
        w_int, scale = _init_array(qgraph, dq.input[0]), _init_array(qgraph, dq.input[1])
        if w_int is None or scale is None:
            continue
        zp = _init_array(qgraph, dq.input[2]) if len(dq.input) > 2 else None
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * w_int.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        zp = np.zeros(1) if zp is None else zp.astype(np.float64).reshape(shape if zp.size > 1 else [1] * w_int.ndim)
        w_deq = (w_int.astype(np.float64) - zp) * scale.astype(np.float64).reshape(shape)
        peak = int(np.abs(w_int.astype(np.int64) - zp.astype(np.int64)).max()) if w_int.size else 0
        out_axis = axis if scale.size > 1 else _output_axis(node)
        worst, dead = weight_error(w_float, w_deq, out_axis)
        out[node.name] = {"weights": "per-channel" if scale.size > 1 else "per-tensor",
                          "weight_bits": 7 if peak <= 64 else 8, "weight_sqnr_db": worst, "weight_dead_channels": dead}
    return out


def onnx_sensitive_nodes(float_onnx: str | os.PathLike, qdq_onnx: str | os.PathLike, images, *, top_k: int = 3,
                         max_images: int = 16) -> list[str]:
    """Node names of the ``top_k`` layers that lose the most SQNR under quantisation (for ``exclude_nodes``).

    A layer is an anchor op (Conv, Gemm, Add, Mul, ...) with the activations fused into it, so
    every name of the layer is returned.
    """
    if top_k < 1:
        raise EdgecnnError(f"top_k must be >= 1; received top_k={top_k}.")
    rows = onnx_node_sensitivity(float_onnx, qdq_onnx, images, max_images=max_images)
    return [name for r in rows[:top_k] if r["loss_db"] > 0 for name in r["nodes"]]


__all__ = ["onnx_node_sensitivity", "onnx_sensitive_nodes"]

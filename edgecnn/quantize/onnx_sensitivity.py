"""Which ONNX nodes quantisation hurts most: per-node SQNR loss of a QDQ model against its float source.

    nodes = onnx_sensitive_nodes("model.onnx", "model.int8.onnx", images, top_k=3)
    quantize_onnx("model.onnx", "model.mixed.onnx", images, exclude_nodes=nodes)      # those stay float

The measure is *local*: onnxruntime's ``qdq_loss_debug`` gives the cumulative SQNR of every
tensor, and a layer is charged with the drop from its inputs to its output, so it is not blamed
for the error that reached it.
"""
from __future__ import annotations

import math
import os

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.quantize.calibration import CalibrationReader, check_calibration
from edgecnn.quantize.onnx_qdq import onnx_input_name, preprocessed


def _sqnr(a: np.ndarray, b: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB of ``b`` against the float ``a`` (inf when identical)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    noise = float(np.sum((a - b) ** 2))
    signal = float(np.sum(a ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def onnx_node_sensitivity(float_onnx: str | os.PathLike, qdq_onnx: str | os.PathLike, images, *,
                          max_images: int = 16) -> list[dict]:
    """Per-node quantisation damage of a QDQ model against its float source, worst first.

    Uses onnxruntime's ``qdq_loss_debug`` to record every intermediate tensor of both models on
    ``images``, takes the SQNR of each quantised tensor against the float one, and ranks layers by
    the SQNR *lost* inside them (worst input SQNR minus output SQNR, capped at 80 dB).

    Returns:
        ``[{"node", "nodes", "op_type", "tensor", "sqnr_db", "loss_db"}]`` sorted by ``loss_db``
        descending; ``nodes`` is the anchor op plus the activations that follow it.
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
    sqnr: dict[str, float] = {}
    for tensor, match in create_activation_matching(q_act, f_act).items():
        f_vals, q_vals = match.get("float"), match.get("post_qdq")
        if f_vals is None or q_vals is None or len(f_vals) != len(q_vals):
            continue
        sqnr[tensor] = _sqnr(np.concatenate([v.ravel() for v in f_vals]), np.concatenate([v.ravel() for v in q_vals]))
    return _rank_groups(graph, sqnr)


# Nodes a layer is made of: an anchor op, then the unary activations ORT fuses into it.
_ANCHOR_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Sub", "Div", "Softmax", "Concat",
               "GlobalAveragePool", "AveragePool", "HardSigmoid", "HardSwish", "Sigmoid"}
_ACTIVATION_OPS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"}
_SQNR_CAP = 80.0  # dB; "no measurable error" and "above 80 dB" are the same for ranking


def _rank_groups(graph, sqnr: dict[str, float]) -> list[dict]:
    """Rank anchor nodes (+ their fused activations) by the SQNR lost between their inputs and output."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name for i in graph.initializer}
    memo: dict[str, float] = {}

    def upstream(t: str, depth: int = 0) -> float:
        """SQNR of tensor ``t``, or of the worst measured tensor feeding it."""
        if t in sqnr:
            return sqnr[t]
        if t in memo:
            return memo[t]
        node = producer.get(t)
        if node is None or depth > 64:
            return math.inf
        memo[t] = math.inf
        vals = [upstream(i, depth + 1) for i in node.input if i and i not in inits]
        memo[t] = min(vals) if vals else math.inf
        return memo[t]

    rows = []
    for node in graph.node:
        if node.op_type not in _ANCHOR_OPS:
            continue
        group, last = [node], node
        while len(last.output) == 1 and len(consumers.get(last.output[0], [])) == 1:
            nxt = consumers[last.output[0]][0]
            if nxt.op_type not in _ACTIVATION_OPS or nxt.op_type == node.op_type:
                break
            group.append(nxt)
            last = nxt
        out = last.output[0]
        out_sqnr = upstream(out)
        ins = [upstream(i) for i in node.input if i and i not in inits]
        in_sqnr = min(ins) if ins else math.inf
        loss = min(in_sqnr, _SQNR_CAP) - min(out_sqnr, _SQNR_CAP)
        rows.append({"node": node.name, "nodes": [g.name for g in group], "op_type": node.op_type, "tensor": out,
                     "sqnr_db": round(out_sqnr, 3) if math.isfinite(out_sqnr) else None, "loss_db": round(loss, 3)})
    rows.sort(key=lambda r: r["loss_db"], reverse=True)
    return rows


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

"""What an ONNX int8 model really runs: the heavy ops onnxruntime's optimiser leaves float, and the ends.

    onnx_float_ops("model.int8.onnx")   # {"float": {"Conv": 0, ...}, "int8": {"QLinearConv": 52}, "heavy_float": 0}
    onnx_end_nodes("model.onnx")        # ["conv_first", "gemm_last"]: first/last heavy node names

A QDQ model only runs int8 where onnxruntime fuses DequantizeLinear -> op -> QuantizeLinear into an
integer kernel; a Conv whose pattern does not match (a missing Q, an op between) silently runs in
float after de-quantising its weights. Counting the optimised graph's ops is the only reliable check.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

# float ops that carry the MACs (Fused* are onnxruntime's Conv/MatMul/Gemm with a fused activation)
HEAVY_FLOAT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm")
HEAVY_INT8_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
                  "MatMulIntegerToFloat", "QLinearConvTranspose")


def onnx_float_ops(path: str | os.PathLike) -> dict:
    """Heavy ops (Conv/MatMul/Gemm) of onnxruntime's optimised graph, float vs integer, for one ONNX file.

    The graph is optimised at ``ORT_ENABLE_EXTENDED`` (where QDQ fusion happens; the NCHWc layout pass
    of ``ENABLE_ALL`` only renames float convs) on the CPU provider.

    Returns:
        ``{"float": {op: n}, "int8": {op: n}, "heavy_float": n, "heavy_int8": n, "qdq_left": n}``;
        ``qdq_left`` counts the QuantizeLinear/DequantizeLinear nodes still executed (not folded).
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgecnn-opt-") as tmp:
        opt = Path(tmp) / "opt.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(opt)
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ops = Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
    flt = {k: ops[k] for k in HEAVY_FLOAT_OPS if ops[k]}
    i8 = {k: ops[k] for k in HEAVY_INT8_OPS if ops[k]}
    return {"float": flt, "int8": i8, "heavy_float": sum(flt.values()), "heavy_int8": sum(i8.values()),
            "qdq_left": ops["QuantizeLinear"] + ops["DequantizeLinear"]}


def onnx_end_nodes(path: str | os.PathLike) -> list[str]:
    """The first layer and the last, in graph order: the layers that see raw pixels and that make the logits,
    which the field commonly keeps float (``nodes_to_exclude``).

    First = every node up to the first heavy node (Conv/MatMul/Gemm) and its Relu/Clip; last = the last heavy
    node and every node after it (Softmax, ...: left quantised, they would quantise the logits anyway).
    """
    import onnx

    nodes = [n for n in onnx.load(str(path), load_external_data=False).graph.node if n.name]
    heavy = [i for i, n in enumerate(nodes) if n.op_type in HEAVY_FLOAT_OPS]
    if not heavy:
        return []
    return list(dict.fromkeys(_first_layer(nodes, heavy[0]) + [n.name for n in nodes[heavy[-1]:]]))


def onnx_first_layer(path: str | os.PathLike) -> list[str]:
    """Every node up to the first heavy node (Conv/MatMul/Gemm), it, and its Relu/Clip: what must stay float
    together (see :func:`onnx_end_nodes`)."""
    import onnx

    nodes = [n for n in onnx.load(str(path), load_external_data=False).graph.node if n.name]
    heavy = [i for i, n in enumerate(nodes) if n.op_type in HEAVY_FLOAT_OPS]
    return _first_layer(nodes, heavy[0]) if heavy else []


def _first_layer(nodes: list, first_heavy: int) -> list[str]:
    # the first layer is everything up to the first conv (the in-graph normalisation: quantised alone, with its
    # per-channel mean and 1/std as int8 constants, MobileNetV2 on digits fell to agreement 0.24) and its Relu/Clip
    first = nodes[:first_heavy + 1]
    for n in nodes[first_heavy + 1:]:
        if n.op_type not in ("Relu", "Clip") or first[-1].output[0] not in n.input:
            break
        first.append(n)
    return [n.name for n in first]





def graph_index(graph) -> tuple[dict, dict[str, list]]:
    """``(initializers as numpy arrays by name, consumer nodes by tensor name)`` of an ONNX graph."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return inits, consumers


def activation_bounds(node, inits: dict) -> tuple[float, float]:
    """The output interval of a Relu ([0, inf)) or Clip node (its constant min/max; unbounded where absent)."""
    import numpy as np

    if node.op_type == "Relu":
        return 0.0, np.inf

    def bound(k: int, default: float) -> float:
        name = node.input[k] if len(node.input) > k else ""
        return float(inits[name].ravel()[0]) if name in inits else default

    return bound(1, -np.inf), bound(2, np.inf)


def drop_clips_before_quantize(model) -> int:
    """Remove each Relu/Clip whose only consumer is a QuantizeLinear that already clamps to within its range.

    onnxruntime's own quantiser drops these (``QDQKeepRemovableActivations=False``); graphs from other
    tools (tf2onnx from QAT, NNCF) keep ``Conv -> Clip -> QuantizeLinear``, and onnxruntime then fuses
    Conv+Clip into a float ``FusedConv`` before its QDQ pass can make a ``QLinearConv``. Exact: the
    quantiser's range [(qmin - zp) * s, (qmax - zp) * s] lies inside the activation's [lo, hi].

    Returns:
        how many nodes were removed (``model`` is changed in place).
    """
    import numpy as np

    g = model.graph
    inits, consumers = graph_index(g)
    graph_outputs = {o.name for o in g.output}
    removed = []
    for n in g.node:
        if n.op_type not in ("Relu", "Clip") or n.output[0] in graph_outputs:
            continue
        users = consumers.get(n.output[0], [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            continue
        q = users[0]
        if q.input[1] not in inits or len(q.input) < 3 or q.input[2] not in inits:
            continue
        s, zp = inits[q.input[1]], inits[q.input[2]]
        if s.size != 1 or zp.size != 1:  # per-channel activations: onnxruntime's QLinearConv takes scalars only
            continue
        info = np.iinfo(zp.dtype)
        s, z = float(s.ravel()[0]), float(zp.ravel()[0])
        qlo, qhi = (info.min - z) * s, (info.max - z) * s
        lo, hi = activation_bounds(n, inits)
        tol = 0.5 * s  # within half a quantisation step: the same integer after rounding
        if qlo >= lo - tol and qhi <= hi + tol:
            q.input[0] = n.input[0]
            removed.append(n)
    for n in removed:
        g.node.remove(n)
    return len(removed)


__all__ = ["HEAVY_FLOAT_OPS", "HEAVY_INT8_OPS", "activation_bounds", "drop_clips_before_quantize", "graph_index",
           "onnx_end_nodes", "onnx_first_layer",
           "onnx_float_ops"]

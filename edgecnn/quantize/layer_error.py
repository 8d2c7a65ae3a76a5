"""Per-layer int8 error from per-tensor figures, for any graph (ONNX nodes, TFLite operators).

A tensor's *cumulative* error is its SQNR (and cosine) against the float model's same tensor: all
the error that reached it. A layer's *local* error is what it adds: the SQNR lost between its worst
input and its output (``loss_db``), and in linear terms the noise-to-signal ratio it adds
(``nsr_added = 10^(-out/10) - 10^(-in/10)``). Relative noise of independent sources adds roughly
along a chain, so ``share`` (a layer's ``nsr_added`` over the sum of all layers') says where the
disagreement comes from: "80 % of the error enters at layer X". It ignores what the layers after
a layer do to its noise (a classifier that subtracts a large bias amplifies the relative noise that
reaches it and so takes a large share): read ``share`` with ``loss_db``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["GraphNode", "sqnr_db", "cosine", "weight_error", "clipped_share", "rank_layers", "SQNR_CAP"]

SQNR_CAP = 80.0  # dB; "no measurable error" and "above 80 dB" are the same for ranking


@dataclass(frozen=True)
class GraphNode:
    """What ranking needs of one op: its name, type and the names of its input and output tensors."""

    name: str
    op_type: str
    input: tuple[str, ...]
    output: tuple[str, ...]


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB of ``other`` against ``reference`` (inf when identical)."""
    a, b = np.asarray(reference, np.float64).ravel(), np.asarray(other, np.float64).ravel()
    noise = float(np.sum((a - b) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(float(np.sum(a ** 2)), 1e-30) / noise)


def cosine(reference: np.ndarray, other: np.ndarray) -> float:
    """Cosine similarity of two tensors flattened (1.0 when both are zero)."""
    a, b = np.asarray(reference, np.float64).ravel(), np.asarray(other, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def weight_error(w_float: np.ndarray, w_deq: np.ndarray, axis: int) -> tuple[float | None, int]:
    """(the worst output channel's SQNR in dB, how many channels quantised to all zeros although float is not).

    Per channel, not over the tensor: one huge channel makes the whole tensor's SQNR look fine while
    per-tensor weights round every other channel to zero.
    """
    f = np.moveaxis(np.asarray(w_float, np.float64), axis, 0).reshape(w_float.shape[axis], -1)
    q = np.moveaxis(np.asarray(w_deq, np.float64), axis, 0).reshape(f.shape)
    worst = min((sqnr_db(a, b) for a, b in zip(f, q) if np.any(a)), default=math.inf)
    dead = int(sum(1 for a, b in zip(f, q) if np.any(a) and not np.any(b)))
    return (round(worst, 2) if math.isfinite(worst) else None), dead


def clipped_share(values: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> float:
    """Share of ``values`` beyond the quantised range ``[(qmin - zp) * scale, (qmax - zp) * scale]`` by more
    than half a step: what saturates at the calibrated range."""
    if scale <= 0:
        return 0.0
    v = np.asarray(values, np.float64).ravel()
    lo, hi = (qmin - zero_point - 0.5) * scale, (qmax - zero_point + 0.5) * scale
    return float(np.mean((v < lo) | (v > hi))) if v.size else 0.0


def _nsr(db: float | None) -> float:
    return 10.0 ** (-min(SQNR_CAP, math.inf if db is None else db) / 10.0)


def rank_layers(nodes: Iterable, tensor_sqnr: dict[str, float], constants: set[str], *, anchors: set[str] | None,
                activations: set[str] = frozenset()) -> list[dict]:
    """Rank layers by the SQNR lost inside them, worst first.

    Args:
        nodes: the graph's ops in order; each has ``name``, ``op_type``, ``input`` and ``output``.
        tensor_sqnr: measured cumulative SQNR (dB) per tensor name.
        constants: tensor names that are weights / constants (not data inputs).
        anchors: op types that start a layer; None = every op that has a measured output.
        activations: unary op types fused into the layer before them (ONNX's Relu after a Conv).

    Returns:
        ``[{"node", "nodes", "op_type", "tensor", "sqnr_db", "input_sqnr_db", "loss_db", "nsr_added",
        "share"}]`` sorted by ``loss_db`` descending (``sqnr_db`` None = identical to float).
    """
    nodes = list(nodes)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    memo: dict[str, float] = {}

    def upstream(t: str, depth: int = 0) -> float:
        """SQNR of tensor ``t``, or of the worst measured tensor feeding it."""
        if t in tensor_sqnr:
            return tensor_sqnr[t]
        if t in memo:
            return memo[t]
        node = producer.get(t)
        if node is None or depth > 64:
            return math.inf
        memo[t] = math.inf
        vals = [upstream(i, depth + 1) for i in node.input if i and i not in constants]
        memo[t] = min(vals) if vals else math.inf
        return memo[t]

    rows = []
    for node in nodes:
        if anchors is not None and node.op_type not in anchors:
            continue
        if anchors is None and not any(o in tensor_sqnr for o in node.output):
            continue
        group, last = [node], node
        while len(last.output) == 1 and len(consumers.get(last.output[0], [])) == 1:
            nxt = consumers[last.output[0]][0]
            if nxt.op_type not in activations or nxt.op_type == node.op_type:
                break
            group.append(nxt)
            last = nxt
        out = last.output[0]
        out_sqnr = upstream(out)
        ins = [upstream(i) for i in node.input if i and i not in constants]
        in_sqnr = min(ins) if ins else math.inf
        loss = min(in_sqnr, SQNR_CAP) - min(out_sqnr, SQNR_CAP)
        rows.append({"node": node.name, "nodes": [g.name for g in group], "op_type": node.op_type, "tensor": out,
                     "sqnr_db": _db(out_sqnr), "input_sqnr_db": _db(in_sqnr), "loss_db": round(loss, 3),
                     "nsr_added": max(0.0, _nsr(out_sqnr) - _nsr(in_sqnr))})
    total = sum(r["nsr_added"] for r in rows)
    for r in rows:
        r["share"] = round(r["nsr_added"] / total, 4) if total > 0 else 0.0
        r["nsr_added"] = float(f"{r['nsr_added']:.4g}")
    rows.sort(key=lambda r: r["loss_db"], reverse=True)
    return rows


def _db(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None

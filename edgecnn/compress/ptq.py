"""Post-training quantisation with choices: ONNX calibration variants and keeping sensitive layers float.

ONNX (onnxruntime.quantization, static QDQ):

    quantize_onnx("model.onnx", "model.int8.onnx", images, method="percentile", per_channel=True)
    nodes = onnx_sensitive_nodes("model.onnx", "model.int8.onnx", images, top_k=3)
    quantize_onnx("model.onnx", "model.mixed.onnx", images, exclude_nodes=nodes)      # those stay float

TFLite (converter + ``tf.lite.experimental.QuantizationDebugger``):

    nodes = tflite_sensitive_nodes(model, images, top_k=3)      # by RMSE / scale of each op's output
    data = tflite_int8(model, images, denylisted_nodes=nodes)   # mixed int8/float, float in/out

The per-op error measures are *local*: TFLite's debugger runs each float op on the dequantised
inputs of the quantised op; for ONNX we take the drop in SQNR from a node's inputs to its output
(``qdq_loss_debug`` gives the cumulative SQNR of every tensor), so a layer is not blamed for the
error that reached it.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgecnn._io import atomic_path
from edgecnn.errors import EdgecnnError, did_you_mean

log = logging.getLogger("edgecnn.compress")
METHODS = ("minmax", "entropy", "percentile")
MIN_CALIBRATION = 10


def check_calibration(calibration, minimum: int = MIN_CALIBRATION, what: str = "int8") -> np.ndarray:
    """The calibration images as float32 NHWC RGB 0-255, or one EdgecnnError when there are too few."""
    n = 0 if calibration is None else len(calibration)
    if n < minimum:
        raise EdgecnnError(f"{what} needs at least {minimum} calibration images; received {n}. "
                           "Pass more training images (export.calibration_images in a recipe).")
    cal = np.asarray(calibration, np.float32)
    if cal.ndim != 4 or cal.shape[-1] != 3:
        raise EdgecnnError(f"calibration images must be (N, H, W, 3) RGB 0-255; received shape {cal.shape}.")
    return cal


def cpu_needs_reduce_range() -> bool:
    """True on x86 CPUs with AVX2 but without VNNI (u8s8 dot products can saturate); reads /proc/cpuinfo."""
    from edgecnn.export.onnx import cpu_needs_reduce_range as detect

    return detect()


# --------------------------------------------------------------------------------------------- ONNX
class ArrayReader:
    """onnxruntime ``CalibrationDataReader`` over an in-memory image array, batch 1, rewindable."""

    def __init__(self, images: np.ndarray, input_name: str):
        self.images, self.input_name = images, input_name
        self._i = 0

    def get_next(self):
        if self._i >= len(self.images):
            return None
        x = self.images[self._i][None].astype(np.float32)
        self._i += 1
        return {self.input_name: x}

    def rewind(self) -> None:
        self._i = 0

    def __iter__(self):  # qdq_loss_debug.collect_activations iterates over the reader
        self.rewind()
        return iter(self.get_next, None)


def _input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def onnx_node_names(path: str | os.PathLike) -> list[str]:
    """Names of the nodes of an ONNX graph (what ``exclude_nodes`` refers to), after quant_pre_process."""
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, calibration_images, *, method: str = "minmax",
                  per_channel: bool = True, reduce_range: bool | None = None, exclude_nodes: Iterable[str] = (),
                  percentile: float = 99.999, symmetric_activations: bool = False) -> Path:
    """Static QDQ int8 ONNX (uint8 activations, int8 weights) from a float ONNX, calibrated on images.

    ``quant_pre_process`` (shape inference + graph optimisation) runs first, as onnxruntime advises.
    ``dst`` is written atomically: on any error no file is left behind.

    Args:
        src: float32 ONNX (e.g. ``model.onnx`` from the exporter; input RGB 0-255 NHWC).
        dst: output path.
        calibration_images: (N, H, W, 3) float32 0-255, N >= 10 (a few hundred is typical).
        method: ``'minmax'``, ``'entropy'`` (KL) or ``'percentile'`` activation ranges.
        per_channel: per-output-channel weight scales (better accuracy, same speed on CPU).
        reduce_range: 7-bit weights; None detects the CPU (True on AVX2 without VNNI).
        exclude_nodes: node names to keep float (see :func:`onnx_sensitive_nodes`).
        percentile: the percentile for ``method='percentile'``.
        symmetric_activations: symmetric activation ranges (some NPUs want them).

    Returns:
        ``dst`` as a Path.

    Raises:
        EdgecnnError: fewer than 10 calibration images, unknown method/node names, missing ``src``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise EdgecnnError(f"method must be one of {list(METHODS)}; received method={method!r}."
                           f"{did_you_mean(method, METHODS)}")
    if not 0 < percentile <= 100:
        raise EdgecnnError(f"percentile must be in (0, 100]; received percentile={percentile!r}.")
    cal = check_calibration(calibration_images, what=f"ONNX int8 ({method})")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise EdgecnnError(f"float ONNX model not found: {str(src)!r}. Export it first (format 'onnx').")
    reduce = cpu_needs_reduce_range() if reduce_range is None else bool(reduce_range)
    exclude = list(exclude_nodes)
    calib_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile}[method]
    extra = {"CalibTensorRangeSymmetric": bool(symmetric_activations), "CalibPercentile": float(percentile)}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quantize-onnx-") as tmpdir:
        prep = Path(tmpdir) / "prep.onnx"
        quant_pre_process(str(src), str(prep), skip_symbolic_shape=True)
        if exclude:
            names = set(onnx_node_names(prep))
            unknown = sorted(set(exclude) - names)
            if unknown:
                raise EdgecnnError(f"exclude_nodes: {unknown} are not nodes of {src.name} (after pre-processing)."
                                   f"{did_you_mean(unknown[0], names)}")
        with atomic_path(dst) as tmp:
            quantize_static(str(prep), str(tmp), ArrayReader(cal, _input_name(prep)), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                            reduce_range=reduce, calibrate_method=calib_method, nodes_to_exclude=exclude or None,
                            extra_options=extra)
    log.info("quantised %s -> %s (%s, per_channel=%s, reduce_range=%s, %d node(s) float)", src.name, dst.name,
             method, per_channel, reduce, len(exclude))
    return dst


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
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, create_activation_matching,
                                                         modify_model_output_intermediate_tensors)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cal = check_calibration(images, minimum=1, what="sensitivity analysis")[:max_images]
    with tempfile.TemporaryDirectory(prefix="edgecnn-sens-") as tmpdir:
        tmp = Path(tmpdir)
        prep = tmp / "prep.onnx"
        quant_pre_process(str(float_onnx), str(prep), skip_symbolic_shape=True)
        graph = onnx.load(str(prep)).graph
        f_aug, q_aug = tmp / "f.onnx", tmp / "q.onnx"
        modify_model_output_intermediate_tensors(str(prep), str(f_aug))
        modify_model_output_intermediate_tensors(str(qdq_onnx), str(q_aug))
        name = _input_name(prep)
        f_act = collect_activations(str(f_aug), ArrayReader(cal, name))
        q_act = collect_activations(str(q_aug), ArrayReader(cal, name))
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


# ------------------------------------------------------------------------------------------- TFLite
def _converter(model):
    from edgecnn._tf import tf
    from edgecnn.compress._quantize_configs import quantize_scope

    with quantize_scope():
        return tf.lite.TFLiteConverter.from_keras_model(model)


TFLITE_METHODS = ("minmax", "percentile")


def tflite_int8(model, calibration, *, method: str = "minmax", percentile: float = 99.999,
                denylisted_nodes: Iterable[str] = (), int8_io: bool = True) -> bytes:
    """Full-integer TFLite from a float, pruned or QAT Keras model; returns the flatbuffer.

    ``method='percentile'`` narrows each activation's calibrated range to its ``percentile``
    (:mod:`edgecnn.compress.tflite_calibration`; the converter alone only does min/max). With
    ``denylisted_nodes`` (TFLite tensor names from :func:`tflite_sensitive_nodes`) those ops
    stay float through ``QuantizationDebugger``'s selective quantisation; the model's input and
    output are then float32 (the runners accept either). Repeated quantisation vectors are stored
    once (:func:`edgecnn.export.tflite_pack.share_quantization_vectors`).

    Raises:
        EdgecnnError: fewer than 10 calibration images, or an unknown method / percentile.
    """
    from edgecnn._tf import tf
    from edgecnn.compress._quantize_configs import quantize_scope
    from edgecnn.export.tflite import representative_dataset
    from edgecnn.export.tflite_pack import share_quantization_vectors

    cal = check_calibration(calibration, what="TFLite int8")
    if method not in TFLITE_METHODS:
        raise EdgecnnError(f"TFLite calibration method must be one of {list(TFLITE_METHODS)}; received "
                           f"{method!r}.{did_you_mean(method, TFLITE_METHODS)}")
    if not 99.0 <= percentile < 100.0:
        raise EdgecnnError(f"percentile must be in [99, 100) (99.999 keeps all but 1 value in 100,000); "
                           f"received percentile={percentile!r}.")
    deny = list(denylisted_nodes)
    with quantize_scope():
        conv = _converter(model)
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
        from edgecnn.compress.tflite_calibration import narrow_to_percentile, quantize_calibrated

        conv._experimental_calibrate_only = True  # the converter's first step; QuantizationDebugger uses it too
        calibrated, _ = narrow_to_percentile(bytes(conv.convert()), cal, percentile)
    return share_quantization_vectors(quantize_calibrated(calibrated, int8_io=int8_io))


def tflite_layer_statistics(model, calibration, *, max_images: int = 16) -> list[dict]:
    """Per-op quantisation error of the int8 TFLite model (``QuantizationDebugger``), worst first.

    Each row: ``tensor_name`` (what ``denylisted_nodes`` takes), ``op_name``, ``rmse_over_scale``
    (root-mean-square error of the op's int8 output in units of its quantisation step; TF's guide
    flags > 0.7), ``mean_squared_error``, ``scale``.
    """
    from edgecnn._tf import tf
    from edgecnn.compress._quantize_configs import quantize_scope
    from edgecnn.export.tflite import representative_dataset

    cal = check_calibration(calibration, what="TFLite sensitivity analysis")
    with quantize_scope():
        conv = _converter(model)
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


__all__ = ["METHODS", "quantize_onnx", "onnx_node_sensitivity", "onnx_sensitive_nodes", "onnx_node_names",
           "tflite_int8", "tflite_layer_statistics", "tflite_sensitive_nodes", "check_calibration",
           "cpu_needs_reduce_range", "ArrayReader"]

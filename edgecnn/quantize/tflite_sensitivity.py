"""Which TFLite ops quantisation hurts most (``tf.lite.experimental.QuantizationDebugger``).

    nodes = tflite_sensitive_nodes(model, images, top_k=3)      # by RMSE / scale of each op's output
    data = tflite_int8(model, images, denylisted_nodes=nodes)   # mixed int8/float, float in/out

The measure is *local*: the debugger runs each float op on the dequantised inputs of the
quantised op, so an op is not blamed for the error that reached it.

The debugger re-quantises the Keras model; it cannot open an existing ``.tflite``. To diagnose a
file as it is (``edgecnn doctor``), :func:`tflite_tensor_sensitivity` runs the int8 file and its
float twin in LiteRT with every tensor kept, compares each op's output with the float tensor of the
same name, and ranks ops by the SQNR lost inside them (no TensorFlow needed)::

    rows = tflite_tensor_sensitivity("model.fp32.tflite", "model.int8.tflite", images)
"""
from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.quantize.calibration import check_calibration, representative_dataset
from edgecnn.quantize.converters import quantize_scope, tflite_converter
from edgecnn.quantize.layer_error import GraphNode, clipped_share, cosine, rank_layers, sqnr_db, weight_error


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


_PLUMBING_OPS = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "TRANSPOSE"}
_WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


def tflite_graph(data: bytes) -> tuple[list[GraphNode], set[str]]:
    """The primary subgraph's operators (builtin names, tensor names in and out) and its constant tensors,
    read from the flatbuffer with the schema the LiteRT wheel ships (``ai_edge_litert.schema_py_generated``)."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(data, 0)
    sg = model.Subgraphs(0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

    def tensor(i: int) -> str:
        return sg.Tensors(i).Name().decode() if i >= 0 else ""

    nodes = []
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        ins = tuple(tensor(int(i)) for i in op.InputsAsNumpy()) if op.InputsLength() else ()
        outs = tuple(tensor(int(i)) for i in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        nodes.append(GraphNode(f"{k}:{names.get(builtin, builtin)}", names.get(builtin, str(builtin)), ins, outs))
    constants = {tensor(i) for i in range(sg.TensorsLength())
                 if sg.Tensors(i).Buffer() > 0 and model.Buffers(sg.Tensors(i).Buffer()).DataLength() > 0}
    return nodes, constants


def _all_tensors(data: bytes, images: np.ndarray, names: set[str]) -> dict[str, list[np.ndarray]]:
    """Every named tensor's values per image (LiteRT's built-in kernels, all tensors kept), raw dtype."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    details = [d for d in interp.get_tensor_details() if d["name"] in names]
    out: dict[str, list[np.ndarray]] = {d["name"]: [] for d in details}
    for img in images:
        x = np.asarray(img, np.float32)[None]
        if inp["dtype"] != np.float32:
            s, zp = inp["quantization"]
            x = np.clip(np.round(x / s + zp), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interp.invoke()
        for d in details:
            try:
                out[d["name"]].append(np.array(interp.get_tensor(d["index"])))
            except ValueError:   # a tensor LiteRT does not keep (e.g. a scratch buffer)
                pass
    return out


def _quant_of(data: bytes) -> dict[str, dict]:
    """Per tensor name: its dtype and quantisation (scales, zero points, axis), from LiteRT's tensor details."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    out = {}
    for d in interp.get_tensor_details():
        q = d.get("quantization_parameters") or {}
        out[d["name"]] = {"dtype": np.dtype(d["dtype"]), "scales": np.asarray(q.get("scales", [])),
                          "zero_points": np.asarray(q.get("zero_points", [])),
                          "axis": int(q.get("quantized_dimension", 0)), "index": d["index"]}
    return out


def _dequantise(values: np.ndarray, q: dict) -> np.ndarray:
    if not q["scales"].size or q["dtype"] == np.float32:
        return values.astype(np.float64)
    shape = [1] * values.ndim
    if q["scales"].size > 1:
        shape[q["axis"]] = q["scales"].size
    return (values.astype(np.float64) - q["zero_points"].reshape(shape)) * q["scales"].reshape(shape)


def tflite_tensor_sensitivity(float_tflite: str | os.PathLike | bytes, int8_tflite: str | os.PathLike | bytes,
                              images, *, max_images: int = 16) -> list[dict]:
    """Per-op quantisation damage of an int8 ``.tflite`` against its float twin, worst first (no TensorFlow).

    Both files run in LiteRT's built-in kernels with every tensor kept; each op output of the int8 file
    is dequantised and compared with the float file's tensor of the same name (the converter names a
    tensor after the Keras ops it fuses, the same in both files). Ops are ranked like
    :func:`~edgecnn.quantize.onnx_node_sensitivity` (SQNR lost between input and output).

    Returns:
        The rows of :func:`~edgecnn.quantize.onnx_node_sensitivity`: ``node`` (``"<index>:<OP>"``),
        ``op_type``, ``tensor``, ``sqnr_db``, ``input_sqnr_db``, ``loss_db``, ``share``, ``cosine``,
        ``scale``, ``zero_point``, ``clipped`` (share of the *float* tensor's values beyond the int8
        tensor's range), ``weights`` (``"per-channel"`` / ``"per-tensor"`` / ``"float"``), ``weight_bits``,
        ``weight_sqnr_db`` (the worst output channel's, against the float file's weight of the same name,
        when it has one) and ``weight_dead_channels``.
        Empty when no tensor name matches (the files do not come from one model).
    """
    def read(x) -> bytes:
        return x if isinstance(x, bytes) else open(x, "rb").read()

    cal = check_calibration(images, minimum=1, what="TFLite sensitivity analysis")[:max_images]
    f_data, q_data = read(float_tflite), read(int8_tflite)
    nodes, constants = tflite_graph(q_data)
    q_info, f_info = _quant_of(q_data), _quant_of(f_data)
    outputs = {o for n in nodes if n.op_type not in _PLUMBING_OPS for o in n.output}
    shared = {t for t in outputs if t in f_info and t in q_info}
    f_vals = _all_tensors(f_data, cal, shared)
    q_vals = _all_tensors(q_data, cal, shared)
    sqnr: dict[str, float] = {}
    extra: dict[str, dict] = {}
    for t in shared:
        if len(f_vals.get(t, [])) != len(cal) or len(q_vals.get(t, [])) != len(cal):
            continue
        f_all = np.concatenate([v.ravel() for v in f_vals[t]]).astype(np.float64)
        q = q_info[t]
        deq = np.concatenate([_dequantise(v, q).ravel() for v in q_vals[t]])
        if f_all.shape != deq.shape:
            continue
        sqnr[t] = sqnr_db(f_all, deq)
        info: dict = {"cosine": round(cosine(f_all, deq), 6)}
        if q["dtype"] in (np.int8, np.uint8) and q["scales"].size == 1:
            s, zp = float(q["scales"][0]), int(q["zero_points"][0])
            lo, hi = np.iinfo(q["dtype"]).min, np.iinfo(q["dtype"]).max
            info.update(scale=s, zero_point=zp, clipped=round(clipped_share(f_all, s, zp, lo, hi), 5))
        extra[t] = info
    if not sqnr:
        return []
    rows = rank_layers([n for n in nodes if n.op_type not in _PLUMBING_OPS] +
                       [n for n in nodes if n.op_type in _PLUMBING_OPS], sqnr, constants, anchors=None)
    by_name = {n.name: n for n in nodes}
    f_const = _constants(f_data, f_info)
    q_const = _constants(q_data, q_info)
    for r in rows:
        r.update({"cosine": None, "scale": None, "zero_point": None, "clipped": None}, **extra.get(r["tensor"], {}))
        r.update(_tflite_weights(by_name[r["node"]], q_info, q_const, f_const))
    return rows


def _constants(data: bytes, info: dict[str, dict]) -> dict[str, np.ndarray]:
    """Constant tensors (weights) by name, raw dtype, read from the flatbuffer's buffers."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(data, 0)
    sg = model.Subgraphs(0)
    out = {}
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        buf = model.Buffers(t.Buffer()) if t.Buffer() > 0 else None
        name = t.Name().decode()
        if buf is None or buf.DataLength() == 0 or name not in info:
            continue
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        raw = buf.DataAsNumpy().tobytes()
        dtype = info[name]["dtype"]
        if len(raw) == int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            out[name] = np.frombuffer(raw, dtype).reshape(shape)
    return out


def _tflite_weights(node: GraphNode, q_info: dict, q_const: dict, f_const: dict) -> dict:
    none = {"weights": None, "weight_bits": None, "weight_sqnr_db": None, "weight_dead_channels": None}
    if node.op_type not in _WEIGHTED_OPS or len(node.input) < 2:
        return none
    w = node.input[1]
    q = q_info.get(w)
    if q is None or q["dtype"] not in (np.int8, np.uint8):
        return {**none, "weights": "float", "weight_bits": 32, "weight_dead_channels": 0}
    out = {**none, "weights": "per-channel" if q["scales"].size > 1 else "per-tensor", "weight_bits": 8}
    if w in q_const and w in f_const and f_const[w].shape == q_const[w].shape:
        # output channels: OHWI conv / (out, in) fully connected on axis 0, depthwise (1, H, W, C) on axis 3
        axis = q["axis"] if q["scales"].size > 1 else (3 if node.op_type == "DEPTHWISE_CONV_2D" else 0)
        out["weight_sqnr_db"], out["weight_dead_channels"] = weight_error(f_const[w], _dequantise(q_const[w], q), axis)
    return out


__all__ = ["tflite_layer_statistics", "tflite_sensitive_nodes", "tflite_tensor_sensitivity", "tflite_graph"]

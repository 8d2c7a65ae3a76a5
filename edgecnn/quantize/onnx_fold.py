"""Fold the graph's input normalisation into its first convolution (an ONNX graph rewrite).

tf2onnx turns a Keras model that takes NHWC pixels 0-255 and normalises them in the graph into

    image -> Sub(mean) -> Mul(1/std) -> Transpose(NHWC->NCHW) -> Conv(W, b, pads)

and onnxruntime runs the two broadcasts over the channel-last axis slowly: on MobileNetV2 at 224 px
they were 14 % of the fp32 time and 27 % of the int8 time (benchmarks/results/int8_profile.json),
where the int8 graph even quantises between them. The scale commutes with zero padding, so it
always folds into the weights (``W * s``); the mean folds into the bias (``b - sum(W * s * mean)``)
when the convolution does not pad; a padding convolution instead pads with the mean itself (an
explicit ``Pad`` of constant ``mean``; ONNX's Pad takes one value, so a per-channel mean such as
ImageNet's is padded by concatenating constant strips of it, broadcast to the batch: plain copies).
Moving the ``Sub`` after the transpose is not enough: onnxruntime's int8 layout pass turns QLinearConv channels-last and
moves the broadcast back onto NHWC. The result computes the same function (to float rounding;
tests check it).

Folding the mean moves the image's DC level (~115 of 255) from the input into the bias, and int8
weights then carry it: the quantised conv computes ``W_q x + b'`` where the float bias ``b'`` assumed
``W``, so every output channel is off by the constant ``sum((W_q - W) * mean)`` — a per-channel
offset of about half an output step on MobileNetV2's stem that the depthwise layers amplify
(1000-class agreement 0.68 -> 0.55, top-5 0.93 -> 0.82 on the 224 px benchmark). The unfolded graph
does not pay it because its normalised input has a mean near zero. :func:`correct_folded_bias` removes
the offset exactly after quantisation (data-free bias correction, as in Nagel et al. 2019, here with the
known mean instead of a statistic): ``quantize_onnx`` applies it, and the fold records what it did in
the model's metadata (``edgecnn.input_fold``) for it. With it the folded int8 matches the unfolded one
(agreement 0.66 / 0.68, top-5 0.93 both) and runs without the two broadcasts.
"""
from __future__ import annotations

import json
import logging

import numpy as np

log = logging.getLogger("edgecnn.quantize")
FOLD_KEY = "edgecnn.input_fold"   # model metadata: {"conv", "weight", "bias", "mean"} of the fold (bias correction)


def _consumers(graph, name: str) -> list:
    return [n for n in graph.node if name in n.input]


def _const(inits: dict, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name]) if name in inits else None


def _channel_vector(value: np.ndarray | None, channels: int) -> np.ndarray | None:
    """A per-channel constant broadcast over NHWC's last axis (scalar, (C,), (1,1,1,C)) -> (C,), else None."""
    if value is None:
        return None
    if value.size == 1:
        return np.full(channels, float(value.ravel()[0]), np.float64)
    if value.size == channels and value.shape[-1] == channels and all(d == 1 for d in value.shape[:-1]):
        return value.reshape(channels).astype(np.float64)
    return None


def fold_input_normalisation(model, *, per_channel_padding: bool = True) -> str | None:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place; returns what was folded, or None when the
    graph does not start with Sub -> Mul/Div -> Transpose -> Conv, or when its mean is per-channel over
    a padding conv and ``per_channel_padding`` is False (the graph is then left unchanged)."""
    from onnx import helper, numpy_helper

    g = model.graph
    if len(g.input) != 1:
        return None
    inits = {i.name: i for i in g.initializer}
    x = g.input[0].name
    dims = g.input[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[3].dim_value:
        return None
    channels = dims[3].dim_value

    chain = []
    cur = x
    for ops in (("Sub",), ("Mul", "Div"), ("Transpose",), ("Conv",)):
        users = _consumers(g, cur)
        if len(users) != 1 or users[0].op_type not in ops:
            return None
        chain.append(users[0])
        cur = users[0].output[0]
    sub, scale, transpose, conv = chain
    if sub.input[0] != x or scale.input[0] != sub.output[0]:
        return None
    mean = _channel_vector(_const(inits, sub.input[1]), channels)
    factor = _channel_vector(_const(inits, scale.input[1]), channels)
    perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    if mean is None or factor is None or perm != [0, 3, 1, 2] or attrs.get("group", 1) != 1:
        return None
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    if scale.op_type == "Div":
        factor = 1.0 / factor
    w = _const(inits, conv.input[1])
    if w is None or w.shape[1] != channels:
        return None
    b = _const(inits, conv.input[2]) if len(conv.input) > 2 else np.zeros(w.shape[0], w.dtype)
    if b is None:
        return None

    w_new = (w.astype(np.float64) * factor[None, :, None, None])
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    uniform = bool(np.all(mean == mean[0]))
    if any(pads) and not uniform and (not per_channel_padding or not (dims[1].dim_value and dims[2].dim_value)):
        return None
    nodes = list(g.node)
    new_nodes = []
    transpose.input[0] = x
    # (W s) * (x - m) = (W s) * x - sum(W s m): the mean goes into the bias, and a padding conv pads
    # with the mean instead of zeros (which the folded conv maps to what zero padding did before)
    b_new = b.astype(np.float64) - (w_new * mean[None, :, None, None]).sum(axis=(1, 2, 3))
    conv_in = transpose.output[0]
    if any(pads):
        pad_name = f"{conv.name}__pad_mean"
        if uniform:
            conv_in = _pad_uniform(g, new_nodes, conv_in, pads, float(mean[0]), pad_name)
        else:
            conv_in = _pad_per_channel(g, new_nodes, conv_in, pads, mean, (dims[1].dim_value, dims[2].dim_value),
                                       pad_name)
        for a in conv.attribute:
            if a.name == "pads":
                del a.ints[:]
                a.ints.extend([0, 0, 0, 0])
    folded = "scale and mean" + (" (the mean as the padding value)" if any(pads) else "")
    conv.input[0] = conv_in
    w_name, b_name = f"{conv.name}__w_folded", f"{conv.name}__b_folded"
    g.initializer.extend([numpy_helper.from_array(w_new.astype(np.float32), w_name),
                          numpy_helper.from_array(b_new.astype(np.float32), b_name)])
    conv.input[1] = w_name
    if len(conv.input) > 2:
        conv.input[2] = b_name
    else:
        conv.input.append(b_name)

    order = [n for n in nodes if n is not sub and n is not scale]
    at = order.index(transpose) + 1
    del g.node[:]
    g.node.extend(order[:at] + new_nodes + order[at:])
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    record = model.metadata_props.add()
    record.key, record.value = FOLD_KEY, json.dumps({"conv": conv.name, "weight": w_name, "bias": b_name,
                                                     "mean": mean.tolist()})
    what = f"folded the input normalisation's {folded} into {conv.name}"
    log.info("onnx: %s", what)
    return what


def fold_record(model) -> dict | None:
    """What :func:`fold_input_normalisation` recorded in ``model``'s metadata, or None when it folded nothing."""
    value = next((p.value for p in model.metadata_props if p.key == FOLD_KEY), None)
    return json.loads(value) if value is not None else None


def correct_folded_bias(float_model, quantized_model) -> str | None:
    """Remove the per-channel offset int8 weights put on a folded mean (module docstring); in place.

    ``float_model`` is the folded float ``onnx.ModelProto`` (its metadata names the conv, its float
    weights and bias, and the mean), ``quantized_model`` its QDQ quantisation. The conv's int32 bias is
    requantised from ``b' + sum((W - W_q) * mean)`` over each output channel.
    Returns what was done, or None (nothing folded, or the conv's weights and bias are not int there).
    """
    from onnx import numpy_helper

    fold = fold_record(float_model)
    if fold is None:
        return None
    floats = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in float_model.graph.initializer
              if i.name in (fold["weight"], fold["bias"])}
    g = quantized_model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    conv = next((n for n in g.node if n.op_type == "Conv" and n.name == fold["conv"]), None)
    w_dq, b_dq = (producer.get(conv.input[1]), producer.get(conv.input[2])) if conv is not None else (None, None)
    if len(floats) < 2 or any(dq is None or dq.op_type != "DequantizeLinear" for dq in (w_dq, b_dq)):
        log.warning("onnx: the folded conv %s has no int8 weights after quantisation; bias left as it is",
                    fold["conv"])
        return None
    mean = np.asarray(fold["mean"], np.float64)
    offset = ((floats[fold["weight"]] - _dequantize(w_dq, inits)) * mean[None, :, None, None]).sum(axis=(1, 2, 3))
    q = numpy_helper.to_array(inits[b_dq.input[0]])
    scale = numpy_helper.to_array(inits[b_dq.input[1]]).astype(np.float64)
    new = np.round((floats[fold["bias"]] + offset) / scale)
    inits[b_dq.input[0]].CopyFrom(numpy_helper.from_array(new.astype(q.dtype), b_dq.input[0]))
    what = (f"corrected {conv.name}'s bias for the folded mean (largest shift {np.abs(offset).max():.4g}, "
            f"weight-quantisation offset times the mean)")
    log.info("onnx: %s", what)
    return what


PLUMBING = frozenset({"Transpose", "Split", "Pad", "Concat", "Reshape", "Identity", "Shape", "Slice", "Gather",
                      "Unsqueeze", "Squeeze", "Expand"})  # data movement and shape arithmetic


def _pad_uniform(g, new_nodes: list, x: str, pads: list[int], value: float, name: str) -> str:
    """One Pad of constant ``value`` around the NCHW ``x``; returns the padded tensor's name."""
    from onnx import helper, numpy_helper

    begin, end = pads[:2], pads[2:]
    g.initializer.extend([numpy_helper.from_array(np.array([0, 0, *begin, 0, 0, *end], np.int64), f"{name}_pads"),
                          numpy_helper.from_array(np.array(value, np.float32), f"{name}_value")])
    new_nodes.append(helper.make_node("Pad", [x, f"{name}_pads", f"{name}_value"], [f"{name}:0"], name=name,
                                      mode="constant"))
    return f"{name}:0"


def _pad_per_channel(g, new_nodes: list, x: str, pads: list[int], mean: np.ndarray, hw: tuple[int, int],
                     name: str) -> str:
    """Pad the NCHW ``x`` with each channel's own mean: constant strips, broadcast to the batch, concatenated
    on (height, then width). ONNX's Pad takes one value; a Split -> Pad per channel -> Concat did this
    too, but OpenVINO ran its split at 18 % of MobileNetV2's int8 time. Strips are (C, pad, width) values.
    """
    from onnx import helper, numpy_helper

    channels = len(mean)
    # [N, 1, 1, 1]: the batch of ``x``, so the strips broadcast to it (Expand)
    g.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), f"{name}_b0"),
                          numpy_helper.from_array(np.array([1], np.int64), f"{name}_b1"),
                          numpy_helper.from_array(np.ones(3, np.int64), f"{name}_ones")])
    new_nodes.extend([
        helper.make_node("Shape", [x], [f"{name}_shape"], name=f"{name}_shape"),
        helper.make_node("Slice", [f"{name}_shape", f"{name}_b0", f"{name}_b1"], [f"{name}_batch"],
                         name=f"{name}_batch"),
        helper.make_node("Concat", [f"{name}_batch", f"{name}_ones"], [f"{name}_expand_to"], name=f"{name}_expand_to",
                         axis=0)])
    height, width = hw
    cur = x
    for axis, (before, after) in ((2, (pads[0], pads[2])), (3, (pads[1], pads[3]))):
        parts = []
        for side, size in (("before", before), ("x", None), ("after", after)):
            if side == "x":
                parts.append(cur)
                continue
            if not size:
                continue
            shape = (1, channels, size, width) if axis == 2 else (1, channels, height, size)
            strip = numpy_helper.from_array(np.broadcast_to(mean.reshape(1, -1, 1, 1), shape).astype(np.float32),
                                            f"{name}_{axis}_{side}")
            g.initializer.append(strip)
            new_nodes.append(helper.make_node("Expand", [strip.name, f"{name}_expand_to"], [f"{strip.name}:0"],
                                              name=f"{strip.name}_expand"))
            parts.append(f"{strip.name}:0")
        if len(parts) > 1:
            new_nodes.append(helper.make_node("Concat", parts, [f"{name}_{axis}:0"], name=f"{name}_{axis}", axis=axis))
            cur = f"{name}_{axis}:0"
        height, width = (height + before + after, width) if axis == 2 else (height, width + before + after)
    return cur


def input_plumbing(model, conv_name: str) -> list[str]:
    """The nodes between the graph input and ``conv_name``'s data input when all of them only move data
    (the fold's Transpose, Split, Pad, Concat, as onnxruntime's pre-processing rearranged them), else [].

    ``quantize_onnx`` keeps them float: quantised, each piece of the per-channel padding gets its own
    Q/DQ pair and a QLinearConcat (12 % of MobileNetV2's int8 time at 224 px on a VNNI Xeon), where in
    float they are copies and one QuantizeLinear before the conv does.
    """
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    conv = next((n for n in g.node if n.name == conv_name), None)
    if conv is None:
        return []
    out: list[str] = []
    todo = [conv.input[0]]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in out:
            continue
        if node.op_type not in PLUMBING:
            return []
        out.append(node.name)
        todo.extend(i for i in node.input if i and i not in inits)
    return out


def _dequantize(dq, inits: dict) -> np.ndarray:
    """The float values of a DequantizeLinear of initializers (per-tensor or per-axis)."""
    from onnx import helper, numpy_helper

    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 else np.zeros(1)
    axis = next((helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), 1)
    if scale.size > 1:   # per-channel along ``axis``
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.size > 1 else zero
    return (q - zero) * scale

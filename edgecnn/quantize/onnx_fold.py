"""Fold the graph's input normalisation into its first convolution (an ONNX graph rewrite).

tf2onnx turns a Keras model that takes NHWC pixels 0-255 and normalises them in the graph into

    image -> Sub(mean) -> Mul(1/std) -> Transpose(NHWC->NCHW) -> Conv(W, b, pads)

and onnxruntime runs the two broadcasts over the channel-last axis slowly: on MobileNetV2 at 224 px
they were 14 % of the fp32 time and 27 % of the int8 time (benchmarks/results/int8_profile.json),
where the int8 graph even quantises between them. The scale commutes with zero padding, so it
always folds into the weights (``W * s``); the mean folds into the bias (``b - sum(W * s * mean)``)
when the convolution does not pad; a padding convolution instead pads with the mean itself (an
explicit ``Pad`` of constant ``mean``; ONNX's Pad takes one value, so a per-channel mean such as
ImageNet's pads each channel alone: Split -> Pad -> Concat, plain copies). Moving the ``Sub`` after
the transpose is not enough: onnxruntime's int8 layout pass turns QLinearConv channels-last and
moves the broadcast back onto NHWC. The result computes the same function (to float rounding;
tests check it).

The per-channel case (Split -> Pad -> Concat) is not applied by default: it made onnxruntime's int8
0.78x faster on the default MobileNetV2, but min/max PTQ agreement with Keras over ImageNet's 1000
classes at 224 px fell from 0.69 to 0.60 with it (reduce_range weights; 8-bit: 0.56 both), and
keeping the new ops or the stem conv float did not bring it back; why is not yet understood.
``per_channel_padding=True`` applies it.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("edgecnn.quantize")


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


def fold_input_normalisation(model, *, per_channel_padding: bool = False) -> str | None:
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
    if any(pads) and not uniform and not per_channel_padding:
        # Exact in float, faster, but measured to cost int8 accuracy (see the module docstring): left as it is.
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
        pads_init = numpy_helper.from_array(np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64),
                                            f"{pad_name}_pads")
        g.initializer.append(pads_init)
        # ONNX Pad takes one value: a per-channel mean pads each channel alone (Split -> Pad -> Concat)
        parts = [conv_in] if uniform else [f"{pad_name}_split:{c}" for c in range(channels)]
        if not uniform:
            sizes = numpy_helper.from_array(np.ones(channels, np.int64), f"{pad_name}_split_sizes")
            g.initializer.append(sizes)
            new_nodes.append(helper.make_node("Split", [conv_in, sizes.name], parts, name=f"{pad_name}_split",
                                              axis=1))
        padded = []
        for c, part in enumerate(parts):
            value = numpy_helper.from_array(np.array(mean[c], np.float32), f"{pad_name}_value{c}")
            g.initializer.append(value)
            padded.append(f"{pad_name}:{c}")
            new_nodes.append(helper.make_node("Pad", [part, pads_init.name, value.name], [padded[-1]],
                                              name=f"{pad_name}{c}", mode="constant"))
        if not uniform:
            padded = [f"{pad_name}_concat:0"]
            new_nodes.append(helper.make_node("Concat", [f"{pad_name}:{c}" for c in range(channels)], padded,
                                              name=f"{pad_name}_concat", axis=1))
        conv_in = padded[0]
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
    what = f"folded the input normalisation's {folded} into {conv.name}"
    log.info("onnx: %s", what)
    return what

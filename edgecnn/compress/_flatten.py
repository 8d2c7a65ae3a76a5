"""Flatten nested ``keras.Model`` layers into one functional graph, through public get_config/from_config.

tfmot wraps layers one by one; a backbone used as a single layer (``keras.applications.MobileNetV2``
called inside a wrapper model) is a ``Functional`` layer it cannot look into, and
``quantize_model`` rejects it. :func:`flatten` splices the inner model's layers into the outer
config (its inputs rewired to whatever fed it, references to its outputs rewired to its output
layers), rebuilds the model with ``keras.Model.from_config`` and copies every layer's weights, so the
result computes exactly what the nested model computed.

Only public Keras API is used (layer configs and ``get_weights``/``set_weights``). A nested model
called more than once (shared backbone) cannot be spliced and is reported as an EdgecnnError.
"""
from __future__ import annotations

import copy
from typing import Any

from edgecnn._tf import keras
from edgecnn.errors import EdgecnnError

_MODEL_CLASSES = ("Functional", "Model", "Sequential")


def is_nested(model) -> bool:
    """True when any layer of ``model`` is itself a Keras model."""
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def _is_ref(obj: Any) -> bool:
    """An inbound-node reference ``[layer_name, node_index, tensor_index(, kwargs)]``."""
    return (isinstance(obj, list) and len(obj) in (3, 4) and isinstance(obj[0], str)
            and isinstance(obj[1], int) and isinstance(obj[2], int) and (len(obj) == 3 or isinstance(obj[3], dict)))


def _map_refs(obj: Any, fn) -> Any:
    """Apply ``fn`` to every reference inside an inbound_nodes structure (lists and dicts, any depth)."""
    if _is_ref(obj):
        return fn(obj)
    if isinstance(obj, list):
        return [_map_refs(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: _map_refs(v, fn) for k, v in obj.items()}
    return obj


def _sequential_as_functional(layer_cfg: dict) -> dict:
    """A Sequential layer's config in the Functional format (a chain), so it can be spliced like one."""
    cfg = layer_cfg["config"]
    layers = copy.deepcopy(cfg["layers"])
    out, prev = [], None
    for lc in layers:
        name = lc["config"]["name"]
        lc["name"] = name
        if lc["class_name"] == "InputLayer":
            lc["inbound_nodes"] = []
        else:
            if prev is None:  # a Sequential built without an InputLayer entry: add one
                inp = {"class_name": "InputLayer", "name": f"{cfg['name']}_input",
                       "config": {"name": f"{cfg['name']}_input", "batch_input_shape": lc["config"].get(
                           "batch_input_shape"), "dtype": "float32", "sparse": False, "ragged": False},
                       "inbound_nodes": []}
                out.append(inp)
                prev = inp["name"]
            lc["inbound_nodes"] = [[[prev, 0, 0, {}]]]
        out.append(lc)
        prev = name
    first = out[0]["name"]
    return {"class_name": "Functional", "name": layer_cfg.get("name", cfg["name"]),
            "config": {"name": cfg["name"], "layers": out, "input_layers": [[first, 0, 0]],
                       "output_layers": [[prev, 0, 0]]},
            "inbound_nodes": layer_cfg.get("inbound_nodes", [])}


def _splice_once(config: dict) -> tuple[dict, dict[str, str]]:
    """Splice the first nested model of a Functional config; returns (config, new name -> path in the old model)."""
    layers = config["layers"]
    idx = next(i for i, lc in enumerate(layers) if lc["class_name"] in _MODEL_CLASSES)
    outer = layers[idx]
    inner_name = outer.get("name") or outer["config"]["name"]
    inner = _sequential_as_functional(outer) if outer["class_name"] == "Sequential" else outer
    icfg = inner["config"]
    calls = outer.get("inbound_nodes") or []
    if len(calls) != 1:
        raise EdgecnnError(
            f"cannot flatten nested model {inner_name!r}: it is called {len(calls)} times in the outer model "
            "(a shared backbone). Build the model with the backbone called once, or pass input_tensor= to "
            "the keras.applications builder so its layers join the outer graph directly."
        )
    call = calls[0]
    # The outer references feeding the inner model, one per inner input.
    feeds = [call] if _is_ref(call) else list(call)
    inner_inputs = [r[0] for r in icfg["input_layers"]]
    if len(feeds) != len(inner_inputs):
        raise EdgecnnError(f"cannot flatten nested model {inner_name!r}: {len(inner_inputs)} inputs but "
                           f"{len(feeds)} tensors feed it")
    feed_of = dict(zip(inner_inputs, feeds))

    taken = {lc.get("name") or lc["config"]["name"] for i, lc in enumerate(layers) if i != idx}
    rename: dict[str, str] = {}
    for lc in icfg["layers"]:
        name = lc.get("name") or lc["config"]["name"]
        if name in inner_inputs:
            continue
        new = name if name not in taken else f"{inner_name}_{name}"
        while new in taken:
            new += "_"
        rename[name] = new
        taken.add(new)

    def inner_ref(ref):
        name = ref[0]
        if name in feed_of:  # an inner Input: whatever fed the nested model in the outer graph
            src = list(feed_of[name][:3])
            kw = {**(feed_of[name][3] if len(feed_of[name]) > 3 else {}), **(ref[3] if len(ref) > 3 else {})}
            return [*src, kw]
        return [rename[name], ref[1], ref[2], *(ref[3:] if len(ref) > 3 else [{}])]

    spliced = []
    for lc in icfg["layers"]:
        name = lc.get("name") or lc["config"]["name"]
        if name in inner_inputs:
            continue
        lc = copy.deepcopy(lc)
        lc["name"] = rename[name]
        lc["config"]["name"] = rename[name]
        lc["inbound_nodes"] = _map_refs(lc.get("inbound_nodes", []), inner_ref)
        spliced.append(lc)

    outputs = [[rename[r[0]], r[1], r[2]] for r in icfg["output_layers"]]

    def outer_ref(ref):
        if ref[0] != inner_name:
            return ref
        target = outputs[ref[2]]
        return [*target, *(ref[3:] if len(ref) > 3 else [{}])]

    new_layers = []
    for i, lc in enumerate(layers):
        if i == idx:
            new_layers.extend(spliced)
            continue
        lc = copy.deepcopy(lc)
        lc["inbound_nodes"] = _map_refs(lc.get("inbound_nodes", []), outer_ref)
        new_layers.append(lc)
    new_cfg = dict(config)
    new_cfg["layers"] = new_layers
    new_cfg["output_layers"] = [outer_ref(list(r))[:3] for r in config["output_layers"]]
    origin = {new: f"{inner_name}/{old}" for old, new in rename.items()}
    return new_cfg, origin


def _leaf_layers(model, prefix: str = "") -> dict[str, Any]:
    """Every non-model layer reachable from ``model``, keyed by its path (``backbone/block_1_expand``)."""
    out: dict[str, Any] = {}
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            out.update(_leaf_layers(layer, f"{path}/"))
        else:
            out[path] = layer
    return out


def flatten(model, custom_objects: dict | None = None):
    """Return ``model`` with every nested model spliced into one flat functional graph (weights copied).

    A model without nested models is returned unchanged (the same object).

    Args:
        model: a functional or Sequential ``tf_keras`` model, possibly with ``keras.Model`` layers.
        custom_objects: custom layer classes the configs refer to, as for ``keras.Model.from_config``.

    Returns:
        A new functional model with the same inputs, outputs and weights and no nested models.

    Raises:
        EdgecnnError: a nested model is called more than once (shared), or the model is subclassed.

    Example:
        >>> backbone = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
        >>> x = keras.Input((32, 32, 3)); m = keras.Model(x, backbone(x))   # doctest: +SKIP
        >>> flat = flatten(m); any(isinstance(l, keras.Model) for l in flat.layers)   # doctest: +SKIP
        False
    """
    if not is_nested(model):
        return model
    try:
        config = model.get_config()
    except NotImplementedError:
        raise EdgecnnError(f"cannot flatten {model.name!r}: a subclassed model has no graph config. "
                           "Build it with the functional API.") from None
    if isinstance(model, keras.Sequential) or "input_layers" not in config:
        config = _sequential_as_functional({"class_name": "Sequential", "config": config, "name": model.name})[
            "config"]
    origin: dict[str, str] = {}
    while any(lc["class_name"] in _MODEL_CLASSES for lc in config["layers"]):
        config, step = _splice_once(config)
        # Compose paths through several levels of nesting.
        origin = {k: v for k, v in origin.items() if k not in step}
        for new, path in step.items():
            head, _, rest = path.partition("/")
            origin[new] = f"{origin.get(head, head)}/{rest}" if head in origin else path
    flat = keras.Model.from_config(config, custom_objects=custom_objects)
    leaves = _leaf_layers(model)
    for layer in flat.layers:
        src = leaves.get(origin.get(layer.name, layer.name))
        if src is not None and src.weights:
            layer.set_weights(src.get_weights())
    return flat

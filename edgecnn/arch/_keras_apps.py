"""Machinery shared by the families that reuse ``keras.applications``.

A ``keras.applications`` builder called with ``input_tensor=<output of our normalize layer>``
and ``include_top=False`` adds its layers to *our* graph, so ``keras.Model(image, probs)`` is one
flat functional model (no nested Model as a layer, which tfmot and the converters dislike).
Three problems remain, solved here:

* **Names.** ``edgecnn.train.block_of`` groups layers into fine-tuning blocks by the part of the
  name before the first ``_``. Keras' names do not all follow that (``conv_dw_3``,
  ``expanded_conv_3/expand``) and some layers are auto-named (``conv2d_7``, ``tf.math.multiply_3``:
  the suffix depends on what was built earlier in the session). :func:`rebuild` gives every layer a
  project name ``<block>_<part>`` through the public ``get_config`` / ``from_config`` round trip and
  copies the weights; :func:`block_names` places auto-named layers in the right block.
* **Preprocessing.** Some builders insert their own rescaling; :func:`rebuild` can drop those
  layers (``drop=``), because the ``normalize`` layer in front already does the job.
* **ImageNet weights.** Keras downloads them; offline that fails deep inside Keras.
  :func:`call_keras_builder` turns the failure into one :class:`EdgecnnError` naming the file and
  where to put it.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from edgecnn._tf import keras
from edgecnn.errors import EdgecnnError

# Layers our builders add around a backbone; they keep their names.
KEEP = frozenset({"image", "normalize", "pool", "dropout", "classifier", "probs"})

# Auto-generated Keras names -> the part used in the project name.
_AUTO_PARTS = {"tf.__operators__.add": "add", "tf.math.multiply": "mul", "re_lu": "relu", "multiply": "mul",
               "batch_normalization": "bn", "conv2d": "conv", "zero_padding2d": "pad", "add": "add",
               "activation": "act", "global_average_pooling2d": "gap", "concatenate": "concat"}


def keras_models_dir() -> str:
    """Where ``keras.utils.get_file`` caches ``keras.applications`` weights (``~/.keras/models``)."""
    base = os.path.expanduser(os.path.join("~", ".keras"))
    if not os.access(base, os.W_OK) and os.path.isdir("/tmp/.keras"):
        base = os.path.join("/tmp", ".keras")  # Keras' own fallback when ~/.keras is read-only
    return os.path.join(base, "models")


def call_keras_builder(model_name: str, fn: Callable[..., Any], *, weights: str | None, **kwargs: Any):
    """Call a ``keras.applications`` builder; a failed ImageNet download becomes one clear EdgecnnError."""
    try:
        return fn(weights=weights, **kwargs)
    except Exception as e:  # Keras raises a bare Exception("URL fetch failure on <url>: ...")
        url = re.search(r"https?://\S+?\.h5", str(e))
        if weights != "imagenet" or url is None:
            raise
        fname = url.group(0).rsplit("/", 1)[-1]
        raise EdgecnnError(
            f"{model_name}: could not download the ImageNet weights file {fname!r} that "
            f"keras.applications needs ({str(e).split(' -- ')[-1].strip() or type(e).__name__}). "
            f"Download {url.group(0)} on a machine with internet access and put it at "
            f"{os.path.join(keras_models_dir(), fname)} (~/.keras/models/{fname}); Keras looks there first. "
            "Or use weights=None, or weights='<path to a .h5 file of this model>'."
        ) from None


def no_imagenet(model_name: str, alternatives: str = "") -> EdgecnnError:
    """The error for weights='imagenet' on a family that has no ImageNet checkpoint."""
    more = f" ImageNet weights exist for {alternatives}." if alternatives else ""
    return EdgecnnError(
        f"{model_name}: there are no ImageNet weights for this model (keras.applications has none and edgecnn "
        f"ships none).{more} Use weights=None (train from scratch) or weights='<path to a .h5 file of this model>'."
    )


def check_alpha(model_name: str, alpha: float, weights: str | None, imagenet_alphas: Iterable[float]) -> None:
    allowed = tuple(imagenet_alphas)
    if not isinstance(alpha, (int, float)) or alpha <= 0:
        raise EdgecnnError(f"{model_name}: alpha must be a number > 0. Received alpha={alpha!r}.")
    if weights == "imagenet" and alpha not in allowed:
        raise EdgecnnError(
            f"{model_name}: ImageNet weights exist for alpha in {list(allowed)}. Received alpha={alpha!r}; "
            "use one of those or weights=None."
        )


def flip_rgb_bgr(model, layer_name: str) -> None:
    """Reverse the input-channel axis of a conv kernel: a BGR-trained (Caffe) first layer then takes RGB."""
    layer = model.get_layer(layer_name)
    w = layer.get_weights()
    w[0] = w[0][:, :, ::-1, :].copy()
    layer.set_weights(w)


def copy_weights_by_name(dst, src, skip: Iterable[str] = ()) -> int:
    """Copy weights from ``src`` layers to the ``dst`` layers of the same name and shapes; returns the count."""
    skip = set(skip)
    src_layers = {layer.name: layer for layer in src.layers if layer.weights and layer.name not in skip}
    copied = 0
    for layer in dst.layers:
        other = src_layers.get(layer.name)
        if other is None or not layer.weights:
            continue
        weights = other.get_weights()
        if [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
            raise EdgecnnError(f"weights of layer {layer.name!r} do not fit: {[w.shape for w in weights]} "
                               f"vs {[tuple(w.shape) for w in layer.weights]}")
        layer.set_weights(weights)
        copied += 1
    return copied


# ---------------------------------------------------------------- graph renaming via the config

def _refs(obj: Any, names: set[str]) -> Iterable[str]:
    """Layer names referenced in a serialized ``inbound_nodes`` structure."""
    if isinstance(obj, list):
        if len(obj) >= 3 and isinstance(obj[0], str) and obj[0] in names and isinstance(obj[1], int):
            yield obj[0]
            for item in obj[3:]:
                yield from _refs(item, names)
        else:
            for item in obj:
                yield from _refs(item, names)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _refs(item, names)


def _substitute(obj: Any, names: set[str], fn: Callable[[list], list]) -> Any:
    if isinstance(obj, list):
        if len(obj) >= 3 and isinstance(obj[0], str) and obj[0] in names and isinstance(obj[1], int):
            ref = fn(list(obj[:3]))
            return ref + [_substitute(item, names, fn) for item in obj[3:]]
        return [_substitute(item, names, fn) for item in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, names, fn) for k, v in obj.items()}
    return obj


def _auto_part(name: str) -> str:
    base = re.sub(r"_\d+$", "", name)
    return _AUTO_PARTS.get(base, re.sub(r"[^0-9a-zA-Z]+", "", base.rsplit(".", 1)[-1]).lower() or "op")


def block_names(model, rename: Callable[[str], str | None]) -> dict[str, str]:
    """Map every layer name of ``model`` to a project name ``<block>_<part>``.

    ``rename(keras_name)`` returns the new name of a layer the family knows (its own naming scheme) or
    None for an auto-named one (``conv2d_3``, ``tf.math.multiply_5``). Auto-named layers join a block
    by the graph: a merge (Add, Multiply, Concatenate) joins the latest block among its inputs; a layer
    with weights, or one reading the network input, joins its consumer's block (Xception's shortcut
    ``conv2d`` belongs to the block whose ``add`` it feeds); any other layer joins its producer's block.
    """
    layers = model.get_config()["layers"]
    names = [entry["name"] for entry in layers]
    known = set(names)
    order = {n: i for i, n in enumerate(names)}
    inbound = {entry["name"]: list(dict.fromkeys(_refs(entry["inbound_nodes"], known))) for entry in layers}
    outbound: dict[str, list[str]] = {n: [] for n in names}
    for n, srcs in inbound.items():
        for s in srcs:
            outbound[s].append(n)
    weighted = {layer.name for layer in model.layers if layer.weights}
    inputs = {entry["name"] for entry in layers if entry["class_name"] == "InputLayer"} | {"normalize"}

    new: dict[str, str] = {}
    block: dict[str, str] = {}
    for n in names:
        r = n if n in KEEP or n in inputs else rename(n)
        if r is not None:
            new[n] = r
            block[n] = r.split("_", 1)[0]

    visiting: set[str] = set()

    def block_of(n: str) -> str | None:
        if n in block:
            return block[n]
        if n in visiting:
            return None
        visiting.add(n)
        srcs = inbound[n]
        if len(srcs) > 1:
            found = [(order[s], b) for s in srcs if (b := block_of(s)) is not None]
            b = max(found)[1] if found else None
        elif n in weighted or any(s in inputs for s in srcs):
            b = next((b for c in outbound[n] if (b := block_of(c)) is not None), None)
        else:
            b = block_of(srcs[0]) if srcs else None
        if b is None:  # a cycle guard fired: fall back on the other direction
            b = next((b for s in srcs if (b := block_of(s)) is not None), "misc")
        visiting.discard(n)
        block[n] = b
        return b

    taken = set(new.values())
    for n in names:
        if n in new:
            continue
        candidate = f"{block_of(n)}_{_auto_part(n)}"
        final, i = candidate, 1
        while final in taken:
            final, i = f"{candidate}_{i}", i + 1
        new[n] = final
        taken.add(final)
    return new


def rebuild(model, rename: dict[str, str], drop: Iterable[str] = (), name: str | None = None):
    """Rebuild ``model`` from its config with renamed layers and without ``drop`` (single-input layers).

    Consumers of a dropped layer read its input instead. Weights are copied layer by layer.
    """
    config = copy.deepcopy(model.get_config())
    names = {entry["name"] for entry in config["layers"]}
    drop = set(drop)
    source = {}
    for entry in config["layers"]:
        if entry["name"] in drop:
            refs = list(_refs(entry["inbound_nodes"], names))
            if len(refs) != 1:
                raise ValueError(f"can only drop single-input layers; {entry['name']!r} has inputs {refs}")
            source[entry["name"]] = refs[0]
    new_names = {n: rename.get(n, n) for n in names}
    if len(set(new_names[n] for n in names - drop)) != len(names - drop):
        raise ValueError("rename map gives two layers the same name")

    def fix(ref: list) -> list:
        while ref[0] in source:
            ref = [source[ref[0]], 0, 0]
        return [new_names[ref[0]], ref[1], ref[2]]

    kept = []
    for entry in config["layers"]:
        if entry["name"] in drop:
            continue
        entry["name"] = entry["config"]["name"] = new_names[entry["name"]]
        entry["inbound_nodes"] = _substitute(entry["inbound_nodes"], names, fix)
        kept.append(entry)
    config["layers"] = kept
    config["input_layers"] = _substitute(config["input_layers"], names, fix)
    config["output_layers"] = _substitute(config["output_layers"], names, fix)
    config["name"] = name or config["name"]
    new = keras.Model.from_config(config)
    old = {new_names[layer.name]: layer for layer in model.layers if layer.name not in drop}
    for layer in new.layers:
        if layer.weights:
            layer.set_weights(old[layer.name].get_weights())
    return new

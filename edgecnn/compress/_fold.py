"""Fold the input ``Normalization`` into the first convolution (a graph rewrite through get_config).

``conv((x - m) / s) = conv'(x)`` with ``W' = W / s`` (per input channel) and
``b' = b - sum(W * m / s)``: the normalisation disappears and int8 sees raw pixels (scale 1, exact).

The identity holds wherever the kernel sees real pixels. Where the convolution reads *padding*
it does not: padding of the normalised input is 0 (= the mean pixel), padding of the raw input is
0 (= black, -m/s after normalising). So folding is exact for a ``'valid'`` convolution fed directly
by the normalisation, and only approximate at the image border when zero padding (a
``ZeroPadding2D`` layer or ``padding='same'``) sits in between, which is how every stride-2 stem
of the zoo is built. Pass ``allow_border_error=True`` to fold anyway; the result reports the
measured max |delta probability| on a probe batch so the cost is a number, not a guess.
"""
from __future__ import annotations

import copy
import logging

import numpy as np

from edgecnn._tf import keras
from edgecnn.errors import EdgecnnError

log = logging.getLogger("edgecnn.compress")


def _consumers(model, layer) -> list:
    out = []
    for other in model.layers:
        for node in other.inbound_nodes:
            inb = node.inbound_layers
            inb = inb if isinstance(inb, list) else [inb]
            if any(i is layer for i in inb):
                out.append(other)
    return out


def fold_normalization(model, *, allow_border_error: bool = False, probe: np.ndarray | None = None):
    """Return a new model with its input ``Normalization`` folded into the first Conv2D.

    Args:
        model: a flat functional model whose ``Normalization`` feeds one Conv2D (possibly through
            one ``ZeroPadding2D``).
        allow_border_error: fold even when zero padding makes the result inexact at the border.
        probe: images (N, H, W, 3) 0-255 to measure the difference on (default: 4 random images).

    Returns:
        ``(folded_model, max_abs_prob_delta)``.

    Raises:
        EdgecnnError: no foldable Normalization, or zero padding in the way without ``allow_border_error``.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
    if len(norms) != 1:
        raise EdgecnnError(f"fold_normalization: expected one Normalization layer in {model.name!r}; "
                           f"found {len(norms)}.")
    norm = norms[0]
    chain = _consumers(model, norm)
    pad = None
    if len(chain) == 1 and isinstance(chain[0], keras.layers.ZeroPadding2D):
        pad = chain[0]
        chain = _consumers(model, pad)
    if len(chain) != 1 or type(chain[0]) is not keras.layers.Conv2D:
        raise EdgecnnError(f"fold_normalization: {norm.name!r} must feed exactly one Conv2D (optionally through one "
                           f"ZeroPadding2D); it feeds {[c.name for c in chain]}.")
    conv = chain[0]
    inexact = pad is not None or conv.padding == "same"
    if inexact and not allow_border_error:
        raise EdgecnnError(
            f"fold_normalization: zero padding between {norm.name!r} and {conv.name!r} makes folding inexact at the "
            "image border (padding raw pixels with 0 is not padding normalised ones with 0). Pass "
            "allow_border_error=True to fold anyway and read the measured difference, or keep the Normalization "
            "(quantize_aware gives it a learned int8 range)."
        )
    mean = np.asarray(norm.mean).reshape(-1).astype(np.float64)
    var = np.asarray(norm.variance).reshape(-1).astype(np.float64)
    std = np.maximum(np.sqrt(var), keras.backend.epsilon())
    weights = conv.get_weights()
    w = weights[0].astype(np.float64)
    b = weights[1].astype(np.float64) if conv.use_bias else np.zeros(w.shape[-1])
    if w.shape[2] != mean.size:
        raise EdgecnnError(f"fold_normalization: {conv.name!r} has {w.shape[2]} input channels, the normalisation "
                           f"{mean.size}.")
    w_new = w / std[None, None, :, None]
    b_new = b - np.einsum("hwio,i->o", w, mean / std)

    config = copy.deepcopy(model.get_config())
    src_ref = None
    for lc in config["layers"]:
        if lc["name"] == norm.name:
            src_ref = lc["inbound_nodes"][0][0]
    if src_ref is None:
        raise EdgecnnError(f"fold_normalization: cannot find the input of {norm.name!r}.")

    def rewire(obj):
        if isinstance(obj, list) and len(obj) >= 3 and obj[0] == norm.name and isinstance(obj[1], int):
            return [src_ref[0], src_ref[1], src_ref[2], *(obj[3:] if len(obj) > 3 else [{}])]
        if isinstance(obj, list):
            return [rewire(o) for o in obj]
        return obj

    layers = []
    for lc in config["layers"]:
        if lc["name"] == norm.name:
            continue
        lc["inbound_nodes"] = rewire(lc["inbound_nodes"])
        if lc["name"] == conv.name:
            lc["config"]["use_bias"] = True
        layers.append(lc)
    config["layers"] = layers
    folded = keras.Model.from_config(config)
    for layer in folded.layers:
        if layer.name == conv.name:
            layer.set_weights([w_new.astype(np.float32), b_new.astype(np.float32)])
        else:
            src = model.get_layer(layer.name)
            if src.weights:
                layer.set_weights(src.get_weights())
    if probe is None:
        probe = np.random.default_rng(0).uniform(0, 255, (4, *model.input_shape[1:])).astype(np.float32)
    delta = float(np.abs(np.asarray(model(probe, training=False)) - np.asarray(folded(probe, training=False))).max())
    if inexact:
        log.warning("folded %s into %s with zero padding in between: max |delta p| %.2e on the probe", norm.name,
                    conv.name, delta)
    return folded, delta

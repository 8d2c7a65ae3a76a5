"""ImageNet backbones cut and thinned until they fit a microcontroller, keeping their pretrained features.

A from-scratch 0.2 M-parameter net reaches 0.45-0.75 top-1 on the bundled defect set; the ImageNet
MobileNetV2 and EfficientNet-Lite0 reach ~0.98 at 128-224 px but need megabytes. Their early blocks
already hold the features that matter (edges, texture, blobs), so this module keeps those and
removes what does not fit, with three levers:

* ``blocks``: keep only the first N inverted-residual blocks (truncation). Flash falls fastest:
  the late blocks hold most of the weights.
* ``expand``: keep a share of each block's expansion ("hidden") channels, ranked by importance
  (channel pruning of the pretrained net). At 96 px the expansion layers of the first blocks set
  TFLite Micro's activation peak (EfficientNet-Lite0's ``block2a`` expands 16 to 96 channels at
  48x48: 216 KiB), so this is the lever for the arena.
* ``stem``: keep a share of the stem's channels (the stem output and the first block's depthwise
  layer share them), ranked the same way.

A hidden channel is wholly inside one block (expand conv output -> BN -> depthwise -> BN -> project
conv input), never on a residual path, so removing it needs no change elsewhere. Its importance is
the depthwise BatchNorm's scale ``|gamma| / sqrt(var + eps)`` times the L1 norm of the project
kernel's row that reads it: how strongly the channel can reach the block's output. The channels
are kept in their original order; the net is then fine-tuned as usual (``train.finetune``).

Layer names are those of the full model (``block2a_expand_conv``, ``block3_dw_bn``), so the
pretrained weights are sliced by name and ``finetune.blocks`` counts the same blocks.

Example:
    >>> m = create_model("efficientnet_lite0_mcu", num_classes=4, input_size=96, blocks=10,
    ...                  expand=0.5, weights="imagenet")          # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgecnn._tf import keras
from edgecnn.arch._layers import IMAGENET_MEAN, IMAGENET_STD, check_common, classifier_head, normalize
from edgecnn.arch.mobilenet import MOBILENET_V2_STAGES, make_divisible
from edgecnn.arch.registry import register_model
from edgecnn.errors import EdgecnnError

__all__ = ["McuBlock", "McuFamily", "MCU_FAMILIES", "block_plan", "hidden_importance"]

layers = keras.layers


@dataclass(frozen=True)
class McuBlock:
    """One inverted-residual block of a family: its name prefix and shape (full width)."""

    prefix: str        # "block2a_" / "block2_"
    kernel: int
    stride: int
    expansion: int
    channels_in: int
    channels_out: int


@dataclass(frozen=True)
class McuFamily:
    """What differs between the families: normalisation, padding, BatchNorm epsilon, layer names."""

    name: str                      # the full model's registry name (its ImageNet weights)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bn_epsilon: float
    torch_padding: bool            # ZeroPadding2D(k//2) + 'valid' before stride-2 convs (torchvision), else 'same'
    stem: tuple[str, str]          # stem conv and BN names
    parts: tuple[str, str, str, str, str, str]   # expand conv/bn, dw conv/bn, project conv/bn (after the prefix)
    blocks: tuple[McuBlock, ...]


def _mobilenet_v2_blocks() -> tuple[McuBlock, ...]:
    out, c_in, b = [], 32, 1
    for st in MOBILENET_V2_STAGES:
        for i in range(st.repeats):
            out.append(McuBlock(f"block{b}_", 3, st.stride if i == 0 else 1, st.expansion, c_in, st.channels))
            c_in, b = st.channels, b + 1
    return tuple(out)


def _efficientnet_lite0_blocks() -> tuple[McuBlock, ...]:
    from edgecnn.arch.efficientnet_lite import EFFICIENTNET_B0_STAGES

    out, c_in = [], 32
    for i, st in enumerate(EFFICIENTNET_B0_STAGES):   # Lite0: width and depth 1.0, repeats as in B0
        for j in range(st.repeats):
            out.append(McuBlock(f"block{i + 1}{chr(97 + j)}_", st.kernel, st.stride if j == 0 else 1, st.expand,
                                c_in, st.filters_out))
            c_in = st.filters_out
    return tuple(out)


def _families() -> dict[str, McuFamily]:
    from edgecnn.arch.efficientnet_lite import MEAN as LITE_MEAN
    from edgecnn.arch.efficientnet_lite import STD as LITE_STD

    return {
        "mobilenet_v2": McuFamily("mobilenet_v2", IMAGENET_MEAN, IMAGENET_STD, 1e-5, True, ("stem", "stem_bn"),
                                  ("expand", "expand_bn", "dw", "dw_bn", "project", "project_bn"),
                                  _mobilenet_v2_blocks()),
        "efficientnet_lite0": McuFamily("efficientnet_lite0", LITE_MEAN, LITE_STD, 1e-3, False,
                                        ("stem_conv", "stem_bn"),
                                        ("expand_conv", "expand_bn", "dwconv", "bn", "project_conv", "project_bn"),
                                        _efficientnet_lite0_blocks()),
    }


MCU_FAMILIES: dict[str, McuFamily] = _families()
STEM_CHANNELS = 32
# BatchNorm's moving averages follow the batches at 0.9 (Keras' default 0.99 trails fine-tuning on ~34 steps an
# epoch by several epochs: the first pruned run's val top-1 sat at 0.25-0.30 while train rose to 0.73).
BN_MOMENTUM = 0.9


def _kept(full: int, share: float) -> int:
    """Channels kept of ``full`` at ``share``: a multiple of 8 (int8 kernels like them), at least 8."""
    return full if share >= 1.0 else min(full, make_divisible(full * share))


def expand_shares(expand: float | Sequence[float], blocks: int) -> list[float]:
    """Per kept block, the share of its expansion channels kept: one number for all, or a list from the input
    (blocks past its end keep all their channels)."""
    if isinstance(expand, (int, float)):
        return [float(expand)] * blocks
    shares = [float(e) for e in expand][:blocks]
    return shares + [1.0] * (blocks - len(shares))


def block_plan(family: str, blocks: int, expand: float | Sequence[float], stem: float) -> list[tuple[McuBlock, int]]:
    """The kept blocks of ``family`` with the hidden channels each keeps (the stem's for a block without expansion)."""
    fam = MCU_FAMILIES[family]
    stem_kept = _kept(STEM_CHANNELS, stem)
    return [(b, stem_kept if b.expansion == 1 else _kept(b.channels_in * b.expansion, share))
            for b, share in zip(fam.blocks[:blocks], expand_shares(expand, blocks))]


def hidden_importance(dw_bn: list[np.ndarray], project_kernel: np.ndarray, epsilon: float) -> np.ndarray:
    """Importance of each hidden channel: |gamma| / sqrt(var + eps) of the depthwise BN x L1 of the project row.

    Args:
        dw_bn: the depthwise BatchNorm's weights [gamma, beta, moving_mean, moving_variance].
        project_kernel: the 1x1 project convolution's kernel (1, 1, hidden, out).
        epsilon: that BatchNorm's epsilon.

    Example:
        >>> g = [np.array([1., 2.]), np.zeros(2), np.zeros(2), np.array([1., 4.])]
        >>> hidden_importance(g, np.ones((1, 1, 2, 3)), 0.0).tolist()
        [3.0, 3.0]
    """
    gamma, _, _, var = dw_bn
    return np.abs(gamma) / np.sqrt(var + epsilon) * np.abs(project_kernel).sum(axis=(0, 1, 3))


def _conv(x, fam: McuFamily, filters: int | None, kernel: int, stride: int, conv: str, bn: str, act: bool):
    pad = "same"
    if fam.torch_padding and stride == 2 and kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{conv}_pad")(x)
        pad = "valid"
    if filters is None:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding=pad, use_bias=False, name=conv)(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, padding=pad, use_bias=False, name=conv)(x)
    x = layers.BatchNormalization(epsilon=fam.bn_epsilon, momentum=BN_MOMENTUM, name=bn)(x)
    return layers.ReLU(6.0, name=f"{conv}_relu")(x) if act else x


def _backbone(x, fam: McuFamily, plan: list[tuple[McuBlock, int]], stem_kept: int):
    x = _conv(x, fam, stem_kept, 3, 2, *fam.stem, act=True)
    e_conv, e_bn, d_conv, d_bn, p_conv, p_bn = fam.parts
    for b, hidden in plan:
        shortcut, p = x, b.prefix
        if b.expansion != 1:
            x = _conv(x, fam, hidden, 1, 1, p + e_conv, p + e_bn, act=True)
        x = _conv(x, fam, None, b.kernel, b.stride, p + d_conv, p + d_bn, act=True)
        x = _conv(x, fam, b.channels_out, 1, 1, p + p_conv, p + p_bn, act=False)
        if b.stride == 1 and b.channels_in == b.channels_out:
            x = layers.Add(name=p + "add")([shortcut, x])
    return x


def _copy_pruned(model, full, fam: McuFamily, plan: list[tuple[McuBlock, int]], stem_kept: int) -> None:
    """Copy the full model's weights into the thinned one, keeping each group's most important channels."""
    def w(name):
        return full.get_layer(name).get_weights()

    def put(name, weights):
        model.get_layer(name).set_weights(weights)

    def top(scores: np.ndarray, k: int) -> np.ndarray:
        return np.sort(np.argsort(-scores, kind="stable")[:k])

    e_conv, e_bn, d_conv, d_bn, p_conv, p_bn = fam.parts
    stem_idx = np.arange(STEM_CHANNELS)
    for b, hidden in plan:
        p = b.prefix
        idx = top(hidden_importance(w(p + d_bn), w(p + p_conv)[0], fam.bn_epsilon), hidden)
        if b.expansion == 1:       # the stem's channels are this block's hidden channels
            stem_idx = idx
        else:
            put(p + e_conv, [w(p + e_conv)[0][..., idx]])
            put(p + e_bn, [v[idx] for v in w(p + e_bn)])
        put(p + d_conv, [w(p + d_conv)[0][:, :, idx, :]])
        put(p + d_bn, [v[idx] for v in w(p + d_bn)])
        put(p + p_conv, [w(p + p_conv)[0][:, :, idx, :]])
        put(p + p_bn, w(p + p_bn))
    if len(stem_idx) != stem_kept:   # blocks=0 cannot happen (checked); the first block has expansion 1
        raise AssertionError("the stem's channels were not ranked")
    put(fam.stem[0], [w(fam.stem[0])[0][..., stem_idx]])
    put(fam.stem[1], [v[stem_idx] for v in w(fam.stem[1])])


def _build(family: str, *, num_classes: int, input_size: int, blocks: int, expand: float | Sequence[float],
           stem: float,
           weights: str | None, dropout: float):
    fam = MCU_FAMILIES[family]
    name = f"{family}_mcu"
    check_common(name, num_classes, input_size)
    if not isinstance(blocks, int) or not 1 <= blocks <= len(fam.blocks):
        raise EdgecnnError(f"{name}: blocks must be an integer in 1..{len(fam.blocks)} (the inverted-residual "
                           f"blocks kept from the input). Received blocks={blocks!r}.")
    shares = [expand] if isinstance(expand, (int, float)) else list(expand) if isinstance(expand, (list, tuple)) \
        else [None]
    for key, share in [("expand", e) for e in shares] + [("stem", stem)]:
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise EdgecnnError(f"{name}: {key} must be a share of channels in (0, 1] ({key}: a list of them per "
                               f"block is accepted for expand). Received {key}={share!r}.")
    if weights not in (None, "imagenet"):
        raise EdgecnnError(f"{name}: weights must be None or 'imagenet' (sliced from {family}'s ImageNet weights). "
                           f"Received weights={weights!r}.")
    plan = block_plan(family, blocks, expand, stem)
    stem_kept = _kept(STEM_CHANNELS, stem)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = _backbone(normalize(inputs, fam.mean, fam.std), fam, plan, stem_kept)
    model = keras.Model(inputs, classifier_head(x, num_classes, dropout), name=name)
    if weights == "imagenet":
        from edgecnn.arch.registry import create_model

        full = create_model(family, num_classes=num_classes, input_size=max(32, input_size), weights="imagenet")
        _copy_pruned(model, full, fam, plan, stem_kept)
    return model


@register_model
def mobilenet_v2_mcu(*, num_classes: int = 2, input_size: int = 96, blocks: int = 6,
                     expand: float | list[float] = 1.0, stem: float = 1.0, weights: str | None = None,
                     dropout: float = 0.1):
    """MobileNetV2 1.0's first blocks, ImageNet weights sliced, thinned to fit a microcontroller.

    Args:
        num_classes: classes of the head (global average pooling -> dropout -> dense).
        input_size: square input side in pixels, >= 32.
        blocks: inverted-residual blocks kept from the input (17 in the full net).
        expand: share of each block's expansion channels kept, ranked by importance (1.0 = all); one number
            for every block or a list from the input (later blocks keep all). The first blocks set the arena.
        stem: share of the stem's 32 channels kept, ranked the same way.
        weights: None (random) or 'imagenet' (mobilenet_v2's offline ImageNet weights, sliced).
        dropout: dropout before the classifier.
    """
    return _build("mobilenet_v2", num_classes=num_classes, input_size=input_size, blocks=blocks, expand=expand,
                  stem=stem, weights=weights, dropout=dropout)


@register_model
def efficientnet_lite0_mcu(*, num_classes: int = 2, input_size: int = 96, blocks: int = 10,
                           expand: float | list[float] = 1.0, stem: float = 1.0, weights: str | None = None,
                     dropout: float = 0.1):
    """EfficientNet-Lite0's first blocks, ImageNet weights sliced, thinned to fit a microcontroller.

    Args:
        num_classes: classes of the head (global average pooling -> dropout -> dense).
        input_size: square input side in pixels, >= 32.
        blocks: inverted-residual blocks kept from the input (16 in the full net).
        expand: share of each block's expansion channels kept, ranked by importance (1.0 = all); one number
            for every block or a list from the input (later blocks keep all). The first blocks set the arena.
        stem: share of the stem's 32 channels kept, ranked the same way.
        weights: None (random) or 'imagenet' (efficientnet_lite0's offline ImageNet weights, sliced).
        dropout: dropout before the classifier.
    """
    return _build("efficientnet_lite0", num_classes=num_classes, input_size=input_size, blocks=blocks,
                  expand=expand, stem=stem, weights=weights, dropout=dropout)

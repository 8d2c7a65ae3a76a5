"""MobileNetV2 laid out like torchvision's, so its ImageNet checkpoint ports exactly.

keras.applications pads stride-2 convolutions asymmetrically and uses BatchNorm epsilon 1e-3;
torchvision pads 1 on every side and uses 1e-5 (some running variances are ~1e-44, so epsilon
matters). This builder does the torchvision thing: ZeroPadding2D(1) + 'valid' before every
stride-2 3x3 convolution, epsilon 1e-5, momentum 0.9 (torch's 0.1).

Layer names follow the blocks (``block3_dw``), and ``edgecnn.arch.weights`` maps torchvision's
``features.3.conv.1.0.weight`` onto them.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgecnn._tf import keras
from edgecnn.arch._layers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_common,
    classifier_head,
    load_weights_file,
    normalize,
)
from edgecnn.arch.registry import register_model
from edgecnn.errors import EdgecnnError

layers = keras.layers
BN_EPS = 1e-5
BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class InvertedResidualStage:
    expansion: int
    channels: int
    repeats: int
    stride: int


# The MobileNetV2 paper's table 2 (t, c, n, s), as data.
MOBILENET_V2_STAGES = (
    InvertedResidualStage(1, 16, 1, 1),
    InvertedResidualStage(6, 24, 2, 2),
    InvertedResidualStage(6, 32, 3, 2),
    InvertedResidualStage(6, 64, 4, 2),
    InvertedResidualStage(6, 96, 3, 1),
    InvertedResidualStage(6, 160, 3, 2),
    InvertedResidualStage(6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10 % (torchvision/TF)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn(x, filters: int, kernel: int, stride: int, name: str, *, depthwise: bool = False, act: bool = True):
    """Conv (or depthwise conv) -> BN -> ReLU6, padded like torch (symmetric) for stride 2."""
    if stride == 2 and kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(epsilon=BN_EPS, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if act:
        x = layers.ReLU(6.0, name=f"{name}_relu")(x)
    return x


def inverted_residual(x, block: int, in_ch: int, out_ch: int, stride: int, expansion: int):
    hidden = int(round(in_ch * expansion))
    shortcut = x
    if expansion != 1:
        x = conv_bn(x, hidden, 1, 1, f"block{block}_expand")
    x = conv_bn(x, hidden, 3, stride, f"block{block}_dw", depthwise=True)
    x = conv_bn(x, out_ch, 1, 1, f"block{block}_project", act=False)
    if stride == 1 and in_ch == out_ch:
        x = layers.Add(name=f"block{block}_add")([shortcut, x])
    return x


def mobilenet_v2_backbone(inputs, alpha: float = 1.0):
    """Features of MobileNetV2 (after the 1x1 head conv), from normalised input."""
    in_ch = make_divisible(32 * alpha)
    x = conv_bn(inputs, in_ch, 3, 2, "stem")
    block = 1
    for stage in MOBILENET_V2_STAGES:
        out_ch = make_divisible(stage.channels * alpha)
        for i in range(stage.repeats):
            x = inverted_residual(x, block, in_ch, out_ch, stage.stride if i == 0 else 1, stage.expansion)
            in_ch, block = out_ch, block + 1
    last = make_divisible(1280 * max(1.0, alpha))
    return conv_bn(x, last, 1, 1, "head")


# Blocks of MobileNetV2 in input-to-output order; fine-tuning unfreezes from the end.
MOBILENET_V2_BLOCKS = ("stem",) + tuple(f"block{i}_" for i in range(1, 18)) + ("head",)


@register_model
def mobilenet_v2(*, num_classes: int = 1000, input_size: int = 224, alpha: float = 1.0,
                 weights: str | None = None, include_top: bool = False, dropout: float = 0.2):
    """MobileNetV2 (inverted residuals, linear bottlenecks), torchvision layout; weights='imagenet' offline.

    Args:
        num_classes: classes of the classifier head (1000 with ``include_top`` and ImageNet weights).
        input_size: square input side in pixels, >= 32.
        alpha: width multiplier; ImageNet weights exist for 1.0 only.
        weights: None (random), 'imagenet' (torchvision's checkpoint, ported offline), or a .h5 path.
        include_top: keep the 1000-class ImageNet classifier instead of a new head.
        dropout: dropout before the classifier.
    """
    check_common("mobilenet_v2", num_classes, input_size)
    if alpha <= 0:
        raise EdgecnnError(f"mobilenet_v2: alpha must be > 0. Received alpha={alpha!r}.")
    if weights == "imagenet" and alpha != 1.0:
        raise EdgecnnError(
            f"mobilenet_v2: ImageNet weights exist for alpha=1.0 only. Received alpha={alpha!r}; "
            "use alpha=1.0 or weights=None."
        )
    if include_top and num_classes != 1000:
        raise EdgecnnError(f"mobilenet_v2: include_top needs num_classes=1000. Received num_classes={num_classes}.")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalize(inputs, IMAGENET_MEAN, IMAGENET_STD)
    x = mobilenet_v2_backbone(x, alpha)
    x = classifier_head(x, num_classes, dropout)
    model = keras.Model(inputs, x, name="mobilenet_v2")
    if weights == "imagenet":
        from edgecnn.arch.weights import imagenet_weights_path

        load_weights_file(model, imagenet_weights_path("mobilenet_v2"))
    elif weights is not None:
        load_weights_file(model, weights)
    return model

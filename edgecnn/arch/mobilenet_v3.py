"""MobileNetV3 (Howard et al. 2019): Small and Large, with and without squeeze-excite/hard-swish.

Each row of :data:`MOBILENET_V3_VARIANTS` is registered as a model. Built with
``keras.applications.MobileNetV3Small/Large`` with ``include_preprocessing=False``: Keras' own
``Rescaling(1/127.5, -1)`` is what our ``normalize`` layer does instead (0-255 -> [-1, 1]).

The paper's head is kept: after the last 1x1 conv (``head_conv``, 960/576 channels) comes global
pooling and a 1x1 conv to 1280/1024 features (``head_conv2``, hard-swish), then our classifier.
With ``weights='imagenet'`` the Keras checkpoint *with* top is loaded, so ``head_conv2`` is
pretrained too; the 1000-class logits are dropped.

Layers are renamed into blocks for fine-tuning: ``Conv*`` -> ``stem_*``, ``expanded_conv_3/...``
-> ``block4_...`` (Keras counts from 0, the blocks from 1), ``Conv_1*`` / ``Conv_2`` -> ``head_*``;
the hard-swish ops Keras leaves auto-named join the block they sit in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import block_names, call_keras_builder, check_alpha, rebuild
from edgecnn.arch._layers import check_common, classifier_head, load_weights_file, normalize
from edgecnn.arch.registry import register_model

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # 0-255 -> [-1, 1]


@dataclass(frozen=True)
class MobileNetV3Variant:
    size: str  # "small" | "large"
    minimalistic: bool  # no squeeze-excite, no hard-swish, 3x3 kernels only (friendlier to int8/NPUs)
    imagenet_alphas: tuple[float, ...]
    description: str


MOBILENET_V3_VARIANTS = {
    "mobilenet_v3_small": MobileNetV3Variant(
        "small", False, (0.75, 1.0), "MobileNetV3-Small (SE, hard-swish; NAS-found), keras.applications weights."),
    "mobilenet_v3_large": MobileNetV3Variant(
        "large", False, (0.75, 1.0), "MobileNetV3-Large (SE, hard-swish; NAS-found), keras.applications weights."),
    "mobilenet_v3_small_minimalistic": MobileNetV3Variant(
        "small", True, (1.0,), "MobileNetV3-Small minimalistic (no SE/hard-swish, 3x3 only): int8/NPU friendly."),
    "mobilenet_v3_large_minimalistic": MobileNetV3Variant(
        "large", True, (1.0,), "MobileNetV3-Large minimalistic (no SE/hard-swish, 3x3 only): int8/NPU friendly."),
}

_ARGS_DOC = """
    Args:
        num_classes: classes of the classifier head.
        input_size: square input side in pixels, >= 32 (the ImageNet checkpoints were trained at 224).
        alpha: width multiplier; ImageNet weights exist for 0.75 and 1.0 (minimalistic: 1.0 only).
        weights: None (random), 'imagenet' (Keras' checkpoint; downloads into ~/.keras/models), or a .h5 path.
        dropout: dropout before the classifier.

    Returns:
        A model from RGB 0-255 to class probabilities.
"""


def _rename(name: str) -> str | None:
    if name == "Conv" or name.startswith("Conv/"):
        return "stem_conv" if name == "Conv" else "stem_bn"
    if name.startswith("Conv_1"):
        return "head_conv" if name == "Conv_1" else "head_bn"
    if name == "Conv_2":
        return "head_conv2"
    m = re.fullmatch(r"expanded_conv(?:_(\d+))?/(.*)", name)
    if m is None:
        return None
    part = m[2].replace("squeeze_excite", "se").replace("/BatchNorm", "_bn").replace("/", "_").lower()
    return f"block{int(m[1] or 0) + 1}_{part}"


def _build(name: str, variant: MobileNetV3Variant, *, num_classes: int, input_size: int, alpha: float,
           weights: str | None, dropout: float):
    check_common(name, num_classes, input_size)
    check_alpha(name, alpha, weights, variant.imagenet_alphas)
    fn = keras.applications.MobileNetV3Small if variant.size == "small" else keras.applications.MobileNetV3Large
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalize(inputs, MEAN, STD)
    base = call_keras_builder(name, fn, input_tensor=x, alpha=alpha, minimalistic=variant.minimalistic,
                              include_top=True, include_preprocessing=False, dropout_rate=0.0,
                              weights="imagenet" if weights == "imagenet" else None)
    # include_top=True for the pretrained 1280/1024-wide head conv; its input to the logits is what we keep.
    features = base.get_layer("Logits").input
    model = keras.Model(inputs, classifier_head(features, num_classes, dropout), name=name)
    model = rebuild(model, block_names(model, _rename))
    if weights not in (None, "imagenet"):
        load_weights_file(model, weights)
    return model


def _register(name: str, variant: MobileNetV3Variant) -> None:
    def builder(*, num_classes: int = 1000, input_size: int = 224, alpha: float = 1.0,
                weights: str | None = None, dropout: float = 0.2):
        return _build(name, variant, num_classes=num_classes, input_size=input_size, alpha=alpha,
                      weights=weights, dropout=dropout)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = variant.description + "\n" + _ARGS_DOC
    register_model(builder, name=name)


for _name, _variant in MOBILENET_V3_VARIANTS.items():
    _register(_name, _variant)

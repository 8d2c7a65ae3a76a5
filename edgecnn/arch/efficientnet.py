"""EfficientNet B0-B3 (Tan & Le 2019) and EfficientNetV2 B0-B1 (Tan & Le 2021), from keras.applications.

Each row of :data:`EFFICIENTNET_VARIANTS` is registered as a model. Compound scaling (width,
depth, resolution) *is* the variant, so there is no alpha. Keras' layer names already follow the
project's ``<block>_<part>`` rule (``stem_conv``, ``block2a_expand_conv``, ``top_conv``); each
``blockNx`` is one fine-tuning block.

Preprocessing: both families expect ImageNet mean/std-normalised input, which our ``normalize``
layer provides. EfficientNetV2 is built with ``include_preprocessing=False``. EfficientNet (V1)
always inserts ``Rescaling(1/255)`` + ``Normalization`` (+ a ``1/sqrt(std)`` multiply when loading
ImageNet weights, Keras' fix for its stored std); those layers are removed from the graph, since
for the ImageNet checkpoints they compute exactly ``(x/255 - mean)/std``.

EfficientNet-Lite (no SE, ReLU6, fixed stem/head) is in :mod:`edgecnn.arch.efficientnet_lite`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import call_keras_builder, rebuild
from edgecnn.arch._layers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_common,
    classifier_head,
    load_weights_file,
    normalize,
)
from edgecnn.arch.registry import register_model

A = keras.applications


@dataclass(frozen=True)
class EfficientNetVariant:
    builder: Callable[..., Any]  # the keras.applications function
    width: float  # the paper's width coefficient (documentation; Keras applies it)
    depth: float  # depth coefficient
    input_size: int  # resolution the variant was designed and trained at
    dropout: float
    v2: bool  # EfficientNetV2 (fused-MBConv early stages, include_preprocessing switch)
    description: str


EFFICIENTNET_VARIANTS = {
    "efficientnet_b0": EfficientNetVariant(A.EfficientNetB0, 1.0, 1.0, 224, 0.2, False,
                                           "EfficientNet-B0 (MBConv + SE, swish), keras.applications weights."),
    "efficientnet_b1": EfficientNetVariant(A.EfficientNetB1, 1.0, 1.1, 240, 0.2, False,
                                           "EfficientNet-B1 (compound-scaled B0: depth 1.1, 240 px)."),
    "efficientnet_b2": EfficientNetVariant(A.EfficientNetB2, 1.1, 1.2, 260, 0.3, False,
                                           "EfficientNet-B2 (width 1.1, depth 1.2, 260 px)."),
    "efficientnet_b3": EfficientNetVariant(A.EfficientNetB3, 1.2, 1.4, 300, 0.3, False,
                                           "EfficientNet-B3 (width 1.2, depth 1.4, 300 px)."),
    "efficientnetv2_b0": EfficientNetVariant(A.EfficientNetV2B0, 1.0, 1.0, 224, 0.2, True,
                                             "EfficientNetV2-B0 (fused-MBConv stages, faster training)."),
    "efficientnetv2_b1": EfficientNetVariant(A.EfficientNetV2B1, 1.0, 1.1, 240, 0.2, True,
                                             "EfficientNetV2-B1 (depth 1.1, 240 px)."),
}

_ARGS_DOC = """
    Args:
        num_classes: classes of the classifier head.
        input_size: square input side in pixels, >= 32 (default: the variant's design resolution).
        weights: None (random), 'imagenet' (Keras' checkpoint; downloads into ~/.keras/models), or a .h5 path.
        dropout: dropout before the classifier (default: the variant's).

    Returns:
        A model from RGB 0-255 to class probabilities.
"""


def _build(name: str, variant: EfficientNetVariant, *, num_classes: int, input_size: int,
           weights: str | None, dropout: float):
    check_common(name, num_classes, input_size)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalize(inputs, IMAGENET_MEAN, IMAGENET_STD)
    extra = {"include_preprocessing": False} if variant.v2 else {}
    base = call_keras_builder(name, variant.builder, input_tensor=x, include_top=False,
                              weights="imagenet" if weights == "imagenet" else None, **extra)
    model = keras.Model(inputs, classifier_head(base.output, num_classes, dropout), name=name)
    # V1: everything between our normalize and the stem is Keras' own preprocessing; drop it.
    names = [layer.name for layer in model.layers]
    first = names.index("stem_conv_pad") if "stem_conv_pad" in names else names.index("stem_conv")
    drop = names[names.index("normalize") + 1:first]
    if drop:
        model = rebuild(model, {}, drop=drop)
    if weights not in (None, "imagenet"):
        load_weights_file(model, weights)
    return model


def _register(name: str, variant: EfficientNetVariant) -> None:
    def builder(*, num_classes: int = 1000, input_size: int = variant.input_size, weights: str | None = None,
                dropout: float = variant.dropout):
        return _build(name, variant, num_classes=num_classes, input_size=input_size, weights=weights,
                      dropout=dropout)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = variant.description + "\n" + _ARGS_DOC
    register_model(builder, name=name)


for _name, _variant in EFFICIENTNET_VARIANTS.items():
    _register(_name, _variant)

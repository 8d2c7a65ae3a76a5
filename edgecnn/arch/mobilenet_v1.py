"""MobileNetV1 (Howard et al. 2017): depthwise-separable convolutions, width multiplier alpha.

Built with ``keras.applications.MobileNet`` (so ``weights='imagenet'`` gets Keras' checkpoints) on
the output of our ``normalize`` layer, in one flat graph. Keras' MobileNet expects inputs in
[-1, 1] (``preprocess_input`` mode 'tf'), so ``normalize`` maps 0-255 to x/127.5 - 1.

Layers are renamed into blocks for fine-tuning: ``conv1*`` -> ``stem_*``,
``conv_dw_3*`` / ``conv_pw_3*`` / ``conv_pad_3`` -> ``block3_dw*`` / ``block3_pw*`` / ``block3_pad``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import block_names, call_keras_builder, check_alpha, rebuild
from edgecnn.arch._layers import check_common, classifier_head, load_weights_file, normalize
from edgecnn.arch.registry import register_model

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # 0-255 -> [-1, 1], Keras' 'tf' preprocessing


@dataclass(frozen=True)
class ImagenetCheckpoints:
    """What keras.applications publishes for MobileNetV1."""

    alphas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    sizes: tuple[int, ...] = (128, 160, 192, 224)


MOBILENET_V1_IMAGENET = ImagenetCheckpoints()


def _rename(name: str) -> str | None:
    if name.startswith("conv1"):
        return "stem_conv" + name[len("conv1"):]
    m = re.fullmatch(r"conv_(dw|pw|pad)_(\d+)(.*)", name)
    return f"block{m[2]}_{m[1]}{m[3]}" if m else None


@register_model
def mobilenet_v1(*, num_classes: int = 1000, input_size: int = 224, alpha: float = 1.0,
                 weights: str | None = None, dropout: float = 1e-3):
    """MobileNetV1 (depthwise-separable convs, width alpha 0.25-1.0), keras.applications weights.

    Args:
        num_classes: classes of the classifier head.
        input_size: square input side in pixels, >= 32 (ImageNet checkpoints: 128, 160, 192, 224).
        alpha: width multiplier; ImageNet weights exist for 0.25, 0.5, 0.75 and 1.0.
        weights: None (random), 'imagenet' (Keras' checkpoint; downloads into ~/.keras/models), or a .h5 path.
        dropout: dropout before the classifier (Keras' default 1e-3).

    Returns:
        A model from RGB 0-255 to class probabilities.

    Example:
        >>> create_model("mobilenet_v1", num_classes=4, input_size=128, alpha=0.25)  # doctest: +SKIP
    """
    check_common("mobilenet_v1", num_classes, input_size)
    check_alpha("mobilenet_v1", alpha, weights, MOBILENET_V1_IMAGENET.alphas)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalize(inputs, MEAN, STD)
    base = call_keras_builder("mobilenet_v1", keras.applications.MobileNet, input_tensor=x, alpha=alpha,
                              include_top=False, weights="imagenet" if weights == "imagenet" else None)
    model = keras.Model(inputs, classifier_head(base.output, num_classes, dropout), name="mobilenet_v1")
    model = rebuild(model, block_names(model, _rename))
    if weights not in (None, "imagenet"):
        load_weights_file(model, weights)
    return model

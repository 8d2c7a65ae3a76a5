"""Xception (Chollet 2017): Inception taken to the limit, depthwise-separable convolutions + residuals.

Built with ``keras.applications.Xception`` (so ``weights='imagenet'`` gets Keras' checkpoint) on the
output of our ``normalize`` layer, in one flat graph. Keras' Xception expects [-1, 1]
(``preprocess_input`` mode 'tf'): ``normalize`` maps 0-255 to x/127.5 - 1.

Keras names its layers ``block1_conv1`` .. ``block14_sepconv2_act`` (a fine-tuning block each) but
leaves the four strided shortcut convolutions and the twelve ``add`` layers auto-named
(``conv2d_3``, ``add_7``: the suffix depends on what was built before). They are renamed into the
block whose ``add`` they feed: ``block2_conv``, ``block2_bn``, ``block2_add``, ...
"""
from __future__ import annotations

import re

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import block_names, call_keras_builder, rebuild
from edgecnn.arch._layers import check_common, classifier_head, load_weights_file, normalize
from edgecnn.arch.registry import register_model

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # 0-255 -> [-1, 1]
XCEPTION_MIN_INPUT = 71  # Keras' minimum


def _rename(name: str) -> str | None:
    return name if re.match(r"block\d+_", name) else None


@register_model
def xception(*, num_classes: int = 1000, input_size: int = 299, weights: str | None = None, dropout: float = 0.0):
    """Xception (2017): 36 depthwise-separable convs in 14 residual blocks, keras.applications weights.

    Args:
        num_classes: classes of the classifier head.
        input_size: square input side in pixels, >= 71 (the paper's 299).
        weights: None (random), 'imagenet' (Keras' checkpoint; downloads into ~/.keras/models), or a .h5 path.
        dropout: dropout before the classifier (the paper: none for ImageNet).

    Returns:
        A model from RGB 0-255 to class probabilities.
    """
    check_common("xception", num_classes, input_size, min_size=XCEPTION_MIN_INPUT)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalize(inputs, MEAN, STD)
    base = call_keras_builder("xception", keras.applications.Xception, input_tensor=x, include_top=False,
                              weights="imagenet" if weights == "imagenet" else None)
    model = keras.Model(inputs, classifier_head(base.output, num_classes, dropout), name="xception")
    model = rebuild(model, block_names(model, _rename))
    if weights not in (None, "imagenet"):
        load_weights_file(model, weights)
    return model

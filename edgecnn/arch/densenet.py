"""DenseNet-121 (Huang et al. 2017): every layer of a dense block sees the concatenation of all before it.

Built with ``keras.applications.DenseNet121`` (so ``weights='imagenet'`` gets Keras' checkpoint) on
the output of our ``normalize`` layer, in one flat graph. Keras' DenseNet expects torchvision-style
input (``preprocess_input`` mode 'torch': (x/255 - mean)/std with ImageNet mean/std): that is what
``normalize`` computes.

Fine-tuning blocks: Keras' names ``conv2_block3_1_conv`` (dense block 1 = ``conv2``) and
``pool2_conv`` (transition 1 = ``pool2``) already group by the first ``_``; the stem's
``conv1/conv``, ``conv1/bn`` become ``conv1_conv``, ``conv1_bn``, the final ``bn``/``relu`` become
``top_bn``/``top_relu``, and the two auto-named stem paddings join ``conv1``.
"""
from __future__ import annotations

import re

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import block_names, call_keras_builder, rebuild
from edgecnn.arch._layers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_common,
    classifier_head,
    load_weights_file,
    normalize,
)
from edgecnn.arch.registry import register_model


def _rename(name: str) -> str | None:
    if name in ("bn", "relu"):
        return f"top_{name}"
    if name == "pool1":
        return "pool1_pool"
    if re.match(r"(conv|pool)\d", name):
        return name.replace("/", "_")
    return None


@register_model
def densenet121(*, num_classes: int = 1000, input_size: int = 224, weights: str | None = None,
                dropout: float = 0.0):
    """DenseNet-121 (2017): 4 dense blocks (6/12/24/16 layers, growth 32), keras.applications weights.

    Args:
        num_classes: classes of the classifier head.
        input_size: square input side in pixels, >= 32 (the paper's 224).
        weights: None (random), 'imagenet' (Keras' checkpoint; downloads into ~/.keras/models), or a .h5 path.
        dropout: dropout before the classifier (the paper: none for ImageNet).

    Returns:
        A model from RGB 0-255 to class probabilities.
    """
    check_common("densenet121", num_classes, input_size)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalize(inputs, IMAGENET_MEAN, IMAGENET_STD)
    base = call_keras_builder("densenet121", keras.applications.DenseNet121, input_tensor=x, include_top=False,
                              weights="imagenet" if weights == "imagenet" else None)
    model = keras.Model(inputs, classifier_head(base.output, num_classes, dropout), name="densenet121")
    model = rebuild(model, block_names(model, _rename))
    if weights not in (None, "imagenet"):
        load_weights_file(model, weights)
    return model

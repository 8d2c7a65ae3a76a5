"""GoogLeNet / Inception v1 (Szegedy et al. 2014): parallel 1x1, 3x3, 5x5 and pooling branches.

The nine Inception modules are the paper's table 1, as data (:data:`INCEPTION_V1_MODULES`). Every
branch's 1x1 "reduce" convolution shrinks the channels before the expensive 3x3/5x5 one (the
lecture: fewer channels before the "heavy" convolutions); all convolutions are padded ('same', as
the lecture stresses), so the branches concatenate. Differences from the paper, as in torchvision: BatchNorm
after every convolution instead of LRN, no auxiliary classifiers (they only help training).
Unlike torchvision (which uses 3x3 there by mistake) the 5x5 branch is 5x5, as in the paper.

Names follow the Caffe model: ``conv1_7x7``, ``inc3a_1x1``, ``inc3a_3x3reduce``, ``inc3a_3x3``,
``inc3a_5x5reduce``, ``inc3a_5x5``, ``inc3a_pool``, ``inc3a_poolproj``, ``inc3a_concat``;
each module ``incXy`` is a fine-tuning block.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import no_imagenet
from edgecnn.arch._layers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_common,
    classifier_head,
    load_weights_file,
    normalize,
)
from edgecnn.arch.registry import register_model

layers = keras.layers


@dataclass(frozen=True)
class InceptionModule:
    name: str
    b1x1: int
    b3x3_reduce: int
    b3x3: int
    b5x5_reduce: int
    b5x5: int
    pool_proj: int
    pool_before: bool = False  # a 3x3/2 max pooling precedes the module

    @property
    def channels(self) -> int:
        return self.b1x1 + self.b3x3 + self.b5x5 + self.pool_proj


INCEPTION_V1_MODULES = (
    InceptionModule("inc3a", 64, 96, 128, 16, 32, 32),
    InceptionModule("inc3b", 128, 128, 192, 32, 96, 64),
    InceptionModule("inc4a", 192, 96, 208, 16, 48, 64, pool_before=True),
    InceptionModule("inc4b", 160, 112, 224, 24, 64, 64),
    InceptionModule("inc4c", 128, 128, 256, 24, 64, 64),
    InceptionModule("inc4d", 112, 144, 288, 32, 64, 64),
    InceptionModule("inc4e", 256, 160, 320, 32, 128, 128),
    InceptionModule("inc5a", 256, 160, 320, 32, 128, 128, pool_before=True),
    InceptionModule("inc5b", 384, 192, 384, 48, 128, 128),
)


def conv_bn(x, filters: int, kernel: int, name: str, stride: int = 1):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def inception(x, m: InceptionModule):
    """One Inception module: four branches concatenated along channels."""
    b1 = conv_bn(x, m.b1x1, 1, f"{m.name}_1x1")
    b2 = conv_bn(conv_bn(x, m.b3x3_reduce, 1, f"{m.name}_3x3reduce"), m.b3x3, 3, f"{m.name}_3x3")
    b3 = conv_bn(conv_bn(x, m.b5x5_reduce, 1, f"{m.name}_5x5reduce"), m.b5x5, 5, f"{m.name}_5x5")
    b4 = layers.MaxPooling2D(3, 1, padding="same", name=f"{m.name}_pool")(x)
    b4 = conv_bn(b4, m.pool_proj, 1, f"{m.name}_poolproj")
    return layers.Concatenate(name=f"{m.name}_concat")([b1, b2, b3, b4])


def googlenet_backbone(x):
    x = conv_bn(x, 64, 7, "conv1_7x7", stride=2)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    x = conv_bn(x, 64, 1, "conv2_3x3reduce")
    x = conv_bn(x, 192, 3, "conv2_3x3")
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool2")(x)
    for m in INCEPTION_V1_MODULES:
        if m.pool_before:
            x = layers.MaxPooling2D(3, 2, padding="same", name=f"{m.name}_pool0")(x)
        x = inception(x, m)
    return x


@register_model
def googlenet(*, num_classes: int = 1000, input_size: int = 224, weights: str | None = None, dropout: float = 0.4):
    """GoogLeNet / Inception v1 (2014): 9 Inception modules (1x1/3x3/5x5/pool branches), BatchNorm.

    Args:
        num_classes: classes of the classifier head.
        input_size: square input side in pixels, >= 32 (the paper's 224).
        weights: None (random) or a .h5 weights file of this model.
        dropout: dropout before the classifier (the paper's 0.4).

    Returns:
        A model from RGB 0-255 to class probabilities.
    """
    check_common("googlenet", num_classes, input_size)
    if weights == "imagenet":
        raise no_imagenet("googlenet")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = googlenet_backbone(normalize(inputs, IMAGENET_MEAN, IMAGENET_STD))
    model = keras.Model(inputs, classifier_head(x, num_classes, dropout), name="googlenet")
    if weights is not None:
        load_weights_file(model, weights)
    return model

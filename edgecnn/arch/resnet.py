"""ResNet (He et al. 2015): residual connections; ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks).

Each row of :data:`RESNET_VARIANTS` (the paper's table 1) is registered as a model.

* ``resnet18`` / ``resnet34``: built here in torchvision's layout (3x3 convolutions without bias,
  BatchNorm epsilon 1e-5, symmetric padding before stride-2 convolutions), ImageNet mean/std
  normalisation. No ImageNet weights ship for them.
* ``resnet50``: ``keras.applications.ResNet50``, the paper's v1 bottleneck (stride 2 in the first
  1x1 convolution of a stage: 3.9 G multiply-adds at 224 px, the paper's 3.8 G; torchvision's
  "v1.5" moves the stride to the 3x3 and costs 4.1 G). Keras' weights come from Caffe (BGR, ImageNet
  mean subtracted, no scaling): ``normalize`` subtracts the mean in RGB order and the first
  convolution's kernel is flipped to RGB when ``weights='imagenet'`` is loaded.

All three use Keras' names (``conv1_conv``, ``conv3_block2_1_conv``, ``conv3_block2_out``): a
fine-tuning block is a stage (``conv2`` .. ``conv5``), as torchvision's ``layer1`` .. ``layer4``.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import call_keras_builder, flip_rgb_bgr, no_imagenet
from edgecnn.arch._layers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_common,
    classifier_head,
    load_weights_file,
    normalize,
)
from edgecnn.arch.registry import register_model
from edgecnn.arch.vgg import CAFFE_MEAN, CAFFE_STD

layers = keras.layers
BN_EPS, BN_MOMENTUM = 1e-5, 0.9


@dataclass(frozen=True)
class ResNetVariant:
    block: str  # "basic" (two 3x3) or "bottleneck" (1x1-3x3-1x1, 4x expansion)
    repeats: tuple[int, int, int, int]  # blocks per stage conv2..conv5
    keras: bool  # built with keras.applications (ImageNet weights available)


RESNET_VARIANTS = {
    "resnet18": ResNetVariant("basic", (2, 2, 2, 2), False),
    "resnet34": ResNetVariant("basic", (3, 4, 6, 3), False),
    "resnet50": ResNetVariant("bottleneck", (3, 4, 6, 3), True),
}
STAGE_WIDTHS = (64, 128, 256, 512)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True):
    if stride > 1 and kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPS, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def basic_block(x, filters: int, stride: int, name: str):
    """Two 3x3 convolutions and an identity (or 1x1 projection) shortcut."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_0", relu=False)
    x = _conv_bn(x, filters, 3, stride, f"{name}_1")
    x = _conv_bn(x, filters, 3, 1, f"{name}_2", relu=False)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


def resnet_basic_backbone(x, repeats: tuple[int, ...]):
    x = _conv_bn(x, 64, 7, 2, "conv1")
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, 2, name="pool1_pool")(x)
    for stage, (n, width) in enumerate(zip(repeats, STAGE_WIDTHS), start=2):
        for b in range(1, n + 1):
            x = basic_block(x, width, 2 if b == 1 and stage > 2 else 1, f"conv{stage}_block{b}")
    return x


_ARGS_DOC = """
    Args:
        num_classes: classes of the classifier head.
        input_size: square input side in pixels, >= 32 (the paper's 224).
        weights: None (random), 'imagenet' (resnet50 only: Keras' checkpoint, downloads into
            ~/.keras/models), or a .h5 weights file of this model.
        dropout: dropout before the classifier (the paper uses none).

    Returns:
        A model from RGB 0-255 to class probabilities.
"""


def _register(name: str, v: ResNetVariant) -> None:
    def builder(*, num_classes: int = 1000, input_size: int = 224, weights: str | None = None,
                dropout: float = 0.0):
        check_common(name, num_classes, input_size)
        inputs = keras.Input((input_size, input_size, 3), name="image")
        if v.keras:
            x = normalize(inputs, CAFFE_MEAN, CAFFE_STD)
            base = call_keras_builder(name, keras.applications.ResNet50, input_tensor=x, include_top=False,
                                      weights="imagenet" if weights == "imagenet" else None)
            x = base.output
        else:
            if weights == "imagenet":
                raise no_imagenet(name, "resnet50 (Keras)")
            x = resnet_basic_backbone(normalize(inputs, IMAGENET_MEAN, IMAGENET_STD), v.repeats)
        model = keras.Model(inputs, classifier_head(x, num_classes, dropout), name=name)
        if weights == "imagenet":
            flip_rgb_bgr(model, "conv1_conv")
        elif weights is not None:
            load_weights_file(model, weights)
        return model

    depth = 2 * sum(v.repeats) + 2 if v.block == "basic" else 3 * sum(v.repeats) + 2
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"ResNet-{depth} ({v.block} residual blocks {list(v.repeats)})"
                       f"{', keras.applications weights' if v.keras else ', torchvision layout'}.\n" + _ARGS_DOC)
    register_model(builder, name=name)


for _name, _variant in RESNET_VARIANTS.items():
    _register(_name, _variant)

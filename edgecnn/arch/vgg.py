"""VGG (Simonyan & Zisserman 2014): only 3x3 convolutions, 5 stages, max pooling, FC-4096 x2.

Each row of :data:`VGG_CONFIGS` (the paper's table 1, configurations A and D) is registered as a
model. Layer names are Keras' (``block3_conv2``, ``block3_pool``), so ``weights='imagenet'`` for
vgg16 copies ``keras.applications.VGG16``'s convolutional weights by name. Keras' VGG weights come
from Caffe: BGR input with the ImageNet mean subtracted and no scaling. ``normalize`` subtracts the
mean (in RGB order) and the first convolution's kernel is flipped from BGR to RGB when those
weights are loaded, so the model takes RGB like every other.

The two FC-4096 layers are convolutions (``fc1`` covers the whole 7x7 map at 224 px, ``fc2`` is
1x1): the paper's parameters (138 M for VGG16), fully convolutional. ``fc_units=0`` drops them
(global pooling straight into the classifier: 15 M parameters, the usual transfer-learning head;
with ImageNet weights the FC layers are pretrained only at fc_units=4096 and input >= 224, where
Keras' fc1 kernel reshapes exactly into the 7x7 convolution).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import call_keras_builder, copy_weights_by_name, flip_rgb_bgr, no_imagenet
from edgecnn.arch._layers import check_common, classifier_head, load_weights_file, normalize
from edgecnn.arch.registry import register_model
from edgecnn.errors import EdgecnnError

layers = keras.layers
log = logging.getLogger(__name__)
KERAS_FC = 4096  # width of the FC layers in Keras' ImageNet checkpoint
# Caffe's ImageNet mean (RGB order, 0-1 units) and no scaling: normalize computes x - mean in 0-255.
CAFFE_MEAN, CAFFE_STD = (123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255, 1 / 255, 1 / 255)


@dataclass(frozen=True)
class VGGConfig:
    stages: tuple[tuple[int, int], ...]  # (3x3 convolutions, channels) per stage; a 2x2 max-pool ends each
    paper: str  # the configuration letter in the paper's table 1
    keras_imagenet: bool  # keras.applications has ImageNet weights for it


VGG_CONFIGS = {
    "vgg11": VGGConfig(((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)), "A", False),
    "vgg16": VGGConfig(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), "D", True),
}


def load_keras_vgg16(model, src) -> None:
    """Copy ``keras.applications.VGG16`` weights: convolutions by name, BGR -> RGB, and with a top, fc1/fc2.

    Keras' fc1 is a Dense on the flattened 7x7x512 map; flattening NHWC is row-major (h, w, c), so its
    (25088, 4096) kernel reshapes exactly into our 7x7 convolution's (7, 7, 512, 4096).
    """
    copy_weights_by_name(model, src, skip=("fc1", "fc2"))
    flip_rgb_bgr(model, "block1_conv1")
    names = {layer.name for layer in src.layers}
    if "fc1" in names and "fc2" in names:
        for layer in ("fc1", "fc2"):
            kernel, bias = src.get_layer(layer).get_weights()
            ours = model.get_layer(layer)
            ours.set_weights([kernel.reshape(ours.kernel.shape), bias])


def vgg_backbone(x, config: VGGConfig):
    for i, (convs, channels) in enumerate(config.stages, start=1):
        for j in range(1, convs + 1):
            x = layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"block{i}_conv{j}")(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    return x


_ARGS_DOC = """
    Args:
        num_classes: classes of the output layer.
        input_size: square input side in pixels, >= 32 (the paper's 224).
        weights: None (random), 'imagenet' (vgg16: Keras' checkpoint, downloads into ~/.keras/models;
            fc1/fc2 are pretrained too when fc_units=4096 and input_size >= 224), or a .h5 weights file.
        fc_units: width of the two FC layers (the paper's 4096); 0 = none (GAP -> classifier).
        dropout: dropout after each FC layer (the paper's 0.5).

    Returns:
        A model from RGB 0-255 to class probabilities.
"""


def _register(name: str, config: VGGConfig) -> None:
    def builder(*, num_classes: int = 1000, input_size: int = 224, weights: str | None = None,
                fc_units: int = 4096, dropout: float = 0.5):
        check_common(name, num_classes, input_size)
        if not isinstance(fc_units, int) or fc_units < 0:
            raise EdgecnnError(f"{name}: fc_units must be an integer >= 0. Received fc_units={fc_units!r}.")
        if weights == "imagenet" and not config.keras_imagenet:
            raise no_imagenet(name, "vgg16")
        inputs = keras.Input((input_size, input_size, 3), name="image")
        x = vgg_backbone(normalize(inputs, CAFFE_MEAN, CAFFE_STD), config)
        if fc_units:
            x = layers.Conv2D(fc_units, min(7, x.shape[1]), activation="relu", name="fc1")(x)
            x = layers.Dropout(dropout, name="fc1_dropout")(x)
            x = layers.Conv2D(fc_units, 1, activation="relu", name="fc2")(x)
        model = keras.Model(inputs, classifier_head(x, num_classes, dropout), name=name)
        if weights == "imagenet":
            with_top = fc_units == KERAS_FC and model.get_layer("fc1").kernel_size == (7, 7)
            if fc_units and not with_top:
                log.warning("%s: fc1/fc2 start random (Keras has ImageNet FC weights for fc_units=%d and "
                            "input_size >= 224 only); fc_units=0 is the usual transfer-learning head.", name, KERAS_FC)
            src = call_keras_builder(name, keras.applications.VGG16, include_top=with_top, weights="imagenet",
                                     **({} if with_top else {"input_shape": (input_size, input_size, 3)}))
            load_keras_vgg16(model, src)
        elif weights is not None:
            load_weights_file(model, weights)
        return model

    builder.__name__ = builder.__qualname__ = name
    depth = sum(n for n, _ in config.stages) + 3
    builder.__doc__ = (f"VGG{depth} (configuration {config.paper}): 3x3 convs only, max pooling, FC-4096 x2 "
                       "(as 7x7/1x1 convs).\n" + _ARGS_DOC)
    register_model(builder, name=name)


for _name, _config in VGG_CONFIGS.items():
    _register(_name, _config)

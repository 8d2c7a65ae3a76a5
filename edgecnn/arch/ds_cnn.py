"""DS-CNN from "Hello Edge: Keyword Spotting on Microcontrollers" (Zhang et al. 2017), for images.

The original reads a 49x10 MFCC map: one convolution (10x4 kernel) and a few depthwise-separable
blocks of the same width, then average pooling and a fully connected layer. The S/M/L rows of
:data:`DS_CNN_SIZES` are the configurations of ARM's ML-KWS-for-MCU repository (widths 64/172/276,
4/4/5 separable blocks, the first block of M and L at stride 2). Adapted to images: a square 5x5
stem at stride 2 (the audio stem's 10x4 kernel covered a large part of its small input), 'same'
padding, BatchNorm + ReLU after every convolution, RGB 0-255 input normalised in the graph.

Names: ``stem_conv``, ``ds1_dw``, ``ds1_pw``, ... (each ``dsN`` is a fine-tuning block).
"""
from __future__ import annotations

from dataclasses import dataclass

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import no_imagenet
from edgecnn.arch._layers import check_common, classifier_head, load_weights_file, normalize
from edgecnn.arch.registry import register_model
from edgecnn.errors import EdgecnnError, did_you_mean

layers = keras.layers


@dataclass(frozen=True)
class DSCNNSize:
    width: int  # channels of the stem and of every separable block
    strides: tuple[int, ...]  # one per separable block
    stem_kernel: int = 5
    stem_stride: int = 2


DS_CNN_SIZES = {
    "s": DSCNNSize(64, (1, 1, 1, 1)),
    "m": DSCNNSize(172, (2, 1, 1, 1)),
    "l": DSCNNSize(276, (2, 1, 1, 1, 1)),
}


def _conv_bn_relu(x, layer, name: str):
    x = layer(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


@register_model
def ds_cnn(*, num_classes: int = 10, input_size: int = 64, size: str = "s", weights: str | None = None,
           dropout: float = 0.2):
    """DS-CNN ("Hello Edge" keyword-spotting net, S/M/L) adapted to images: microcontroller-sized.

    Args:
        num_classes: classes of the classifier head.
        input_size: square input side in pixels, >= 32.
        size: 's' (64 channels, ~26 k parameters with 10 classes), 'm' (172) or 'l' (276), as in the paper.
        weights: None (random) or a .h5 weights file of this model.
        dropout: dropout before the classifier.

    Returns:
        A model from RGB 0-255 to class probabilities.
    """
    check_common("ds_cnn", num_classes, input_size)
    if size not in DS_CNN_SIZES:
        raise EdgecnnError(f"ds_cnn: size must be one of {sorted(DS_CNN_SIZES)}. Received size={size!r}."
                           f"{did_you_mean(str(size), DS_CNN_SIZES)}")
    if weights == "imagenet":
        raise no_imagenet("ds_cnn")
    spec = DS_CNN_SIZES[size]
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalize(inputs)
    x = _conv_bn_relu(x, layers.Conv2D(spec.width, spec.stem_kernel, spec.stem_stride, padding="same",
                                       use_bias=False, name="stem_conv"), "stem")
    for i, stride in enumerate(spec.strides, start=1):
        x = _conv_bn_relu(x, layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False, name=f"ds{i}_dw"),
                          f"ds{i}_dw")
        x = _conv_bn_relu(x, layers.Conv2D(spec.width, 1, use_bias=False, name=f"ds{i}_pw"), f"ds{i}_pw")
    model = keras.Model(inputs, classifier_head(x, num_classes, dropout), name="ds_cnn")
    if weights is not None:
        load_weights_file(model, weights)
    return model

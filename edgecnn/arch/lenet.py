"""LeNet-5 (LeCun et al. 1998), the course's first CNN: about 60 000 parameters.

Layers as in the paper, by its labels: C1 (6 maps 5x5) -> S2 (2x2 average pooling) -> C3 (16 maps
5x5) -> S4 -> C5 (120 maps 5x5: at 32x32 input a fully connected layer over the 5x5 map) -> F6 (84)
-> output. tanh activations and average-pooling subsampling as in the paper; the paper's partial
C3 connection table and RBF output are replaced by full connections and the standard softmax head.
F6 is a 1x1 convolution, so the net is fully convolutional (larger inputs give a feature map that
the head averages). Takes RGB (C1 then has 3x as many weights as the paper's grey-level C1).
"""
from __future__ import annotations

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import no_imagenet
from edgecnn.arch._layers import check_common, classifier_head, load_weights_file, normalize
from edgecnn.arch.registry import register_model

layers = keras.layers

# (name, maps, kernel) of the convolutions; an average pooling follows C1 and C3.
LENET5_CONVS = (("c1", 6, 5), ("c3", 16, 5), ("c5", 120, 5), ("f6", 84, 1))


@register_model
def lenet5(*, num_classes: int = 10, input_size: int = 32, weights: str | None = None):
    """LeNet-5 (1998): C1-S2-C3-S4-C5-F6, tanh, average pooling; ~62 k parameters at 32x32 RGB.

    Args:
        num_classes: classes of the output layer.
        input_size: square input side in pixels, >= 32 (the paper's 32x32).
        weights: None (random) or a .h5 weights file of this model.

    Returns:
        A model from RGB 0-255 to class probabilities.
    """
    check_common("lenet5", num_classes, input_size)
    if weights == "imagenet":
        raise no_imagenet("lenet5")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalize(inputs)
    for name, maps, kernel in LENET5_CONVS:
        x = layers.Conv2D(maps, kernel, padding="valid", activation="tanh", name=name)(x)
        if name in ("c1", "c3"):
            x = layers.AveragePooling2D(2, name={"c1": "s2", "c3": "s4"}[name])(x)
    model = keras.Model(inputs, classifier_head(x, num_classes, dropout=0.0), name="lenet5")
    if weights is not None:
        load_weights_file(model, weights)
    return model

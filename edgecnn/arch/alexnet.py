"""AlexNet (Krizhevsky et al. 2012), single-tower, as in the course's table.

The lecture's table (227x227x3 input)::

    C1 conv 96 11x11/4 valid -> 55x55     S2 max 3x3/2 -> 27x27
    C3 conv 256 5x5 same     -> 27x27     S4 max 3x3/2 -> 13x13
    C5 conv 384 3x3 same, C6 conv 384 3x3 same, C7 conv 256 3x3 same -> 13x13
    F8 fc 4096, F9 fc 4096, out fc 1000 softmax

Layer names are the paper's (``conv1`` = C1, ``pool1`` = S2, ``conv2`` = C3, ``pool2`` = S4,
``conv3..5`` = C5..C7, ``fc6`` = F8, ``fc7`` = F9, ``classifier`` = out). The paper's third max
pooling after conv5 (13 -> 6), which the table leaves out, is kept (``pool5``): F8 reads the
6x6x256 map. F8/F9 are convolutions (F8's kernel covers the whole 6x6 map, F9 is 1x1), which is
the same computation as fully connected layers, with the same parameters, but keeps the net fully
convolutional. LRN and the two-GPU split are left out, as in torchvision; ReLU, dropout 0.5 before
F8 and F9. About 62 M parameters at 227 px (the paper's two-tower net: 61 M).

``fc_units`` shrinks F8/F9 (4096 in the paper) for small experiments and tests.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgecnn._tf import keras
from edgecnn.arch._keras_apps import no_imagenet
from edgecnn.arch._layers import check_common, classifier_head, load_weights_file, normalize
from edgecnn.arch.registry import register_model
from edgecnn.errors import EdgecnnError

layers = keras.layers


@dataclass(frozen=True)
class ConvSpec:
    name: str
    maps: int
    kernel: int
    stride: int
    padding: str
    pool_after: str | None = None  # name of a 3x3/2 max pooling that follows


ALEXNET_CONVS = (
    ConvSpec("conv1", 96, 11, 4, "valid", "pool1"),
    ConvSpec("conv2", 256, 5, 1, "same", "pool2"),
    ConvSpec("conv3", 384, 3, 1, "same"),
    ConvSpec("conv4", 384, 3, 1, "same"),
    ConvSpec("conv5", 256, 3, 1, "same", "pool5"),
)
ALEXNET_MIN_INPUT = 67  # the smallest input that still leaves a 1x1 map after pool5


@register_model
def alexnet(*, num_classes: int = 1000, input_size: int = 227, weights: str | None = None, fc_units: int = 4096,
            dropout: float = 0.5):
    """AlexNet (2012) as in the lecture's table: 5 convs (11x11/4 first), 3 max-pools, FC 4096-4096.

    Args:
        num_classes: classes of the output layer.
        input_size: square input side in pixels, >= 67 (the paper's 227).
        weights: None (random) or a .h5 weights file of this model.
        fc_units: width of F8 and F9 (the paper's 4096); smaller for experiments.
        dropout: dropout before F8 and F9 (the paper's 0.5).

    Returns:
        A model from RGB 0-255 to class probabilities.
    """
    check_common("alexnet", num_classes, input_size, min_size=ALEXNET_MIN_INPUT)
    if weights == "imagenet":
        raise no_imagenet("alexnet")
    if not isinstance(fc_units, int) or fc_units < 1:
        raise EdgecnnError(f"alexnet: fc_units must be an integer >= 1. Received fc_units={fc_units!r}.")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalize(inputs)
    for c in ALEXNET_CONVS:
        x = layers.Conv2D(c.maps, c.kernel, c.stride, padding=c.padding, name=c.name)(x)
        x = layers.ReLU(name=f"{c.name}_relu")(x)
        if c.pool_after:
            x = layers.MaxPooling2D(3, 2, name=c.pool_after)(x)
    for name, kernel in (("fc6", min(6, x.shape[1])), ("fc7", 1)):
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
        x = layers.Conv2D(fc_units, kernel, name=name)(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
    model = keras.Model(inputs, classifier_head(x, num_classes, dropout=0.0), name="alexnet")
    if weights is not None:
        load_weights_file(model, weights)
    return model

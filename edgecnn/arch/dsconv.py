"""Depthwise-separable CNN in the MobileNetV1 layout, sized for microcontrollers.

At alpha 0.25 and 96x96 input it has ~0.2 M parameters and ~7 M MACs: the configuration
MLPerf Tiny's visual-wake-words benchmark runs on Cortex-M boards.
"""
from __future__ import annotations

from edgecnn._tf import keras
from edgecnn.arch._layers import check_common, classifier_head, load_weights_file, normalize
from edgecnn.arch.mobilenet import conv_bn
from edgecnn.arch.registry import register_model
from edgecnn.errors import EdgecnnError

# (output channels, stride) of each depthwise-separable block: MobileNetV1's table 1.
DSCONV_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                 (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

DSCONV_LAYERS = ("stem",) + tuple(f"ds{i}_" for i in range(1, len(DSCONV_BLOCKS) + 1))


@register_model
def dsconv(*, num_classes: int = 2, input_size: int = 96, alpha: float = 0.25,
           depth: int = len(DSCONV_BLOCKS), weights: str | None = None, dropout: float = 0.1):
    """Depthwise-separable net (MobileNetV1 blocks, width alpha), microcontroller-sized at 0.25/96 px.

    Args:
        num_classes: classes of the head.
        input_size: square input side in pixels, >= 32.
        alpha: width multiplier (0.25 .. 1.0 typical).
        depth: how many of MobileNetV1's 13 separable blocks to keep (fewer = smaller, faster).
        weights: None or a .h5 weights file of the same backbone.
        dropout: dropout before the classifier.
    """
    check_common("dsconv", num_classes, input_size)
    if not 1 <= depth <= len(DSCONV_BLOCKS):
        raise EdgecnnError(f"dsconv: depth must be in 1..{len(DSCONV_BLOCKS)}. Received depth={depth!r}.")
    if alpha <= 0:
        raise EdgecnnError(f"dsconv: alpha must be > 0. Received alpha={alpha!r}.")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalize(inputs)
    x = conv_bn(x, max(8, int(32 * alpha)), 3, 2, "stem")
    for i, (channels, stride) in enumerate(DSCONV_BLOCKS[:depth], start=1):
        x = conv_bn(x, None, 3, stride, f"ds{i}_dw", depthwise=True)
        x = conv_bn(x, max(8, int(channels * alpha)), 1, 1, f"ds{i}_pw")
    x = classifier_head(x, num_classes, dropout)
    model = keras.Model(inputs, x, name="dsconv")
    if weights is not None:
        load_weights_file(model, weights)
    return model

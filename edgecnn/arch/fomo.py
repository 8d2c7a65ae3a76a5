"""FOMO-style centroid detectors for microcontrollers: an object heat map at 1/8 of the input, one class per cell.

FOMO ("Faster Objects, More Objects", Edge Impulse, 2022; docs.edgeimpulse.com, "FOMO: Object detection for
constrained devices") turns a classifier into a detector without boxes: the backbone is cut where its features
are at stride 8 (Edge Impulse cuts MobileNetV2 at ``block_6_expand_relu``, so a 96x96 input gives a 12x12
map), a 1x1 convolution (32 filters) and a 1x1 classifier give each cell K + 1 logits, background first, and
a softmax per cell says which object's centre, if any, lies in that cell. An object is where its cells fire;
its centroid is theirs (``edgecnn.detect.centroid``). No anchors, no box regression, no NMS: the cost is the
truncated backbone's.

Here the backbone is one of ``edgecnn.arch.mcu_backbones``' truncated ImageNet nets, cut after its last
stride-8 block (MobileNetV2 1.0: blocks 1-6, 32 channels; EfficientNet-Lite0: blocks 1a-3b, 40 channels),
with ``expand`` to thin the expansion layers that set the TFLite Micro arena. The output follows every
detector's contract (``edgecnn.arch.detection``): one tensor ``detections`` (N, G * G, 4 + K) through
:class:`~edgecnn.arch.detection.DetectionOutput` ``(kind="centroid")``, each cell's box being the cell itself,
so evaluation, the int8 chooser, the service and every exporter treat it like the other detectors. Grey input
(``data.channels: 1``) rebuilds the first convolution with one channel, as for the classifiers.

Example:
    >>> m = create_model("fomo_mobilenet_v2", num_classes=3, input_size=96, weights="imagenet")  # doctest: +SKIP
    >>> m.output_shape                                                                        # doctest: +SKIP
    (None, 144, 7)
"""
from __future__ import annotations

from collections.abc import Sequence

from edgecnn._tf import keras
from edgecnn.arch.detection import HEAD_PREFIX, DetectionOutput
from edgecnn.arch.registry import create_model, register_model
from edgecnn.errors import EdgecnnError

__all__ = ["FOMO_STRIDE", "FOMO_CUTS", "fomo_mobilenet_v2", "fomo_efficientnet_lite0"]

layers = keras.layers
FOMO_STRIDE = 8
FOMO_CUTS: dict[str, tuple[int, str]] = {
    "mobilenet_v2": (6, "block6_add"),          # blocks 1-6: stride 8, 32 channels
    "efficientnet_lite0": (5, "block3b_add"),   # blocks 1a, 2a, 2b, 3a, 3b: stride 8, 40 channels
}
"""Per backbone family: the blocks of its MCU builder kept, and the stride-8 layer the head reads."""


def _fomo(family: str, *, num_classes: int, input_size: int, weights: str | None,
          expand: float | Sequence[float], head_channels: int):
    name = f"fomo_{family}"
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise EdgecnnError(f"{name}: num_classes (object classes, no background) must be an integer >= 1. "
                           f"Received num_classes={num_classes!r}.")
    if not isinstance(input_size, int) or input_size < 32 or input_size % FOMO_STRIDE:
        raise EdgecnnError(f"{name}: input_size must be a multiple of {FOMO_STRIDE}, at least 32 (one cell per "
                           f"{FOMO_STRIDE}x{FOMO_STRIDE} pixels). Received input_size={input_size!r}; use 96.")
    if not isinstance(head_channels, int) or head_channels < 1:
        raise EdgecnnError(f"{name}: head_channels must be an integer >= 1 (FOMO uses 32). "
                           f"Received head_channels={head_channels!r}.")
    blocks, cut = FOMO_CUTS[family]
    clf = create_model(f"{family}_mcu", num_classes=2, input_size=input_size, blocks=blocks, expand=expand,
                       weights=weights, dropout=0.0)
    x = layers.Conv2D(head_channels, 1, name=f"{HEAD_PREFIX}fomo_conv")(clf.get_layer(cut).output)
    x = layers.ReLU(name=f"{HEAD_PREFIX}fomo_relu")(x)
    logits = layers.Conv2D(num_classes + 1, 1, name=f"{HEAD_PREFIX}logits")(x)   # background first
    # the cell count is spelt out: TFLite Micro's RESHAPE reads the stored shape, where a -1 would stay 1
    cells = (input_size // FOMO_STRIDE) ** 2
    raw = layers.Reshape((cells, num_classes + 1), name=f"{HEAD_PREFIX}raw")(logits)
    out = DetectionOutput("centroid", num_classes, input_size, stride=FOMO_STRIDE, name="detections")(raw)
    return keras.Model(clf.input, out, name=name)


_ARGS = """
    Args:
        num_classes: object classes (no background; the bundled defect set: 3).
        input_size: square input side in pixels, a multiple of 8 (FOMO's 96 gives a 12x12 map).
        weights: None (random) or 'imagenet' (the backbone's offline ImageNet weights, sliced).
        expand: share of each kept block's expansion channels kept (1.0 = all; see mcu_backbones).
        head_channels: filters of the 1x1 convolution before the per-cell classifier (FOMO: 32)."""


@register_model(task="detect")
def fomo_mobilenet_v2(*, num_classes: int = 3, input_size: int = 96, weights: str | None = None,
                      expand: float | list[float] = 1.0, head_channels: int = 32):
    """FOMO centroid detector over MobileNetV2 1.0's first 6 blocks (stride 8), for microcontrollers."""
    return _fomo("mobilenet_v2", num_classes=num_classes, input_size=input_size, weights=weights, expand=expand,
                 head_channels=head_channels)


@register_model(task="detect")
def fomo_efficientnet_lite0(*, num_classes: int = 3, input_size: int = 96, weights: str | None = None,
                            expand: float | list[float] = 1.0, head_channels: int = 32):
    """FOMO centroid detector over EfficientNet-Lite0's first 5 blocks (stride 8), for microcontrollers."""
    return _fomo("efficientnet_lite0", num_classes=num_classes, input_size=input_size, weights=weights,
                 expand=expand, head_channels=head_channels)


for _fn in (fomo_mobilenet_v2, fomo_efficientnet_lite0):
    _fn.__doc__ = (_fn.__doc__ or "") + _ARGS

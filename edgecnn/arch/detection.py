"""Detection builders: boxes and class scores for every anchor or grid cell, over the offline ImageNet encoders.

Two heads, each named after its paper:

* ``ssdlite_*`` -- SSDLite (Sandler et al. 2018, "MobileNetV2", section 6.3, over SSD: Liu et al. 2016):
  depthwise-separable predictors on the encoder's stride-8, 16 and 32 features plus one extra stride-64
  layer; at each cell, anchors of one scale per level and aspect ratios 1, 2, 1/2, 4, 1/4; per anchor,
  K + 1 class logits (background first) and 4 box offsets in SSD's coding (centre offsets over the
  anchor's size / 0.1, log size ratios / 0.2). Trained with softmax cross-entropy over hard-mined negatives
  (3 per positive) and smooth L1 on the matched anchors (``edgecnn.detect.train``).
* ``centernet_*`` -- anchor-free, CenterNet (Zhou et al. 2019, "Objects as Points"): a light top-down path
  (1x1 lateral convolutions, x2 upsampling, add) brings the stride-32 and 16 features to stride 8, where each
  cell predicts K centre-heatmap logits, the box size (log of size / stride) and the centre's offset in the
  cell. Trained with the paper's penalty-reduced focal loss on Gaussian heatmaps and L1 on size and offset.

Every model takes RGB 0-255 (normalisation inside, like the classifiers) and ends in one output,
``detections`` (N, A, 4 + K): per anchor or cell, the box [x0, y0, x1, y1] as a fraction of the input side
(clipped to [0, 1]) and K class probabilities. One output keeps every runtime's answer in one known
layout (no output order to guess after conversion); boxes and scores share a [0, 1] range, so one int8
scale serves both (1/255 of the side: half a pixel at 128 px). Class-wise NMS runs after the graph, in one
numpy function (``edgecnn.detect.boxes.postprocess``) that evaluation, ``predict`` and the service share.

The raw head (before decoding) is the layer ``det_raw``: training fits it, the decode layer
(:class:`DetectionOutput`) is fixed arithmetic. Head layers' names start with ``det_``.
"""
from __future__ import annotations

import math

import numpy as np

from edgecnn._tf import keras, tf
from edgecnn.arch.registry import create_model, register_model
from edgecnn.errors import EdgecnnError

layers = keras.layers
HEAD_PREFIX = "det_"
VARIANCES = (0.1, 0.1, 0.2, 0.2)   # SSD's box coding (Liu et al. 2016)
ASPECTS = (1.0, 2.0, 0.5, 4.0, 0.25)
SSD_STRIDES = (8, 16, 32, 64)
CENTERNET_STRIDE = 8
OUTPUT_STRIDE = 32

MOBILENET_V2_TAPS = {8: "block6_add", 16: "block13_add", 32: "block17_project_bn"}
EFFICIENTNET_LITE0_TAPS = {8: "block3b_add", 16: "block5c_add", 32: "block7a_project_bn"}

_register = keras.utils.register_keras_serializable(package="edgecnn_detect")


def ssd_anchors(input_size: int, strides=SSD_STRIDES, aspects=ASPECTS) -> np.ndarray:
    """(A, 4) anchors [cx, cy, w, h] in pixels, in the head's order (level, row, column, aspect): at stride s
    the scale is 2 s (16 px cells of stride 8 hold 16 px objects), one anchor per aspect ratio."""
    out = []
    for s in strides:
        n = math.ceil(input_size / s)
        scale = 2.0 * s
        for i in range(n):
            for j in range(n):
                cx, cy = (j + 0.5) * input_size / n, (i + 0.5) * input_size / n
                out += [[cx, cy, scale * math.sqrt(a), scale / math.sqrt(a)] for a in aspects]
    return np.asarray(out, np.float32)


def centernet_grid(input_size: int, stride: int = CENTERNET_STRIDE) -> int:
    """Cells per side of the CenterNet output grid."""
    return math.ceil(input_size / stride)


@_register
class DetectionOutput(keras.layers.Layer):
    """Decodes the raw head into ``detections`` (N, A, 4 + K): boxes as fractions of the input side, clipped
    to [0, 1], then class probabilities. Fixed arithmetic (no weights); ``kind`` is ``ssd``, ``centernet`` or
    ``centroid``.

    ssd: raw (N, A, K + 1 + 4) = logits (background first), offsets in SSD's coding over ``anchors``.
    centernet: raw (N, G * G, K + 4) = heatmap logits, log(size / stride), centre offset logits (sigmoid).
    centroid: raw (N, G * G, K + 1) = FOMO's per-cell logits (background first); each cell's box is the cell
    itself, [j, i, j + 1, i + 1] * stride / input side, and its K probabilities are softmax[..., 1:].
    """

    def __init__(self, kind: str, num_classes: int, input_size: int, anchors=None, stride: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.num_classes, self.input_size = kind, int(num_classes), int(input_size)
        self.anchors = None if anchors is None else np.asarray(anchors, np.float32).tolist()
        self.stride = int(stride)

    def call(self, raw):
        k, side = self.num_classes, float(self.input_size)
        if self.kind == "ssd":
            anchors = tf.constant(self.anchors, tf.float32)
            probs = tf.nn.softmax(raw[..., :k + 1], axis=-1)[..., 1:]
            d = raw[..., k + 1:]
            cxy = anchors[:, :2] + d[..., :2] * VARIANCES[0] * anchors[:, 2:]
            wh = anchors[:, 2:] * tf.exp(tf.minimum(d[..., 2:] * VARIANCES[2], 4.0))
        elif self.kind == "centroid":   # the cell is the box; "+ 0 * logits" gives it the batch dimension
            g = centernet_grid(self.input_size, self.stride)
            ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
            centres = tf.constant((np.stack([xs.ravel(), ys.ravel()], -1) + 0.5).astype(np.float32) * self.stride)
            probs = tf.nn.softmax(raw, axis=-1)[..., 1:]
            cxy, wh = centres + 0.0 * raw[..., :2], float(self.stride)
        else:
            g = centernet_grid(self.input_size, self.stride)
            ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
            cells = tf.constant(np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32))
            probs = tf.sigmoid(raw[..., :k])
            wh = tf.exp(tf.minimum(raw[..., k:k + 2], 4.0)) * float(self.stride)
            cxy = (cells + tf.sigmoid(raw[..., k + 2:k + 4])) * float(self.stride)
        boxes = tf.clip_by_value(tf.concat([cxy - wh / 2, cxy + wh / 2], -1) / side, 0.0, 1.0)
        return tf.concat([boxes, probs], -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], 4 + self.num_classes)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "num_classes": self.num_classes,
                "input_size": self.input_size, "anchors": self.anchors, "stride": self.stride}


def _check(name: str, num_classes: int, input_size: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise EdgecnnError(f"{name}: num_classes (object classes, no background) must be an integer >= 1. "
                           f"Received num_classes={num_classes!r}.")
    if not isinstance(input_size, int) or input_size < 64 or input_size % OUTPUT_STRIDE:
        raise EdgecnnError(f"{name}: input_size must be a multiple of {OUTPUT_STRIDE}, at least 64 (the head "
                           f"reads stride-8 to stride-32 features). Received input_size={input_size!r}; "
                           f"use {_nearest(input_size)}.")


def _nearest(input_size) -> int:
    return max(64, round(input_size / OUTPUT_STRIDE) * OUTPUT_STRIDE) if isinstance(input_size, int) else 128


def _encoder(backbone: str, input_size: int, weights: str | None, taps: dict[int, str]):
    clf = create_model(backbone, num_classes=2, input_size=input_size, weights=weights)
    return clf.input, {s: clf.get_layer(n).output for s, n in taps.items()}


def _dw(x, name: str, stride: int = 1):
    """The depthwise half of SSDLite's separable convolutions: 3x3 depthwise -> BN -> ReLU6 (a 1x1 follows)."""
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    return x


def _ssd(model_name: str, inputs, feats: dict, num_classes: int, input_size: int, extra_channels: int):
    x = layers.Conv2D(extra_channels // 2, 1, use_bias=False, name=f"{HEAD_PREFIX}extra64_pw")(feats[32])
    x = layers.BatchNormalization(name=f"{HEAD_PREFIX}extra64_pw_bn")(x)
    x = layers.ReLU(6.0, name=f"{HEAD_PREFIX}extra64_pw_relu")(x)
    x = _dw(x, f"{HEAD_PREFIX}extra64", stride=2)
    x = layers.Conv2D(extra_channels, 1, use_bias=False, name=f"{HEAD_PREFIX}extra64_out")(x)
    x = layers.BatchNormalization(name=f"{HEAD_PREFIX}extra64_out_bn")(x)
    feats = {**feats, 64: layers.ReLU(6.0, name=f"{HEAD_PREFIX}extra64_out_relu")(x)}
    per_cell = len(ASPECTS)
    parts = []
    for s in SSD_STRIDES:
        f = feats[s]
        cls = layers.Conv2D(per_cell * (num_classes + 1), 1, name=f"{HEAD_PREFIX}cls{s}")(
            _dw(f, f"{HEAD_PREFIX}cls{s}"))
        box = layers.Conv2D(per_cell * 4, 1, name=f"{HEAD_PREFIX}box{s}")(_dw(f, f"{HEAD_PREFIX}box{s}"))
        cells = math.ceil(input_size / s) ** 2 * per_cell   # written out: TFLite Micro's RESHAPE mishandles -1
        cls = layers.Reshape((cells, num_classes + 1), name=f"{HEAD_PREFIX}cls{s}_flat")(cls)
        box = layers.Reshape((cells, 4), name=f"{HEAD_PREFIX}box{s}_flat")(box)
        parts.append(layers.Concatenate(name=f"{HEAD_PREFIX}raw{s}")([cls, box]))
    raw = layers.Concatenate(axis=1, name=f"{HEAD_PREFIX}raw")(parts)
    anchors = ssd_anchors(input_size)
    out = DetectionOutput("ssd", num_classes, input_size, anchors=anchors, name="detections")(raw)
    return keras.Model(inputs, out, name=model_name)


def _centernet(model_name: str, inputs, feats: dict, num_classes: int, input_size: int, channels: int):
    def lateral(s):
        x = layers.Conv2D(channels, 1, use_bias=False, name=f"{HEAD_PREFIX}lat{s}")(feats[s])
        return layers.BatchNormalization(name=f"{HEAD_PREFIX}lat{s}_bn")(x)

    x = lateral(32)
    for s in (16, 8):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{HEAD_PREFIX}up{s}")(x)
        x = layers.Add(name=f"{HEAD_PREFIX}merge{s}")([x, lateral(s)])
        x = layers.ReLU(6.0, name=f"{HEAD_PREFIX}merge{s}_relu")(x)
    x = _dw(x, f"{HEAD_PREFIX}p8")
    x = layers.Conv2D(channels, 1, use_bias=False, name=f"{HEAD_PREFIX}p8_pw")(x)
    x = layers.BatchNormalization(name=f"{HEAD_PREFIX}p8_pw_bn")(x)
    x = layers.ReLU(6.0, name=f"{HEAD_PREFIX}p8_pw_relu")(x)
    # the heatmap's bias starts at -2.19 (a prior of 0.1 per cell, as the paper) so early training is stable
    heat = layers.Conv2D(num_classes, 1, bias_initializer=keras.initializers.Constant(-2.19),
                         name=f"{HEAD_PREFIX}heat")(x)
    geo = layers.Conv2D(4, 1, name=f"{HEAD_PREFIX}geometry")(x)   # log(w/s), log(h/s), offset x, y logits
    raw = layers.Concatenate(name=f"{HEAD_PREFIX}raw_grid")([heat, geo])
    raw = layers.Reshape((centernet_grid(input_size) ** 2, num_classes + 4), name=f"{HEAD_PREFIX}raw")(raw)
    out = DetectionOutput("centernet", num_classes, input_size, stride=CENTERNET_STRIDE, name="detections")(raw)
    return keras.Model(inputs, out, name=model_name)


_ARGS = """
    Args:
        num_classes: object classes (no background; the bundled defect set: 3).
        input_size: square input side in pixels, a multiple of 32, at least 64.
        weights: None (random), 'imagenet' (the encoder's ImageNet weights, offline), or a .h5 path."""


@register_model(task="detect")
def ssdlite_mobilenet_v2(*, num_classes: int = 3, input_size: int = 128, weights: str | None = None,
                         extra_channels: int = 128):
    """SSDLite over MobileNetV2: anchors at strides 8/16/32/64, depthwise-separable predictors (Sandler 2018)."""
    _check("ssdlite_mobilenet_v2", num_classes, input_size)
    inputs, feats = _encoder("mobilenet_v2", input_size, weights, MOBILENET_V2_TAPS)
    return _ssd("ssdlite_mobilenet_v2", inputs, feats, num_classes, input_size, extra_channels)


@register_model(task="detect")
def ssdlite_efficientnet_lite0(*, num_classes: int = 3, input_size: int = 128, weights: str | None = None,
                               extra_channels: int = 128):
    """SSDLite over EfficientNet-Lite0 (int8-friendly: no SE, ReLU6); anchors at strides 8/16/32/64."""
    _check("ssdlite_efficientnet_lite0", num_classes, input_size)
    inputs, feats = _encoder("efficientnet_lite0", input_size, weights, EFFICIENTNET_LITE0_TAPS)
    return _ssd("ssdlite_efficientnet_lite0", inputs, feats, num_classes, input_size, extra_channels)


@register_model(task="detect")
def centernet_mobilenet_v2(*, num_classes: int = 3, input_size: int = 128, weights: str | None = None,
                           channels: int = 64):
    """Anchor-free CenterNet head (Zhou 2019) at stride 8 over MobileNetV2, with a light top-down path."""
    _check("centernet_mobilenet_v2", num_classes, input_size)
    inputs, feats = _encoder("mobilenet_v2", input_size, weights, MOBILENET_V2_TAPS)
    return _centernet("centernet_mobilenet_v2", inputs, feats, num_classes, input_size, channels)


@register_model(task="detect")
def centernet_efficientnet_lite0(*, num_classes: int = 3, input_size: int = 128, weights: str | None = None,
                                 channels: int = 64):
    """Anchor-free CenterNet head (Zhou 2019) at stride 8 over EfficientNet-Lite0."""
    _check("centernet_efficientnet_lite0", num_classes, input_size)
    inputs, feats = _encoder("efficientnet_lite0", input_size, weights, EFFICIENTNET_LITE0_TAPS)
    return _centernet("centernet_efficientnet_lite0", inputs, feats, num_classes, input_size, channels)


for _fn in (ssdlite_mobilenet_v2, ssdlite_efficientnet_lite0, centernet_mobilenet_v2, centernet_efficientnet_lite0):
    _fn.__doc__ = (_fn.__doc__ or "") + _ARGS

"""Segmentation builders: one probability vector per pixel, (N, H, W, K) at the input resolution.

The architectures lecture's three answers to "classify every pixel", over ImageNet encoders:

* ``fcn_mobilenet_v2`` -- FCN: the dense head becomes 1x1 convolutions to K channels, upsampled
  back to the input; ``skips=2`` adds the stride-16 and stride-8 scores first (FCN-8s), 1 is
  FCN-16s, 0 is FCN-32s.
* ``unet_mobilenet_v2``, ``unet_efficientnet_lite0`` -- U-Net: a decoder that upsamples by 2 and
  concatenates the encoder's features of the same resolution (skips at strides 16, 8, 4, 2), so
  thin defects keep their position; the stride-2 scores are upsampled bilinearly to the input.
* ``deeplab_mobilenet_v2`` -- DeepLab-style: the last stages of MobileNetV2 run with stride 1 and
  dilated (atrous) depthwise convolutions, which keeps the receptive field without the last
  downsampling, then parallel atrous convolutions (ASPP) and a stride-4 skip (v3+).

Every model takes RGB 0-255 (normalisation inside, like the classifiers), ends in a ``probs``
softmax over the last axis, and uses only layers the TFLite int8 converter and tf2onnx handle
(Conv2D, DepthwiseConv2D with dilation, bilinear UpSampling2D, Concatenate, Add). Encoder layers
keep the classifiers' names, so ImageNet weights load by name and fine-tuning unfreezes the same
blocks (``edgecnn.train.block_of``); every decoder layer's name starts with :data:`DECODER_PREFIX`.
"""
from __future__ import annotations

from edgecnn._tf import keras
from edgecnn.arch._layers import IMAGENET_MEAN, IMAGENET_STD, check_common, load_weights_file, normalize
from edgecnn.arch.mobilenet import BN_EPS, BN_MOMENTUM, MOBILENET_V2_STAGES, conv_bn, make_divisible
from edgecnn.arch.registry import create_model, register_model
from edgecnn.errors import EdgecnnError

layers = keras.layers
DECODER_PREFIX = "dec_"
OUTPUT_STRIDE = 32  # the encoders downsample 5 times: the input side must be a multiple of this

# The layer that ends each resolution of an encoder (stride -> layer name), for skips.
MOBILENET_V2_FEATURES = {2: "block1_project_bn", 4: "block3_add", 8: "block6_add", 16: "block13_add",
                         32: "block17_project_bn"}
EFFICIENTNET_LITE0_FEATURES = {2: "block1a_project_bn", 4: "block2b_add", 8: "block3b_add", 16: "block5c_add",
                               32: "block7a_project_bn"}


def _check(name: str, num_classes: int, input_size: int) -> None:
    check_common(name, num_classes, input_size, min_size=OUTPUT_STRIDE)
    if input_size % OUTPUT_STRIDE:
        raise EdgecnnError(f"{name}: input_size must be a multiple of {OUTPUT_STRIDE} (the decoder joins features "
                           f"of every stride up to {OUTPUT_STRIDE}). Received input_size={input_size}; "
                           f"use {input_size // OUTPUT_STRIDE * OUTPUT_STRIDE or OUTPUT_STRIDE}.")


def _conv(x, filters: int, name: str, kernel: int = 3, dilation: int = 1):
    """Decoder conv -> BN -> ReLU (named dec_<name>, dec_<name>_bn, dec_<name>_relu)."""
    x = layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation, use_bias=False,
                      name=f"{DECODER_PREFIX}{name}")(x)
    x = layers.BatchNormalization(name=f"{DECODER_PREFIX}{name}_bn")(x)
    return layers.ReLU(name=f"{DECODER_PREFIX}{name}_relu")(x)


def _up(x, factor: int, name: str):
    return layers.UpSampling2D(factor, interpolation="bilinear", name=f"{DECODER_PREFIX}{name}")(x)


def _classify_pixels(x, num_classes: int, factor: int = 1):
    """1x1 convolution to K logits, upsampled by ``factor`` to the input, softmax per pixel."""
    x = layers.Conv2D(num_classes, 1, name=f"{DECODER_PREFIX}logits")(x)
    if factor > 1:
        x = _up(x, factor, "logits_up")
    return layers.Softmax(name="probs")(x)


def _encoder(name: str, input_size: int, weights: str | None, features: dict[int, str]):
    """A registered classifier's input and its features at each stride (the head is left out)."""
    clf = create_model(name, num_classes=2, input_size=input_size, weights=weights)
    return clf.input, {s: clf.get_layer(n).output for s, n in features.items()}


def _unet(model_name: str, inputs, feats: dict, num_classes: int, decoder_channels) -> keras.Model:
    channels = tuple(int(c) for c in decoder_channels)
    if len(channels) != 4 or min(channels) < 1:
        raise EdgecnnError(f"{model_name}: decoder_channels needs 4 positive widths (strides 16, 8, 4, 2). "
                           f"Received decoder_channels={list(decoder_channels)!r}.")
    x = feats[32]
    for stride, ch in zip((16, 8, 4, 2), channels):
        x = _up(x, 2, f"up{stride}")
        x = layers.Concatenate(name=f"{DECODER_PREFIX}skip{stride}")([x, feats[stride]])
        x = _conv(x, ch, f"conv{stride}")
    # Stride-2 scores, bilinear to the input: a 3x3 conv at full resolution would cost as much as the
    # whole encoder for a defect edge moved by at most one pixel.
    return keras.Model(inputs, _classify_pixels(x, num_classes, 2), name=model_name)


UNET_CHANNELS = (96, 64, 32, 24)
_ARGS = """
    Args:
        num_classes: pixel classes, background included (the bundled defect set: 4).
        input_size: square input side in pixels, a multiple of 32.
        weights: None (random), 'imagenet' (the encoder's ImageNet weights, offline), or a .h5 path."""


@register_model(task="segment")
def unet_mobilenet_v2(*, num_classes: int = 4, input_size: int = 128, weights: str | None = None,
                      decoder_channels: tuple[int, ...] = UNET_CHANNELS):
    """U-Net decoder (upsample x2, concatenate the skip, 3x3 conv) over MobileNetV2; skips at strides 16/8/4/2."""
    _check("unet_mobilenet_v2", num_classes, input_size)
    inputs, feats = _encoder("mobilenet_v2", input_size, weights, MOBILENET_V2_FEATURES)
    return _unet("unet_mobilenet_v2", inputs, feats, num_classes, decoder_channels)


@register_model(task="segment")
def unet_efficientnet_lite0(*, num_classes: int = 4, input_size: int = 128, weights: str | None = None,
                            decoder_channels: tuple[int, ...] = UNET_CHANNELS):
    """U-Net decoder over EfficientNet-Lite0 (no SE, ReLU6: int8-friendly); skips at strides 16/8/4/2."""
    _check("unet_efficientnet_lite0", num_classes, input_size)
    inputs, feats = _encoder("efficientnet_lite0", input_size, weights, EFFICIENTNET_LITE0_FEATURES)
    return _unet("unet_efficientnet_lite0", inputs, feats, num_classes, decoder_channels)


@register_model(task="segment")
def fcn_mobilenet_v2(*, num_classes: int = 4, input_size: int = 128, weights: str | None = None, skips: int = 2,
                     head_channels: int = 128):
    """FCN over MobileNetV2: 1x1 convolutions to K class scores, upsampled; skips=2 is FCN-8s, 1 FCN-16s, 0 FCN-32s.

    The stride-32 features go through a 1x1 convolution of ``head_channels`` (the classifier's dense
    layer made convolutional) and a 1x1 scoring convolution; each skip adds the 1x1 scores of the
    stride-16 (then stride-8) features to the upsampled scores before the final bilinear upsampling.
    """
    _check("fcn_mobilenet_v2", num_classes, input_size)
    if skips not in (0, 1, 2):
        raise EdgecnnError(f"fcn_mobilenet_v2: skips must be 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s). "
                           f"Received skips={skips!r}.")
    inputs, feats = _encoder("mobilenet_v2", input_size, weights, MOBILENET_V2_FEATURES)
    x = _conv(feats[32], head_channels, "fc", kernel=1)
    x = layers.Conv2D(num_classes, 1, name=f"{DECODER_PREFIX}score32")(x)
    stride = 32
    for _ in range(skips):
        stride //= 2
        x = _up(x, 2, f"up{stride}")
        score = layers.Conv2D(num_classes, 1, name=f"{DECODER_PREFIX}score{stride}")(feats[stride])
        x = layers.Add(name=f"{DECODER_PREFIX}fuse{stride}")([x, score])
    x = _up(x, stride, "logits_up")
    return keras.Model(inputs, layers.Softmax(name="probs")(x), name="fcn_mobilenet_v2")


def dilated_mobilenet_v2(x, output_stride: int = 16):
    """MobileNetV2's blocks with the strides after ``output_stride`` turned into dilation (DeepLab).

    Layer names and weight shapes are MobileNetV2's, so its ImageNet weights load unchanged: a
    stride-2 depthwise 3x3 becomes stride 1 with dilation 2 (and the dilation of every later block
    doubles), which keeps each unit's receptive field while the feature map stays larger.

    Returns:
        (the last block's output, the stride-4 features for the decoder's skip).
    """
    in_ch = make_divisible(32)
    x = conv_bn(x, in_ch, 3, 2, "stem")
    stride, dilation, block, low = 2, 1, 1, None
    for stage in MOBILENET_V2_STAGES:
        out_ch = make_divisible(stage.channels)
        for i in range(stage.repeats):
            s = stage.stride if i == 0 else 1
            if s == 2 and stride >= output_stride:
                s, dilation = 1, dilation * 2
            elif s == 2:
                stride *= 2
            x = _dilated_block(x, block, in_ch, out_ch, s, stage.expansion, dilation)
            if stride == 4:
                low = x
            in_ch, block = out_ch, block + 1
    return x, low


def _dilated_block(x, block: int, in_ch: int, out_ch: int, stride: int, expansion: int, dilation: int):
    """mobilenet.inverted_residual with a dilation rate on the depthwise convolution."""
    if dilation == 1:
        from edgecnn.arch.mobilenet import inverted_residual

        return inverted_residual(x, block, in_ch, out_ch, stride, expansion)
    shortcut = x
    x = conv_bn(x, in_ch * expansion, 1, 1, f"block{block}_expand")
    x = layers.DepthwiseConv2D(3, padding="same", dilation_rate=dilation, use_bias=False, name=f"block{block}_dw")(x)
    x = layers.BatchNormalization(epsilon=BN_EPS, momentum=BN_MOMENTUM, name=f"block{block}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"block{block}_dw_relu")(x)
    x = conv_bn(x, out_ch, 1, 1, f"block{block}_project", act=False)
    if in_ch == out_ch:
        x = layers.Add(name=f"block{block}_add")([shortcut, x])
    return x


@register_model(task="segment")
def deeplab_mobilenet_v2(*, num_classes: int = 4, input_size: int = 128, weights: str | None = None,
                         output_stride: int = 16, atrous_rates: tuple[int, ...] = (2, 4), aspp_channels: int = 96):
    """DeepLab-style (v3+): MobileNetV2 with dilated last stages, atrous spatial pyramid, a stride-4 skip.

    ``output_stride`` 16 (or 8) replaces the last one (two) downsamplings by dilation; the ASPP
    runs a 1x1 convolution and one 3x3 convolution per ``atrous_rates`` entry side by side on the
    encoder output, and the decoder joins it with the stride-4 features before upsampling.
    """
    _check("deeplab_mobilenet_v2", num_classes, input_size)
    if output_stride not in (8, 16):
        raise EdgecnnError("deeplab_mobilenet_v2: output_stride must be 8 or 16. "
                           f"Received output_stride={output_stride!r}.")
    rates = tuple(int(r) for r in atrous_rates)
    if not rates or min(rates) < 1:
        raise EdgecnnError(f"deeplab_mobilenet_v2: atrous_rates must be positive dilations, e.g. [2, 4]. "
                           f"Received atrous_rates={list(atrous_rates)!r}.")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x, low = dilated_mobilenet_v2(normalize(inputs, IMAGENET_MEAN, IMAGENET_STD), output_stride)
    branches = [_conv(x, aspp_channels, "aspp0", kernel=1)]
    branches += [_conv(x, aspp_channels, f"aspp{i + 1}", dilation=r) for i, r in enumerate(rates)]
    x = _conv(layers.Concatenate(name=f"{DECODER_PREFIX}aspp")(branches), aspp_channels, "aspp_proj", kernel=1)
    x = _up(x, output_stride // 4, "up4")
    x = layers.Concatenate(name=f"{DECODER_PREFIX}skip4")([x, _conv(low, 32, "low4", kernel=1)])
    x = _conv(x, 64, "conv4")
    model = keras.Model(inputs, _classify_pixels(x, num_classes, 4), name="deeplab_mobilenet_v2")
    if weights == "imagenet":
        from edgecnn.arch.weights import imagenet_weights_path

        load_weights_file(model, imagenet_weights_path("mobilenet_v2"))
    elif weights is not None:
        load_weights_file(model, weights)
    return model


for _fn in (unet_mobilenet_v2, unet_efficientnet_lite0, fcn_mobilenet_v2, deeplab_mobilenet_v2):
    _fn.__doc__ += _ARGS

"""The anomaly model as one tf_keras graph: ImageNet backbone -> patch features -> distance head -> map, score.

    image (N, S, S, 3) RGB 0-255
      -> reflected by PAD px on each side (zero padding inside the backbone makes every border patch
         unlike the interior: on the bundled set every good image's maximum sat on the border)
      -> the zoo backbone (its own normalisation inside), two taps at strides 4 and 8
      -> [patchcore: 3x3 average pool of each tap, the paper's "locally aware" patches]
      -> the stride-8 tap upsampled x2 (bilinear), concatenated, the padding cropped:
         (N, S/4, S/4, C) patch features
      -> PatchDistance (distance to the nearest memory-bank patch) or GaussianDistance (Mahalanobis
         distance to the position's Gaussian)
      -> AnomalyMap: bilinear upsample to the map size, Gaussian blur (sigma 4 px as in both papers),
         normalised so 0.5 is the threshold: (raw - threshold) / scale + 0.5
      -> outputs ``score`` (N, 1) = the map's maximum inside a margin (the mirrored seam still lifts the
         outermost pixels of good images), and ``anomaly_map`` (N, M, M, 1) over the whole image

The three custom layers hold their statistics as (non-trainable) weights, so the fitted numbers travel in
model.keras and in every converted artifact; importing this module registers them for ``load_model``.
Distances are written with ops every converter takes: a matmul for ``f . M^T`` (TFLite FULLY_CONNECTED,
ONNX MatMul), a batched matmul per position for ``L^-1 (f - mu)``.
"""
from __future__ import annotations

import numpy as np

from edgecnn._tf import keras, tf
from edgecnn.tasks.anomaly import BACKBONES

__all__ = ["AnomalyMap", "GaussianDistance", "PAD", "PatchDistance", "ReflectPad", "build_anomaly_model",
           "build_feature_model", "gaussian_kernel", "set_normalisation"]

_register = keras.utils.register_keras_serializable(package="edgecnn_anomaly")
PAD = 16  # input pixels mirrored on each side: a multiple of the stride-8 tap, 4 cells of the stride-4 grid


@_register
class ReflectPad(keras.layers.Layer):
    """Mirror ``pad`` pixels on each side (TFLite MIRROR_PAD, ONNX Pad mode=reflect)."""

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.pad = int(pad)

    def call(self, x):
        p = self.pad
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


@_register
class PatchDistance(keras.layers.Layer):
    """PatchCore's score: Euclidean distance of each patch to its nearest memory-bank patch.

    ``||f - m||^2 = ||f||^2 - 2 f.m + ||m||^2`` for every bank patch m at once (one matmul), min over the bank.
    """

    def __init__(self, bank_size: int, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.bank_size, self.channels = int(bank_size), int(channels)

    def build(self, input_shape):
        self.bank_t = self.add_weight(name="bank_t", shape=(self.channels, self.bank_size), trainable=False,
                                      initializer="zeros")
        self.bank_sq = self.add_weight(name="bank_sq", shape=(self.bank_size,), trainable=False, initializer="zeros")
        super().build(input_shape)

    def call(self, f):
        g1, g2 = f.shape[1], f.shape[2]
        flat = tf.reshape(f, (-1, self.channels))
        d2 = (tf.reduce_sum(tf.square(flat), -1, keepdims=True) - 2.0 * tf.matmul(flat, self.bank_t)
              + self.bank_sq)
        return tf.reshape(tf.sqrt(tf.maximum(tf.reduce_min(d2, -1), 0.0)), (-1, g1, g2, 1))

    def get_config(self):
        return {**super().get_config(), "bank_size": self.bank_size, "channels": self.channels}


@_register
class GaussianDistance(keras.layers.Layer):
    """PaDiM's score: Mahalanobis distance of each position's features to that position's Gaussian.

    A fixed random subset of ``dims`` channels (a 0/1 matmul), then ``||L^-1 (f - mu)||`` with ``L`` the
    Cholesky factor of the position's covariance: one batched matmul over the positions.
    """

    def __init__(self, positions: int, channels: int, dims: int, **kwargs):
        super().__init__(**kwargs)
        self.positions, self.channels, self.dims = int(positions), int(channels), int(dims)

    def build(self, input_shape):
        p, c, d = self.positions, self.channels, self.dims
        self.select = self.add_weight(name="select", shape=(c, d), trainable=False, initializer="zeros")
        self.mean = self.add_weight(name="mean", shape=(p, d), trainable=False, initializer="zeros")
        self.inv_chol = self.add_weight(name="inv_chol", shape=(p, d, d), trainable=False, initializer="zeros")
        super().build(input_shape)

    def call(self, f):
        g1, g2 = f.shape[1], f.shape[2]
        z = tf.reshape(tf.matmul(tf.reshape(f, (-1, self.channels)), self.select), (-1, self.positions, self.dims))
        z = tf.transpose(z - self.mean, (1, 0, 2))                      # (P, N, d)
        y = tf.matmul(z, self.inv_chol, transpose_b=True)                # (P, N, d): L^-1 (f - mu) per position
        d2 = tf.transpose(tf.reduce_sum(tf.square(y), -1))               # (N, P)
        return tf.reshape(tf.sqrt(tf.maximum(d2, 0.0)), (-1, g1, g2, 1))

    def get_config(self):
        return {**super().get_config(), "positions": self.positions, "channels": self.channels, "dims": self.dims}


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian, radius 3 sigma rounded up (at least 1 tap)."""
    if sigma <= 0:
        return np.ones(1, np.float32)
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


@_register
class AnomalyMap(keras.layers.Layer):
    """Patch distances -> the anomaly map: bilinear upsample, separable Gaussian blur (reflected borders),
    then ``(raw - threshold) / scale + 0.5``, so 0.5 is the threshold. ``threshold`` and ``scale`` are weights
    set after fitting (:func:`set_normalisation`); at 0.5 and 1 the map is the raw distance."""

    def __init__(self, size: int, sigma: float, **kwargs):
        super().__init__(**kwargs)
        self.size, self.sigma = int(size), float(sigma)

    def build(self, input_shape):
        # shape (1,), not scalars: tf2onnx's transpose optimiser trips over a rank-0 bias
        self.threshold = self.add_weight(name="threshold", shape=(1,), trainable=False,
                                         initializer=keras.initializers.Constant(0.5))
        self.scale = self.add_weight(name="scale", shape=(1,), trainable=False, initializer="ones")
        super().build(input_shape)

    def call(self, d):
        x = tf.image.resize(d, (self.size, self.size), method="bilinear")
        k = gaussian_kernel(self.sigma)
        r = len(k) // 2
        if r:
            x = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
            x = tf.nn.conv2d(x, tf.constant(k.reshape(-1, 1, 1, 1)), 1, "VALID")
            x = tf.nn.conv2d(x, tf.constant(k.reshape(1, -1, 1, 1)), 1, "VALID")
        return (x - self.threshold) / self.scale + 0.5

    def get_config(self):
        return {**super().get_config(), "size": self.size, "sigma": self.sigma}


def _patch_features(backbone: str, input_size: int, local_pool: bool):
    """(input, (N, S/4, S/4, C) features) of the backbone's two taps on the reflected image."""
    from edgecnn.arch import create_model

    spec = BACKBONES[backbone]
    base = create_model(backbone, num_classes=2, input_size=input_size + 2 * PAD, weights="imagenet")
    taps = keras.Model(base.input, [base.get_layer(t).output for t in spec.taps], name=f"{backbone}_taps")
    inp = keras.Input((input_size, input_size, 3), name="image")
    t4, t8 = taps(ReflectPad(PAD, name="anomaly_reflect")(inp))
    if local_pool:  # PatchCore: each patch sees its 3x3 neighbourhood
        t4 = keras.layers.AveragePooling2D(3, 1, "same", name="anomaly_pool4")(t4)
        t8 = keras.layers.AveragePooling2D(3, 1, "same", name="anomaly_pool8")(t8)
    up = keras.layers.UpSampling2D(2, interpolation="bilinear", name="anomaly_up")(t8)
    feats = keras.layers.Concatenate(name="anomaly_concat")([t4, up])
    return inp, keras.layers.Cropping2D(PAD // 4, name="anomaly_features")(feats)


def build_feature_model(backbone: str, input_size: int, method: str):
    """The patch-feature extractor the statistics are fitted on (the anomaly model's first half)."""
    inp, feats = _patch_features(backbone, input_size, local_pool=method == "patchcore")
    return keras.Model(inp, feats, name=f"{backbone}_patches")


def build_anomaly_model(backbone: str, input_size: int, method: str, stats: dict[str, np.ndarray], *,
                        map_size: int, sigma: float, score_margin: int = 0):
    """The full model (outputs ``score`` (N, 1) and ``anomaly_map`` (N, map_size, map_size, 1)).

    Args:
        backbone: a key of :data:`BACKBONES`.
        input_size: the square input side.
        method: ``patchcore`` (``stats``: ``bank`` (K, C)) or ``padim`` (``select`` (C, d), ``mean`` (P, d),
            ``inv_chol`` (P, d, d)).
        stats: the fitted statistics (:mod:`edgecnn.anomaly.fit`).
        map_size: the anomaly map's side.
        sigma: the blur in input pixels.
        score_margin: input pixels at each border left out of the image score (not of the map).
    """
    inp, feats = _patch_features(backbone, input_size, local_pool=method == "patchcore")
    channels = int(feats.shape[-1])
    if method == "patchcore":
        bank = stats["bank"].astype(np.float32)
        head = PatchDistance(len(bank), channels, name="anomaly_distance")
        dist = head(feats)
        head.set_weights([bank.T.copy(), (bank ** 2).sum(1)])
    else:
        sel = stats["select"]
        head = GaussianDistance(int(feats.shape[1] * feats.shape[2]), channels, sel.shape[1],
                                name="anomaly_distance")
        dist = head(feats)
        head.set_weights([sel.astype(np.float32), stats["mean"].astype(np.float32),
                          stats["inv_chol"].astype(np.float32)])
    amap = AnomalyMap(map_size, sigma * map_size / input_size, name="anomaly_map")(dist)
    inner = amap
    margin = score_margin * map_size // input_size
    if margin:
        inner = keras.layers.Cropping2D(margin, name="anomaly_inner")(amap)
    score = keras.layers.GlobalMaxPooling2D(name="score")(inner)
    return keras.Model(inp, [score, amap], name=f"{method}_{backbone}")


def set_normalisation(model, threshold: float, scale: float) -> None:
    """Make 0.5 the threshold: the map layer computes ``(raw - threshold) / scale + 0.5``."""
    model.get_layer("anomaly_map").set_weights([np.float32([threshold]), np.float32([scale])])

"""Small but faithful configurations of every registered model, for tests and the compatibility matrix.

32 px and the smallest width where the family has one; AlexNet and Xception at the smallest input
their architecture allows (67 and 71 px); VGG and AlexNet with 64-wide FC layers instead of 4096.
A model not listed builds at 32 px with its defaults.
"""
from __future__ import annotations

from typing import Any

SMALL_CONFIGS: dict[str, dict[str, Any]] = {
    "alexnet": {"input_size": 67, "fc_units": 64},  # 67 px: the smallest input that leaves pool5 1x1
    "xception": {"input_size": 71},  # Keras' minimum
    "vgg11": {"fc_units": 64},
    "vgg16": {"fc_units": 64},
    "mobilenet_v1": {"alpha": 0.25},
    "mobilenet_v2": {"alpha": 0.35},
    "mobilenet_v3_small": {"alpha": 0.35},
    "mobilenet_v3_large": {"alpha": 0.35},
    "mobilenet_v3_small_minimalistic": {"alpha": 0.35},
    "mobilenet_v3_large_minimalistic": {"alpha": 0.35},
    "dsconv": {"alpha": 0.25},
}


def small_config(name: str) -> dict[str, Any]:
    """Builder arguments (without num_classes) of the small configuration of ``name``."""
    return {"input_size": 32, **SMALL_CONFIGS.get(name, {})}


def calibrate_for_comparison(model, images, logit_std: float = 2.0) -> None:
    """Give a randomly initialised model realistic activations, so comparing runtimes means something.

    BatchNorm starts as the identity with unit moving variance, so in a random deep net the
    activations vanish or explode and every runtime returns the same uniform probabilities. This
    sets every BatchNorm's moving statistics from one batch (momentum 0 for one training-mode call)
    and scales the classifier so the logits have standard deviation ``logit_std``.

    Use at least 32 images: at 32 px the last stages of a deep net are 1x1, so a channel's batch
    variance over a handful of images can be ~0 and the net turns chaotic (EfficientNet-B1
    calibrated on 8 images differs from itself by 1e-3 between eager and graph execution; on 32,
    by 1e-5).
    """
    import numpy as np

    from edgecnn._tf import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    model(images, training=True)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    head = model.get_layer("classifier")
    w, b = head.get_weights()
    feats = keras.Model(model.inputs, head.input)(images, training=False).numpy()
    head.set_weights([w * (logit_std / max(float(np.std(feats @ w)), 1e-6)), b])

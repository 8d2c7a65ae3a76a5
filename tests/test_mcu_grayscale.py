"""Grey input (``data.channels: 1``, as MCU cameras often are): the one preprocessing gives one luma channel,
the loaders follow the dataset's channel count, a builder's RGB network is rebuilt with a one-channel first
convolution, and the RGB default is unchanged. The whole pipeline with a grey MCU recipe: tests/test_mcu_recipe.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgecnn.data.preprocess import load_image
from edgecnn.errors import EdgecnnError


@pytest.fixture
def rgb_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.png"
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


def test_grey_is_pillow_luma_and_rgb_is_unchanged(rgb_file, tmp_path):
    with Image.open(rgb_file) as im:
        luma = np.asarray(im.convert("L"), np.float32)
        rgb = np.asarray(im, np.float32)
    grey = load_image(rgb_file, (40, 30), channels=1)
    assert grey.shape == (40, 30, 1) and grey.dtype == np.float32
    assert np.array_equal(grey[..., 0], luma)                       # same size: no resize, exact luma
    assert np.array_equal(load_image(rgb_file, (40, 30)), rgb)     # the default stays RGB
    assert np.allclose(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2], luma, atol=0.51)
    # a grey file comes back with its own values, and resizing one channel = resizing it in RGB
    grey_file = tmp_path / "grey.png"
    Image.fromarray(luma.astype(np.uint8)).save(grey_file)
    assert np.array_equal(load_image(grey_file, 24, channels=1)[..., 0], load_image(grey_file, 24)[..., 1])


def test_bad_channel_count_is_one_readable_error(rgb_file):
    with pytest.raises(EdgecnnError, match=r"channels must be 1 \(grey\) or 3 \(RGB\). Received channels=2"):
        load_image(rgb_file, 32, channels=2)


def test_loaders_follow_the_dataset_channels(tiny_defects):
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import calibration_arrays, load_arrays, make_dataset

    ds = discover(tiny_defects, channels=1, check_images=False)
    x, y = load_arrays(ds, "test", 40)
    assert x.shape == (len(y), 40, 40, 1)
    assert np.array_equal(x[0], load_image(ds.paths("test")[0], 40, channels=1))
    assert calibration_arrays(ds, 40, 8).shape == (8, 40, 40, 1)
    batch, _ = next(iter(make_dataset(ds, "train", 40, 4, training=True, augment=None)))
    assert tuple(batch.shape) == (4, 40, 40, 1)


def test_rgb_builders_are_rebuilt_with_one_input_channel():
    from edgecnn.arch import create_model
    from edgecnn.train import with_input_channels

    model = create_model("mobilenet_v1", num_classes=3, input_size=32, alpha=0.25)
    grey = with_input_channels(model, 1)
    assert grey.input_shape == (None, 32, 32, 1) and model.input_shape == (None, 32, 32, 3)
    assert with_input_channels(model, 3) is model
    first = next(layer for layer in grey.layers if layer.get_weights())
    assert first.get_weights()[0].shape[2] == 1        # the first convolution reads one channel, not a tiled three
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    # a grey image repeated over RGB gives the RGB network's answer (its [-1, 1] scaling is the same per channel)
    assert np.allclose(grey.predict(x, verbose=0), model.predict(np.repeat(x, 3, -1), verbose=0), atol=1e-5)

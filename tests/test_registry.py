"""The model registry: names, argument checking, and the builders of the pipeline issue."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.arch import create_model, get_model_entry, list_models
from edgecnn.errors import EdgecnnError


def test_list_and_pattern():
    assert {"mobilenet_v2", "dsconv"} <= set(list_models())
    assert list_models("mobilenet*") == [n for n in list_models() if n.startswith("mobilenet")]


def test_unknown_name_suggests():
    with pytest.raises(EdgecnnError, match="Did you mean 'mobilenet_v2'"):
        create_model("mobilenet_v22", num_classes=3)


def test_stray_kwarg_lists_accepted_keys():
    with pytest.raises(TypeError, match="accepted: .*'alpha'"):
        create_model("dsconv", num_classes=3, width=0.5)


def test_bad_values():
    with pytest.raises(EdgecnnError, match="num_classes must be an integer >= 2"):
        create_model("dsconv", num_classes=1)
    with pytest.raises(EdgecnnError, match="input_size must be an integer >= 32"):
        create_model("mobilenet_v2", num_classes=3, input_size=8)


def test_mobilenet_v2_matches_torchvision_size():
    m = create_model("mobilenet_v2", include_top=True, num_classes=1000)
    trainable = sum(int(np.prod(w.shape)) for w in m.trainable_weights)
    assert trainable == 3_504_872  # torchvision's mobilenet_v2 parameter count


def test_dsconv_microcontroller_sized():
    m = create_model("dsconv", num_classes=2, input_size=96, alpha=0.25)
    assert m.count_params() < 250_000
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    p = m(x).numpy()
    assert p.shape == (2, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert get_model_entry("dsconv").default_input_size == 96

"""Fine-tuning: layer-wise learning-rate decay (exact per-variable rates) and block grouping per family."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edgecnn._tf import tf
from edgecnn.arch import create_model
from edgecnn.config import recipe_from_dict
from edgecnn.errors import EdgecnnError
from edgecnn.train import backbone_blocks, layerwise_lr_scales, make_optimizer

TINY_RECIPE = Path(__file__).resolve().parent / "recipes" / "tiny.yaml"


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_layerwise_optimizer_steps_like_a_smaller_learning_rate(name, graph):
    """A variable with factor 0.25 moves exactly as under the plain optimizer at lr x 0.25; others at lr."""
    grads = [tf.constant(g, tf.float32) for g in np.random.default_rng(0).normal(size=(5, 3))]
    slow, fast = tf.Variable([1.0, -2.0, 0.5], name="slow"), tf.Variable([1.0, -2.0, 0.5], name="fast")
    ref_slow, ref_fast = tf.Variable(slow.numpy(), name="ref_slow"), tf.Variable(fast.numpy(), name="ref_fast")
    opt = make_optimizer(name, 0.1, 0.9, {slow.name: 0.25})
    plain_slow, plain_fast = make_optimizer(name, 0.025, 0.9), make_optimizer(name, 0.1, 0.9)
    step = tf.function(lambda g: opt.apply_gradients([(g, slow), (g, fast)])) if graph else \
        (lambda g: opt.apply_gradients([(g, slow), (g, fast)]))
    for g in grads:
        step(g)
        plain_slow.apply_gradients([(g, ref_slow)])
        plain_fast.apply_gradients([(g, ref_fast)])
    np.testing.assert_allclose(slow.numpy(), ref_slow.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.numpy(), ref_fast.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(slow.numpy(), fast.numpy())


def test_layerwise_scales_shrink_towards_the_input():
    blocks = ["stem", "block1", "block2", "block3", "top"]
    assert layerwise_lr_scales(blocks, {"block2", "block3", "top"}, 0.5) == {"top": 0.5, "block3": 0.25,
                                                                              "block2": 0.125}
    assert layerwise_lr_scales(blocks, {"top"}, 1.0) == {"top": 1.0}


def test_efficientnet_lite_blocks_are_its_mbconv_blocks():
    blocks = backbone_blocks(create_model("efficientnet_lite0", num_classes=3, input_size=32))
    assert blocks[:3] == ["stem", "block1a", "block2a"] and blocks[-3:] == ["block6d", "block7a", "top"]
    assert len(blocks) == 18  # stem + 16 MBConv blocks + the 1280-channel head conv


@pytest.mark.parametrize("value", [0, -0.5, 1.5])
def test_lr_decay_is_validated(value):
    raw = yaml.safe_load(TINY_RECIPE.read_text())
    raw["train"]["finetune"] = {"blocks": 2, "lr_decay": value}
    with pytest.raises(EdgecnnError, match="lr_decay"):
        recipe_from_dict(raw)


def test_phase2_trains_top_blocks_with_decayed_rates(tiny_defects, tmp_path):
    """End to end on the tiny defect set: the recorded factors, and frozen blocks untouched."""
    from edgecnn.data.folders import discover
    from edgecnn.train import train

    raw = yaml.safe_load(TINY_RECIPE.read_text())
    raw["data"]["path"] = str(tiny_defects)
    raw["train"] = {"head": {"epochs": 1, "lr": 0.003}, "freeze_backbone": "yes",
                    "finetune": {"blocks": 2, "epochs": 1, "lr_decay": 0.5}}
    recipe = recipe_from_dict(raw)
    ds = discover(tiny_defects, min_images_per_class=5)
    result = train(recipe, ds, tmp_path / "run")
    phase2 = result.history["phases"][-1]
    blocks = phase2["trainable"]
    assert len(blocks) == 2 and phase2["lr_decay"] == 0.5
    assert phase2["block_lr_factors"] == {blocks[1]: 0.5, blocks[0]: 0.25}
    assert len(phase2["loss"]) == 1


def test_onecycle_warms_up_then_decays():
    """From a tenth of the rate up to it over the warm-up share of the steps, then cosine down to 5 % of it."""
    from edgecnn.train import lr_schedule

    rate = lr_schedule("onecycle", 1e-3, 100, warmup=0.2)
    lrs = [float(rate(i)) for i in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[20] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:20], lrs[1:21]))       # rising through the warm-up
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))       # then never rising
    assert lrs[100] == pytest.approx(5e-5)


def test_head_phase_on_cached_features_trains_the_models_own_head(tiny_defects, tmp_path):
    """The frozen backbone's weights are untouched, the head's moved, and the val top-1 the head reached on the
    cached features is the whole model's on the val images: the features are what the model computes."""
    from edgecnn._tf import keras
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import make_dataset
    from edgecnn.train import HEAD_LAYERS, train

    raw = yaml.safe_load(TINY_RECIPE.read_text())
    raw["data"]["path"] = str(tiny_defects)
    raw["train"] = {"seed": 3, "head": {"epochs": 3, "lr": 0.01}, "freeze_backbone": "yes",
                    "early_stopping_patience": 5}
    recipe = recipe_from_dict(raw)
    assert recipe.train.head.features == "cached"   # the default
    ds = discover(tiny_defects, min_images_per_class=5)
    result = train(recipe, ds, tmp_path / "run")
    phase = result.history["phases"][0]
    assert phase["features"] == "cached" and len(phase["loss"]) == 3
    keras.utils.set_random_seed(3)
    start = create_model("dsconv", num_classes=len(ds.classes), **raw["model"]["args"], input_size=32)
    for before, after in zip(start.layers, result.model.layers):
        for w0, w1 in zip(before.get_weights(), after.get_weights()):
            assert np.array_equal(w0, w1) != (after.name in HEAD_LAYERS), after.name
    probs = result.model.predict(make_dataset(ds, "val", 32, 64), verbose=0)
    best = int(np.argmin(phase["val_loss"]))
    assert np.mean(probs.argmax(-1) == ds.labels("val")) == pytest.approx(phase["val_accuracy"][best], abs=1e-6)


def test_fit_iterates_its_data_without_tf_data_autotuning(tmp_path):
    """Keras deletes an epoch's iterator before the next; with autotuning on, the deletion waited for the
    autotune thread's period (5-9 s idle between epochs of the default job). fit_phase hands Keras
    datasets whose autotuning is off; what is not a tf.data.Dataset passes through."""
    from edgecnn._tf import keras
    from edgecnn.data.loader import without_autotune
    from edgecnn.train import fit_phase

    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).prefetch(tf.data.AUTOTUNE)
    assert data.options().autotune.enabled is not False
    assert without_autotune(data).options().autotune.enabled is False
    assert without_autotune(x) is x

    seen = []

    class Recorded(keras.Sequential):
        def fit(self, train, validation_data=None, **kwargs):
            seen.extend([train, validation_data])
            return super().fit(train, validation_data=validation_data, **kwargs)

    model = Recorded([keras.layers.Dense(2, input_shape=(4,))])
    fit_phase(model, "phase1", 1, optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
              metrics=[], train_ds=data, val_ds=data, ckpt_dir=tmp_path, steps=2, patience=1)
    assert len(seen) == 2 and all(d.options().autotune.enabled is False for d in seen)

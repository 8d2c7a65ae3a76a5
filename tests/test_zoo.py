"""Every registered model builds, runs, groups into fine-tuning blocks, and exports to TFLite and ONNX.

Each model is built small (``edgecnn.arch._small``: 32 px and the smallest width where the family
has one; AlexNet and Xception at the smallest input their architecture allows, 67 and 71 px; VGG
and AlexNet with 64-wide FC layers), its BatchNorm statistics are set from one batch (so activations do
not vanish as they do with BN's identity initialisation) and its classifier is sharpened, so that
the comparisons below mean something. Then the TFLite fp32 and ONNX exports, made through the
format registry and run through the project's runners, must agree with Keras to
``atol = 1e-4`` on the probabilities (the fp32 tolerance of tests/test_export.py and the README).
No model is skipped: every one builds, runs and groups into blocks, and every builder's layers go
through both converters (a width/depth-scaled twin leaves its round trip to the first of the family,
and a deep model made only of layer kinds that others' round trips cover leaves it to them).
Converting a model costs time in proportion to its layer count (TFLite's
converter: ~5 s for 90 layers, ~15 s for 240 on an idle 2-core machine), so models with more than
~170 layers or 10 M parameters at test size are marked slow; they still run in ``make test``/CI.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn._tf import keras
from edgecnn.arch import create_model, get_model_entry, list_models
from edgecnn.arch._keras_apps import KEEP
from edgecnn.arch._small import SMALL_CONFIGS, calibrate_for_comparison, small_config
from edgecnn.errors import EdgecnnError
from edgecnn.export import ExportContext, export
from edgecnn.runtime import load_runner
from edgecnn.train import backbone_blocks, block_of

ATOL = 1e-4  # max |delta probability| vs Keras for float32 artifacts

# More than ~170 layers or ~10 M parameters at test size (see the module docstring).
SLOW = {"densenet121", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
        "efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite3", "efficientnet_lite4", "efficientnetv2_b0",
        "efficientnetv2_b1", "googlenet", "mobilenet_v3_large", "mobilenet_v3_small", "resnet34", "resnet50",
        "vgg16", "xception"}
NUM_CLASSES = 5


# A model that is another one scaled (width, depth, resolution) by the same builder has the same kinds
# of layers in the same pattern, so the converters meet nothing new in it: its export round trip runs
# for the first of the pair only (test_scaled_twin_has_the_same_layers checks that claim).
SCALED_TWIN_OF = {
    **{f"efficientnet_b{i}": "efficientnet_b0" for i in (1, 2, 3)},
    **{f"efficientnet_lite{i}": "efficientnet_lite0" for i in (1, 2, 3, 4)},
    "efficientnetv2_b1": "efficientnetv2_b0", "mobilenet_v3_large": "mobilenet_v3_small",
    "mobilenet_v3_large_minimalistic": "mobilenet_v3_small_minimalistic", "resnet34": "resnet18", "vgg16": "vgg11",
}


# A deep model whose kinds of layers all occur in models whose round trip runs meets nothing new in the
# converters either; its round trip (50-80 s of TFLite conversion each on 2 cores, for 180-430 layers)
# is left to those (test_covered_model_has_no_new_layers checks the claim).
COVERED_BY = {
    "densenet121": ("googlenet", "xception", "lenet5", "resnet18"),
    "efficientnetv2_b0": ("efficientnet_b0",),
    "resnet50": ("xception", "resnet18"),
}


def zoo_params(names=None):
    """One param per model; each model is its own pytest-xdist work unit, so workers share the zoo."""
    return [pytest.param(n, marks=[pytest.mark.xdist_group(f"zoo-{n}"), *([pytest.mark.slow] if n in SLOW else [])])
            for n in (names or list_models(task="classify"))]


def test_the_zoo_is_complete():
    expected = {
        "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v3_small_minimalistic",
        "mobilenet_v3_large_minimalistic", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
        "efficientnetv2_b0", "efficientnetv2_b1", *(f"efficientnet_lite{i}" for i in range(5)), "ds_cnn", "dsconv",
        "lenet5", "alexnet", "vgg11", "vgg16", "resnet18", "resnet34", "resnet50", "googlenet", "xception",
        "densenet121",
    }
    assert expected <= set(list_models())
    assert set(SMALL_CONFIGS) <= set(list_models()) and SLOW <= set(list_models())


def build_small(name: str):
    keras.utils.set_random_seed(0)
    kwargs = {"num_classes": NUM_CLASSES, **small_config(name)}
    return create_model(name, **kwargs), kwargs["input_size"]


@pytest.fixture(scope="module")
def zoo(request):
    """(name, model, images, Keras probabilities): each model built and calibrated once for all tests below."""
    name = request.param
    model, size = build_small(name)
    images = np.random.default_rng(0).uniform(0, 255, (32, size, size, 3)).astype(np.float32)
    calibrate_for_comparison(model, images)  # 32 images: see its docstring
    images = images[:8]
    yield name, model, images, model(images, training=False).numpy()
    del model
    keras.backend.clear_session()


@pytest.mark.parametrize("zoo", zoo_params(), indirect=True)
def test_forward(zoo):
    name, model, images, ref = zoo
    assert ref.shape == (8, NUM_CLASSES)
    assert np.allclose(ref.sum(axis=1), 1, atol=1e-5)
    assert ref.std(axis=0).max() > 1e-3, "outputs do not depend on the input: the comparisons would be empty"


def keras_noise_floor(model, images: np.ndarray, ref: np.ndarray) -> float:
    """How far Keras itself moves when only the summation order changes (batch 1 instead of 8).

    Two correct fp32 implementations cannot agree more closely than this on this CPU; it is ~1e-6
    for most models at test size, but 1.7e-5 for the sharpened ResNet-50 on an AVX2-only machine,
    where onnxruntime then lands at 1.2e-4 (on AVX-512 machines it stays under 1e-4).
    """
    one = np.concatenate([model(images[i:i + 1], training=False).numpy() for i in range(len(images))])
    return float(np.abs(one - ref).max())


@pytest.mark.parametrize("fmt", ["tflite-fp32", "onnx"])
@pytest.mark.parametrize("zoo", zoo_params([n for n in list_models(task="classify")
                                             if n not in SCALED_TWIN_OF and n not in COVERED_BY]), indirect=True)
def test_export_roundtrip(zoo, fmt, tmp_path):
    name, model, images, ref = zoo
    path = export(fmt, model, ExportContext(tmp_path))
    got = load_runner(path, threads=2)(images)
    err = float(np.abs(got - ref).max())
    # ATOL, unless the model's own order-of-summation noise on this CPU says fp32 cannot be that close
    tol = max(ATOL, 8 * keras_noise_floor(model, images, ref))
    assert got.shape == ref.shape and err <= tol, f"{name} {fmt}: max |dprob| {err:.2e} > {tol:.2e}"


def layer_kinds(model) -> set[tuple[str, str]]:
    """The kinds of layers a converter meets: class and activation."""
    return {(type(layer).__name__, str(getattr(getattr(layer, "activation", None), "__name__", "")))
            for layer in model.layers}


@pytest.mark.parametrize("zoo", zoo_params(list(COVERED_BY)), indirect=True)
def test_covered_model_has_no_new_layers(zoo):
    """A model whose export round trip is left to others is made of their kinds of layers only."""
    name, model, _, _ = zoo
    covered = set().union(*(layer_kinds(build_small(other)[0]) for other in COVERED_BY[name]))
    assert set(COVERED_BY[name]).isdisjoint({*COVERED_BY, *SCALED_TWIN_OF})   # the coverers do their round trips
    assert layer_kinds(model) <= covered, f"{name} has layers its coverers lack: {layer_kinds(model) - covered}"


@pytest.mark.parametrize("zoo", zoo_params(list(SCALED_TWIN_OF)), indirect=True)
def test_scaled_twin_has_the_same_layers(zoo):
    """A model whose export round trip is left to its twin is made of exactly the twin's kinds of layers."""
    name, model, _, _ = zoo
    twin, _ = build_small(SCALED_TWIN_OF[name])
    assert layer_kinds(model) == layer_kinds(twin), f"{name} is not a scaled {SCALED_TWIN_OF[name]}"


@pytest.mark.parametrize("zoo", zoo_params(), indirect=True)
def test_layer_names_group_into_blocks(zoo):
    """train.block_of (the part before the first '_') must give a sensible, ordered list of blocks."""
    name, model, _, _ = zoo
    names = [layer.name for layer in model.layers]
    assert len(set(names)) == len(names)
    assert names[:2] == ["image", "normalize"] and names[-1] == "probs"
    assert model.get_layer("classifier").output.shape[-1] == NUM_CLASSES
    assert all(not isinstance(layer, keras.Model) for layer in model.layers), "nested model: not flat"
    blocks = backbone_blocks(model)
    assert len(blocks) >= 4, blocks
    # A block's weighted layers are contiguous in model order (else "unfreeze the last N" is ill-defined)...
    weighted = [block_of(layer.name) for layer in model.layers if layer.weights and layer.name not in KEEP]
    runs = [b for i, b in enumerate(weighted) if i == 0 or weighted[i - 1] != b]
    assert len(runs) == len(set(runs)), f"{name}: blocks interleave: {runs}"
    # ... and no layer keeps an auto-generated Keras name (their suffix depends on the session).
    auto = [n for n in names if n.split("_")[0] in {"conv2d", "tf.math.multiply", "re", "add", "batch", "zero",
                                                    "multiply", "tf.__operators__.add", "activation", "rescaling"}]
    assert not auto, auto


@pytest.mark.parametrize("name", list_models())
def test_entry_documents_its_defaults(name):
    entry = get_model_entry(name)
    assert entry.description and entry.default_input_size >= 32
    assert {"num_classes", "input_size", "weights"} <= set(entry.accepted)
    assert entry.defaults["weights"] is None  # nothing downloads unless asked


# One per code path of the keras.applications loader: MobileNet (keras builder + rename), ResNet-50
# (keras builder + RGB flip), VGG16 (weights copied from a separate keras model). The other
# keras-backed families take the first path, so they are not built again here.
KERAS_BACKED = ["mobilenet_v1", "resnet50", "vgg16"]


@pytest.mark.parametrize("name", KERAS_BACKED)
def test_imagenet_download_failure_is_one_clear_error(name, monkeypatch, tmp_path):
    """Offline, weights='imagenet' on a keras.applications family names the file and where to put it."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no cached ~/.keras/models
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there: the download fails fast
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    size = small_config(name)["input_size"]
    with pytest.raises(EdgecnnError, match=r"could not download the ImageNet weights file '.+\.h5'.*~/\.keras/models/"):
        create_model(name, num_classes=3, input_size=size, weights="imagenet")


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg11", "resnet18", "googlenet", "ds_cnn",
                                  "efficientnet_lite3"])
def test_imagenet_where_none_exists(name):
    with pytest.raises(EdgecnnError, match="no ImageNet weights for this model"):
        create_model(name, num_classes=3, input_size=max(67, small_config(name)["input_size"]), weights="imagenet")


def test_bad_arguments():
    with pytest.raises(EdgecnnError, match="ImageNet weights exist for alpha in"):
        create_model("mobilenet_v1", num_classes=3, alpha=0.3, weights="imagenet")
    with pytest.raises(EdgecnnError, match="size must be one of"):
        create_model("ds_cnn", num_classes=3, size="xl")
    with pytest.raises(EdgecnnError, match="input_size must be an integer >= 71"):
        create_model("xception", num_classes=3, input_size=64)
    with pytest.raises(EdgecnnError, match="input_size must be an integer >= 67"):
        create_model("alexnet", num_classes=3, input_size=64)
    with pytest.raises(TypeError, match="accepted"):
        create_model("efficientnet_b0", num_classes=3, alpha=0.5)  # compound scaling: no alpha


def test_weights_file_roundtrip(tmp_path):
    a, _ = build_small("mobilenet_v3_small_minimalistic")
    a.save_weights(str(tmp_path / "w.h5"))
    b = create_model("mobilenet_v3_small_minimalistic", num_classes=NUM_CLASSES, input_size=32, alpha=0.35,
                     weights=str(tmp_path / "w.h5"))
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert np.allclose(a(x).numpy(), b(x).numpy(), atol=1e-6)


# name -> (keras.applications reference, its preprocess_input module or None when it rescales inside,
#          our layer whose input is compared, the reference layer whose input is compared, layer to flip BGR->RGB)
KERAS_REFERENCE = {
    "mobilenet_v1": (lambda: keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, include_top=False,
                                                          weights=None), "mobilenet", "pool", None, None),
    "mobilenet_v3_small": (lambda: keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None), None, "head_conv", "Conv_1", None),
    "efficientnetv2_b0": (lambda: keras.applications.EfficientNetV2B0(
        input_shape=(32, 32, 3), include_top=False, weights=None), None, "pool", None, None),
    "resnet50": (lambda: keras.applications.ResNet50(input_shape=(32, 32, 3), include_top=False, weights=None),
                 "resnet50", "pool", None, "conv1_conv"),
    "vgg16": (lambda: keras.applications.VGG16(input_shape=(32, 32, 3), include_top=False, weights=None),
              "vgg16", "fc1", None, "block1_conv1"),
    "xception": (lambda: keras.applications.Xception(input_shape=(71, 71, 3), include_top=False, weights=None),
                 "xception", "pool", None, None),
    "densenet121": (lambda: keras.applications.DenseNet121(input_shape=(32, 32, 3), include_top=False,
                                                           weights=None), "densenet", "pool", None, None),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("xception", "densenet121",
                                  "efficientnetv2_b0") else n for n in KERAS_REFERENCE])
def test_normalize_matches_keras_preprocessing(name):
    """Our in-graph normalize (+ the RGB flip for Caffe-trained weights) == Keras' preprocess_input + model.

    Both get the same weights (copied in layer order), so a difference could only be the
    preprocessing: this is what makes weights='imagenet' correct without downloading it here.
    (EfficientNet B0-B3 are left out: Keras' own normalisation there only exists with its weights.)
    """
    from edgecnn.arch._keras_apps import flip_rgb_bgr

    ours, size = build_small(name)
    make_ref, module, our_layer, ref_layer, flip = KERAS_REFERENCE[name]
    ref = make_ref()
    src = [layer for layer in ref.layers if layer.weights]
    dst = [layer for layer in ours.layers if layer.weights and layer.name not in KEEP]
    for s, d in zip(src, dst):
        d.set_weights(s.get_weights())
    if flip:
        flip_rgb_bgr(ours, flip)
    x = np.random.default_rng(2).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    pre = getattr(keras.applications, module).preprocess_input(x.copy()) if module else x
    want = keras.Model(ref.inputs, ref.get_layer(ref_layer).input if ref_layer else ref.output)(pre).numpy()
    got = keras.Model(ours.inputs, ours.get_layer(our_layer).input)(x).numpy()
    assert got.shape == want.shape
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.slow
def test_vgg16_imagenet_loader_reshapes_the_fc_layers():
    """weights='imagenet' at 224 px: Keras' Dense fc1/fc2 become our 7x7/1x1 convolutions, same outputs."""
    from edgecnn.arch.vgg import load_keras_vgg16

    keras.utils.set_random_seed(0)
    src = keras.applications.VGG16(include_top=True, weights=None)  # stands in for the downloaded checkpoint
    ours = create_model("vgg16", num_classes=1000)
    load_keras_vgg16(ours, src)
    ours.get_layer("classifier").set_weights(src.get_layer("predictions").get_weights())
    x = np.random.default_rng(3).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    want = src(keras.applications.vgg16.preprocess_input(x.copy())).numpy()
    assert np.allclose(ours(x).numpy(), want, atol=1e-5)

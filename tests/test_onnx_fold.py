"""Folding the in-graph input normalisation into the first convolution of an exported ONNX graph.

The rewrite must compute the same function (checked against the Keras model in onnxruntime) and
leave no broadcast Sub/Mul on the input: a padding conv pads with the mean instead (each channel
with its own, for a per-channel mean).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgecnn._tf import keras
from edgecnn.arch._layers import normalize
from edgecnn.quantize import keras_to_onnx
from edgecnn.quantize.onnx_fold import fold_input_normalisation


def _net(mean, std, padding: str, stride: int = 2):
    inp = keras.Input((20, 20, 3), name="image")
    x = normalize(inp, mean, std)
    x = keras.layers.Conv2D(8, 3, strides=stride, padding=padding, name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for w in model.weights:  # non-trivial BN statistics, so the fold is exercised through fused weights
        if "moving_variance" in w.name:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
        elif "moving_mean" in w.name or "beta" in w.name:
            w.assign(rng.normal(0, 0.5, w.shape).astype(np.float32))
    return model


CASES = {
    "per-channel mean, padding conv": (((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "same", 1, ["Pad"] * 3),
    "uniform mean, padding conv": (((0.498, 0.498, 0.498), (0.502, 0.502, 0.502)), "same", 2, ["Pad"]),
    "per-channel mean, valid conv": (((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "valid", 2, []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_folded_graph_matches_keras_and_drops_the_input_broadcasts(tmp_path, case):
    import onnxruntime as ort

    (mean, std), padding, stride, left = CASES[case]
    model = _net(mean, std, padding, stride)
    path = keras_to_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    if left == ["Pad"] * 3:   # per-channel mean over a padding conv: folded only when asked (int8 accuracy)
        assert [n.op_type for n in proto.graph.node[:2]] == ["Sub", "Mul"]
        assert fold_input_normalisation(proto, per_channel_padding=True)
        path = tmp_path / "folded.onnx"
        onnx.save(proto, str(path))
    graph = proto.graph
    first_conv = next(i for i, n in enumerate(graph.node) if n.op_type == "Conv")
    before = [n.op_type for n in graph.node[:first_conv]]
    assert "Mul" not in before and "Div" not in before
    assert "Sub" not in before and [op for op in before if op == "Pad"] == left
    assert before[0] == "Transpose"   # what stays of the normalisation runs on NCHW planes
    x = np.random.default_rng(1).integers(0, 256, (4, 20, 20, 3)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=2e-5)


def test_graph_without_the_pattern_is_left_unchanged(tmp_path):
    inp = keras.Input((8, 8, 3), name="image")
    out = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inp)))
    path = keras_to_onnx(keras.Model(inp, out), tmp_path / "plain.onnx")
    proto = onnx.load(str(path))
    before = proto.SerializeToString()
    assert fold_input_normalisation(proto) is None
    assert proto.SerializeToString() == before

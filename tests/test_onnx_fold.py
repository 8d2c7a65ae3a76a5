"""Folding the in-graph input normalisation into the first convolution of an exported ONNX graph.

The rewrite must compute the same function (checked against the Keras model in onnxruntime) and
leave no broadcast Sub/Mul on the input: a padding conv pads with the mean instead (each channel
with its own, for a per-channel mean). Quantised, the folded conv's bias is corrected for what int8
weights do to the mean it now sees.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgecnn._tf import keras
from edgecnn.arch._layers import normalize
from edgecnn.quantize import keras_to_onnx, quantize_onnx
from edgecnn.quantize.onnx_fold import fold_input_normalisation, fold_record


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
    "per-channel mean, padding conv": (((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "same", 1, []),
    "per-channel mean, stride-2 padding conv": (((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "same", 2, []),
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
    graph = proto.graph
    first_conv = next(i for i, n in enumerate(graph.node) if n.op_type == "Conv")
    before = [n.op_type for n in graph.node[:first_conv]]
    assert "Mul" not in before and "Div" not in before
    assert "Sub" not in before and [op for op in before if op == "Pad"] == left
    if padding == "same" and not left:   # a per-channel mean: strips of it concatenated around the image
        assert "Concat" in before and "Split" not in before
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


def test_int8_bias_is_corrected_for_the_folded_mean(tmp_path):
    """The quantised conv's response to the mean image equals the float one to one bias step.

    Without the correction it is off by ``sum((W_q - W) * mean)`` per channel (measured here too, so
    the test fails if the correction stops running).
    """
    from onnx import numpy_helper

    (mean, std), padding, stride, _ = CASES["per-channel mean, padding conv"]
    path = keras_to_onnx(_net(mean, std, padding, stride), tmp_path / "m.onnx")
    flt = onnx.load(str(path))
    fold = fold_record(flt)
    calib = np.random.default_rng(2).uniform(0, 255, (32, 20, 20, 3)).astype(np.float32)
    q = onnx.load(str(quantize_onnx(path, tmp_path / "q.onnx", calib, per_channel=True, reduce_range=True)))

    init = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in q.graph.initializer}
    finit = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in flt.graph.initializer}
    conv = next(n for n in q.graph.node if n.name == fold["conv"])
    producer = {o: n for n in q.graph.node for o in n.output}
    w_dq, b_dq = producer[conv.input[1]], producer[conv.input[2]]
    w_q = init[w_dq.input[0]] * init[w_dq.input[1]][:, None, None, None]
    b_q, b_step = init[b_dq.input[0]] * init[b_dq.input[1]], init[b_dq.input[1]]
    f_conv = next(n for n in flt.graph.node if n.name == fold["conv"])
    w, b = finit[f_conv.input[1]], finit[f_conv.input[2]]
    m = np.asarray(fold["mean"])[None, :, None, None]

    uncorrected = np.abs(((w_q - w) * m).sum(axis=(1, 2, 3)))
    assert (uncorrected > 2 * b_step).any()     # the offset is real: several bias steps on some channel
    dc_error = np.abs((w_q * m).sum(axis=(1, 2, 3)) + b_q - (w * m).sum(axis=(1, 2, 3)) - b)
    assert (dc_error <= b_step * 0.5 + 1e-9).all()


def test_chooser_exports_the_float_onnx_of_this_model_not_an_earlier_one(tmp_path):
    """A compress rerun (new model, same workdir) quantises the new model, not a model.onnx left behind."""
    from edgecnn.compress.chooser import ChooseContext

    calib = np.zeros((1, 20, 20, 3), np.float32)
    first = ChooseContext(_net((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "valid"), calib, tmp_path)
    old = first.onnx_path().read_bytes()
    assert first.onnx_path().read_bytes() == old            # once per run: the second call reuses it
    second = ChooseContext(_net((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "valid"), calib, tmp_path)
    assert second.onnx_path() == first.onnx_path() and second.onnx_path().read_bytes() != old

"""Compression: pruning, clustering, QAT (+PQAT/CQAT), ONNX int8 calibration variants, the chooser.

Tiny models at 32 px on an easy synthetic task (the class is the dominant colour channel), so a
few epochs give a confident model whose int8 versions should agree with it. The heavier checks
(QAT over the zoo's edge families, CQAT conversion, sparse TFLite) are marked slow.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgecnn._tf import keras
from edgecnn.arch import create_model, list_models
from edgecnn.compress import (
    choose,
    cluster,
    fine_tune_clustered,
    fine_tune_pruned,
    fine_tune_qat,
    flatten,
    fold_normalization,
    gzipped_size,
    is_nested,
    load_qat,
    overall_sparsity,
    prunable_layers,
    prune,
    quantize_aware,
    save_qat,
    sparse_tflite,
    sparsity_report,
    strip,
    strip_clusters,
    to_tflite_int8,
    unique_values,
    unsupported_layers,
)
from edgecnn.config import CompressConfig
from edgecnn.errors import EdgecnnError
from edgecnn.quantize import onnx_sensitive_nodes, quantize_onnx, tflite_int8
from edgecnn.runtime import load_runner

SIZE = 32


def _colour_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 120, (n, SIZE, SIZE, 3)).astype(np.float32)
    x[np.arange(n), :, :, y] += 120.0
    return x, y


@pytest.fixture(scope="module")
def data():
    (x, y), (vx, vy) = _colour_data(96, 0), _colour_data(45, 1)
    return x, y, vx, vy


@pytest.fixture(scope="module")
def trained(data):
    """dsconv (2 blocks, alpha 0.25) trained to ~100 % on the colour task."""
    x, y, _, _ = data
    keras.utils.set_random_seed(0)
    model = create_model("dsconv", num_classes=3, input_size=SIZE, alpha=0.25, depth=2)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    return model


@pytest.fixture(scope="module")
def float_onnx(trained, tmp_path_factory):
    from edgecnn.export import ExportContext, export

    return export("onnx", trained, ExportContext(tmp_path_factory.mktemp("onnx")))


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


# -------------------------------------------------------------------------------------- pruning
def test_prune_reaches_target_sparsity_and_strip_leaves_plain_model(trained, data):
    x, y, _, _ = data
    before = [w.copy() for w in trained.get_weights()]
    pruned = prune(trained, target_sparsity=0.5, begin_step=0, end_step=6, frequency=1)
    assert any(type(layer).__name__ == "PruneLowMagnitude" for layer in pruned.layers)
    fine_tune_pruned(pruned, (x, y), epochs=2, batch_size=16)
    plain = strip(pruned)
    assert not any(type(layer).__name__ == "PruneLowMagnitude" for layer in plain.layers)
    report = sparsity_report(plain)
    assert set(report) == set(prunable_layers(trained))  # Conv2D + Dense; depthwise and normalize untouched
    for name, zeros in report.items():
        assert zeros == pytest.approx(0.5, abs=0.02), name
    # the argument is untouched (verbs return new models)
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights()))
    assert "normalize" in [layer.name for layer in plain.layers]


def test_prune_2_4_and_pointwise_selection(trained, data):
    x, y, _, _ = data
    assert prunable_layers(trained, "pointwise") == ["ds1_pw", "ds2_pw"]
    pruned = prune(trained, structured_2_4=True, end_step=2, layers="pointwise")
    fine_tune_pruned(pruned, (x[:32], y[:32]), epochs=1, batch_size=16)
    plain = strip(pruned)
    report = sparsity_report(plain)
    assert report["ds1_pw"] == pytest.approx(0.5) and report["ds2_pw"] == pytest.approx(0.5)
    assert report["stem"] == 0.0 and report["classifier"] == 0.0  # not selected
    k = plain.get_layer("ds2_pw").get_weights()[0]  # (1, 1, in, out): 2 zeros in every 4 input channels
    groups = (k.reshape(-1, 4, k.shape[-1]) == 0).sum(axis=1)
    assert (groups >= 2).all()


def test_prune_rejects_bad_arguments(trained):
    with pytest.raises(EdgecnnError, match=r"target_sparsity must be in \(0, 1\); received target_sparsity=1.5"):
        prune(trained, target_sparsity=1.5, end_step=10)
    with pytest.raises(EdgecnnError, match="Did you mean 'classifier'"):
        prune(trained, end_step=10, exclude=["clasifier"])


# ----------------------------------------------------------------------------------- clustering
def test_cluster_leaves_at_most_n_values_per_kernel(trained, data):
    x, y, _, _ = data
    clustered = cluster(trained, clusters=8, init="kmeans++")
    fine_tune_clustered(clustered, (x[:32], y[:32]), epochs=1, batch_size=16)
    plain = strip_clusters(clustered)
    counts = unique_values(plain)
    assert counts and all(n <= 8 for n in counts.values()), counts
    with pytest.raises(EdgecnnError, match="init must be one of"):
        cluster(trained, clusters=8, init="kmeans")


# ---------------------------------------------------------------------------- flatten / support
def test_flatten_nested_keras_applications_backbone():
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), alpha=0.35)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, -1, name="rescale")(inp)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    nested = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="classifier")(x))
    assert is_nested(nested)
    flat = flatten(nested)
    assert not is_nested(flat)
    assert len(flat.layers) == len(backbone.layers) - 1 + 4  # the inner Input is gone
    probe = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(nested(probe).numpy(), flat(probe).numpy(), atol=1e-5)
    assert unsupported_layers(nested) == []  # Rescaling handled, BN folded, ReLU6 known


def test_unsupported_layer_reported_by_name_up_front():
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Normalization(mean=[127.5] * 3, variance=[4000.0] * 3, name="normalize")(inp)
    x = keras.layers.Conv2D(8, 3, name="conv")(x)
    x = keras.layers.Lambda(lambda t: t * 0.5, name="my_lambda")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    found = unsupported_layers(model)
    assert [(n, t) for n, t, _ in found] == [("my_lambda", "Lambda")]
    assert "Fix" in found[0][2]
    with pytest.raises(EdgecnnError, match="my_lambda \\(Lambda\\)"):
        quantize_aware(model, on_unsupported="error")


def test_fold_normalization_exact_without_padding_and_refused_with_it(trained):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Normalization(mean=[120, 110, 100], variance=[3600, 2500, 1600], name="normalize")(inp)
    x = keras.layers.Conv2D(4, 3, padding="valid", use_bias=False, name="conv")(x)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    folded, delta = fold_normalization(model)
    assert delta < 1e-4
    assert not any(isinstance(layer, keras.layers.Normalization) for layer in folded.layers)
    with pytest.raises(EdgecnnError, match="allow_border_error=True"):
        fold_normalization(trained)  # ZeroPadding2D between normalize and the stride-2 stem


# ------------------------------------------------------------------------------------------ QAT
def test_qat_dsconv_converts_to_int8_and_agrees(trained, data, tmp_path):
    x, y, vx, _ = data
    assert unsupported_layers(trained) == []
    qat = quantize_aware(trained)
    names = [layer.name for layer in qat.layers]
    assert "quant_normalize" in names  # the Normalization layer is wrapped (output range learned)
    moving = lambda m: [w.numpy().copy() for w in m.weights if "moving_" in w.name]  # noqa: E731
    before = moving(qat)
    fine_tune_qat(qat, (x, y), epochs=1, lr=1e-5, batch_size=16)
    # BatchNorm stays in inference mode: its trained statistics are not replaced by batch statistics
    assert all(np.array_equal(a, b) for a, b in zip(before, moving(qat)))
    saved = save_qat(qat, tmp_path / "model.qat.h5")
    np.testing.assert_allclose(load_qat(saved).predict(vx[:4], verbose=0), qat.predict(vx[:4], verbose=0), atol=1e-6)
    runner_path = _write(to_tflite_int8(qat, x[:16]), tmp_path)
    runner = load_runner(runner_path, threads=1)
    assert runner.input.dtype == "int8" and runner.output.dtype == "int8"
    assert _agreement(runner(vx), qat.predict(vx, verbose=0)) >= 0.9


def test_qat_distilled_from_the_float_model(trained, data):
    x, y, vx, _ = data
    qat = quantize_aware(trained)
    history = fine_tune_qat(qat, (x, y), (vx, vx[:, 0, 0, 0]), epochs=1, lr=1e-4, batch_size=16, teacher=trained,
                            schedule="cosine")
    assert "agreement" in history and "val_agreement" in history  # fitted to the teacher, scored against it
    assert _agreement(qat.predict(vx, verbose=0), trained.predict(vx, verbose=0)) >= 0.9


def test_tflite_percentile_calibration_narrows_ranges_and_agrees(trained, data, tmp_path):
    from edgecnn._tf import tf
    from edgecnn.quantize import narrow_to_percentile, representative_dataset

    x, _, vx, _ = data
    runner = load_runner(_write(tflite_int8(trained, x[:32], method="percentile"), tmp_path), threads=1)
    assert runner.input.dtype == "int8"
    assert _agreement(runner(vx), trained.predict(vx, verbose=0)) >= 0.9
    conv = tf.lite.TFLiteConverter.from_keras_model(trained)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative_dataset(x[:32])
    conv._experimental_calibrate_only = True
    _, changed = narrow_to_percentile(bytes(conv.convert()), x[:32], 99.0)
    assert changed > 0
    with pytest.raises(EdgecnnError, match="must be one of \\['minmax', 'percentile'\\]"):
        tflite_int8(trained, x[:16], method="kl")
    with pytest.raises(EdgecnnError, match="percentile must be in"):
        tflite_int8(trained, x[:16], method="percentile", percentile=50)


def _write(data: bytes, folder: Path) -> Path:
    path = folder / f"m{len(list(folder.glob('*.tflite')))}.tflite"
    path.write_bytes(data)
    return path


def test_pqat_keeps_sparsity(trained, data):
    x, y, _, _ = data
    pruned = prune(trained, target_sparsity=0.5, end_step=4, frequency=1)
    fine_tune_pruned(pruned, (x, y), epochs=1, batch_size=16)
    qat = quantize_aware(strip(pruned), scheme="pqat")
    fine_tune_qat(qat, (x, y), epochs=1, lr=1e-4, batch_size=16)
    kernels = {w.name: w.numpy() for layer in qat.layers for w in layer.weights if w.name.endswith("/kernel:0")}
    assert kernels
    for name, k in kernels.items():
        assert (k == 0).mean() >= 0.49, name


# dsconv is covered (with training) by test_qat_dsconv_converts_to_int8_and_agrees. EfficientNet-Lite's
# layers are MobileNetV2's minus its ZeroPadding2D (test_lite_layers_are_a_subset_of_mobilenet_v2), so
# tfmot meets nothing new in it. Each family is its own pytest-xdist work unit (they use no module
# fixture), so the slow QAT conversions spread over workers.
ZOO = [pytest.param(m, marks=pytest.mark.xdist_group(f"compress-{m}"))
       for m in ("mobilenet_v2", "mobilenet_v3_small") if m in list_models()]


def test_lite_layers_are_a_subset_of_mobilenet_v2():
    def kinds(model):
        return {(type(layer).__name__, str(getattr(getattr(layer, "activation", None), "__name__", "")))
                for layer in model.layers}

    lite = kinds(create_model("efficientnet_lite0", num_classes=3, input_size=SIZE))
    assert lite <= kinds(_small_zoo_model("mobilenet_v2")), lite - kinds(_small_zoo_model("mobilenet_v2"))


def _small_zoo_model(name: str):
    args = {"num_classes": 3, "input_size": SIZE}
    if name == "mobilenet_v2":
        args["alpha"] = 0.35
    return create_model(name, **args)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_qat_zoo_families_convert_to_int8(name, tmp_path):
    """Each edge family quantises with QAT and its int8 TFLite tracks the QAT Keras model."""
    model = _small_zoo_model(name)
    left_float = unsupported_layers(model)
    assert all(t in ("TFOpLambda",) for _, t, _ in left_float), left_float  # only TF-op hard-swish pieces
    qat = quantize_aware(model)
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, (16, SIZE, SIZE, 3)).astype(np.float32)
    runner = load_runner(_write(to_tflite_int8(qat, calib), tmp_path), threads=1)
    probe = rng.uniform(0, 255, (8, SIZE, SIZE, 3)).astype(np.float32)
    assert np.abs(runner(probe) - qat.predict(probe, verbose=0)).max() <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_prune_zoo_families_then_int8(name, tmp_path):
    """Each edge family prunes (flattened, layer by layer), keeps its zeros through stripping, converts to int8."""
    model = _small_zoo_model(name)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, SIZE, SIZE, 3)).astype(np.float32)
    wrapped = prune(model, target_sparsity=0.5, end_step=2, frequency=1)
    fine_tune_pruned(wrapped, (x, np.arange(16) % 3), epochs=3, lr=1e-6, batch_size=16)
    plain = strip(wrapped)
    assert overall_sparsity(plain) == pytest.approx(0.5, abs=0.02)
    runner = load_runner(_write(tflite_int8(plain, x), tmp_path), threads=1)
    assert runner.input.dtype == "int8" and np.isfinite(runner(x)).all()


@pytest.mark.slow
def test_cqat_converts_to_int8(trained, data, tmp_path):
    x, y, vx, _ = data
    clustered = cluster(trained, clusters=8)
    fine_tune_clustered(clustered, (x[:32], y[:32]), epochs=1, batch_size=16)
    qat = quantize_aware(strip_clusters(clustered), scheme="cqat")
    fine_tune_qat(qat, (x[:32], y[:32]), epochs=1, batch_size=16)
    runner = load_runner(_write(to_tflite_int8(qat, x[:16]), tmp_path), threads=1)
    assert _agreement(runner(vx), qat.predict(vx, verbose=0)) >= 0.9


@pytest.mark.slow
def test_sparse_tflite_is_smaller_and_computes_the_same(data, tmp_path):
    """80 % zeros in the 1x1 convs of a wider dsconv: sparse storage shrinks the fp32 file, outputs match."""
    import tensorflow_model_optimization as tfmot

    from edgecnn._tf import tf

    _, _, vx, _ = data
    model = create_model("dsconv", num_classes=3, input_size=SIZE, alpha=1.0, depth=4)
    pruned = prune(model, target_sparsity=0.8, initial_sparsity=0.8, end_step=1, frequency=1, layers="pointwise")
    pruned.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")  # one step applies the masks
    pruned.fit(vx[:2], np.zeros(2), epochs=1, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    plain = strip(pruned)
    assert all(v == pytest.approx(0.8, abs=0.01) for k, v in sparsity_report(plain).items() if k.endswith("_pw"))
    dense = tf.lite.TFLiteConverter.from_keras_model(plain).convert()
    sparse = sparse_tflite(plain)
    assert len(sparse) < 0.7 * len(dense) and gzipped_size(sparse) < gzipped_size(dense)
    runner = load_runner(_write(sparse, tmp_path), threads=1)
    np.testing.assert_allclose(runner(vx), plain.predict(vx, verbose=0), atol=1e-4)


# ------------------------------------------------------------------------------------ ONNX PTQ
@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_quantize_onnx_each_calibration_method(method, float_onnx, data, tmp_path):
    x, _, vx, _ = data
    out = quantize_onnx(float_onnx, tmp_path / f"m.{method}.onnx", x[:24], method=method, per_channel=True)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ref = load_runner(float_onnx)(vx)
    assert _agreement(load_runner(out)(vx), ref) >= 0.9


def test_quantize_onnx_excludes_sensitive_nodes(float_onnx, data, tmp_path):
    x, _, _, _ = data
    base = quantize_onnx(float_onnx, tmp_path / "base.onnx", x[:16], method="minmax", per_channel=False)
    nodes = onnx_sensitive_nodes(float_onnx, base, x[:8], top_k=2)
    assert nodes
    mixed = quantize_onnx(float_onnx, tmp_path / "mixed.onnx", x[:16], exclude_nodes=nodes)
    graph = onnx.load(str(mixed)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name in nodes and node.op_type in ("Conv", "Gemm"):
            assert producers.get(node.input[1]) != "DequantizeLinear", node.name  # float weights
    with pytest.raises(EdgecnnError, match="are not nodes of"):
        quantize_onnx(float_onnx, tmp_path / "bad.onnx", x[:16], exclude_nodes=["no-such-node"])
    assert not (tmp_path / "bad.onnx").exists()


def test_too_few_calibration_images_is_one_clear_error(trained, float_onnx, data, tmp_path):
    x, _, vx, vy = data
    with pytest.raises(EdgecnnError, match="needs at least 10 calibration images; received 3"):
        quantize_onnx(float_onnx, tmp_path / "m.onnx", x[:3])
    with pytest.raises(EdgecnnError, match="needs at least 10 calibration images; received 3"):
        tflite_int8(trained, x[:3])
    with pytest.raises(EdgecnnError, match="needs at least 10 calibration images; received 3"):
        choose(trained, vx, vy, x[:3], tmp_path / "compress")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# ------------------------------------------------------------------------------------- chooser
def test_chooser_picks_a_candidate_within_budget(trained, data, tmp_path):
    x, y, vx, vy = data
    result = choose(trained, vx, vy, x[:32], tmp_path, max_accuracy_drop=0.02, prefer="size",
                    routes=["tflite-int8", "onnx-int8-minmax", "onnx-int8-entropy"], runs=5, warmup=1)
    assert result.ok and result.chosen.within_budget
    assert result.chosen.drop <= 0.02 and result.chosen.artifact.is_file()
    assert [c.route for c in result.candidates] == ["tflite-int8"]  # routes in cost order: the first that holds ends it
    for c in result.candidates:
        assert c.size_bytes > 0 and c.latency_p50_ms > 0 and c.accuracy is not None
    report = json.loads(json.dumps(result.to_json()))
    assert report["chosen"] == result.chosen.route and len(report["candidates"]) == 1


def test_chooser_rejects_invalid_budget(trained, data, tmp_path):
    x, _, vx, vy = data
    with pytest.raises(EdgecnnError, match=r"max_accuracy_drop must be in \[0, 1\].*received max_accuracy_drop=-1"):
        choose(trained, vx, vy, x[:16], tmp_path / "c", max_accuracy_drop=-1)
    with pytest.raises(EdgecnnError, match="Did you mean 'tflite-int8'"):
        choose(trained, vx, vy, x[:16], tmp_path / "c", routes=["tflite-int"])
    assert not (tmp_path / "c").exists()


def test_chooser_reports_unreachable_budget(data, tmp_path):
    """A head whose classes differ by < 1/256 in probability: int8 output ties them, float does not."""
    x, _, vx, _ = data
    model = create_model("dsconv", num_classes=3, input_size=SIZE, alpha=0.25, depth=1)
    w, _ = model.get_layer("classifier").get_weights()
    model.get_layer("classifier").set_weights([np.zeros_like(w), np.array([0.0, 1e-4, -1e-4], np.float32)])
    labels = np.ones(len(vx), np.int64)  # float argmax is class 1 everywhere
    result = choose(model, vx, labels, x[:16], tmp_path, max_accuracy_drop=0.0,
                    routes=["tflite-int8", "tflite-int8-qat"], runs=0)
    assert result.chosen is None and not result.ok
    assert result.reason.startswith("budget unreachable")
    assert "tflite-int8" in result.reason and "tflite-int8-qat" in result.skipped
    assert result.float_accuracy == 1.0 and result.candidates[0].drop > 0
    assert json.loads(json.dumps(result.to_json()))["chosen"] is None


# -------------------------------------------------------------------------------------- config
def test_compress_config_is_strict():
    from pydantic import ValidationError

    cfg = CompressConfig(enabled=True, prune={"enabled": True, "target_sparsity": 0.6})
    assert cfg.qat_scheme == "pqat" and cfg.max_accuracy_drop == 0.005
    with pytest.raises(ValidationError, match="extra"):
        CompressConfig(prune={"sparsity": 0.5})
    with pytest.raises(ValidationError, match="unknown route"):
        CompressConfig(routes=["tflite-int4"])
    with pytest.raises(ValidationError):
        CompressConfig(max_accuracy_drop=-0.1)


def test_closest_candidate_counts_missing_agreement_as_well_as_drop():
    from edgecnn.compress.chooser import Candidate, ChooseResult
    from edgecnn.compress.stage import _pick

    qat = Candidate("tflite-int8-qat", "qat", "litert", artifact=Path("a"), drop=0.003, agreement=0.961)
    pct = Candidate("tflite-int8-percentile", "calibration", "litert", artifact=Path("b"), drop=0.008, agreement=0.99)
    result = ChooseResult(None, "unreachable", 0.005, 0.95, 0.95, [qat, pct], {}, 1)
    assert _pick(result, 0.98) == (pct, False)  # 0.3 points over on drop beats 1.9 points short on agreement
    assert _pick(result, None) == (qat, False)  # without an agreement budget only the drop counts
    result.chosen = qat
    assert _pick(result, 0.98) == (qat, True)


def test_batchnorm_adaptation_re_estimates_statistics(trained, data):
    """adapt_batchnorm: moving mean/variance become the statistics of the data; nothing else moves."""
    from edgecnn.compress._fit import adapt_batchnorm, copy_model, freeze_batchnorm

    x = data[0]
    model = copy_model(trained)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns
    first = bns[0]
    frozen = freeze_batchnorm(model)  # as during compression fine-tuning: adaptation must still update
    first.moving_mean.assign(first.moving_mean + 5.0)  # stale statistics, as after pruning
    others = [w.numpy() for layer in model.layers if not isinstance(layer, keras.layers.BatchNormalization)
              for w in layer.weights]
    momenta = [bn.momentum for bn in bns]
    assert adapt_batchnorm(model, x, batch_size=32) == len(bns)
    # the input of the first BN, and the mean over the batches of its per-batch means
    probe = keras.Model(model.inputs, model.get_layer(index=model.layers.index(first) - 1).output)
    feats = probe(x, training=False).numpy()
    axes = tuple(range(feats.ndim - 1))
    want = np.mean([feats[i:i + 32].mean(axis=axes) for i in range(0, len(x) - 31, 32)], axis=0)
    assert np.allclose(first.moving_mean.numpy(), want, atol=1e-3 * (1 + np.abs(want).max()))
    assert [bn.momentum for bn in bns] == momenta and not any(bn.trainable for bn in frozen)
    after = [w.numpy() for layer in model.layers if not isinstance(layer, keras.layers.BatchNormalization)
             for w in layer.weights]
    assert all(np.array_equal(a, b) for a, b in zip(others, after))



def test_qat_average_pooling_keeps_its_input_scale(data, tmp_path):
    """tfmot gives AveragePooling2D its own output range, which TFLite's int8 kernel rejects (DenseNet's
    transitions failed to convert); it is left unquantised so the converter carries the input scale."""
    from ai_edge_litert.interpreter import Interpreter

    from edgecnn.compress._quantize_configs import plan_layer

    x, y, _, _ = data
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(keras.layers.Rescaling(1 / 255)(inp))
    h = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="bn")(h))
    h = keras.layers.Conv2D(8, 1, use_bias=False, name="transition_conv")(h)  # DenseNet: conv -> pool
    h = keras.layers.AveragePooling2D(2, name="transition_pool")(h)
    out = keras.layers.Dense(3, activation="softmax", name="classifier")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    assert plan_layer(model.get_layer("transition_pool")).action == "same-scale"
    qat = quantize_aware(model)
    pool = qat.get_layer("quant_transition_pool")
    assert pool.quantize_config.get_output_quantizers(pool.layer) == []  # no range of its own
    fine_tune_qat(qat, (x[:32], y[:32]), epochs=1, batch_size=16, lr=1e-3)
    path = _write(to_tflite_int8(qat, x[:16]), tmp_path)
    interp = Interpreter(model_path=str(path))
    tensors = interp.get_tensor_details()
    pools = [op for op in interp._get_ops_details() if op["op_name"] == "AVERAGE_POOL_2D"]
    assert len(pools) == 1
    scale_in = tensors[pools[0]["inputs"][0]]["quantization"][0]
    scale_out = tensors[pools[0]["outputs"][0]]["quantization"][0]
    assert scale_in == scale_out and scale_in > 0
    assert np.isfinite(load_runner(path, threads=1)(x[:4])).all()

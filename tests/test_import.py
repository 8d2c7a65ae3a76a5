"""`edgecnn import`: real models in every source format (tf_keras .h5 and SavedModel, a Keras 3 CNN,
an NCHW ONNX made with tf2onnx, float and int8 TFLite) imported into ordinary run directories,
evaluated, their float artifacts agreeing with the source; the preprocessing contract; bad input;
`edgecnn check` on an imported ONNX run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError

ROOT = Path(__file__).resolve().parent.parent
SIZE = 32
BASE = {"export": {"formats": ["tflite-fp32", "onnx"], "calibration_images": 20},
        "evaluate": {"warmup": 1, "runs": 10, "threads": [1], "runtimes": []}}
QUICK = "measurement: {warmup_runs: 3, warmup_s: 0.02, window_runs: 10, window_s: 0.04, max_time_s: 2, min_rounds: 4}\n"


def _arrays(data: Path, split: str, size: int = SIZE):
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import load_arrays

    return load_arrays(discover(data, min_images_per_class=5), split, size)


@pytest.fixture(scope="module")
def sources(tiny_defects, tmp_path_factory):
    """One small CNN trained on 0-1 inputs (no normalisation in the graph), saved in every format."""
    from edgecnn._tf import keras, tf

    out = tmp_path_factory.mktemp("sources")
    x, y = _arrays(tiny_defects, "train")
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, activation="softmax")],
                           name="unit_cnn")
    net.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    net.fit(x / 255.0, y, epochs=3, batch_size=16, verbose=0)
    net.save(out / "unit_cnn.h5")
    _nchw_onnx(net, out / "unit_cnn_nchw.onnx")
    net.save(out / "unit_cnn_savedmodel", save_format="tf")
    _plain_tf_module(net, out / "unit_cnn_plain_tf")
    # TFLite files must take 0-255 themselves: a Rescaling layer in front.
    px = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255.0), net])
    conv = tf.lite.TFLiteConverter.from_keras_model(px)
    (out / "px.fp32.tflite").write_bytes(conv.convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(px)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(20))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    (out / "px.int8.tflite").write_bytes(conv.convert())
    reference = net.predict(_arrays(tiny_defects, "test")[0] / 255.0, verbose=0)
    return {"dir": out, "reference": reference}


def _nchw_onnx(net, path: Path) -> None:
    """``net`` as an NCHW ONNX file, as PyTorch would export it: the graph takes (N, 3, H, W)."""
    import tf2onnx

    from edgecnn._tf import keras, tf

    nchw = keras.Sequential([keras.Input((3, SIZE, SIZE)), keras.layers.Permute((2, 3, 1)), net])
    spec = [tf.TensorSpec((None, 3, SIZE, SIZE), tf.float32, name="input")]
    proto, _ = tf2onnx.convert.from_keras(nchw, input_signature=spec, opset=17)
    path.write_bytes(proto.SerializeToString())


def _plain_tf_module(net, path: Path, signature: str = "serving_default") -> None:
    """``net``'s trained weights in a plain ``tf.Module`` (tf.nn.conv2d on variables, no Keras), saved with
    tf.saved_model.save: the SavedModel a TensorFlow-only project ships."""
    from edgecnn._tf import tf

    (k1, b1), (k2, b2), (w, b) = ([tf.Variable(a) for a in layer.get_weights()]
                                  for layer in net.layers if layer.get_weights())

    class PlainCnn(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="pixels")])
        def predict(self, x):
            h = tf.nn.relu(tf.nn.conv2d(x, self.k1, 2, "VALID") + self.b1)
            h = tf.nn.relu(tf.nn.conv2d(h, self.k2, 2, "VALID") + self.b2)
            return {"scores": tf.nn.softmax(tf.reduce_mean(h, [1, 2]) @ self.w + self.b)}

    module = PlainCnn()
    module.k1, module.b1, module.k2, module.b2, module.w, module.b = k1, b1, k2, b2, w, b
    tf.saved_model.save(module, str(path), signatures={signature: module.predict})


@pytest.fixture(scope="module")
def levels(tiny_defects, tmp_path_factory) -> dict:
    """The tiny set's textures at four brightness levels (class = level), and an NCHW ONNX classifier
    trained on -1..1 inputs (``symmetric``): a task a tiny CNN learns, so a wrong guess shows."""
    from PIL import Image

    from edgecnn._tf import keras

    root = tmp_path_factory.mktemp("levels")
    for src in sorted(tiny_defects.glob("*/*/*.png")):
        img = np.asarray(Image.open(src).convert("RGB"), dtype=np.float32) / 255.0
        for k in range(4):
            dest = root / src.parent.parent.name / f"level{k}" / f"{src.parent.name}_{src.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.uint8(255 * np.clip(0.2 * img + 0.05 + 0.22 * k, 0, 1))).save(dest)
    x, y = _arrays(root, "train")
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, activation="softmax")])
    net.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    net.fit(x / 127.5 - 1, y, epochs=10, batch_size=32, verbose=0)
    _nchw_onnx(net, root / "levels_nchw.onnx")
    return {"data": root, "onnx": root / "levels_nchw.onnx"}


@pytest.fixture(scope="module")
def keras3_file(tiny_defects, tmp_path_factory) -> Path:
    """A Keras 3 CNN (the `keras` package) with a Rescaling layer, trained a few steps."""
    import keras  # Keras 3, not tf_keras

    assert keras.__version__.startswith("3")
    x, y = _arrays(tiny_defects, "train")
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(16, 1, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    path = tmp_path_factory.mktemp("k3") / "k3_cnn.keras"
    model.save(path)
    return path


def _import(src, data, out, **kw):
    from edgecnn.pipeline import import_model

    return import_model(src, data=data, output=out, **{"recipe": BASE, **kw})


def _max_dprob(run_dir: Path, name: str, reference: np.ndarray, data: Path) -> float:
    from edgecnn.runtime import load_runner

    probs = load_runner(run_dir / name, threads=1)(_arrays(data, "test")[0])
    agreement = float(np.mean(probs.argmax(1) == reference.argmax(1)))
    print(f"[import] {run_dir.name}/{name}: max dprob {np.max(np.abs(probs - reference)):.2e}, "
          f"top-1 agreement with the source {agreement:.3f}")  # shown with pytest -s
    return float(np.max(np.abs(probs - reference)))


@pytest.mark.slow
def test_tf_keras_h5_and_savedmodel(sources, tiny_defects, tmp_path):
    """tf_keras .h5 / SavedModel -> model.keras wrapped with (x/255) in the graph -> the normal export."""
    for src in ("unit_cnn.h5", "unit_cnn_savedmodel"):
        res = _import(sources["dir"] / src, tiny_defects, tmp_path / src, preprocess="unit")
        run = res.run_dir
        assert {"recipe.yaml", "labels.txt", "dataset.json", "manifest.json", "report.json",
                "model.keras"} <= {p.name for p in run.iterdir()}
        man = json.loads((run / "manifest.json").read_text())
        assert man["preprocessing"]["preset"] == "unit" and man["preprocessing"]["std"] == [255.0] * 3
        assert man["import"]["route"] == "keras" and not man["import"]["post_training_only"]
        assert "import:" in (run / "recipe.yaml").read_text()
        rep = res.report
        assert rep["reference"] == "model.keras" and rep["import"]["source_format"] in ("tf_keras", "savedmodel")
        for name in ("model.keras", "model.fp32.tflite", "model.onnx"):   # README table: 1e-4
            assert _max_dprob(run, name, sources["reference"], tiny_defects) < 1e-4, name
    assert not list(tmp_path.glob(".*importing*"))


@pytest.mark.slow
def test_plain_tf_savedmodel(sources, tiny_defects, tmp_path):
    """A tf.Module SavedModel (no Keras): wrapped, converted from its serving_default signature; model.onnx,
    the reference, and model.fp32.tflite agree with the source; int8 TFLite and ONNX are evaluated too."""
    res = _import(sources["dir"] / "unit_cnn_plain_tf", tiny_defects, tmp_path / "plain", preprocess="unit")
    imp = json.loads((res.run_dir / "manifest.json").read_text())["import"]
    assert imp["source_format"] == "savedmodel" and imp["route"] == "savedmodel-ptq" and imp["post_training_only"]
    assert res.report["reference"] == "model.onnx" and not (res.run_dir / "model.keras").exists()
    arts = res.report["artifacts"]
    assert {"model.fp32.tflite", "model.int8.tflite", "model.onnx", "model.int8.onnx"} <= set(arts)
    for name in ("model.onnx", "model.fp32.tflite"):   # README table: 1e-4
        assert _max_dprob(res.run_dir, name, sources["reference"], tiny_defects) < 1e-4, name
    for name in ("model.int8.tflite", "model.int8.onnx"):
        assert arts[name]["precision"] == "int8" and arts[name]["metrics"]["agreement"] >= 0.8, name


def test_bad_plain_savedmodels(tiny_defects, tmp_path):
    """No serving_default, two inputs, a non-image input: one readable error each, no run directory."""
    from edgecnn._tf import tf
    from edgecnn.pipeline import import_model

    class Two(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="a"),
                                      tf.TensorSpec((None, 4), tf.float32, name="b")])
        def f(self, a, b):
            return {"p": tf.reduce_mean(a, [1, 2, 3])[:, None] + b}

    class Vec(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 12), tf.float32, name="v")])
        def f(self, v):
            return {"p": v[:, :4]}

    for name, module, signature in (("two", Two(), "serving_default"), ("vec", Vec(), "serving_default"),
                                    ("nosig", Vec(), "embed")):
        tf.saved_model.save(module, str(tmp_path / name), signatures={signature: module.f})
    for name, match in (("nosig", "no 'serving_default' signature.*received signatures \\['embed'\\]"),
                        ("two", "2 inputs"), ("vec", "float32 image batch.*\\[None, 12\\]")):
        with pytest.raises(EdgecnnError, match=match):
            import_model(tmp_path / name, data=tiny_defects, output=tmp_path / f"run-{name}")
        assert not (tmp_path / f"run-{name}").exists()


@pytest.fixture(scope="module")
def onnx_run(levels, tmp_path_factory):
    """The brightness-level ONNX imported with the preprocessing it was trained with."""
    return _import(levels["onnx"], levels["data"], tmp_path_factory.mktemp("onnx") / "right", preprocess="symmetric")


@pytest.mark.slow
def test_wrong_preprocess_shows_in_accuracy(onnx_run, levels, sources, tiny_defects, tmp_path):
    """The same ONNX imported with the right and a wrong --preprocess: the wrong one loses accuracy."""
    right = onnx_run
    wrong = _import(levels["onnx"], levels["data"], tmp_path / "wrong", preprocess="unit")
    man = json.loads((right.run_dir / "manifest.json").read_text())
    assert man["preprocessing"]["source_layout"] == "NCHW" and man["preprocessing"]["layout"] == "NHWC"
    rep = right.report
    assert rep["reference"] == "model.onnx" and rep["artifacts"]["model.onnx"]["format"] == "onnx"
    assert set(rep["artifacts"]) == {"model.onnx", "model.int8.onnx"}
    nchw = _import(sources["dir"] / "unit_cnn_nchw.onnx", tiny_defects, tmp_path / "nchw", preprocess="unit")
    assert _max_dprob(nchw.run_dir, "model.onnx", sources["reference"], tiny_defects) < 1e-4  # README: 1e-4
    acc = rep["artifacts"]["model.onnx"]["metrics"]["accuracy"]
    print(f"[import] accuracy right {acc:.3f}, wrong "
          f"{wrong.report['artifacts']['model.onnx']['metrics']['accuracy']:.3f}; int8 agreement "
          f"{rep['artifacts']['model.int8.onnx']['metrics']['agreement']:.3f}")
    assert acc >= 0.8
    assert wrong.report["artifacts"]["model.onnx"]["metrics"]["accuracy"] < acc - 0.15


@pytest.mark.slow
def test_tflite_float_and_int8(sources, tiny_defects, tmp_path):
    for src, name in (("px.fp32.tflite", "model.fp32.tflite"), ("px.int8.tflite", "model.int8.tflite")):
        res = _import(sources["dir"] / src, tiny_defects, tmp_path / src)
        assert res.report["reference"] == name and list(res.report["artifacts"]) == [name]
        assert res.report["artifacts"][name]["precision"] == ("int8" if "int8" in src else "fp32")
        tol = 0.08 if "int8" in src else 1e-4   # README format table
        assert _max_dprob(res.run_dir, name, sources["reference"], tiny_defects) < tol


@pytest.mark.slow
def test_keras3_rebuilt_in_tf_keras(keras3_file, tiny_defects, tmp_path):
    import keras

    res = _import(keras3_file, tiny_defects, tmp_path / "k3")
    man = json.loads((res.run_dir / "manifest.json").read_text())
    assert man["import"]["source_format"] == "keras3" and man["import"]["route"] == "keras"
    assert any("rebuilt in tf_keras" in n for n in man["import"]["notes"])
    assert man["preprocessing"]["detected"] == "Rescaling"
    k3 = keras.saving.load_model(keras3_file)
    x = _arrays(tiny_defects, "test")[0]
    assert _max_dprob(res.run_dir, "model.onnx", np.asarray(k3(x)), tiny_defects) < 1e-4
    assert _max_dprob(res.run_dir, "model.fp32.tflite", np.asarray(k3(x)), tiny_defects) < 1e-4


@pytest.mark.slow
def test_check_on_imported_onnx_run(onnx_run, tmp_path):
    run = onnx_run.run_dir
    ok, broken, typo = tmp_path / "ok.yaml", tmp_path / "broken.yaml", tmp_path / "typo.yaml"
    ok.write_text("version: 1\n" + QUICK + "targets:\n  - {name: s, artifacts: model.onnx, budgets: "
                  "{max_size_kb: 5000, p50_ms: 1000, min_agreement: 0.5}}\n")
    broken.write_text("version: 1\n" + QUICK + "targets:\n  - {name: s, artifacts: model.onnx, "
                      "budgets: {max_size_kb: 0.1}}\n")
    typo.write_text("version: 1\ntargets:\n  - {name: s, artifacts: model.onnx, budgets: {p50_msec: 5}}\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    codes = [subprocess.run([sys.executable, "-m", "edgecnn.cli", "check", str(run), "-b", str(b)], env=env,
                            capture_output=True, text=True).returncode for b in (ok, broken, typo)]
    assert codes == [0, 1, 2]   # docs/ci.md: holds / a budget broke / the check could not run


@pytest.mark.slow
def test_onnx_import_goes_through_the_chooser(levels, tmp_path):
    """compress.enabled on an ONNX import: the chooser's routes that run on model.onnx alone pick the
    shipped model.int8.onnx (the routes that need a Keras model are left out, not an error)."""
    recipe = {**BASE, "export": {"formats": ["onnx", "onnx-int8"], "calibration_images": 20},
              "compress": {"enabled": True, "runtimes": ["onnxruntime"], "prefer": "size", "min_agreement": 0.9,
                           "max_accuracy_drop": 0.05,
                           "routes": ["onnx-int8-qat", "onnx-int8-minmax-pc", "onnx-int8-ends-float"]}}
    res = _import(levels["onnx"], levels["data"], tmp_path / "run", preprocess="symmetric", recipe=recipe)
    run = res.run_dir
    comp = json.loads((run / "compress.json").read_text())
    pick = comp["picks"]["onnx-int8"]
    tried = [c["route"] for c in comp["runtimes"]["onnxruntime"]["candidates"]]
    assert comp["reference"] == "model.onnx" and tried and set(tried) <= {"onnx-int8-minmax-pc", "onnx-int8-ends-float"}
    man = json.loads((run / "manifest.json").read_text())["artifacts"]["model.int8.onnx"]
    assert man["stage"] == "compress" and man["route"] == pick["route"]
    assert (run / "model.int8.onnx").read_bytes() == (run / pick["artifact"]).read_bytes()
    assert res.report["artifacts"]["model.int8.onnx"]["metrics"]["agreement"] >= 0.9


def _cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "edgecnn.cli", "import", *map(str, args)], env=env,
                          capture_output=True, text=True)


def test_not_a_model_exits_2(tiny_defects, tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("hello")
    out = tmp_path / "run"
    p = _cli(bad, "--data", tiny_defects, "--output", out)
    assert p.returncode == 2 and "error" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists() and not list(tmp_path.glob(".*importing*"))


def _onnx_with(tmp_path: Path, name: str, inputs: list, classes: int = 4) -> Path:
    import onnx
    from onnx import TensorProto, helper

    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    nodes = [helper.make_node("GlobalAveragePool", [inputs[0][0]], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Slice", ["f", "st", "en", "ax"], ["probs"])]
    inits = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("st", 0), ("en", classes), ("ax", 1))]
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])
    model = helper.make_model(helper.make_graph(nodes, "g", vis, [out], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_bad_onnx_inputs(tiny_defects, tmp_path):
    from edgecnn.pipeline import import_model

    dyn = _onnx_with(tmp_path, "dyn.onnx", [("x", ["N", 3, "H", "W"])])
    with pytest.raises(EdgecnnError, match="dynamic.*--input-size"):
        import_model(dyn, data=tiny_defects, output=tmp_path / "a")
    two = _onnx_with(tmp_path, "two.onnx", [("x", ["N", 3, 32, 32]), ("y", ["N", 3])])
    with pytest.raises(EdgecnnError, match="2 inputs"):
        import_model(two, data=tiny_defects, output=tmp_path / "b")
    vec = _onnx_with(tmp_path, "vec.onnx", [("x", ["N", 7, 5])])
    with pytest.raises(EdgecnnError, match="image batch"):
        import_model(vec, data=tiny_defects, output=tmp_path / "c")
    ten = _onnx_with(tmp_path, "ten.onnx", [("x", ["N", 3, 32, 32])], classes=3)
    with pytest.raises(EdgecnnError, match="outputs 3 classes but the labels name 4"):
        import_model(ten, data=tiny_defects, output=tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dyn.onnx", "ten.onnx", "two.onnx", "vec.onnx"]


def test_keras3_custom_and_lambda_layers_refused(tiny_defects, tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="mine")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2

    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.GlobalAveragePooling2D()(Doubler()(inp))
    keras.Model(inp, keras.layers.Dense(4)(h)).save(tmp_path / "custom.keras")
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda t: t * 2)(inp))
    keras.Model(inp, keras.layers.Dense(4)(h)).save(tmp_path / "lam.keras")
    keras.saving.get_custom_objects().clear()
    from edgecnn.pipeline import import_model

    with pytest.raises(EdgecnnError, match="Doubler.*register_keras_serializable"):
        import_model(tmp_path / "custom.keras", data=tiny_defects, output=tmp_path / "a")
    with pytest.raises(EdgecnnError, match="Lambda.*--trust-code"):
        import_model(tmp_path / "lam.keras", data=tiny_defects, output=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_labels_order_and_mismatch(tiny_defects, tmp_path):
    from edgecnn.pipeline import import_model

    labels = tmp_path / "labels.txt"
    labels.write_text("good\ncrack\n")
    src = _onnx_with(tmp_path, "m.onnx", [("x", ["N", 3, 32, 32])])
    with pytest.raises(EdgecnnError, match="not the data's class folders"):
        import_model(src, data=tiny_defects, output=tmp_path / "a", labels=labels)
    labels.write_text("spot\ngood\ncrack\nscratch\n")
    res = import_model(src, data=tiny_defects, output=tmp_path / "b", labels=labels, recipe=BASE, evaluate=False)
    assert (res.run_dir / "labels.txt").read_text().split() == ["spot", "good", "crack", "scratch"]


@pytest.mark.slow
def test_keras3_not_rebuildable_exports_through_keras3(tiny_defects, tmp_path):
    """RMSNormalization has no tf_keras twin: Keras 3's own export path, post-training only."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(keras.layers.Rescaling(1 / 255.0)(inp))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.RMSNormalization()(h))
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(h))
    model.save(tmp_path / "rms.keras")
    res = _import(tmp_path / "rms.keras", tiny_defects, tmp_path / "run")
    imp = json.loads((res.run_dir / "manifest.json").read_text())["import"]
    assert imp["route"] == "keras3-ptq" and imp["post_training_only"] and "RMSNormalization" in imp["notes"][0]
    assert res.report["reference"] == "model.onnx" and not (res.run_dir / "model.keras").exists()
    assert {"model.fp32.tflite", "model.int8.tflite", "model.onnx", "model.int8.onnx"} <= set(res.report["artifacts"])
    x = _arrays(tiny_defects, "test")[0]
    for name in ("model.onnx", "model.fp32.tflite"):
        assert _max_dprob(res.run_dir, name, np.asarray(model(x)), tiny_defects) < 1e-4


def test_parse_labels_never_evaluates_code():
    from edgecnn.importing.labels import parse_labels

    assert parse_labels('["b", "a"]') == parse_labels("b\na\n") == parse_labels("b, a") == ["b", "a"]
    assert parse_labels("{1: 'a', 0: 'b'}") == ["b", "a"]          # Ultralytics' names: a dict literal
    for bad in ("{0: __import__('os').getcwd()}", "['a', 'a']", "", "{'x': 'a'}"):
        with pytest.raises(ValueError):
            parse_labels(bad)


def _labelled(tmp_path: Path, name: str, **props) -> Path:
    import onnx

    src = _onnx_with(tmp_path, name, [("x", ["N", 3, 32, 32])])
    model = onnx.load(str(src))
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(src))
    return src


def test_labels_from_model_metadata(tiny_defects, tmp_path):
    """Output order from ONNX metadata (Ultralytics ``names``, ``labels``), a TFLite file's appended label file
    and an edgecnn run's manifest; --labels wins; metadata naming other classes is one error."""
    import io
    import zipfile

    from edgecnn._tf import tf
    from edgecnn.pipeline import import_model

    order = ["spot", "good", "crack", "scratch"]

    def imported(src, out, **kw) -> tuple[list[str], str]:
        run = import_model(src, data=tiny_defects, output=tmp_path / out, recipe=BASE, evaluate=False, **kw).run_dir
        return (run / "labels.txt").read_text().split(), json.loads((run / "manifest.json").read_text())["import"][
            "labels_from"]

    names = _labelled(tmp_path, "yolo.onnx", names=repr(dict(enumerate(order))))
    assert imported(names, "a") == (order, "ONNX metadata_props 'names'")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(reversed(order)))
    assert imported(names, "b", labels=labels) == (order[::-1], "--labels labels.txt")
    other = _labelled(tmp_path, "other.onnx", labels=json.dumps(["cat", "dog", "fox", "owl"]))
    with pytest.raises(EdgecnnError, match="labels from ONNX metadata_props 'labels'.*not the data's class folders"):
        imported(other, "c")
    assert not (tmp_path / "c").exists()

    f = tf.function(lambda x: tf.nn.softmax(tf.reduce_mean(x, [1, 2]) @ tf.ones((3, 4))),
                    input_signature=[tf.TensorSpec((1, 32, 32, 3), tf.float32)])
    flat = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as z:   # what TFLite metadata writers append: a zip of associated files
        z.writestr("labels_defects.txt", "\n".join(order) + "\n")
    (tmp_path / "meta.tflite").write_bytes(flat + packed.getvalue())
    assert imported(tmp_path / "meta.tflite", "d") == (order, "TFLite metadata file 'labels_defects.txt'")

    run = tmp_path / "edgecnn-run"
    run.mkdir()
    (run / "model.onnx").write_bytes(_onnx_with(tmp_path, "plain.onnx", [("x", ["N", 3, 32, 32])]).read_bytes())
    (run / "manifest.json").write_text(json.dumps({"labels": order, "artifacts": {"model.onnx": {}}}))
    assert imported(run / "model.onnx", "e")[0] == order


@pytest.mark.slow
def test_keras3_mobilenet_v2_int8_keeps_top1(levels, tmp_path):
    """The acceptance run's path, small (benchmarks/import_keras3_mobilenetv2.py is the 128 px one on the
    defect set, 360 test images): keras.applications.MobileNetV2 in Keras 3 (alpha 0.35, 48 px) trained a
    few steps on the brightness levels, saved as .keras, imported with the int8 chooser on; it is rebuilt
    in tf_keras and the chooser keeps both the int8 TFLite and the int8 ONNX within one validation image of
    the float model (the recipe's max_accuracy_drop). On this 80-image test split one image is
    1.25 points, so the test split is only checked for a broken int8 path (within 5 points)."""
    import importlib.util

    import keras

    spec = importlib.util.spec_from_file_location("bench_k3", ROOT / "benchmarks" / "import_keras3_mobilenetv2.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (x, y), (tx, ty) = _arrays(levels["data"], "train", 48), _arrays(levels["data"], "test", 48)
    model = bench.build_keras3_mobilenet_v2(4, 48, alpha=0.35, imagenet=False, bn_momentum=0.8)
    bench.train_keras3(model, x, y, None, None, head_epochs=0, finetune_epochs=3, lr=1e-1, batch_size=16,
                       optimizer="sgd", jit_compile=False)
    model.save(tmp_path / "mnv2.keras")
    source = float(np.mean(np.asarray(model.predict(tx, verbose=0)).argmax(1) == ty))
    keras.backend.clear_session()
    # max_accuracy_drop: one image of the 80-image val split (1.25 points). The default 0.005 asks for no image
    # lost, which the chooser itself flags as noise on a split this small: the model trained here depends on
    # the thread environment, and in the full suite the ONNX pick lost exactly one val image (in this test
    # alone, none)
    # min_agreement: none, and size alone: this test holds top-1 (below); a 0.35-wide net at 48 px flips ~8 % of
    # its near-tie val answers in int8, and its int8 speed is this CPU's, not a target's
    compress = {"enabled": True, "runtimes": ["litert", "onnxruntime"], "latency_runs": 5, "max_accuracy_drop": 0.013,
                "min_agreement": None, "prefer": "size",
                "routes": ["tflite-int8", "tflite-int8-percentile", "tflite-int8-mixed",
                           "onnx-int8-minmax-pc", "onnx-int8-ends-float", "onnx-int8-mixed"]}
    recipe = {**BASE, "export": {"formats": ["tflite-int8", "onnx-int8"], "calibration_images": 20},
              "compress": compress}
    res = _import(tmp_path / "mnv2.keras", levels["data"], tmp_path / "run", recipe=recipe)
    arts = res.report["artifacts"]
    print(f"[import] Keras 3 MobileNetV2 0.35/48: source {source:.3f}, " + ", ".join(
        f"{n} {a['metrics']['accuracy']:.3f} (agreement {a['metrics']['agreement']:.3f})" for n, a in arts.items()))
    assert json.loads((res.run_dir / "manifest.json").read_text())["import"]["route"] == "keras"
    assert source >= 0.5   # learnt something, so int8 flips would show
    assert arts["model.keras"]["metrics"]["accuracy"] == pytest.approx(source)     # the rebuilt model is the source
    picks = json.loads((res.run_dir / "compress.json").read_text())["picks"]
    assert set(picks) == {"tflite-int8", "onnx-int8"}
    for fmt, pick in picks.items():
        assert pick["within_budget"], (fmt, pick["route"], pick["reason"])
    for name in ("model.int8.tflite", "model.int8.onnx"):
        assert source - arts[name]["metrics"]["accuracy"] <= 0.05, name



def _lambda_sources(sources, out: Path) -> dict[str, Path]:
    """The trained unit CNN behind a ``Lambda(lambda t: t / 255.0)``, saved as .h5 and as a tf_keras .keras."""
    from edgecnn._tf import keras

    net = keras.models.load_model(str(sources["dir"] / "unit_cnn.h5"), compile=False)
    inp = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inp, net(keras.layers.Lambda(lambda t: t / 255.0, name="to_unit")(inp)))
    paths = {"h5": out / "lam.h5", "keras": out / "lam.keras"}
    for p in paths.values():
        model.save(str(p))
    return paths


@pytest.mark.slow
def test_trust_code_imports_a_lambda_model_end_to_end(sources, tiny_defects, tmp_path):
    """--trust-code: a Lambda model imports, and every later stage (compress, export, evaluate) reloads it."""
    from edgecnn._trust import code_trusted, trusted_code

    recipe = {**BASE, "export": {"formats": ["tflite-fp32", "tflite-int8", "onnx", "onnx-int8"],
                                 "calibration_images": 20},
              "compress": {"enabled": True, "routes": ["tflite-int8", "onnx-int8-minmax-pc"], "latency_runs": 0,
                           "runtimes": ["litert", "onnxruntime"], "max_accuracy_drop": 1.0, "min_agreement": 0.0}}
    for kind, src in _lambda_sources(sources, tmp_path).items():
        res = _import(src, tiny_defects, tmp_path / f"run_{kind}", trust_code=True, recipe=recipe)
        run = res.run_dir
        comp = json.loads((run / "compress.json").read_text())
        assert set(comp["picks"]) == {"tflite-int8", "onnx-int8"}, kind
        arts = res.report["artifacts"]
        assert {"model.keras", "model.fp32.tflite", "model.int8.tflite", "model.onnx", "model.int8.onnx"} <= set(arts)
        assert not code_trusted()   # the permission ended with the run
        with trusted_code(True):   # reading model.keras outside the run: the reader vouches for it too
            for name in ("model.keras", "model.fp32.tflite", "model.onnx"):
                assert _max_dprob(run, name, sources["reference"], tiny_defects) < 1e-4, (kind, name)


def test_lambda_h5_refused_as_strictly_as_keras(sources, tiny_defects, tmp_path):
    """Without --trust-code a Lambda in .h5 is refused before loading, even with its class name JSON-escaped
    (the config is read as data), and tf_keras' safe mode refuses it too when the scan is bypassed."""
    import h5py

    from edgecnn.importing import keras2
    from edgecnn.pipeline import import_model

    paths = _lambda_sources(sources, tmp_path)
    with h5py.File(paths["h5"], "r+") as f:
        cfg = f.attrs["model_config"]
        cfg = cfg.decode() if isinstance(cfg, bytes) else cfg
        f.attrs["model_config"] = cfg.replace('"class_name": "Lambda"', '"class_name": "\\u004cambda"')
    for kind, src in paths.items():
        with pytest.raises(EdgecnnError, match="Lambda.*--trust-code"):
            import_model(src, data=tiny_defects, output=tmp_path / f"a_{kind}")
        assert not (tmp_path / f"a_{kind}").exists()
    # the second net: with the scan bypassed, the .h5 loader itself refuses the lambda
    with pytest.raises(EdgecnnError, match="Python lambda.*--trust-code"):
        original = keras2.refuse_code
        keras2.refuse_code = lambda path, trust_code: None
        try:
            keras2.load_tf_keras(paths["h5"], trust_code=False)
        finally:
            keras2.refuse_code = original

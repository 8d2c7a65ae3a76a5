"""TensorFlow Lite Micro: int8 files in the real TFLM interpreter agree with LiteRT, the minimal arena
is exact, float files are refused, the firmware folder holds the same bytes and builds with g++ (its
op_resolver.h against a stub resolver with exactly the Add* methods of TFLM's header), every builtin op
gets the header's resolver method or a readable refusal, an op TFLM lacks is named with its layer, and
max_arena_kb / max_flash_kb budgets judge the measured figures.

One tiny dsconv (32 px, 3 classes, a few seconds of training on coloured noise) is quantised once per
module and shared by every test.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError
from edgecnn.runtime import load_runner, runtimes_for

pytest.importorskip("tflite_micro")

SIZE, CLASSES = 32, 3


def _coloured_noise(n: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Noise images whose dominant channel is the class: learnable in a few epochs, varied predictions."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    x = rng.uniform(0, 160, (n, size, size, 3)).astype(np.float32)
    x[np.arange(n), :, :, labels] += rng.uniform(20, 95, (n, 1, 1)).astype(np.float32)
    return x, labels


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory) -> Path:
    from edgecnn._tf import tf
    from edgecnn.arch import create_model
    from edgecnn.quantize import tflite_int8

    tf.keras.utils.set_random_seed(0)
    model = create_model("dsconv", num_classes=CLASSES, input_size=SIZE, alpha=0.25, depth=2)
    x, y = _coloured_noise(240, seed=0)
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    out = tmp_path_factory.mktemp("tflm") / "model.int8.tflite"
    out.write_bytes(tflite_int8(model, x[:32]))
    return out


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    return _coloured_noise(50, seed=1)


def test_tflm_agrees_with_litert_int8(int8_file, images):
    x, y = images
    assert [r.name for r in runtimes_for(int8_file)] == ["litert", "litert-arm64", "tflm"]
    tflm = load_runner(int8_file, runtime="tflm")
    assert tflm.backend == "tflm" and tflm.input.dtype == "int8" and tflm.input.quantization is not None
    p_tflm, p_lite = tflm(x), load_runner(int8_file, runtime="litert")(x)
    assert p_tflm.shape == (50, CLASSES) and np.allclose(p_tflm.sum(1), 1, atol=0.02)
    agreement = float(np.mean(p_tflm.argmax(1) == p_lite.argmax(1)))
    acc_tflm, acc_lite = float(np.mean(p_tflm.argmax(1) == y)), float(np.mean(p_lite.argmax(1) == y))
    assert agreement >= 0.99, agreement
    assert abs(acc_tflm - acc_lite) <= 0.02, (acc_tflm, acc_lite)
    assert len(set(p_tflm.argmax(1))) > 1, "the model should not answer one class for every image"
    assert np.abs(p_tflm - p_lite).max() <= 3 * tflm.output.quantization[0] + 1e-6  # a few int8 steps at most


def test_minimal_arena_is_exact(int8_file):
    from edgecnn.runtime.tflm_runner import arena_works, find_arena_size, mcu_figures

    data = int8_file.read_bytes()
    arena = find_arena_size(data)
    assert arena_works(data, arena)
    assert not arena_works(data, arena - 1)
    assert not arena_works(data, arena - 1024)
    figures = mcu_figures(data)
    assert figures["arena_bytes"] == arena
    assert figures["arena_recommended_bytes"] >= arena + 16 and figures["arena_recommended_bytes"] % 1024 == 0
    assert figures["flash_bytes"] == len(data) + figures["kernel_bytes_estimate"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(figures["ops"])
    assert figures["tflm_version"] and "alignas(16)" in figures["rules"]["alignment"]


def test_float_files_are_refused_by_name(tmp_path):
    from tflite_micro import runtime

    fp32 = tmp_path / "model.fp32.tflite"
    shutil.copy(Path(runtime.__file__).with_name("sine_float.tflite"), fp32)
    assert [r.name for r in runtimes_for(fp32)] == ["litert"]   # the evaluator never tries it in tflm
    with pytest.raises(EdgecnnError, match=r"runtime 'tflm' cannot run 'model.fp32.tflite': .*float activations"
                                           r".*tflite-int8"):
        load_runner(fp32, runtime="tflm")


def test_firmware_folder_is_the_same_model(int8_file, images, tmp_path):
    from edgecnn.export.tflm_c import tflite_to_tflm_c
    from edgecnn.runtime.tflm_runner import mcu_figures

    data = int8_file.read_bytes()
    folder = tflite_to_tflm_c(int8_file, tmp_path / "model.int8.tflm")
    cc = (folder / "model_data.cc").read_text()
    h = (folder / "model_data.h").read_text()
    resolver = (folder / "op_resolver.h").read_text()
    body = cc[cc.index("{") + 1:cc.index("};")]
    assert bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", body)) == data
    assert f"g_model_data_len = {len(data)};" in cc and "alignas(16) const unsigned char g_model_data[]" in cc
    figures = mcu_figures(data)
    assert f"kTensorArenaSize = {figures['arena_recommended_bytes']};" in h
    adds = re.findall(r"resolver\.(Add\w+)\(\)", resolver)
    assert len(adds) == len(set(adds)) == len(figures["ops"])
    assert f"kModelOpCount = {len(adds)};" in resolver and "MicroMutableOpResolver<kModelOpCount>" in resolver
    assert {"AddConv2D", "AddDepthwiseConv2D", "AddFullyConnected", "AddSoftmax"} <= set(adds)
    _build_firmware(folder, tmp_path)   # model_data.cc and op_resolver.h compile, link and register the ops
    assert [r.name for r in runtimes_for(folder)] == ["tflm"]
    x, _ = images
    assert np.array_equal(load_runner(folder)(x[:8]), load_runner(int8_file, runtime="tflm")(x[:8]))


def _resolver_stub(include: Path) -> None:
    """A stand-in for TFLM's ``micro_mutable_op_resolver.h`` (not installed: the wheel ships no headers)
    whose ``MicroMutableOpResolver`` has exactly the fact table's ``Add*`` methods, so a method name the
    header does not have fails the compile."""
    from edgecnn.export.tflm_ops import RESOLVER_METHODS

    adds = "\n".join(f"  TfLiteStatus {m}() {{ return kTfLiteOk; }}" for m in sorted(RESOLVER_METHODS.values()))
    header = include / "tensorflow" / "lite" / "micro" / "micro_mutable_op_resolver.h"
    header.parent.mkdir(parents=True)
    header.write_text("#pragma once\ntypedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;\n"
                      "namespace tflite {\ntemplate <unsigned int tOpCount>\nclass MicroMutableOpResolver {\n"
                      f" public:\n{adds}\n}};\n}}  // namespace tflite\n")


def _build_firmware(folder: Path, tmp_path: Path) -> None:
    """Compile ``model_data.cc`` and a ``main`` that includes both headers and calls ``RegisterModelOps``
    against the stub resolver, link, run: g++ is a prerequisite, so its absence fails the test."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.fail("g++ not found: the firmware folder is checked by compiling it, and gcc (with its C++ "
                    "compiler) is a prerequisite in the README; install g++ (apt-get install g++) and rerun.")
    include, main, program = tmp_path / "stub", tmp_path / "main.cc", tmp_path / "firmware"
    _resolver_stub(include)
    main.write_text('#include "model_data.h"\n#include "op_resolver.h"\n\nint main() {\n'
                    "  static ModelOpResolver resolver;\n"
                    "  return RegisterModelOps(resolver) == kTfLiteOk && g_model_data_len > 0 ? 0 : 1;\n}\n")
    build = subprocess.run([gxx, "-std=c++17", "-Wall", "-Werror", f"-I{include}", f"-I{folder}",
                            str(folder / "model_data.cc"), str(main), "-o", str(program)],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, f"the firmware files do not build:\n{build.stderr}"
    assert subprocess.run([str(program)], timeout=30).returncode == 0


def test_resolver_method_is_the_tflm_header_fact_or_refused_for_every_builtin_op():
    from tflite_micro import runtime

    from edgecnn.export.tflm_c import resolver_method
    from edgecnn.export.tflm_ops import RESOLVER_METHODS

    builtins = [k for k in vars(runtime.schema_fb.BuiltinOperator) if not k.startswith("_")]
    assert len(builtins) > 200 and set(RESOLVER_METHODS) <= set(builtins)
    refused = []
    for op in builtins:
        if op in RESOLVER_METHODS:
            assert resolver_method(op) == RESOLVER_METHODS[op], op
            continue
        with pytest.raises(EdgecnnError, match=rf"TFLite Micro does not register the op {op}[ :]") as e:
            resolver_method(op)
        assert "\n" not in str(e.value) and "MicroMutableOpResolver" in str(e.value) and "Fix:" in str(e.value)
        refused.append(op)
    assert resolver_method("PADV2") == "AddPadV2"
    assert resolver_method("UNIDIRECTIONAL_SEQUENCE_LSTM") == "AddUnidirectionalSequenceLSTM"
    assert {"GELU", "RELU_N1_TO_1", "STABLEHLO_ADD", "CUSTOM"} <= set(refused)
    with pytest.raises(EdgecnnError, match="custom op 'MyOp'"):
        resolver_method("CUSTOM:MyOp")


def test_fact_table_is_the_builtin_kernels_of_the_pinned_tflm():
    """The table's ops are exactly the builtin kernels (``Register_<OP>()``) the installed TFLM interpreter
    links: a tflite-micro bump that adds or drops one fails here until the table is read again."""
    from tflite_micro import runtime

    from edgecnn.export.tflm_ops import RESOLVER_METHODS

    nm = shutil.which("nm")
    if nm is None:
        pytest.fail("nm not found: it comes with gcc (binutils), a prerequisite in the README; install it and rerun.")
    lib = next(Path(runtime.__file__).parent.glob("_runtime*.so"))
    symbols = subprocess.run([nm, "-D", "-C", str(lib)], capture_output=True, text=True, check=True).stdout
    builtins = {k for k in vars(runtime.schema_fb.BuiltinOperator) if not k.startswith("_")}
    linked = set(re.findall(r"\bRegister_([A-Z0-9_]+)\(\)", symbols)) & builtins
    table = set(RESOLVER_METHODS)
    assert linked == table, f"linked, not in the table: {sorted(linked - table)}; in the table, not linked: " \
                            f"{sorted(table - linked)}"


def test_op_resolver_for_every_tflm_op_builds(tmp_path):
    """op_resolver.h naming every op of the fact table (PADV2, UNIDIRECTIONAL_SEQUENCE_LSTM, ...) compiles
    against the stub resolver, so no method name is spelt differently from TFLM's header."""
    from edgecnn.export.tflm_c import c_array, c_header, op_resolver
    from edgecnn.export.tflm_ops import RESOLVER_METHODS

    folder = tmp_path / "model.int8.tflm"
    folder.mkdir()
    figures = {"tflm_version": "test", "arena_bytes": 1000, "arena_recommended_bytes": 2048,
               "rules": {"recommended": "test"}}
    (folder / "model_data.cc").write_text(c_array(bytes(range(20))))
    (folder / "model_data.h").write_text(c_header(20, figures))
    (folder / "op_resolver.h").write_text(op_resolver(list(RESOLVER_METHODS)))
    _build_firmware(folder, tmp_path)


def test_unsupported_op_is_named_with_its_layer_and_skipped_by_the_evaluator(tmp_path):
    from edgecnn._tf import tf
    from edgecnn.config import load_recipe
    from edgecnn.evaluate.run import evaluate_artifacts
    from edgecnn.export.manifest import add_artifact, init_manifest
    from edgecnn.quantize import tflite_int8

    keras = tf.keras
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.Activation("gelu", name="head_gelu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    cal = np.random.default_rng(0).uniform(0, 255, (10, 16, 16, 3)).astype(np.float32)
    path = tmp_path / "model.int8.tflite"
    path.write_bytes(tflite_int8(model, cal))
    with pytest.raises(EdgecnnError) as e:
        load_runner(path, runtime="tflm")
    msg = str(e.value)
    assert "no GELU kernel" in msg and "layer head_gelu" in msg and "Fix:" in msg and "relu" in msg
    assert "\n" not in msg
    # in a run, the further runtime that cannot run the file is reported with the reason, not a failed run
    model.save(str(tmp_path / "model.keras"))
    init_manifest(tmp_path, name="gelu", labels=["a", "b"])
    add_artifact(tmp_path, "model.int8.tflite", format="tflite-int8", precision="int8", runtime="litert")
    recipe = load_recipe(Path(__file__).parent / "recipes" / "tiny.yaml",
                         **{"evaluate.runs": 10, "evaluate.warmup": 1, "evaluate.runtimes": ["tflm"]})
    report = evaluate_artifacts(recipe, tmp_path, cal[:4], np.array([0, 1, 0, 1]), ["a", "b"])
    assert "no GELU kernel" in report["artifacts"]["model.int8.tflite@tflm"]["skipped"]
    assert "metrics" in report["artifacts"]["model.int8.tflite"]


def _run_dir(tmp_path: Path, int8_file: Path, images, size: int = SIZE) -> tuple[Path, dict]:
    """A run directory holding the int8 file, its manifest, and report.json entries written by the
    evaluate stage's own per-artifact function (in LiteRT, then in TFLM)."""
    from edgecnn.evaluate.run import evaluate_artifacts
    from edgecnn.export.manifest import add_artifact, init_manifest

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(int8_file, run / "model.int8.tflite")
    init_manifest(run, name="mcu", model={"name": "dsconv", "input_size": size, "num_classes": CLASSES},
                  labels=["r", "g", "b"], preprocessing={"input_range": [0, 255], "resize": [size, size]})
    add_artifact(run, "model.int8.tflite", format="tflite-int8", precision="int8", runtime="litert", stage="export",
                 parent="model.keras")
    x, y = images
    recipe = SimpleNamespace(name="mcu", evaluate=SimpleNamespace(top_k=1, warmup=1, runs=3, threads=[1],
                                                                  runtimes=["tflm"]))
    # the int8 file is its own reference here (no model.keras): in LiteRT, then in TFLM
    report = evaluate_artifacts(recipe, run, x[:12], y[:12], ["r", "g", "b"], reference="model.int8.tflite")
    assert set(report["artifacts"]) == {"model.int8.tflite", "model.int8.tflite@tflm"}
    (run / "report.json").write_text(json.dumps(report))
    return run, report


def test_arena_budget_10pct_too_small_fails_and_10pct_too_large_passes(tmp_path, int8_file, images):
    from edgecnn.budget_schema import parse_budget_targets
    from edgecnn.evaluate.budgets import check_budgets
    from edgecnn.evaluate.check import check

    run, report = _run_dir(tmp_path, int8_file, images)
    mcu = report["artifacts"]["model.int8.tflite@tflm"]["mcu"]
    assert "mcu" not in report["artifacts"]["model.int8.tflite"]       # only the TFLM entry measures it
    arena_kb, flash_kb = mcu["arena_bytes"] / 1024, mcu["flash_bytes"] / 1024
    for factor, code in ((0.9, 1), (1.1, 0)):
        body = (f'  - name: mcu\n    artifacts: "model.int8.tflite"\n'
                f"    budgets: {{max_arena_kb: {arena_kb * factor:.3f}, max_flash_kb: {flash_kb * 1.1:.3f}}}\n")
        path = tmp_path / f"budgets-{factor}.yaml"
        path.write_text("version: 1\ntargets:\n" + body)
        result = check(run, path)
        assert result.exit_code == code, (factor, result.to_json())
        arena = [r for r in result.results if r.budget == "max_arena_kb"]
        assert arena and all(abs(r.measured - arena_kb) < 1e-9 for r in arena)
        # the evaluate stage judges the same figures from report.json the same way
        targets = parse_budget_targets([{"name": "mcu", "artifacts": "model.int8.tflite",
                                         "budgets": {"max_arena_kb": arena_kb * factor}}])
        _, broken = check_budgets(report, targets)
        assert bool(broken) == (code == 1)


def test_check_fails_a_profile_the_model_exceeds_and_passes_a_larger_one(tmp_path):
    """A 96 px net whose first convolution writes 216 KiB: over cortex-m4-256k's 192 KiB arena, inside
    cortex-m7-1m's 768 KiB; the same figures judged by ``edgecnn check`` through a budgets.yaml profile."""
    from edgecnn._tf import tf
    from edgecnn.evaluate.check import check
    from edgecnn.quantize import tflite_int8

    keras, size = tf.keras, 96
    tf.keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(24, 3, padding="same", activation="relu", name="wide")(x)
    x = keras.layers.Conv2D(8, 3, strides=4, activation="relu", name="narrow")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(CLASSES, activation="softmax")(x))
    xs, ys = _coloured_noise(64, seed=2, size=size)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(xs, ys, epochs=2, batch_size=32, verbose=0)
    int8 = tmp_path / "big.int8.tflite"
    int8.write_bytes(tflite_int8(model, xs[:32]))
    run, report = _run_dir(tmp_path, int8, _coloured_noise(12, seed=3, size=size), size=size)
    mcu = report["artifacts"]["model.int8.tflite@tflm"]["mcu"]
    assert mcu["arena_bytes"] > 192 * 1024 and mcu["activation_peak"]["layer"].startswith("wide")
    for profile, code in (("cortex-m4-256k", 1), ("cortex-m7-1m", 0)):
        path = tmp_path / f"{profile}.yaml"
        path.write_text(f"version: 1\ntargets:\n  - name: board\n    artifacts: model.int8.tflite\n"
                        f"    profile: {profile}\n")
        result = check(run, path)
        assert result.exit_code == code, (profile, result.to_json())
        broken = {r.budget for r in result.results if not r.ok}
        assert broken == ({"max_arena_kb"} if code else set()), broken

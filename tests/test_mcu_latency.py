"""The latency estimator against hand-computed MACs and cycles (edgecnn/mcu/latency.py)."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError
from edgecnn.mcu.latency import CORE_COSTS, PROFILE_CORES, estimate_latency, op_costs


@pytest.fixture(scope="module")
def tiny_int8() -> bytes:
    """8x8x3 -> conv 3x3x4 (same) -> depthwise 3x3 (same) -> global average pool -> dense 3, full int8."""
    from edgecnn._tf import keras
    from edgecnn.quantize.tflite_int8 import tflite_int8

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3)(x)
    model = keras.Model(inp, out)
    return tflite_int8(model, np.random.default_rng(0).uniform(0, 255, (64, 8, 8, 3)).astype("float32"))


def test_macs_per_op_match_hand_counts(tiny_int8):
    ops = {o.op: o for o in op_costs(tiny_int8, "cortex-m4")}
    assert ops["CONV_2D"].macs == 8 * 8 * 4 * 3 * 3 * 3 == 6912
    assert ops["DEPTHWISE_CONV_2D"].macs == 8 * 8 * 4 * 3 * 3 == 2304
    assert ops["FULLY_CONNECTED"].macs == 4 * 3 == 12


def test_cycles_follow_the_core_table(tiny_int8):
    m4 = CORE_COSTS["cortex-m4"]
    ops = {o.op: o for o in op_costs(tiny_int8, "cortex-m4")}
    assert ops["CONV_2D"].cycles == pytest.approx(6912 * m4.conv_cycles_per_mac + m4.op_overhead_cycles)
    assert ops["DEPTHWISE_CONV_2D"].cycles == pytest.approx(2304 * m4.depthwise_cycles_per_mac + m4.op_overhead_cycles)
    assert ops["FULLY_CONNECTED"].cycles == pytest.approx(12 * m4.fc_cycles_per_mac + m4.op_overhead_cycles)
    assert ops["MEAN"].elements == 4 and ops["MEAN"].cycles == pytest.approx(4 * 5.0 + 3000)   # pooling: per element
    # by hand with the table's M4 row: conv 6912 x 3.3 + depthwise 2304 x 6.6 + dense 12 x 4.0 + pool 4 x 5.0
    # + 4 ops x 3000 = 22809.6 + 15206.4 + 48 + 20 + 12000
    assert sum(o.cycles for o in ops.values()) == pytest.approx(50084.0)


def test_estimate_is_labelled_an_estimate_with_its_basis(tiny_int8):
    est = estimate_latency(tiny_int8, "cortex-m4-256k")
    total = sum(o.cycles for o in op_costs(tiny_int8, "cortex-m4"))
    assert est["kind"] == "estimate" and "not a measurement" in est["basis"]
    assert est["cycles"] == round(total)
    assert est["ms"] == pytest.approx(total / (PROFILE_CORES["cortex-m4-256k"].clock_mhz * 1e3), abs=0.01)
    assert est["macs"] == 6912 + 2304 + 12
    assert "arXiv:1801.06601" in est["sources"]["cmsis-nn"]
    m7 = estimate_latency(tiny_int8, "cortex-m7-1m")
    assert m7["ms"] < est["ms"]                      # faster core, higher clock
    assert estimate_latency(tiny_int8, "cortex-m4-256k", clock_mhz=50)["ms"] == pytest.approx(est["ms"] * 2, rel=0.01)


def test_unknown_target_names_the_known_ones(tiny_int8):
    with pytest.raises(EdgecnnError, match="cortex-m4-256k"):
        estimate_latency(tiny_int8, "cortex-m4-265k")


def test_run_latency_json_for_the_report(tiny_int8, tmp_path):
    """A run directory gets mcu_latency.json for the targets its budgets name (the report reads it later)."""
    import json

    from edgecnn.mcu.latency import write_run_latency

    (tmp_path / "model.int8.tflite").write_bytes(tiny_int8)
    (tmp_path / "recipe.yaml").write_text("budgets:\n  - {name: m7, artifacts: model.int8.tflite, "
                                          "profile: cortex-m7-1m}\n")
    saved = json.loads(write_run_latency(tmp_path).read_text())
    assert saved["kind"] == "estimate" and list(saved["targets"]) == ["cortex-m7-1m"]
    assert saved["targets"]["cortex-m7-1m"]["ms"] == estimate_latency(tiny_int8, "cortex-m7-1m")["ms"]
    (tmp_path / "model.int8.tflite").unlink()
    with pytest.raises(EdgecnnError, match="no model.int8.tflite"):
        write_run_latency(tmp_path)

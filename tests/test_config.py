"""Recipe validation: unknown keys and bad values name the file and the key path."""
from __future__ import annotations

import pytest

from edgecnn.config import Budget, BudgetsConfig, load_recipe
from edgecnn.errors import EdgecnnError

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bundled_recipes_are_valid():
    for path in (ROOT / "models").glob("*.yaml"):
        if path.name.endswith(".budgets.yaml"):
            continue  # budget files for `edgecnn check`, tested in test_budget_file.py
        r = load_recipe(path)
        assert r.name == path.stem


def test_unknown_key_and_bad_value(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\ntrain:\n  head: {epochs: -1}\n  optimiser: adam\n")
    with pytest.raises(EdgecnnError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert "train.optimiser: unknown key" in msg and "train.head.epochs" in msg and str(p) in msg


def test_missing_and_malformed(tmp_path):
    with pytest.raises(EdgecnnError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(EdgecnnError, match="not valid YAML"):
        load_recipe(p)


def test_unknown_export_format(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("export: {formats: [tflite-int4]}\n")
    with pytest.raises(EdgecnnError, match="unknown format"):
        load_recipe(p)


def test_budget_overrides_by_glob():
    b = BudgetsConfig(default=Budget(min_accuracy=0.9, max_size_kb=100),
                      artifacts={"*.tflite": Budget(max_size_kb=50), "model.int8.tflite": Budget(max_size_kb=10)})
    assert b.for_artifact("model.onnx").max_size_kb == 100
    assert b.for_artifact("model.fp32.tflite").max_size_kb == 50
    assert b.for_artifact("model.int8.tflite").max_size_kb == 10
    assert b.for_artifact("model.int8.tflite").min_accuracy == 0.9

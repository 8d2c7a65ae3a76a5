"""Recipe validation: unknown keys and bad values name the file and the key path."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgecnn.config import load_recipe
from edgecnn.errors import EdgecnnError

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


def test_budgets_are_a_list_of_targets():
    from edgecnn.config import recipe_from_dict

    r = recipe_from_dict({"name": "x", "budgets": [
        {"name": "all", "budgets": {"min_accuracy": 0.9, "max_size_kb": 100}},
        {"name": "int8", "artifacts": "model.int8.tflite", "budgets": {"max_size_kb": 10}}]})
    assert [t.name for t in r.budgets] == ["all", "int8"]
    assert r.budgets.targets[1].matches("model.int8.tflite", "litert")
    assert not r.budgets.targets[1].matches("model.onnx", "onnxruntime")


def test_names_come_from_the_registries():
    """A format, route or runtime registered now is accepted by the next recipe: no copied list."""
    from edgecnn.compress import chooser
    from edgecnn.config import recipe_from_dict
    from edgecnn.export import registry

    with pytest.raises(EdgecnnError, match="unknown format.*Did you mean 'onnx-int8'"):
        recipe_from_dict({"name": "x", "export": {"formats": ["onnx-int9"]}})

    @registry.register_format("test-format", filename="model.test.onnx", runtime="onnxruntime", precision="fp32",
                              default=False)
    def _fmt(model, path, ctx):  # pragma: no cover - never run
        return path

    @chooser.register_route("test-route", tier="ptq", runtime="openvino", filename="model.test.onnx")
    def _route(ctx, path):  # pragma: no cover - never run
        return None

    try:
        r = recipe_from_dict({"name": "x", "export": {"formats": ["test-format"]},
                              "compress": {"routes": ["test-route"], "runtimes": ["openvino"]}})
        assert r.export.formats == ["test-format"] and r.compress.runtimes == ["openvino"]
        assert "test-format" not in recipe_from_dict({"name": "y"}).export.formats  # default=False
        assert "test-route" in recipe_from_dict({"name": "y"}).compress.routes
    finally:
        registry._FORMATS.pop("test-format")
        chooser._ROUTES.pop("test-route")
    with pytest.raises(EdgecnnError, match="unknown route"):
        recipe_from_dict({"name": "x", "compress": {"routes": ["test-route"]}})

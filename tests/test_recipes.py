"""The recipes in models/ (one per deployment target) and the recipe chosen for a user's own folder."""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from digits import make_digits_folder
from edgecnn.auto_recipe import INPUT_SIZES, recipe_for_folder
from edgecnn.config import load_recipe
from edgecnn.errors import EdgecnnError

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["defects-mobilenetv2", "factory-pc-efficientnet-lite0", "phone-mobilenetv2-int8", "classify"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """Real greyscale handwritten digits, 32 px, 12 per class; 6 and 9 are each other turned upside down."""
    return make_digits_folder(tmp_path_factory.mktemp("digits") / "digits", classes=(2, 5, 6, 9), per_class=12)


def _folder(root: Path, classes: int, per_class: int, side: int, mode: str = "RGB") -> Path:
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new(mode, (side, side), color=i % 255 if mode == "L" else (i % 255, 0, 0)).save(
                root / f"c{c}" / f"{i}.png")
    return root


def test_small_grey_digits_get_no_flips_and_a_small_input(digits):
    auto = recipe_for_folder(digits)
    r = auto.recipe
    assert r.data.augment.flip == "none" and r.data.augment.rotation == 0.0
    assert r.model.input_size == 96  # the nearest ladder size to 32 px, not 224
    assert r.model.args["weights"] == "imagenet" and r.model.name == "efficientnet_lite0"
    assert r.data.batch_size == 8 and r.data.path == str(digits.resolve())
    assert r.train.finetune.epochs == 15 and r.train.head.epochs == 4  # few images: more, cheap epochs
    assert r.train.finetune.train_batchnorm is False  # batches of 8: keep ImageNet's statistics
    assert "greyscale" in auto.reasons["data.path"] and "32x32" in auto.reasons["model.input_size"]
    assert set(auto.reasons) >= {"data.augment.flip", "model.input_size", "data.batch_size",
                                 "train.head.epochs", "train.finetune.epochs"}


@pytest.mark.parametrize("side, size", [(20, 96), (128, 128), (150, 160), (200, 192), (640, 224)])
def test_input_size_is_the_nearest_ladder_size(tmp_path, side, size):
    r = recipe_for_folder(_folder(tmp_path / "imgs", 2, 10, side)).recipe
    assert r.model.input_size == size and size in INPUT_SIZES


def test_batch_and_epochs_follow_the_folder_size(tmp_path):
    r = recipe_for_folder(_folder(tmp_path / "imgs", 4, 400, 8)).recipe  # 1,120 train images
    assert r.data.batch_size == 32 and r.train.finetune.epochs == 6 and r.train.head.epochs == 2
    assert r.train.finetune.train_batchnorm is False   # ImageNet's statistics kept at every batch size


def test_a_missing_folder_is_one_readable_error(tmp_path):
    with pytest.raises(EdgecnnError, match="dataset folder not found"):
        recipe_for_folder(tmp_path / "nope")


def test_classify_yaml_is_what_the_folder_chooser_writes(digits):
    """models/classify.yaml documents the chooser: its data-independent choices may not drift from it."""
    doc = load_recipe(ROOT / "models" / "classify.yaml")
    auto = recipe_for_folder(digits).recipe
    assert doc.data.augment == auto.data.augment and doc.model.name == auto.model.name
    assert doc.model.args == auto.model.args
    for key in ("optimizer", "early_stopping_patience", "seed"):
        assert getattr(doc.train, key) == getattr(auto.train, key)
    assert doc.train.head.lr == auto.train.head.lr
    for key in ("blocks", "lr_factor", "schedule"):
        assert getattr(doc.train.finetune, key) == getattr(auto.train.finetune, key)


def test_set_overrides_nested_keys_and_reports_bad_ones(digits):
    from edgecnn.cli import _apply_sets

    r = _apply_sets(recipe_for_folder(digits).recipe, ["data.augment.flip=horizontal", "train.head.epochs=1",
                                                       "export.formats=[onnx]"])
    assert r.data.augment.flip == "horizontal" and r.train.head.epochs == 1 and r.export.formats == ["onnx"]
    for bad, msg in [("train.head.epochs", "expected KEY=VALUE"), ("train.head.epochz=1", "unknown key"),
                     ("train.head.lr=0", "greater than 0"), ("name.x=1", "is a value, not a section")]:
        with pytest.raises(EdgecnnError, match=msg):
            _apply_sets(r, [bad])


def test_run_without_recipe_or_data_says_how():
    from edgecnn.cli import run

    with pytest.raises(EdgecnnError, match="needs a recipe or --data FOLDER"):
        run(recipe=None, data=None, output=None, sets=None, skip_bad_images=False, force=False, verbose=False,
            target=None)


# --- one recipe per deployment target: validated and dry-run (their full runs take minutes to an hour)

def _artifacts(recipe) -> list[str]:
    from edgecnn.export import list_formats

    return ["model.keras"] + [f.filename for f in list_formats() if f.name in recipe.export.formats]


@pytest.mark.parametrize("name", TARGETS)
def test_target_recipe_is_consistent(name):
    from edgecnn.compress.chooser import list_routes
    from edgecnn.export import list_formats

    path = ROOT / "models" / f"{name}.yaml"
    recipe = load_recipe(path)
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert len(header) >= 3, "a recipe starts with a header saying what it is for"
    assert name == "defects-mobilenetv2" or "Measured" in "\n".join(header)
    artifacts = _artifacts(recipe)
    for target in recipe.budgets.root:  # a budget that matches no artifact would pass vacuously
        assert any(fnmatch.fnmatch(a, p) for a in artifacts for p in target.artifacts), (target.name, artifacts)
    if recipe.compress.enabled:
        routes = {r.name: r.runtime for r in list_routes()}
        int8 = {f.runtime: f.name for f in list_formats() if f.precision == "int8"}
        picked = set(recipe.compress.runtimes) & {routes[r] for r in recipe.compress.routes}
        assert picked, "no route runs in the runtimes the chooser picks for"
        for runtime in picked:  # a pick the export does not ship would be measured for nothing
            assert int8[runtime] in recipe.export.formats, (runtime, recipe.export.formats)


@pytest.mark.parametrize("name", TARGETS)
def test_target_recipe_model_arguments_are_accepted(name):
    """Without building (every registered builder is built by the zoo tests): names and keywords exist."""
    from edgecnn.arch import get_model_entry

    recipe = load_recipe(ROOT / "models" / f"{name}.yaml")
    entry = get_model_entry(recipe.model.name)
    assert set(recipe.model.args) <= set(entry.accepted) - {"num_classes", "input_size"}, entry.accepted
    assert recipe.model.args.get("weights") == "imagenet"  # every target starts from offline ImageNet weights


def test_phone_recipe_trains_the_default_model():
    """Its header quotes the default run's figures: that holds only while data, model and train are equal."""
    phone = load_recipe(ROOT / "models" / "phone-mobilenetv2-int8.yaml")
    default = load_recipe(ROOT / "models" / "defects-mobilenetv2.yaml")
    assert phone.section_dump("data", "model", "train") == default.section_dump("data", "model", "train")
    assert set(phone.export.formats) <= {"tflite-fp32", "tflite-fp16", "tflite-int8"}


@pytest.mark.slow
def test_run_with_data_and_no_recipe_end_to_end(digits, tmp_path):
    """`edgecnn run --data FOLDER` on greyscale, orientation-sensitive digits: no flips, a report.

    Shortened with --set (one head epoch, no fine-tuning, one export, few timed runs); the choices
    it does not override are the folder chooser's.
    """
    from test_pipeline import edgecnn

    out = tmp_path / "run"
    p = edgecnn("run", "--data", str(digits), "--output", str(out), "--set", "train.head.epochs=1",
                "--set", "train.finetune.epochs=0", "--set", "export.formats=[tflite-fp32]",
                "--set", "evaluate.runs=10", "--set", "evaluate.warmup=1", "--set", "evaluate.threads=[1]",
                timeout=1800)  # minutes on a loaded 2-core machine
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "data.augment.flip = none" in p.stdout and "model.input_size = 96" in p.stdout
    written = yaml.safe_load((out / "recipe.yaml").read_text())
    assert written["data"]["augment"]["flip"] == "none" and written["data"]["augment"]["rotation"] == 0.0
    assert written["model"] == {"name": "efficientnet_lite0", "input_size": 96, "args": {"weights": "imagenet"}}
    assert (out / "report.html").is_file()
    report = json.loads((out / "report.json").read_text())
    assert set(report["artifacts"]) >= {"model.keras", "model.fp32.tflite"}

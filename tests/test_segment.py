"""task: segment -- the lecture's metrics by hand, mask discovery and its errors, the builders, and a tiny
recipe end to end (train -> export with the int8 choice -> evaluate -> report -> check -> serve a mask)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from edgecnn.errors import EdgecnnError
from edgecnn.segment.data import discover_pairs, load_pair, load_split
from edgecnn.segment.metrics import class_iou, confusion_matrix, mean_iou, pixel_accuracy, pixel_agreement

# ---------------------------------------------------------------------------- the lecture's formulas


def test_pixel_accuracy_and_jaccard_by_hand():
    """A 4x4 image, 3 classes, worked by hand (C: rows = truth, columns = prediction).

        truth      pred       C = [[6, 1, 1],    IoU 0 = 6 / (8 + 7 - 6) = 6/9   (|true 0| 8, |pred 0| 7)
        0 0 0 0    0 0 0 1         [1, 3, 0],    IoU 1 = 3 / (4 + 4 - 3) = 3/5
        0 0 1 1    0 0 1 0         [0, 0, 4]]    IoU 2 = 4 / (4 + 5 - 4) = 4/5
        0 0 1 1    0 2 1 1
        2 2 2 2    2 2 2 2    pixel accuracy = (6 + 3 + 4) / 16 = 13/16;  mIoU = (6/9 + 3/5 + 4/5) / 3 = 31/45
    """
    truth = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    pred = np.array([[0, 0, 0, 1], [0, 0, 1, 0], [0, 2, 1, 1], [2, 2, 2, 2]])
    cm = confusion_matrix(truth, pred, 3)
    assert cm.tolist() == [[6, 1, 1], [1, 3, 0], [0, 0, 4]]
    assert pixel_accuracy(cm) == pytest.approx(13 / 16)
    assert class_iou(cm) == pytest.approx([6 / 9, 3 / 5, 4 / 5])
    assert mean_iou(cm) == pytest.approx(31 / 45)
    assert pixel_agreement(truth, pred) == pytest.approx(13 / 16)


def test_absent_class_has_no_iou():
    cm = confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int), 3)
    assert np.isnan(class_iou(cm)[1:]).all() and mean_iou(cm) == 1.0


# ---------------------------------------------------------------------------- masks on disk


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)


def test_bundled_masks_become_class_ids(tiny_defects):
    data = discover_pairs(tiny_defects)
    assert data.layout == "masks-folder" and data.classes == ["background", "crack", "scratch", "spot"]
    scratch = next(p for p in data.splits["train"] if "/scratch/" in p.image)
    _, mask = load_pair(scratch, 48, data.classes)
    assert set(np.unique(mask)) == {0, 2}  # the bundled mask is 255 on the scratch
    good = next(p for p in data.splits["train"] if "/good/" in p.image)
    assert good.mask is None and not load_pair(good, 48, data.classes)[1].any()
    images, masks = load_split(data, "val", 32)
    assert images.shape == (len(data.splits["val"]), 32, 32, 3) and masks.shape == images.shape[:3]


def test_missing_and_wrongly_sized_masks_name_the_file(tiny_defects, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_defects, root)
    victim = sorted((root / "masks/train/crack").iterdir())[0]
    victim.unlink()
    with pytest.raises(EdgecnnError, match=f"missing mask for .*{victim.name}"):
        discover_pairs(root)
    _png(victim, np.zeros((20, 30)))
    data = discover_pairs(root)
    pair = next(p for p in data.splits["train"] if p.mask == str(victim))
    with pytest.raises(EdgecnnError, match=r"mask .*crack_\d+\.png is 30x20 but its image .* is 48x48"):
        load_pair(pair, 32, data.classes)


def test_images_and_masks_folders_with_ids_and_with_a_palette(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        ids = np.zeros((16, 16), np.uint8)
        ids[4:8, 2:12] = 1 + i % 2
        _png(tmp_path / "ids/images" / f"{i}.png", rng.integers(0, 255, (16, 16, 3)))
        _png(tmp_path / "ids/masks" / f"{i}.png", ids)
        colours = np.zeros((16, 16, 3), np.uint8)
        colours[ids == 1] = (255, 0, 0)
        colours[ids == 2] = (0, 0, 255)
        _png(tmp_path / "pal/images" / f"{i}.jpg", rng.integers(0, 255, (16, 16, 3)))
        _png(tmp_path / "pal/masks" / f"{i}.png", colours)
    data = discover_pairs(tmp_path / "ids", classes=["bg", "dent", "rust"])
    assert data.layout == "images-masks" and sum(data.counts().values()) == 6
    assert set(np.unique(load_split(data, "train", 16)[1])) <= {0, 1, 2}
    pal = discover_pairs(tmp_path / "pal", palette={"bg": (0, 0, 0), "dent": (255, 0, 0), "rust": (0, 0, 255)})
    pair = pal.splits["train"][0]
    i = int(Path(pair.image).stem)
    assert (load_pair(pair, 16, pal.classes, pal.palette)[1][4:8, 2:12] == 1 + i % 2).all()
    with pytest.raises(EdgecnnError, match=r"has value 2, but there are 2 classes"):
        load_split(discover_pairs(tmp_path / "ids", classes=["bg", "dent"]), "train", 16)
    with pytest.raises(EdgecnnError, match=r"colour \[0, 0, 255\], which is in no class"):
        load_split(discover_pairs(tmp_path / "pal", palette={"bg": (0, 0, 0), "dent": (255, 0, 0)}), "train", 16)
    (tmp_path / "ids/masks/3.png").unlink()
    with pytest.raises(EdgecnnError, match=r"missing mask for .*3\.png"):
        discover_pairs(tmp_path / "ids")


def test_mvtec_ground_truth(tmp_path):
    rng = np.random.default_rng(1)
    for split, cls, n in (("train", "good", 12), ("test", "good", 4), ("test", "hole", 12)):
        for i in range(n):
            _png(tmp_path / split / cls / f"{i:03d}.png", rng.integers(0, 255, (24, 24, 3)))
            if cls == "hole":
                m = np.zeros((24, 24), np.uint8)
                m[5:9, 5:9] = 255
                _png(tmp_path / "ground_truth/hole" / f"{i:03d}_mask.png", m)
    data = discover_pairs(tmp_path)
    assert data.layout == "mvtec" and data.classes == ["background", "hole"]
    hole = next(p for s in data.splits.values() for p in s if "/hole/" in p.image)
    assert hole.mask.endswith("_mask.png") and load_pair(hole, 24, data.classes)[1][5:9, 5:9].min() == 1


# ---------------------------------------------------------------------------- builders


@pytest.mark.parametrize("name", ["unet_mobilenet_v2", "fcn_mobilenet_v2", "deeplab_mobilenet_v2",
                                  "unet_efficientnet_lite0"])
def test_builders_give_a_probability_per_pixel_and_a_receptive_field(name):
    from edgecnn.arch import create_model, get_model_entry, list_models
    from edgecnn.arch.inspect import layer_table

    assert name in list_models(task="segment") and name not in list_models(task="classify")
    assert get_model_entry(name).task == "segment"
    model = create_model(name, num_classes=3, input_size=64)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    p = model(x, training=False).numpy()
    assert p.shape == (2, 64, 64, 3) and np.allclose(p.sum(-1), 1, atol=1e-5)
    rows = layer_table(model)
    assert rows[-1].name == "probs" and rows[-1].receptive_field >= 64  # each pixel sees the whole 64 px input
    if name == "deeplab_mobilenet_v2":
        assert any(r.dilation and max(r.dilation) > 1 for r in rows), "no atrous convolution"


@pytest.mark.parametrize("name", ["fcn_mobilenet_v2", "deeplab_mobilenet_v2", "unet_efficientnet_lite0"])
def test_every_builder_exports_and_runs_the_same_in_litert_and_onnxruntime(name, tmp_path):
    """The end-to-end run exports the U-Net; the other heads (FCN's, the dilated DeepLab head, the EfficientNet
    U-Net) go through the same shared exporters here and give the Keras model's per-pixel probabilities."""
    from edgecnn.arch import create_model
    from edgecnn.export import ExportContext, export
    from edgecnn.runtime import load_runner

    model = create_model(name, num_classes=3, input_size=64)
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    want = model(x, training=False).numpy()
    ctx = ExportContext(tmp_path, opset=17)
    for fmt in ("tflite-fp32", "onnx"):
        runner = load_runner(export(fmt, model, ctx), threads=1)
        assert [tuple(o.shape[1:]) for o in runner.outputs] == [(64, 64, 3)], (fmt, runner.outputs)
        np.testing.assert_allclose(runner(x), want, atol=2e-4, err_msg=f"{name} {fmt}")


def test_builder_refuses_a_size_the_decoder_cannot_join():
    from edgecnn.arch import create_model

    with pytest.raises(EdgecnnError, match="input_size must be a multiple of 32.*Received input_size=100; use 96"):
        create_model("unet_mobilenet_v2", num_classes=3, input_size=100)
    with pytest.raises(EdgecnnError, match="skips must be 0"):
        create_model("fcn_mobilenet_v2", num_classes=3, input_size=64, skips=3)


# ---------------------------------------------------------------------------- end to end


TINY = {
    "name": "tiny-segment", "task": "segment",
    "data": {"batch_size": 16, "augment": {"flip": "horizontal", "rotation": 0.0, "zoom": 0.0, "contrast": 0.0}},
    "model": {"name": "unet_mobilenet_v2", "input_size": 32,
              "args": {"weights": "imagenet", "decoder_channels": [16, 16, 8, 8]}},
    "train": {"head": {"epochs": 1, "lr": 0.003}, "finetune": {"blocks": 2, "epochs": 1}},
    "segment": {"int8_val_images": 8, "max_miou_drop": 0.02, "int8_calibrations": ["minmax", "percentile"]},
    "export": {"formats": ["tflite-int8", "onnx"], "calibration_images": 16},
    "evaluate": {"warmup": 1, "runs": 10, "threads": [1], "runtimes": []},
    "budgets": [{"name": "masks", "artifacts": "*", "budgets": {"min_miou": 0.99}},
                {"name": "int8", "artifacts": "*int8*",
                 "budgets": {"min_pixel_agreement": 0.95, "max_miou_drop": 0.02}}],
}


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory, tiny_defects):
    import edgecnn

    root = tmp_path_factory.mktemp("segment")
    recipe = root / "tiny-segment.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "path": str(tiny_defects)}}))
    result = edgecnn.run(recipe, output=root / "run")
    return root / "run", result


@pytest.mark.slow
def test_tiny_recipe_end_to_end(seg_run, tiny_defects):
    run_dir, result = seg_run
    report = json.loads((run_dir / "report.json").read_text())
    assert report["task"] == "segment" and report["classes"] == ["background", "crack", "scratch", "spot"]
    arts = report["artifacts"]
    assert {"model.keras", "model.int8.tflite", "model.onnx"} <= set(arts)
    ref, onnx = arts["model.keras"]["metrics"], arts["model.onnx"]["metrics"]
    int8 = arts["model.int8.tflite"]["metrics"]
    assert ref["pixel_agreement"] == 1.0 and ref["miou_drop"] == 0.0
    assert onnx["pixel_agreement"] > 0.999  # the same float graph in another runtime
    assert int8["miou_drop"] == pytest.approx(ref["miou"] - int8["miou"])
    assert set(int8["iou"]) == set(report["classes"]) and 0 <= int8["pixel_accuracy"] <= 1
    assert arts["model.int8.tflite"]["latency"]["1"]["runs"] == 10
    # the int8 choice stops at the first calibration within max_miou_drop (minmax: -0.001 on val when written)
    budget = TINY["segment"]["max_miou_drop"]
    choice = json.loads((run_dir / "int8.json").read_text())["tflite-int8"]
    assert [c["method"] for c in choice["candidates"]] == ["minmax"] and choice["pick"] == "minmax"
    cand = choice["candidates"][0]
    assert cand["miou"] == pytest.approx(choice["float_miou"] - cand["miou_drop"])
    # int8 masks are float's: within the mIoU budget and the same class on >= 95 % of the pixels (0.97 when
    # written), on val (the choice) and on test (the evaluation, separate code). The float model labels most
    # pixels a defect after two epochs (mIoU 0.02), so the agreement is the figure that tells a broken int8 graph
    assert cand["miou_drop"] <= budget and cand["pixel_agreement"] >= 0.95, cand
    assert int8["miou_drop"] <= budget and int8["pixel_agreement"] >= 0.95, int8
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["task"] == "segment" and manifest["artifacts"]["model.int8.tflite"]["stage"] == "compress"
    # budgets: min_miou 0.99 cannot hold after two epochs at 32 px; int8's agreement and mIoU drop (above) do
    broken = {(v["artifact"], v["budget"]) for v in report["budgets"]["violations"]}
    assert {("model.keras", "min_miou"), ("model.int8.tflite", "min_miou")} <= broken
    assert not any(b in ("min_pixel_agreement", "max_miou_drop") for _, b in broken)
    checked = {(c["artifact"], c["budget"]) for c in report["budgets"]["checks"]}
    assert ("model.int8.tflite", "min_pixel_agreement") in checked
    assert not result.ok
    html = (run_dir / "report.html").read_text()
    for anchor in ("segment-metrics", "segment-int8", "segment-examples", "segment-training"):
        assert f'id="{anchor}"' in html
    assert report["examples"] and all((run_dir / e["file"]).is_file() for e in report["examples"])
    card = (run_dir / "MODEL_CARD.md").read_text()   # the task's use and figures, not a classifier's
    assert "Label every pixel" in card and "| mIoU | pixel accuracy |" in card and "top-1" not in card
    # a second run changes nothing
    import edgecnn

    again = edgecnn.run(run_dir / "recipe.yaml", output=run_dir)
    assert again.report["artifacts"]["model.keras"]["metrics"] == report["artifacts"]["model.keras"]["metrics"]


@pytest.mark.slow
def test_check_gates_the_mask_figures(seg_run, tmp_path):
    run_dir, _ = seg_run
    miou = json.loads((run_dir / "report.json").read_text())["artifacts"]["model.int8.tflite"]["metrics"]["miou"]
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(yaml.safe_dump({"version": 1, "targets": [{"name": "m", "artifacts": "model.int8.tflite",
                                                                  "budgets": {"min_miou": round(miou - 0.01, 4)}}]}))
    ok = subprocess.run([sys.executable, "-m", "edgecnn.cli", "check", str(run_dir), "--budgets", str(budgets)],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    budgets.write_text(yaml.safe_dump({"version": 1, "targets": [{"name": "m", "artifacts": "model.int8.tflite",
                                                                  "budgets": {"min_miou": round(miou + 0.01, 4)}}]}))
    bad = subprocess.run([sys.executable, "-m", "edgecnn.cli", "check", str(run_dir), "--budgets", str(budgets)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "min_miou" in bad.stdout + bad.stderr


@pytest.mark.slow
def test_service_returns_the_mask_and_areas(seg_run, tiny_defects, tmp_path):
    import httpx

    from serve_fixtures import Server

    run_dir, _ = seg_run
    image = sorted((tiny_defects / "test/spot").iterdir())[0].read_bytes()
    server = Server(run_dir, log_dir=tmp_path).wait_ready()
    try:
        url = f"{server.url}/v2/models/tiny-segment/classify"  # the recipe's name
        r = httpx.post(url, content=image, headers={"content-type": "image/png"}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["classes"] == ["background", "crack", "scratch", "spot"] and body["mask_size"] == [32, 32]
        assert sum(a["pixels"] for a in body["areas"].values()) == 32 * 32
        assert body["image_size"] == [48, 48]
        png = httpx.post(url + "?mask=png", content=image, headers={"content-type": "image/png"}, timeout=60)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        mask = np.asarray(Image.open(__import__("io").BytesIO(png.content)))
        assert mask.shape == (32, 32) and mask.max() < 4
        areas = json.loads(png.headers["x-class-areas"])
        assert areas == {k: v["pixels"] for k, v in body["areas"].items()}
        assert {c: int((mask == i).sum()) for i, c in enumerate(body["classes"])} == areas
        bad = httpx.post(url + "?mask=gif", content=image, headers={"content-type": "image/png"}, timeout=60)
        assert bad.status_code == 400 and "mask must be one of" in bad.text
    finally:
        server.stop()


def test_a_split_over_the_memory_cap_is_memory_mapped_and_reads_the_same(tiny_defects, tmp_path):
    """``data.cache_memory_mb`` holds for segmentation: a split whose float32 images do not fit is decoded once
    into the run directory and memory-mapped; training batches read it a pair at a time, the same pixels."""
    import tensorflow as tf  # noqa: F401  (make_batches builds tf.data)

    from edgecnn.segment.data import discover_pairs, split_arrays
    from edgecnn.segment.train import make_batches

    data = discover_pairs(tiny_defects, val_fraction=0.2, test_fraction=0.2, seed=0)
    in_memory = split_arrays(data, "val", 48, tmp_path, memory_mb=1024)
    mapped = split_arrays(data, "val", 48, tmp_path, memory_mb=0)
    assert not isinstance(in_memory[0], np.memmap) and isinstance(mapped[0], np.memmap)
    np.testing.assert_array_equal(in_memory[0], mapped[0])
    np.testing.assert_array_equal(in_memory[1], mapped[1])
    cached = tmp_path / "segment-val-48.npy"
    stamp = cached.stat().st_mtime_ns
    assert split_arrays(data, "val", 48, tmp_path, memory_mb=0)[0].shape == mapped[0].shape
    assert cached.stat().st_mtime_ns == stamp, "the decoded split was not reused"
    seen = [(x.numpy(), y.numpy()) for x, y in make_batches(*mapped, 4, training=True, seed=1)]
    assert sum(len(x) for x, _ in seen) == len(mapped[0])
    got = np.concatenate([x for x, _ in seen]).reshape(len(mapped[0]), -1).sum(1)
    np.testing.assert_allclose(np.sort(got), np.sort(in_memory[0].reshape(len(mapped[0]), -1).sum(1)), rtol=1e-6)

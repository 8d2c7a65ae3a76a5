"""Decoded splits on disk (edgecnn.data.decoded_split): the same pixels and figures as whole arrays,
read a batch at a time, reused while the data is unchanged and redone when it changes."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecnn.data.decoded_split import DecodedSplit, decoded_split, predict_in_batches
from edgecnn.data.folders import Dataset, discover


def _all_as_test(root: Path) -> Dataset:
    """Every image of the tiny set (96) as one "test" split: more than one batch of 64."""
    ds = discover(root)
    items = [item for s in ("train", "val", "test") for item in ds.splits[s]]
    return Dataset(root=ds.root, layout="list", classes=ds.classes,
                   splits={"train": [], "val": [], "test": items})


@pytest.mark.parametrize("size,stored", [(48, np.uint8), (32, np.float32)])
def test_a_decoded_split_holds_the_pixels_load_arrays_gives(tiny_defects, tmp_path, size, stored):
    """At the files' own size the file holds uint8 (exact); resized, float32; both read back as load_arrays."""
    from edgecnn.data.loader import load_arrays

    ds = _all_as_test(tiny_defects)
    x, y = load_arrays(ds, "test", size)
    split = decoded_split(ds, "test", size, tmp_path)
    assert split.stored_dtype == stored and split.shape == x.shape and len(split) == len(x) > 64
    assert np.array_equal(split.labels, y) and split.paths == ds.paths("test")
    assert np.array_equal(np.asarray(split), x)
    assert np.array_equal(np.concatenate(list(split.batches(64))), x)
    assert np.array_equal(split[70], x[70]) and np.array_equal(split[-1], x[-1])
    assert np.array_equal(split[60:70], x[60:70]) and np.array_equal(split[[90, 3, 64]], x[[90, 3, 64]])
    assert np.array_equal(split[::7], x[::7]) and np.array_equal(np.stack(list(split)), x)
    with pytest.raises(IndexError):
        split[len(x)]
    if stored is np.float32:       # as Keras' fit(validation_data=...) takes it (the QAT route's val)
        from edgecnn.data.loader import decoded_split_dataset

        got = list(decoded_split_dataset(split, 32).as_numpy_iterator())
        assert [len(b[0]) for b in got] == [32, 32, 32] and all(b[1].dtype == np.int64 for b in got)
        assert np.array_equal(np.concatenate([b[0] for b in got]), x)
        assert np.array_equal(np.concatenate([b[1] for b in got]), y)


def test_a_decoded_split_is_reused_until_the_data_changes(tiny_defects, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_defects, data)
    folder = tmp_path / "splits"
    first = decoded_split(discover(data), "test", 32, folder)
    stamp = first.path.stat().st_mtime_ns
    again = decoded_split(discover(data), "test", 32, folder)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp     # reused, not rewritten
    assert decoded_split(discover(data), "test", 40, folder).path != first.path   # another size: its own file

    victim = sorted((data / "test").rglob("*.png"))[0]
    victim.unlink()                                   # the data set changed: a new file, the old one deleted
    changed = decoded_split(discover(data), "test", 32, folder)
    assert changed.path != first.path and not first.path.exists() and len(changed) == len(first) - 1

    with open(changed.path, "r+b") as f:             # a damaged file is decoded again, not read
        f.truncate(200)
    redone = decoded_split(discover(data), "test", 32, folder)
    assert np.array_equal(redone[-1], decoded_split(discover(data), "test", 32, tmp_path / "fresh")[-1])


def test_predicting_batch_by_batch_gives_the_whole_array_figures(tiny_run, tiny_defects, tmp_path):
    """Every runtime's outputs over a two-batch split equal one call on the whole array; and the evaluate stage
    (which streams the test split) reports the figures a whole-array computation gives."""
    from edgecnn.data.loader import load_arrays
    from edgecnn.evaluate.metrics import classification_metrics
    from edgecnn.runtime import load_runner

    ds = _all_as_test(tiny_defects)
    split = decoded_split(ds, "test", 32, tmp_path)
    whole = np.asarray(split)
    for name in ("model.onnx", "model.int8.tflite", "model.keras"):
        runner = load_runner(tiny_run / name, threads=1)
        assert np.array_equal(predict_in_batches(runner, split), runner(whole)), name

    report = json.loads((tiny_run / "report.json").read_text())
    assert list((tiny_run / "splits").glob("test-32px-*.npy"))     # the stage's decoded test split
    test_ds = discover(tiny_defects, min_images_per_class=5)
    x, y = load_arrays(test_ds, "test", 32)
    ref = load_runner(tiny_run / "model.keras", threads=1)(x)
    for name in ("model.onnx", "model.int8.tflite"):
        expected = classification_metrics(load_runner(tiny_run / name, threads=1)(x), y, test_ds.classes,
                                          reference=ref)
        got = report["artifacts"][name]["metrics"]
        assert got["confusion_matrix"] == expected["confusion_matrix"], name
        for key in ("accuracy", "agreement", "macro_f1", "max_abs_prob_delta"):
            assert got[key] == pytest.approx(expected[key]), (name, key)


def test_the_stages_read_the_val_split_from_the_run_directory(tmp_path, tiny_defects):
    """The chooser on a decoded split picks from the same figures as on arrays (one cheap route)."""
    from edgecnn._tf import keras
    from edgecnn.arch import create_model
    from edgecnn.compress.chooser import choose
    from edgecnn.data.loader import calibration_arrays, load_arrays

    ds = discover(tiny_defects, min_images_per_class=5)
    keras.utils.set_random_seed(0)
    model = create_model("dsconv", num_classes=len(ds.classes), input_size=32, alpha=0.25, depth=4)
    calib = calibration_arrays(ds, 32, 12)
    split = decoded_split(ds, "val", 32, tmp_path / "splits")
    x, y = load_arrays(ds, "val", 32)
    figures = []
    for images, work in ((split, "a"), (x, "b")):
        r = choose(model, images, y, calib, tmp_path / work, routes=["tflite-int8"], runs=0)
        c = r.candidates[0]
        figures.append((r.float_accuracy, c.accuracy, c.drop, c.agreement))
    assert figures[0] == figures[1]
    assert isinstance(split, DecodedSplit) and os.path.getsize(split.path) < x.nbytes + 1024

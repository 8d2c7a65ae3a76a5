"""Dataset discovery: the three layouts, deterministic splits, and every bad input named in the issue."""
from __future__ import annotations

import shutil

import pytest

from edgecnn.data.folders import discover
from edgecnn.errors import EdgecnnError


def test_split_folders(tiny_defects):
    ds = discover(tiny_defects, min_images_per_class=5)
    assert ds.layout == "split-folders"
    assert ds.classes == ["crack", "good", "scratch", "spot"]  # masks/ is not a class
    counts = ds.counts()
    assert all(counts["test"][c] > 0 for c in ds.classes)
    assert len(ds.paths("train")) + len(ds.paths("val")) + len(ds.paths("test")) == 4 * 24


def test_class_folders_stratified_and_deterministic(class_folders):
    a = discover(class_folders, val_fraction=0.2, test_fraction=0.2, seed=3, min_images_per_class=5)
    b = discover(class_folders, val_fraction=0.2, test_fraction=0.2, seed=3, min_images_per_class=5)
    c = discover(class_folders, val_fraction=0.2, test_fraction=0.2, seed=4, min_images_per_class=5)
    assert a.layout == "class-folders"
    assert a.splits == b.splits and a.splits != c.splits
    for cls in a.classes:  # stratified: ~20 % of each class in test
        assert a.counts()["test"][cls] == round(24 * 0.2)
    assert not set(a.paths("train")) & set(a.paths("test"))


def test_mvtec_layout(tmp_path, tiny_defects):
    root = tmp_path / "bottle"
    shutil.copytree(tiny_defects / "train" / "good", root / "train" / "good")
    for cls in ("good", "crack", "scratch"):
        shutil.copytree(tiny_defects / "test" / cls, root / "test" / cls, dirs_exist_ok=True)
        shutil.copytree(tiny_defects / "train" / cls, root / "test" / cls, dirs_exist_ok=True)
    (root / "ground_truth" / "crack").mkdir(parents=True)
    ds = discover(root, min_images_per_class=5)
    assert ds.layout == "mvtec"
    assert ds.classes == ["crack", "good", "scratch"]
    assert all(len(ds.paths(s)) for s in ("train", "val", "test"))


def test_missing_folder():
    with pytest.raises(EdgecnnError, match="dataset folder not found: '/no/such/dir'"):
        discover("/no/such/dir")


def test_no_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(EdgecnnError, match="no images found"):
        discover(tmp_path)


def test_single_class(tmp_path, tiny_defects):
    shutil.copytree(tiny_defects / "train" / "good", tmp_path / "good")
    with pytest.raises(EdgecnnError, match="only one class"):
        discover(tmp_path, min_images_per_class=2)


def test_too_few_images_in_a_class(class_folders):
    for f in sorted((class_folders / "spot").iterdir())[3:]:
        f.unlink()
    with pytest.raises(EdgecnnError, match=r"class 'spot' has 3 image\(s\).*at least 10"):
        discover(class_folders, min_images_per_class=10)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"not an image at all"],
                         ids=["zero-byte", "truncated-png", "text-renamed"])
def test_corrupt_image_reported_by_path(class_folders, content):
    bad = class_folders / "crack" / "zz_bad.png"
    bad.write_bytes(content)
    with pytest.raises(EdgecnnError) as e:
        discover(class_folders, min_images_per_class=5)
    assert str(bad) in str(e.value) and "--skip-bad-images" in str(e.value)
    ds = discover(class_folders, min_images_per_class=5, skip_bad_images=True)
    assert [p for p, _ in ds.skipped] == [str(bad)]
    assert str(bad) not in sum((ds.paths(s) for s in ("train", "val", "test")), [])

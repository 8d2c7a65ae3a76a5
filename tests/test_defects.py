"""The bundled defect set: layout, masks and bboxes, determinism, reuse, refusal, argument checks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecnn.data.defects import CLASSES, GENERATOR_VERSION, make_defects
from edgecnn.errors import EdgecnnError

SMALL = dict(seed=0, per_class=12, size=64)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("defects") / "set"
    return out, make_defects(out, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(small_set):
    out, summary = small_set
    # 12 * (0.6, 0.2, 0.2) = (7.2, 2.4, 2.4): largest remainder gives the spare image to val.
    assert summary["counts"] == {s: {c: n for c in CLASSES} for s, n in (("train", 7), ("val", 3), ("test", 2))}
    assert summary["total"] == 4 * 12 and summary["reused"] is False
    assert summary["out_dir"] == str(out)
    for split, per_cls in summary["counts"].items():
        for cls, n in per_cls.items():
            pngs = sorted((out / split / cls).glob("*.png"))
            assert len(pngs) == n
            for p in pngs:
                assert p.name.startswith(f"{cls}_") and len(p.stem) == len(cls) + 6
                with Image.open(p) as im:
                    assert im.mode == "RGB" and im.size == (64, 64)
    assert not list(out.parent.glob(".set.tmp-*")), "the temporary folder was left behind"


def test_splits_are_stratified_by_fraction(tmp_path):
    summary = make_defects(tmp_path / "s", seed=1, per_class=20, size=32, splits=(0.5, 0.25, 0.25))
    assert all(summary["counts"][s] == {c: n for c in CLASSES} for s, n in (("train", 10), ("val", 5), ("test", 5)))


def test_masks_for_defects_only_and_bboxes_match(small_set):
    out, _ = small_set
    meta = json.loads((out / "meta.json").read_text())
    assert meta["version"] == GENERATOR_VERSION and meta["classes"] == list(CLASSES)
    assert len(meta["images"]) == 48
    assert not (out / "masks" / "train" / "good").exists()
    for rec in meta["images"]:
        assert (out / rec["path"]).is_file()
        assert rec["texture"] in meta["textures"]
        if rec["class"] == "good":
            assert rec["mask"] is None and rec["bbox"] is None and rec["hard"] is False
            continue
        assert rec["mask"] == f"masks/{rec['path']}" and isinstance(rec["hard"], bool)
        with Image.open(out / rec["mask"]) as im:
            assert im.mode == "L" and im.size == (64, 64)
            mask = np.asarray(im)
        assert set(np.unique(mask)) <= {0, 255} and (mask > 0).sum() >= 8
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = rec["bbox"]
        assert [x0, y0, x1, y1] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    n_mask_files = len(list((out / "masks").rglob("*.png")))
    assert n_mask_files == 36


def test_contact_sheet_is_a_png(small_set):
    out, _ = small_set
    with Image.open(out / "contact_sheet.png") as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.size[0] > 8 * 64 and im.size[1] > 4 * 64
        im.load()


def test_same_seed_same_bytes_other_seed_other_images(tmp_path, small_set):
    out, _ = small_set
    again = tmp_path / "again"
    make_defects(again, **SMALL)
    assert _files(again) == _files(out)
    other = tmp_path / "other"
    make_defects(other, **{**SMALL, "seed": 1})
    a, b = _files(out), _files(other)
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a if k.endswith(".png") and not k.startswith("masks")) >= 40


def test_existing_identical_set_is_reused(small_set):
    out, _ = small_set
    stamp = (out / "meta.json").stat().st_mtime_ns
    calls = []
    summary = make_defects(out, **SMALL, progress=lambda d, t: calls.append(d))
    assert summary["reused"] is True and summary["total"] == 48
    assert calls == [] and (out / "meta.json").stat().st_mtime_ns == stamp


def test_other_settings_refused_then_overwritten(tmp_path):
    out = tmp_path / "set"
    make_defects(out, seed=0, per_class=10, size=32)
    with pytest.raises(EdgecnnError, match=r"seed=0 \(asked 3\).*overwrite=True"):
        make_defects(out, seed=3, per_class=10, size=32)
    done = []
    summary = make_defects(out, seed=3, per_class=10, size=32, overwrite=True,
                           progress=lambda d, t: done.append((d, t)))
    assert summary["seed"] == 3 and summary["reused"] is False
    assert done[-1] == (40, 40) and len(done) == 40
    assert json.loads((out / "meta.json").read_text())["seed"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["set"], "temporary or old folders were left behind"


def test_foreign_folder_refused(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(EdgecnnError, match="photos.*no readable meta.json.*choose another folder"):
        make_defects(out, per_class=10, size=32)
    assert (out / "holiday.jpg").exists()


def test_empty_existing_folder_is_filled(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert make_defects(out, per_class=10, size=32)["total"] == 40


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(per_class=5), "per_class.*Received per_class=5"),
    (dict(per_class=12.5), "per_class"),
    (dict(size=16), "size.*Received size=16"),
    (dict(seed=-1), "seed.*Received seed=-1"),
    (dict(seed=True), "seed"),
    (dict(splits=(0.5, 0.5, 0.5)), "sum to 1"),
    (dict(splits=(1.2, -0.1, -0.1)), "sum to 1"),
    (dict(splits=(0.5, 0.5)), "three numbers"),
    (dict(splits=(0.98, 0.01, 0.01)), "rounds to 0"),
    (dict(progress="yes"), "progress"),
    (dict(overwrite="yes"), "overwrite"),
])
def test_bad_arguments(tmp_path, kwargs, fragment):
    with pytest.raises(EdgecnnError, match=fragment):
        make_defects(tmp_path / "x", **{"per_class": 10, "size": 32, **kwargs})
    assert not (tmp_path / "x").exists()


def test_interrupted_run_leaves_nothing_and_keeps_the_old_set(tmp_path):
    def boom(done, total):
        if done == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_defects(tmp_path / "new", per_class=10, size=32, progress=boom)
    assert list(tmp_path.iterdir()) == []

    old = tmp_path / "old"
    make_defects(old, per_class=10, size=32)
    before = _files(old)
    with pytest.raises(KeyboardInterrupt):
        make_defects(old, seed=5, per_class=10, size=32, overwrite=True, progress=boom)
    assert _files(old) == before and [p.name for p in tmp_path.iterdir()] == ["old"]


def test_image_i_does_not_depend_on_per_class(tmp_path, small_set):
    out, _ = small_set
    fewer = tmp_path / "fewer"
    make_defects(fewer, seed=0, per_class=10, size=64)
    by_name = {Path(p).name: p for p in _files(out)}
    for rel, data in _files(fewer).items():
        if rel.count("/") == 2:  # split/class/name.png
            assert data == (out / by_name[Path(rel).name]).read_bytes()

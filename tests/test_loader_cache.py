"""The training cache: where decoded images are kept follows data.cache and its budget, and the
batches are the same whichever cache is used (uint8 in memory, a tf.data file cache, none)."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.data.folders import discover
from edgecnn.data.loader import cache_plan, make_dataset, shard_paths
from edgecnn.errors import EdgecnnError


@pytest.fixture(scope="module")
def ds(tiny_defects):
    return discover(tiny_defects)  # 48 px images


def _epochs(data, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for _ in range(n) for x, y in data]


def test_plan_follows_the_budget(ds, tmp_path):
    n = len(ds.paths("train"))
    exact = cache_plan(ds, "train", 48, memory_mb=1024)
    assert (exact.kind, exact.dtype) == ("memory", "uint8")  # files at the input size: whole grey levels
    assert exact.mbytes == pytest.approx(n * 48 * 48 * 3 / 2**20)
    resized = cache_plan(ds, "train", 32, memory_mb=1024)
    assert (resized.kind, resized.dtype) == ("memory", "float32")  # resized: fractional levels stay exact
    assert resized.mbytes == pytest.approx(n * 32 * 32 * 3 * 4 / 2**20)
    over = exact.mbytes * 0.9
    assert cache_plan(ds, "train", 48, memory_mb=over, cache_dir=tmp_path).kind == "disk"
    assert cache_plan(ds, "train", 48, memory_mb=over).kind == "none"  # no folder for a file cache
    assert cache_plan(ds, "train", 48, memory_mb=exact.mbytes).kind == "memory"
    assert cache_plan(ds, "train", 48, cache="none").kind == "none"
    with pytest.raises(EdgecnnError, match="needs a folder"):
        cache_plan(ds, "train", 48, cache="disk")
    with pytest.raises(EdgecnnError, match="Received cache='ram'"):
        cache_plan(ds, "train", 48, cache="ram")


@pytest.mark.parametrize("size", [48, 32])  # uint8 (no resize), float32 (resized)
def test_batches_identical_with_and_without_cache(ds, tmp_path, size):
    def batches(cache):
        return _epochs(make_dataset(ds, "train", size, 8, training=True, seed=3, cache=cache,
                                    cache_dir=tmp_path / "cache"), 2)

    plain = batches("none")
    for cache in ("memory", "disk"):
        got = batches(cache)
        assert len(got) == len(plain)
        for (x, y), (x0, y0) in zip(got, plain):
            assert x.dtype == np.float32
            np.testing.assert_array_equal(y, y0)
            np.testing.assert_array_equal(x, x0)
    if size == 32:
        assert any(not np.array_equal(x, np.round(x)) for x, _ in plain)  # really fractional pixels


def test_disk_cache_is_keyed_and_stale_ones_go(ds, tmp_path):
    folder = tmp_path / "cache"
    first = cache_plan(ds, "val", 48, cache="disk", cache_dir=folder)
    want = _epochs(make_dataset(ds, "val", 48, 8, cache="disk", cache_dir=folder), 1)
    assert any(p.name.startswith(first.path.name) for p in folder.iterdir())
    other = cache_plan(ds, "val", 40, cache="disk", cache_dir=folder)  # another input size: another key
    assert other.path != first.path
    assert not any(p.name.startswith(first.path.name) for p in folder.iterdir())
    (folder / f"{first.path.name}.lockfile").touch()  # left by a killed writer
    again = _epochs(make_dataset(ds, "val", 48, 8, cache="disk", cache_dir=folder), 1)
    for (x, y), (x0, y0) in zip(again, want):
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)


def test_shards_split_the_file_list_evenly():
    paths, labels = [f"f{i}" for i in range(7)], np.arange(7)
    shards = [shard_paths(paths, labels, (3, i)) for i in range(3)]
    assert [len(p) for p, _ in shards] == [3, 3, 3]
    assert sorted(set().union(*(p for p, _ in shards))) == sorted(paths)
    assert set(shards[0][0]).isdisjoint(shards[1][0])
    for p, y in shards:
        assert [int(s[1:]) for s in p] == list(y)
    assert shard_paths(paths, labels, None)[0] == paths


def test_file_cache_over_budget_shuffles_within_the_budget(ds, tmp_path):
    """A split over the memory budget goes to a file cache and its shuffle buffer holds only what the budget
    allows: each epoch still has every image once, in another order than a full shuffle."""
    per_image_mb = 48 * 48 * 3 / 2**20
    small = dict(cache="disk", cache_dir=tmp_path, cache_memory_mb=20 * per_image_mb)   # a 20-image buffer
    full = _epochs(make_dataset(ds, "train", 48, 8, training=True, seed=3, cache="none"), 1)
    part = _epochs(make_dataset(ds, "train", 48, 8, training=True, seed=3, **small), 1)

    def images(batches):
        return sorted(x.tobytes() for b, _ in batches for x in b)

    assert images(part) == images(full)
    assert len(ds.paths("train")) > 20 and any(not np.array_equal(a, b) for (a, _), (b, _) in zip(part, full))

"""Shared fixtures: tiny real datasets (the bundled generator at small size) and tiny recipes."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

import pytest

import edgecnn  # noqa: E402, F401  (sets TensorFlow's environment before any test imports it)

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parent.parent
TINY_RECIPE = ROOT / "tests" / "recipes" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_defects(tmp_path_factory) -> Path:
    """The bundled defect generator at 48 px, 24 images per class, split train/val/test (read-only).

    One folder per test session, shared by the xdist workers, so runs made from it in different
    workers (the shared ``tiny_run``) name the same data path.
    """
    from edgecnn.data.defects import make_defects

    with _shared_dir(tmp_path_factory, "tiny-defects") as (out, exists):
        if not exists:
            make_defects(out, seed=0, per_class=24, size=48)
    return out


@contextlib.contextmanager
def _shared_dir(tmp_path_factory, name: str):
    """``(folder, already_made)`` for a session-wide folder, locked while the caller fills it.

    Under pytest-xdist the folder lies in the session's temp root, shared by all workers; the first
    worker makes it (a ``.done`` marker says it finished) and the others wait on the lock.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        exists = done.is_file()
        if not exists:
            shutil.rmtree(folder, ignore_errors=True)
        yield folder, exists
        done.touch()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_defects) -> Path:
    """`edgecnn run tests/recipes/tiny.yaml` once per test session (train, export, evaluate, report).

    Shared by the pipeline, report and CI-gate tests. Under pytest-xdist the first worker that needs
    it builds it in the session's shared temp folder (under a file lock) and every worker gets its own
    copy, so it is trained once, not once per worker. A test that changes the run directory beyond
    adding its own files works on a further copy (``shutil.copytree``).
    """
    mine = tmp_path_factory.mktemp("runs") / "tiny"
    with _shared_dir(tmp_path_factory, "tiny-run") as (shared, exists):
        if not exists:
            _edgecnn_run(TINY_RECIPE, tiny_defects, shared)
    shutil.copytree(shared, mine, symlinks=True)
    return mine


def _edgecnn_run(recipe: Path, data: Path, out: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, "-m", "edgecnn.cli", "run", str(recipe), "--data", str(data),
                        "--output", str(out)], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    assert "report:" in p.stdout


@pytest.fixture
def class_folders(tmp_path, tiny_defects) -> Path:
    """A flat ROOT/<class>/*.png copy of the tiny set (no split folders)."""
    root = tmp_path / "flat"
    for split in ("train", "val", "test"):
        for cls_dir in (tiny_defects / split).iterdir():
            dest = root / cls_dir.name
            dest.mkdir(parents=True, exist_ok=True)
            for f in cls_dir.iterdir():
                shutil.copy(f, dest / f"{split}_{f.name}")
    return root


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Work units for pytest-xdist (``--dist loadgroup``), slow units first.

    A unit is a test file (so module fixtures are built once), unless a test names its own
    ``xdist_group`` (the zoo: one unit per model, so two workers share the 31 models). Units with
    slow tests go first: the longest jobs start early instead of finishing last on one worker.
    """
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))

    def unit(item):
        return next(item.iter_markers("xdist_group")).args[0]

    slow_units = {unit(i) for i in items if i.get_closest_marker("slow")}
    items.sort(key=lambda i: unit(i) not in slow_units)   # stable: each file keeps its order


def _recipe_run(tmp_path_factory, tiny_defects, recipe: str) -> Path:
    """``tests/recipes/<recipe>.yaml`` run once per test session on ``tiny_defects``, built under a lock like
    ``tiny_run`` (its budgets must hold); each worker gets its own copy."""
    mine = tmp_path_factory.mktemp("runs") / recipe
    with _shared_dir(tmp_path_factory, f"{recipe}-run") as (shared, exists):
        if not exists:
            result = edgecnn.run(ROOT / "tests" / "recipes" / f"{recipe}.yaml", data=tiny_defects, output=shared)
            assert result.ok, (result.violations, result.errors, result.withheld)
    shutil.copytree(shared, mine, symlinks=True)
    return mine


@pytest.fixture(scope="session")
def anomaly_tiny_run(tmp_path_factory, tiny_defects) -> Path:
    """``tests/recipes/anomaly-tiny.yaml`` (PatchCore, ~15 s), once per session."""
    return _recipe_run(tmp_path_factory, tiny_defects, "anomaly-tiny")


@pytest.fixture(scope="session")
def segment_tiny_run(tmp_path_factory, tiny_defects) -> Path:
    """tests/test_segment.py's ``TINY`` segment recipe run once per test session on ``tiny_defects`` (~30 s),
    built under a lock like ``tiny_run``; each worker gets its own copy. Its mIoU budget (0.99) is meant to
    break: the run's result is not asserted."""
    import yaml

    from test_segment import TINY

    mine = tmp_path_factory.mktemp("runs") / "tiny-segment"
    with _shared_dir(tmp_path_factory, "segment-tiny-run") as (shared, exists):
        if not exists:
            recipe = shared.parent / "segment-tiny.yaml"
            recipe.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "path": str(tiny_defects)}}))
            edgecnn.run(recipe, output=shared)
    shutil.copytree(shared, mine, symlinks=True)
    return mine


@pytest.fixture(scope="session")
def detect_tiny_run(tmp_path_factory, tiny_defects) -> Path:
    """``tests/recipes/detect-tiny.yaml`` (SSDLite at 64 px), once per session."""
    return _recipe_run(tmp_path_factory, tiny_defects, "detect-tiny")

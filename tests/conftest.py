"""Shared fixtures: tiny real datasets (the bundled generator at small size) and tiny recipes."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parent.parent
TINY_RECIPE = ROOT / "tests" / "recipes" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_defects(tmp_path_factory) -> Path:
    """The bundled defect generator at 48 px, 24 images per class, split train/val/test."""
    from edgecnn.data.defects import make_defects

    out = tmp_path_factory.mktemp("data") / "defects"
    make_defects(out, seed=0, per_class=24, size=48)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_defects) -> Path:
    """`edgecnn run tests/recipes/tiny.yaml` once per session (train, export, evaluate, report).

    Shared by the pipeline, report and CI-gate tests; a test that changes the run directory beyond
    adding its own files works on a copy (``shutil.copytree``).
    """
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("runs") / "tiny"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, "-m", "edgecnn.cli", "run", str(TINY_RECIPE), "--data", str(tiny_defects),
                        "--output", str(out)], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    assert "report:" in p.stdout
    return out


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

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

"""`edgecnn predict`: ImageNet MobileNetV2 on scikit-image photos, and a trained run's artifacts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecnn.data.preprocess import load_image
from edgecnn.errors import EdgecnnError
from edgecnn.predict import predict_files

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    import skimage.data as data

    out = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, img in {"chelsea": data.chelsea(), "coffee": data.coffee(),
                      "motorcycle": data.stereo_motorcycle()[0]}.items():
        paths[name] = out / f"{name}.jpg"
        Image.fromarray(img).save(paths[name], quality=95)
    return paths


@pytest.mark.slow
def test_imagenet_predict_cli(photos):
    p = subprocess.run([sys.executable, "-m", "edgecnn.cli", "predict", "imagenet", *map(str, photos.values()),
                        "--top", "3"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    blocks = p.stdout.split(".jpg:")
    top1 = [b.strip().splitlines()[0].split(None, 1)[1] for b in blocks[1:]]
    assert top1[0] in {"tabby", "tiger cat", "Egyptian cat"}, p.stdout
    assert top1[1] in {"espresso", "cup", "coffee mug"}, p.stdout
    assert top1[2] in {"moped", "motor scooter", "crash helmet", "disc brake"}, p.stdout


def test_load_image_errors(tmp_path):
    with pytest.raises(EdgecnnError, match="image not found"):
        load_image(tmp_path / "none.png", 32)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(EdgecnnError, match="cannot read image"):
        load_image(bad, 32)
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(tmp_path / "gray.png")
    assert load_image(tmp_path / "gray.png", 32).shape == (32, 32, 3)


def test_unknown_model(tmp_path):
    with pytest.raises(EdgecnnError, match="model not found"):
        predict_files(str(tmp_path / "nothing.onnx"), [])

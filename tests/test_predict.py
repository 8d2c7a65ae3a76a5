"""`edgecnn predict`: ImageNet MobileNetV2 / EfficientNet-Lite0 on scikit-image photos; a trained run's artifacts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecnn.data.preprocess import load_image
from edgecnn.errors import EdgecnnError
from edgecnn.predict import imagenet_models, predict_files

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


def test_imagenet_predict_with_efficientnet_lite0(photos):
    """`predict imagenet --model efficientnet_lite0`: the offline Lite0 weights (cached like MobileNetV2's)."""
    got = dict(predict_files("imagenet", [str(photos["chelsea"]), str(photos["coffee"])], top=5,
                             imagenet_model="efficientnet_lite0"))
    assert {"tabby", "tiger cat", "Egyptian cat"} & {label for label, _ in got[str(photos["chelsea"])]}
    assert got[str(photos["coffee"])][0][0] in {"espresso", "cup", "coffee mug"}


def test_imagenet_model_errors(photos):
    assert {"mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(imagenet_models())
    with pytest.raises(EdgecnnError, match=r"--model 'efficientnet_lite3' has no offline ImageNet weights.*"
                                           r"Allowed: .*efficientnet_lite0"):
        predict_files("imagenet", [str(photos["coffee"])], imagenet_model="efficientnet_lite3")
    with pytest.raises(EdgecnnError, match="needs MODEL 'imagenet'"):
        predict_files(str(photos["coffee"]), [str(photos["coffee"])], imagenet_model="efficientnet_lite0")

"""One image preprocessing: `edgecnn predict`, the service and evaluation feed a model the same pixels.

Every path reads real image files written here (RGB, greyscale, RGBA, palette and 16-bit PNG, a
JPEG, an EXIF-rotated JPEG, non-square images that are enlarged along one side and shrunk along
the other) and must produce bit-identical float32 arrays. No model is trained.
"""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecnn.data.preprocess import load_image, resize_rgb, rgb_pixels
from edgecnn.errors import EdgecnnError

SIZE = 32
ROOT = Path(__file__).resolve().parent.parent


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise: a resize that differs anywhere changes the bits."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), (xx + yy) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("images")
    files: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **kwargs) -> None:
        files[name] = out / name
        image.save(files[name], **kwargs)

    save("rgb.png", Image.fromarray(_texture(48, 48, 0)))                       # shrunk
    save("gray.png", Image.fromarray(_texture(40, 40, 1)[..., 0]))              # mode L
    rgba = np.dstack([_texture(32, 32, 2), np.linspace(0, 255, 32 * 32).reshape(32, 32).astype(np.uint8)])
    save("rgba.png", Image.fromarray(rgba))                                     # same size: not resized
    save("photo.jpg", Image.fromarray(_texture(60, 45, 3)), quality=90)
    save("wide.png", Image.fromarray(_texture(20, 50, 4)))      # 50 wide, 20 high: down in x, up in y
    save("tall.jpg", Image.fromarray(_texture(70, 12, 5)), quality=85)          # up in x, down in y
    save("palette.png", Image.fromarray(_texture(36, 36, 6)).convert("P", palette=Image.Palette.ADAPTIVE))
    grey16 = (_texture(40, 30, 7)[..., 0].astype(np.uint16) * 257 + 100)
    save("grey16.png", Image.fromarray(grey16))                                 # mode I;16
    exif = Image.Exif()
    exif[0x0112] = 6                                                            # "rotate 90 CW to view"
    save("rotated.jpg", Image.fromarray(_texture(30, 50, 8)), quality=90, exif=exif)
    return files


def _predict_path(files: list[Path], monkeypatch) -> np.ndarray:
    """The batch `edgecnn predict` (predict_files) hands its model, captured from a stand-in model."""
    from edgecnn import predict

    seen = {}

    class Capture:
        input_size = SIZE
        input_channels = 3

        def top(self, batch, k):
            seen["batch"] = batch
            return [[("x", 1.0)]] * len(batch)

    monkeypatch.setattr(predict.Predictor, "open", classmethod(lambda cls, model, **options: Capture()))
    predict.predict_files("any-model", [str(f) for f in files], top=1)
    return seen["batch"]


def _service_path(files: list[Path]) -> np.ndarray:
    """What the classify endpoint decodes from each uploaded file (app.decode_image)."""
    from edgecnn.serve.app import decode_image

    return np.stack([decode_image(f.read_bytes(), SIZE, SIZE, max_pixels=10**7)[0] for f in files])


def _evaluation_path(files: list[Path]) -> np.ndarray:
    """What evaluation (load_arrays, through tf.data) feeds the model."""
    from edgecnn.data.folders import Dataset
    from edgecnn.data.loader import load_arrays

    ds = Dataset(root=files[0].parent, layout="list", classes=["a"], splits={"test": [(str(f), 0) for f in files]})
    return load_arrays(ds, "test", SIZE)[0]


def test_predict_service_and_evaluation_agree_bit_for_bit(images, monkeypatch):
    # The service accepts only PNG and JPEG uploads; every file here is one of them.
    files = list(images.values())
    predict_batch = _predict_path(files, monkeypatch)
    service_batch = _service_path(files)
    eval_batch = _evaluation_path(files)
    reference = np.stack([load_image(f, SIZE) for f in files])
    assert reference.dtype == np.float32 and reference.shape == (len(files), SIZE, SIZE, 3)
    for name, batch in [("predict", predict_batch), ("service", service_batch), ("evaluation", eval_batch)]:
        assert batch.dtype == np.float32, name
        for i, f in enumerate(files):
            assert np.array_equal(batch[i], reference[i]), f"{name} differs from load_image on {f.name}"


def test_calibration_and_the_http_client_use_the_same_pixels(images):
    from edgecnn.data.folders import Dataset
    from edgecnn.data.loader import calibration_arrays
    from edgecnn.serve.client import load_images

    files = [images["photo.jpg"], images["wide.png"], images["gray.png"]]
    ds = Dataset(root=files[0].parent, layout="list", classes=["a"], splits={"train": [(str(f), 0) for f in files]})
    reference = np.stack([load_image(f, SIZE) for f in files])
    # n = all of them: calibration_arrays returns them in file order.
    assert np.array_equal(calibration_arrays(ds, SIZE, n=len(files)), reference)
    assert np.array_equal(load_images([str(f) for f in files], SIZE, SIZE), reference)


def test_the_array_level_functions_give_the_same_bits(images):
    """resize_rgb(rgb_pixels(image)) is load_image(image): one computation at two entry points."""
    for f in images.values():
        for size in (SIZE, (24, 40), 64):
            with Image.open(f) as im:
                assert np.array_equal(resize_rgb(rgb_pixels(im), size), load_image(f, size)), (f.name, size)


def test_sources_sizes_and_non_square_targets(images):
    path = images["wide.png"]
    by_path = load_image(path, (24, 40))
    assert by_path.shape == (24, 40, 3)
    assert np.array_equal(load_image(str(path), (24, 40)), by_path)
    assert np.array_equal(load_image(path.read_bytes(), (24, 40)), by_path)
    with Image.open(path) as im:
        assert np.array_equal(load_image(im, (24, 40)), by_path)
    from edgecnn.serve.app import decode_image

    assert np.array_equal(decode_image(path.read_bytes(), 24, 40, 10**7)[0], by_path)
    assert np.array_equal(load_image(path, 32), load_image(path, (32, 32)))
    for bad in (0, -3, (32,), (32, 0), 2.5, True, "32"):
        with pytest.raises(EdgecnnError, match="size must be"):
            load_image(path, bad)


def test_modes_become_rgb_the_same_way(images):
    with Image.open(images["gray.png"]) as im:
        grey = np.asarray(im)
    assert np.array_equal(rgb_pixels(Image.open(images["gray.png"])), np.repeat(grey[..., None], 3, axis=2))
    with Image.open(images["rgba.png"]) as im:
        rgba = np.asarray(im)
    assert np.array_equal(load_image(images["rgba.png"], SIZE), rgba[..., :3].astype(np.float32))  # alpha dropped
    with Image.open(images["grey16.png"]) as im:
        assert im.mode.startswith("I;16")
        top_bits = (np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8)
    assert np.array_equal(rgb_pixels(Image.open(images["grey16.png"])), np.repeat(top_bits[..., None], 3, axis=2))
    with Image.open(images["palette.png"]) as im:
        assert np.array_equal(rgb_pixels(im), np.asarray(im.convert("RGB")))


def test_exif_orientation_is_applied(images):
    with Image.open(images["rotated.jpg"]) as im:
        stored = np.asarray(im.convert("RGB"))
        assert stored.shape[:2] == (30, 50)
        upright = rgb_pixels(im)
    assert upright.shape[:2] == (50, 30)
    assert np.array_equal(upright, np.rot90(stored, k=-1))     # orientation 6: rotate 90 degrees clockwise


def test_resize_matches_tf_antialiased_bilinear():
    """The resize training used before this module (tf.image.resize(antialias=True)), to 1/200 grey level."""
    from edgecnn._tf import tf

    rng = np.random.default_rng(9)
    for shape, size in [((300, 400, 3), 32), ((17, 23, 3), 32), ((128, 128, 3), 96), ((128, 128, 3), 224),
                        ((50, 70, 3), (60, 90)), ((32, 32, 3), 32)]:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        hw = (size, size) if isinstance(size, int) else size
        ours = resize_rgb(pixels, size)
        assert ours.dtype == np.float32 and ours.shape == (*hw, 3)
        assert 0 <= ours.min() and ours.max() <= 255
        np.testing.assert_allclose(ours, tf.image.resize(pixels, hw, antialias=True).numpy(), atol=5e-3)


def test_resize_rgb_is_deterministic_and_checks_its_input():
    pixels = np.random.default_rng(1).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    first = resize_rgb(pixels, 32)
    assert all(np.array_equal(resize_rgb(pixels, 32), first) for _ in range(3))
    assert np.array_equal(resize_rgb(pixels.astype(np.float32), 32), first)
    with pytest.raises(EdgecnnError, match=r"Received shape \(45, 61\)"):
        resize_rgb(pixels[..., 0], 32)


def test_unreadable_files_name_the_path(tmp_path):
    missing = tmp_path / "none.png"
    with pytest.raises(EdgecnnError, match=f"image not found: '{missing}'"):
        load_image(missing, SIZE)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(EdgecnnError, match=f"cannot read image '{bad}'.*PNG, JPEG or BMP"):
        load_image(bad, SIZE)
    with pytest.raises(EdgecnnError, match="cannot read image of 12 bytes"):
        load_image(b"not an image", SIZE)
    buf = io.BytesIO()
    Image.fromarray(_texture(64, 64, 0)).save(buf, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(EdgecnnError, match=f"could not decode the image '{truncated}'.*truncated or corrupt"):
        load_image(truncated, SIZE)
    with pytest.raises(EdgecnnError, match="could not decode the PNG image"), Image.open(truncated) as im:
        load_image(im, SIZE)


def test_preprocessing_imports_without_tensorflow():
    """The service and `edgecnn check` run on a runtime-only install: no TensorFlow on this path."""
    code = ("import sys; import edgecnn.data, edgecnn.data.preprocess, edgecnn.serve.app, edgecnn.predict; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')); "
            "assert not bad, bad")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert p.returncode == 0, p.stderr

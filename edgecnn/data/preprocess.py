"""The one image preprocessing of edgecnn: file -> RGB (or grey) float32 pixels 0-255 at the model's size.

Training, evaluation, int8 calibration (``edgecnn.data.loader``), ``edgecnn predict``, the
service's image endpoint and its validation client all call :func:`load_image`, so a model sees
bit-identical pixels for the same file wherever it runs. Normalisation is not done here: it lives
inside every exported graph (the manifest records it); a runtime only resizes.

The steps, in order:

1. decode with Pillow (no JPEG draft scaling: full resolution, every time);
2. apply the EXIF orientation tag, so a phone photo taken sideways is seen upright;
3. convert to 8-bit RGB: greyscale is repeated over three channels, alpha is dropped (not
   composited, as TensorFlow's ``decode_image(channels=3)`` did), palettes are expanded, 16-bit
   greyscale keeps its top 8 bits;
4. for a one-channel model (``data.channels: 1``, MCU cameras are often grey), convert to 8-bit
   grey with Pillow's ITU-R 601-2 luma (``L = 0.299 R + 0.587 G + 0.114 B``; a grey file comes back
   unchanged, its R = G = B);
5. resize with :func:`resize_rgb`.

The resize is Pillow's bilinear filter on float32 channels, unrounded. Pillow widens the filter by
the reduction factor when shrinking (the antialiasing of ``tf.image.resize(antialias=True)``, the
resize training used before this module existed) and is plain bilinear with half-pixel centres
when enlarging; the two agree to about 1e-3 of a grey level. It needs only numpy and Pillow
(the service and ``edgecnn check`` run without TensorFlow), it is deterministic (plain C loops,
no threads, no BLAS) and it runs per channel, which bounds memory on large uploads.

Example:
    >>> pixels = load_image("images/scratch/0001.png", 96)          # doctest: +SKIP
    >>> pixels.shape, pixels.dtype                                  # doctest: +SKIP
    ((96, 96, 3), dtype('float32'))
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgecnn.errors import EdgecnnError

__all__ = ["CHANNELS", "ImageSource", "Size", "load_image", "resize_rgb", "rgb_pixels"]

ImageSource = str | os.PathLike | bytes | Image.Image
"""A path, the encoded bytes of a file, or an opened Pillow image."""
Size = int | tuple[int, int]
"""A square side, or ``(height, width)``."""

CHANNELS = (1, 3)
"""The input channel counts a model may take: 1 (grey) or 3 (RGB, the default)."""
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(source: ImageSource, size: Size, channels: int = 3) -> np.ndarray:
    """Decode an image and return float32 pixels 0-255 of shape (height, width, channels): RGB, or grey.

    Args:
        source: a file path, the encoded bytes of a PNG/JPEG/BMP file, or an opened Pillow image
            (the caller keeps ownership of it; its pixels are decoded here).
        size: the model's input size: one int for a square input, or ``(height, width)``.
        channels: the model's input channels: 3 (RGB) or 1 (grey, ITU-R 601-2 luma).

    Returns:
        float32 array (height, width, channels), unrounded, every value in [0, 255].

    Raises:
        EdgecnnError: the file is missing, is not an image, or is truncated/corrupt (the message
            names the path); ``size`` is not a positive int or (height, width) pair; ``channels``
            is not 1 or 3.

    Example:
        >>> load_image("cat.jpg", (224, 224)).shape                     # doctest: +SKIP
        (224, 224, 3)
        >>> load_image("cat.jpg", 96, channels=1).shape                 # doctest: +SKIP
        (96, 96, 1)
    """
    height, width = _height_width(size)
    if channels not in CHANNELS:
        raise EdgecnnError(f"channels must be 1 (grey) or 3 (RGB). Received channels={channels!r}.")
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        name = " ".join(filter(None, [source.format, "image", repr(str(filename)) if filename else ""]))
        return _resize_bands(_bands(_decode_rgb(source, name), channels), height, width, channels)
    encoded = isinstance(source, (bytes, bytearray))
    name = f"image of {len(source)} bytes" if encoded else f"image {str(source)!r}"
    try:
        opened = Image.open(io.BytesIO(source) if encoded else source)
    except FileNotFoundError:
        raise EdgecnnError(f"image not found: {str(source)!r}. Check the path.") from None
    except (UnidentifiedImageError, OSError) as e:
        raise EdgecnnError(f"cannot read {name}: {e}. Use a PNG, JPEG or BMP file.") from None
    with opened as im:
        return _resize_bands(_bands(_decode_rgb(im, name), channels), height, width, channels)


def rgb_pixels(image: Image.Image) -> np.ndarray:
    """An opened Pillow image as uint8 (H, W, 3) RGB, upright (EXIF orientation applied).

    Greyscale and bilevel images are repeated over three channels; alpha (RGBA, LA, PA, a
    palette's transparency) is dropped; 16-bit (and 32-bit integer) greyscale keeps its top 8
    bits of 16; CMYK, YCbCr and the other modes go through Pillow's ``convert("RGB")``.

    Args:
        image: an opened image; it is decoded here if it was not yet.

    Returns:
        uint8 array (H, W, 3), H and W after orientation.

    Raises:
        OSError, ValueError, SyntaxError: Pillow could not decode the image (truncated, corrupt).
    """
    return np.asarray(_to_rgb(image), dtype=np.uint8)


def resize_rgb(pixels: np.ndarray, size: Size) -> np.ndarray:
    """Resize (H, W, 3) pixels to the model's size: antialiased bilinear, float32, unrounded.

    The same filter as ``tf.image.resize(..., antialias=True)`` (to ~1e-3), computed by Pillow on
    one float32 channel at a time; same-size input is returned as float32 unchanged.
    ``load_image`` runs the same computation on the decoded image's channels, so
    ``resize_rgb(rgb_pixels(im), size)`` equals ``load_image(im, size)`` bit for bit.

    Args:
        pixels: (H, W, 3) array of pixels 0-255 (uint8 or float).
        size: one int for a square output, or ``(height, width)``.

    Returns:
        float32 array (height, width, 3), every value in [0, 255].

    Raises:
        EdgecnnError: ``pixels`` is not (H, W, 3), or ``size`` is not a positive size.
    """
    height, width = _height_width(size)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise EdgecnnError(f"resize_rgb takes (height, width, 3) RGB pixels. Received shape {pixels.shape}; "
                           "convert the image with rgb_pixels() first.")
    bands = (Image.fromarray(np.ascontiguousarray(pixels[..., c], dtype=np.float32)) for c in range(3))
    return _resize_bands(bands, height, width)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Decoded, upright, mode "RGB" (the same Image when it already is)."""
    image.load()                  # decode now: errors surface here, not halfway through a resize
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        # Industrial cameras write 16-bit grey; Pillow's own conversion would clip at 255 instead.
        grey = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _decode_rgb(image: Image.Image, name: str) -> Image.Image:
    try:
        return _to_rgb(image)
    except (OSError, ValueError, SyntaxError) as e:   # Pillow's decoders raise all three
        raise EdgecnnError(f"could not decode the {name}: {e}; the file is truncated or corrupt.") from None


def _bands(image: Image.Image, channels: int) -> Iterator[Image.Image]:
    """An RGB image's channels (or its grey luma, for ``channels=1``) as float32 ("F") images, made one at
    a time to bound memory."""
    if channels == 1:
        yield image.convert("L").convert("F")
        return
    for c in range(3):
        yield image.getchannel(c).convert("F")


def _resize_bands(bands: Iterable[Image.Image], height: int, width: int, channels: int = 3) -> np.ndarray:
    """The one resize: ``channels`` "F" images -> float32 (height, width, channels), clipped to 0-255."""
    out = np.empty((height, width, channels), np.float32)
    for c, band in enumerate(bands):
        if band.size != (width, height):
            band = band.resize((width, height), Image.Resampling.BILINEAR)
        out[..., c] = np.asarray(band)
    # The filter's weights are normalised in float, so a sum may land a hair outside 0-255.
    return np.clip(out, 0.0, 255.0, out=out)


def _height_width(size: Size) -> tuple[int, int]:
    pair = ((size, size) if isinstance(size, (int, np.integer))
            else tuple(size) if isinstance(size, (tuple, list)) else ())
    if len(pair) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in pair):
        raise EdgecnnError(f"size must be a positive int or a (height, width) pair of them. Received size={size!r}.")
    return int(pair[0]), int(pair[1])

"""Augmentation that moves boxes with the pixels: random scale + translate (+ flips where allowed), and mosaic.

Pure numpy + Pillow (no TensorFlow). One affine map moves both the pixels and the boxes, in continuous
pixel-edge coordinates (pixel ``i`` covers ``[i, i + 1)``, as :mod:`edgecnn.detect.data` writes boxes),
so a box keeps framing its object exactly (to the bilinear filter's half pixel):

    x' = s * (x - W / 2) + W / 2 + tx        y' = s * (y - H / 2) + H / 2 + ty

then ``x' -> W - x'`` for a horizontal flip and ``y' -> H - y'`` for a vertical one. Pixels that come
from outside the source image are ``fill`` (Ultralytics' grey 114). Every moved box is clipped to the
image; a box whose visible part is under ``min_visible`` of its moved area is dropped and **counted**
(the fourth value returned), never dropped silently.

Example:
    >>> rng = np.random.default_rng(0)
    >>> image = np.zeros((64, 64, 3), np.float32)
    >>> out, boxes, classes, dropped = augment(image, np.array([[8, 8, 24, 24]]), np.array([0]), rng)
    >>> out.shape, boxes.shape, dropped
    ((64, 64, 3), (1, 4), 0)
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from edgecnn.data.preprocess import resize_rgb
from edgecnn.errors import EdgecnnError

__all__ = ["FILL", "affine", "augment", "mosaic"]

FILL = 114.0
"""The grey that fills pixels brought in from outside the image (Ultralytics' letterbox and mosaic grey)."""


def augment(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rng: np.random.Generator, *,
            scale: tuple[float, float] = (0.75, 1.25), translate: float = 0.1, hflip: bool = False,
            vflip: bool = False, min_visible: float = 0.5, fill: float = FILL
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A random scale and translation (and flips, only where asked) of an image and its boxes.

    The scale is uniform in ``scale``; the shift is uniform in ``[-translate, translate]`` of the width
    (x) and of the height (y); each allowed flip happens with probability 0.5. See :func:`affine`.

    Args:
        image: (H, W, C) or (H, W) pixels, uint8 or float.
        boxes: (K, 4) ``[x0, y0, x1, y1]`` in the image's pixels.
        classes: (K,) class of each box.
        rng: the random generator (the caller seeds it: same seed, same result).
        scale: ``(low, high)`` zoom factors, ``0 < low <= high``.
        translate: the largest shift, a fraction of the image side in ``[0, 1)``.
        hflip, vflip: allow a left-right / top-bottom flip (only where the recipe says the objects allow it).
        min_visible: a box whose visible area is under this fraction of its moved area is dropped.
        fill: the value of pixels brought in from outside the image.

    Returns:
        ``(image, boxes, classes, dropped)``: the image (same shape and dtype), the kept boxes (float32)
        and their classes (int64), and how many boxes were dropped.

    Raises:
        EdgecnnError: a bad argument (the message names it, the value and what is allowed).

    Example:
        >>> out, b, c, dropped = augment(img, boxes, classes, np.random.default_rng(0), hflip=True)  # doctest: +SKIP
    """
    if (not isinstance(scale, (tuple, list)) or len(scale) != 2
            or not all(isinstance(v, (int, float)) for v in scale) or not 0 < scale[0] <= scale[1]):
        raise EdgecnnError(f"scale should be a pair (low, high) with 0 < low <= high, e.g. (0.75, 1.25). "
                           f"Received scale={scale!r}.")
    if not isinstance(translate, (int, float)) or not 0 <= translate < 1:
        raise EdgecnnError(f"translate should be a fraction of the image side in [0, 1), e.g. 0.1. "
                           f"Received translate={translate!r}.")
    height, width = np.shape(image)[:2]
    s = float(rng.uniform(scale[0], scale[1]))
    shift = (float(rng.uniform(-translate, translate)) * width, float(rng.uniform(-translate, translate)) * height)
    flip_x = bool(hflip and rng.random() < 0.5)
    flip_y = bool(vflip and rng.random() < 0.5)
    return affine(image, boxes, classes, scale=s, shift=shift, hflip=flip_x, vflip=flip_y,
                  min_visible=min_visible, fill=fill)


def affine(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, *, scale: float = 1.0,
           shift: tuple[float, float] = (0.0, 0.0), hflip: bool = False, vflip: bool = False,
           min_visible: float = 0.5, fill: float = FILL) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Scale about the image centre, shift, then flip: the pixels and the boxes by the same map.

    Args:
        image: (H, W, C) or (H, W) pixels, uint8 or float.
        boxes: (K, 4) ``[x0, y0, x1, y1]`` in the image's pixels.
        classes: (K,) class of each box.
        scale: the zoom factor (> 0).
        shift: ``(tx, ty)`` in pixels, applied after the scale.
        hflip, vflip: flip left-right / top-bottom after the shift.
        min_visible: in [0, 1]; a box whose part inside the image is under this fraction of its moved
            area is dropped (and counted); a box with nothing inside is always dropped.
        fill: the value of pixels brought in from outside the image.

    Returns:
        ``(image, boxes, classes, dropped)`` as :func:`augment` returns them.

    Example:
        >>> img = np.zeros((10, 10), np.uint8)
        >>> affine(img, np.array([[0, 0, 4, 4]]), np.array([1]), hflip=True)[1].tolist()
        [[6.0, 0.0, 10.0, 4.0]]
    """
    pixels, boxes, classes = _check(image, boxes, classes)
    if not isinstance(scale, (int, float)) or not scale > 0:
        raise EdgecnnError(f"scale should be a number > 0. Received scale={scale!r}.")
    if not isinstance(min_visible, (int, float)) or not 0 <= min_visible <= 1:
        raise EdgecnnError(f"min_visible should be a fraction in [0, 1]. Received min_visible={min_visible!r}.")
    height, width = pixels.shape[:2]
    # x' = a x + b with a = +-scale; the pixels need the inverse map x = (x' - b) / a.
    ax, bx = scale, (1 - scale) * width / 2 + shift[0]
    ay, by = scale, (1 - scale) * height / 2 + shift[1]
    if hflip:
        ax, bx = -ax, width - bx
    if vflip:
        ay, by = -ay, height - by
    inverse = (1 / ax, 0.0, -bx / ax, 0.0, 1 / ay, -by / ay)
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c], np.float32)).transform(
        (width, height), Image.Transform.AFFINE, inverse, Image.Resampling.BILINEAR, fillcolor=float(fill)))
        for c in range(pixels.shape[2])], axis=-1)
    moved = np.stack([ax * boxes[:, 0] + bx, ay * boxes[:, 1] + by, ax * boxes[:, 2] + bx, ay * boxes[:, 3] + by], 1)
    moved = np.concatenate([np.minimum(moved[:, :2], moved[:, 2:]), np.maximum(moved[:, :2], moved[:, 2:])], 1)
    clipped = np.clip(moved, 0, [width, height, width, height])
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    visible = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * np.clip(clipped[:, 3] - clipped[:, 1], 0, None)
    keep = (visible > 0) & (visible >= min_visible * area)
    return (_like(out, image), clipped[keep].astype(np.float32), classes[keep], int((~keep).sum()))


def mosaic(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile four images, each resized to a quarter, into one ``size`` x ``size`` image with all their boxes.

    Many objects per training image from a set with one object per image. The quadrants are
    ``size // 2`` and ``size - size // 2`` pixels wide and high; ``rng`` decides which sample goes in
    which quadrant. Each image is resized whole (its aspect ratio follows the quadrant's), so no box is
    cut and none is dropped.

    Args:
        samples: four ``(image, boxes, classes)``: (H, W, C) or (H, W) pixels (the same C, any sizes),
            (K, 4) ``[x0, y0, x1, y1]`` in that image's pixels, (K,) classes.
        size: the side of the output image.
        rng: the random generator.

    Returns:
        ``(image, boxes, classes)``: float32 (size, size, C) (or (size, size)) pixels, (N, 4) float32
        boxes in its pixels, (N,) int64 classes.

    Raises:
        EdgecnnError: not four samples, mixed channel counts, or a size under 2.

    Example:
        >>> tile = (np.zeros((32, 32, 3), np.uint8), np.array([[0, 0, 16, 16]]), np.array([0]))
        >>> mosaic([tile] * 4, 64, np.random.default_rng(0))[1].shape
        (4, 4)
    """
    if not isinstance(samples, (list, tuple)) or len(samples) != 4:
        raise EdgecnnError(f"mosaic takes 4 samples (image, boxes, classes). Received "
                           f"{len(samples) if isinstance(samples, (list, tuple)) else type(samples).__name__}.")
    if not isinstance(size, (int, np.integer)) or size < 2:
        raise EdgecnnError(f"size should be an int >= 2 (pixels). Received size={size!r}.")
    checked = [_check(*sample) for sample in samples]
    channels = {pixels.shape[2] for pixels, _, _ in checked}
    if len(channels) != 1:
        raise EdgecnnError(f"mosaic needs images with the same channel count. Received {sorted(channels)}.")
    half = size // 2
    edges = [(0, half), (half, size)]
    out = np.empty((size, size, channels.pop()), np.float32)
    all_boxes, all_classes = [], []
    for k, i in enumerate(rng.permutation(4)):
        (y0, y1), (x0, x1) = edges[k // 2], edges[k % 2]
        pixels, boxes, classes = checked[i]
        out[y0:y1, x0:x1] = _resize(pixels, y1 - y0, x1 - x0)
        sx, sy = (x1 - x0) / pixels.shape[1], (y1 - y0) / pixels.shape[0]
        all_boxes.append(boxes * [sx, sy, sx, sy] + [x0, y0, x0, y0])
        all_classes.append(classes)
    image = out if np.ndim(samples[0][0]) == 3 else out[..., 0]
    return image, np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_classes)


def _check(image, boxes, classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, C) float32 pixels, (K, 4) float64 boxes, (K,) int64 classes, or one readable error."""
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or 0 in pixels.shape:
        raise EdgecnnError(f"image should be (height, width, channels) or (height, width) pixels. "
                           f"Received shape {np.shape(image)}.")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    classes = np.asarray(classes, np.int64).reshape(-1)
    if len(boxes) != len(classes):
        raise EdgecnnError(f"boxes (K, 4) and classes (K,) should have the same K. Received {np.shape(boxes)} "
                           f"and {np.shape(classes)}.")
    return pixels.astype(np.float32, copy=False), boxes, classes


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The project's resize (:func:`edgecnn.data.preprocess.resize_rgb`) for any channel count."""
    if pixels.shape[2] == 3:
        return resize_rgb(pixels, (height, width))
    return np.stack([resize_rgb(np.repeat(pixels[..., c:c + 1], 3, axis=2), (height, width))[..., 0]
                     for c in range(pixels.shape[2])], axis=-1)


def _like(out: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``out`` (H, W, C) float32 in the input's shape and dtype (uint8 is rounded and clipped)."""
    out = out if np.ndim(image) == 3 else out[..., 0]
    if np.asarray(image).dtype == np.uint8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out.astype(np.asarray(image).dtype if np.issubdtype(np.asarray(image).dtype, np.floating) else np.float32)

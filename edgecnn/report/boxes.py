"""Boxes drawn over an image: the detection report's gallery, ``edgecnn predict --draw`` and the service's
``?draw=png`` answer draw them the same way. Pillow only (no TensorFlow, no numpy work beyond the pixels)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["COLOURS", "draw_boxes"]

COLOURS = {"truth": (0, 200, 0), "float": (255, 200, 0), "int8": (255, 40, 40), "boxes": (255, 40, 40)}


def draw_boxes(image, layers: dict[str, Sequence[Sequence[float]]], *, size: tuple[int, int] | None = None,
               scale: int = 1, labels: dict[str, Sequence[str]] | None = None):
    """``image`` (a path, a PIL image or an HxWxC array 0-255) with each layer's boxes ``[x0, y0, x1, y1]`` outlined
    in the layer's colour (:data:`COLOURS`; unknown layers red), optionally resized to ``size`` (width, height)
    first and enlarged ``scale`` times (boxes scaled with it); ``labels`` puts a caption on each box.
    Returns a PIL RGB image."""
    from PIL import Image, ImageDraw

    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        with Image.open(image) as im:
            img = im.convert("RGB")
    elif isinstance(image, np.ndarray):
        img = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8).squeeze()).convert("RGB")
    else:
        img = image.convert("RGB")
    if size is not None:
        img = img.resize(size)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for kind, boxes in layers.items():
        colour = COLOURS.get(kind, COLOURS["boxes"])
        for i, box in enumerate(boxes):
            x0, y0, x1, y1 = (float(v) * scale for v in box)
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=2)
            text = (labels or {}).get(kind)
            if text and i < len(text):
                draw.text((x0 + 2, max(0.0, y0 - 11)), str(text[i]), fill=colour)
    return img

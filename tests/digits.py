"""A real grayscale, orientation-sensitive image folder: scikit-learn's bundled handwritten digits.

1,797 8x8 scans of digits written by 43 people (UCI "optdigits"), shipped inside scikit-learn, so
no download. Written as grayscale PNGs (white strokes on a black background, like the issue's
"mostly-black backgrounds, small digits"), upsampled to ``size`` px, one folder per class.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_digits_folder(root: Path, *, classes: tuple[int, ...] = tuple(range(10)), per_class: int = 60,
                       size: int = 32, split: bool = False, seed: int = 0) -> Path:
    """Write ``root/<digit>/*.png`` (or ``root/{train,val,test}/<digit>/*.png`` with ``split``, 60/20/20).

    Images are mode "L" PNGs; each digit keeps at most ``per_class`` of its ~180 scans, chosen with ``seed``.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    root = Path(root)
    for c in classes:
        idx = rng.permutation(np.flatnonzero(digits.target == c))[:per_class]
        for i, j in enumerate(idx):
            pixels = (digits.images[j] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            img = Image.fromarray(pixels, mode="L").resize((size, size), Image.BILINEAR)
            part = ""
            if split:
                frac = i / len(idx)
                part = "train" if frac < 0.6 else "val" if frac < 0.8 else "test"
            out = root / part / str(c) if part else root / str(c)
            out.mkdir(parents=True, exist_ok=True)
            img.save(out / f"{c}_{j:04d}.png")
    return root

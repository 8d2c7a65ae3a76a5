"""Image + mask pairs for ``task: segment``: where the masks are, what their pixels mean, how they load.

Layouts understood (the first that matches):

* the bundled defect set and any split/class folder tree with a ``masks/`` mirror:
  ``ROOT/{train,val,test}/<class>/x.png`` + ``ROOT/masks/<split>/<class>/x.png`` (non-zero on the
  defect); the class is the folder, so the defect pixels of ``crack/x.png`` are class ``crack``.
  Images of a folder named ``good`` are all background; any other image needs its mask.
* MVTec-AD: ``ROOT/train/good``, ``ROOT/test/<defect>/x.png`` + ``ROOT/ground_truth/<defect>/x_mask.png``.
* a plain pair of folders: ``ROOT/images/**/x.png`` + ``ROOT/masks/**/x.png`` (same relative path,
  any image suffix), whose mask pixels are class ids (0 = background), or RGB colours listed in
  the recipe's ``segment.palette``. Split by ``data.val_fraction`` / ``data.test_fraction``.

Pixel classes are ``["background", <defect classes>...]``: for folder layouts the defect classes in
the order of :func:`edgecnn.data.folders.discover` (sorted), without ``good``.

A missing mask, a mask of another size than its image, or a value outside the classes is one
:class:`EdgecnnError` naming the file. Masks are resized to the model's input with nearest-neighbour
(a class id is never blended); images go through :func:`edgecnn.data.preprocess.load_image`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edgecnn.data.folders import IMAGE_SUFFIXES, SPLITS, discover
from edgecnn.data.preprocess import load_image
from edgecnn.errors import EdgecnnError

__all__ = ["BACKGROUND", "Pair", "SegmentData", "discover_pairs", "load_pair", "load_split", "spread"]

BACKGROUND = "background"
GOOD = "good"


@dataclass(frozen=True)
class Pair:
    """One image and its mask: ``mask`` None means all background; ``fill`` is the class id of a binary
    mask's non-zero pixels (None: the mask's values are class ids, or palette colours)."""

    image: str
    mask: str | None
    fill: int | None = None


@dataclass
class SegmentData:
    """Image + mask pairs per split; ``classes[i]`` names pixel value ``i`` (``classes[0]`` is background)."""

    root: Path
    layout: str
    classes: list[str]
    splits: dict[str, list[Pair]]
    palette: dict[str, tuple[int, int, int]] | None = None
    channels: int = 3
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {s: len(p) for s, p in self.splits.items()}

    def fingerprint(self) -> str:
        """Changes when an image or mask is added, removed, renamed or resized."""
        h = hashlib.sha256("|".join(self.classes).encode())
        for s in SPLITS:
            for p in self.splits[s]:
                for f in (p.image, p.mask):
                    rel, size = f and os.path.relpath(f, self.root), f and os.path.getsize(f)
                    h.update(f"{s}|{rel}|{size}|{p.fill}\n".encode())
        return h.hexdigest()


def discover_pairs(root: str | os.PathLike, *, classes: list[str] | None = None,
                   palette: dict[str, tuple[int, int, int]] | None = None, val_fraction: float = 0.15,
                   test_fraction: float = 0.15, seed: int = 0, channels: int = 3,
                   skip_bad_images: bool = False) -> SegmentData:
    """Find image + mask pairs under ``root`` (see the module docstring for the layouts).

    Args:
        root: the dataset folder.
        classes: names of the mask values 0..K-1 of a plain ``images/`` + ``masks/`` pair (0 first,
            the background); default ``background, class1, ...`` up to the largest value found.
        palette: ``{class name: [r, g, b]}`` in class-id order, for colour masks of that layout.
        val_fraction, test_fraction, seed: the split, where the layout has none.
        channels: what images decode to (3 RGB, 1 grey).
        skip_bad_images: drop unreadable images instead of failing (folder layouts).

    Raises:
        EdgecnnError: no such folder, no masks anywhere, a missing mask (named), too few pairs.
    """
    root = Path(root)
    if not root.is_dir():
        raise EdgecnnError(f"dataset folder not found: {str(root)!r}. A segmentation recipe needs images with "
                           "masks: ROOT/{train,val,test}/<class>/ + ROOT/masks/..., an MVTec category, or "
                           "ROOT/images/ + ROOT/masks/.")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return _image_mask_folders(root, classes, palette, val_fraction, test_fraction, seed, channels)
    if (root / "ground_truth").is_dir():
        layout, masks_of = "mvtec", _mvtec_mask
    elif (root / "masks").is_dir():
        layout, masks_of = "masks-folder", _mirror_mask
    else:
        raise EdgecnnError(f"no masks under {str(root)!r}: a segmentation recipe needs ROOT/masks/<split>/<class>/ "
                           "beside the class folders (the bundled set: `edgecnn data make-defects`), an MVTec "
                           "ROOT/ground_truth/, or ROOT/images/ + ROOT/masks/.")
    ds = discover(root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, channels=channels,
                  skip_bad_images=skip_bad_images)
    defects = [c for c in ds.classes if c != GOOD]
    names = [BACKGROUND, *defects]
    splits: dict[str, list[Pair]] = {}
    for split in SPLITS:
        pairs = []
        for path, label in ds.splits[split]:
            cls = ds.classes[label]
            if cls == GOOD:
                pairs.append(Pair(path, None))
                continue
            mask = masks_of(root, Path(path))
            if not mask.is_file():
                raise EdgecnnError(f"missing mask for {path}: expected {mask}. Every image of a defect class needs "
                                   f"a mask (non-zero on the defect); put it there, or move the image to {GOOD}/ "
                                   "if it has no defect.")
            pairs.append(Pair(path, str(mask), names.index(cls)))
        splits[split] = pairs
    return SegmentData(root, layout, names, splits, channels=channels, skipped=ds.skipped)


def _mirror_mask(root: Path, image: Path) -> Path:
    return root / "masks" / image.relative_to(root).with_suffix(".png")


def _mvtec_mask(root: Path, image: Path) -> Path:
    rel = image.relative_to(root)  # test/<defect>/000.png
    return root / "ground_truth" / rel.parent.name / f"{image.stem}_mask.png"


def _image_mask_folders(root: Path, classes, palette, val_fraction, test_fraction, seed, channels) -> SegmentData:
    images = sorted(p for p in (root / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise EdgecnnError(f"no images under {str(root / 'images')!r} ({', '.join(IMAGE_SUFFIXES)}).")
    pairs = []
    for img in images:
        rel = img.relative_to(root / "images")
        found = [m for m in (root / "masks" / rel.with_suffix(s) for s in IMAGE_SUFFIXES) if m.is_file()]
        if not found:
            raise EdgecnnError(f"missing mask for {img}: expected {root / 'masks' / rel.with_suffix('.png')} "
                               "(same relative path and name under masks/, pixel values = class ids).")
        pairs.append(Pair(str(img), str(found[0])))
    if palette:
        names = list(palette)
        if classes and list(classes) != names:
            raise EdgecnnError(f"segment.classes {list(classes)} and segment.palette's names {names} disagree; "
                               "give one of them (the palette's order is the class order).")
    elif classes:
        names = list(classes)
    else:
        top = max(int(np.asarray(Image.open(p.mask)).max()) for p in pairs)
        names = [BACKGROUND, *(f"class{i}" for i in range(1, max(top, 1) + 1))]
    if len(pairs) < 3:
        raise EdgecnnError(f"{len(pairs)} image + mask pair(s) under {str(root)!r}; at least 3 are needed "
                           "(one each for train, val and test).")
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, round(len(pairs) * val_fraction))
    n_test = max(1, round(len(pairs) * test_fraction))
    idx = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    splits = {s: [pairs[i] for i in sorted(idx[s])] for s in SPLITS}
    pal = {k: tuple(int(c) for c in v) for k, v in palette.items()} if palette else None
    return SegmentData(root, "images-masks", names, splits, palette=pal, channels=channels)


def load_mask(pair: Pair, image_size: tuple[int, int], size: int, classes: list[str],
              palette: dict[str, tuple[int, int, int]] | None = None) -> np.ndarray:
    """The class-id mask of ``pair`` at ``size`` x ``size`` (uint8), checked against its image's size.

    Raises:
        EdgecnnError: unreadable mask, another size than the image (width x height, both named), or a
            value (colour) that names no class.
    """
    if pair.mask is None:
        return np.zeros((size, size), np.uint8)
    try:
        with Image.open(pair.mask) as im:
            im.load()
            mode, msize = im.mode, im.size
            arr = np.asarray(im.convert("RGB") if palette else (im if mode in ("L", "P", "I", "I;16") else
                                                                    im.convert("L")))
    except (OSError, ValueError) as e:
        raise EdgecnnError(f"cannot read mask {pair.mask}: {e}. Use a PNG (8-bit grey or palette).") from None
    if msize != image_size:
        raise EdgecnnError(f"mask {pair.mask} is {msize[0]}x{msize[1]} but its image {pair.image} is "
                           f"{image_size[0]}x{image_size[1]}: a mask must have its image's size (same pixels). "
                           "Re-export the mask at the image's size.")
    if palette:
        ids = np.full(arr.shape[:2], 255, np.uint8)
        for i, colour in enumerate(palette.values()):
            ids[(arr == np.asarray(colour, np.uint8)).all(axis=-1)] = i
        if (ids == 255).any():
            bad = tuple(int(v) for v in arr[ids == 255][0])
            raise EdgecnnError(f"mask {pair.mask} has colour {list(bad)}, which is in no class of segment.palette "
                               f"{ {k: list(v) for k, v in palette.items()} }. Add it to the palette or fix the mask.")
    elif pair.fill is not None:
        ids = np.where(arr > 127, pair.fill, 0).astype(np.uint8)  # binary mask: 255 on the defect
    else:
        ids = arr.astype(np.int64)
        if ids.max() >= len(classes) or ids.min() < 0:
            raise EdgecnnError(f"mask {pair.mask} has value {int(ids.max())}, but there are {len(classes)} classes "
                               f"{classes} (values 0..{len(classes) - 1}). Set segment.classes to name every value.")
        ids = ids.astype(np.uint8)
    if ids.shape != (size, size):
        ids = np.asarray(Image.fromarray(ids).resize((size, size), Image.Resampling.NEAREST))
    return ids


def load_pair(pair: Pair, size: int, classes: list[str], palette=None,
              channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(float32 pixels 0-255 (size, size, channels), uint8 class ids (size, size)) of one pair."""
    with Image.open(pair.image) as im:
        image_size = im.size
        pixels = load_image(im, size, channels)
    return pixels, load_mask(pair, image_size, size, classes, palette)


def spread(pairs: list[Pair], n: int) -> list[Pair]:
    """``n`` of ``pairs`` at evenly spaced positions (all of them when there are no more than ``n``)."""
    if n >= len(pairs):
        return list(pairs)
    return [pairs[i] for i in np.unique(np.linspace(0, len(pairs) - 1, n).round().astype(int))]


def load_split(data: SegmentData, split: str, size: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A split as (N, size, size, channels) float32 images and (N, size, size) uint8 masks.

    ``limit`` takes that many pairs spread evenly over the split, which is grouped by class: the first
    ``limit`` would miss whole classes, and a class absent from a subset's truth makes its mIoU jump
    when a few pixels of it are (or are not) predicted."""
    pairs = spread(data.splits[split], limit) if limit else data.splits[split]
    if not pairs:
        raise EdgecnnError(f"the {split} split of {str(data.root)!r} has no image + mask pairs.")
    out = [load_pair(p, size, data.classes, data.palette, data.channels) for p in pairs]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def split_arrays(data: SegmentData, split: str, size: int, cache_dir: str | os.PathLike,
                 memory_mb: float) -> tuple[np.ndarray, np.ndarray]:
    """A split for training, kept within ``data.cache_memory_mb``: in memory when its float32 images fit,
    else decoded once into ``cache_dir/segment-<split>-<size>.npy`` and memory-mapped (read a batch at a
    time by :func:`edgecnn.segment.train.make_batches`). The masks (uint8) are always in memory."""
    pairs = data.splits[split]
    if not pairs:
        raise EdgecnnError(f"the {split} split of {str(data.root)!r} has no image + mask pairs.")
    if len(pairs) * size * size * data.channels * 4 <= memory_mb * 2 ** 20:
        return load_split(data, split, size)
    from numpy.lib.format import open_memmap

    from edgecnn._io import atomic_path

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"segment-{split}-{size}.npy"
    key = cache / f"segment-{split}-{size}.fingerprint"
    masks = np.empty((len(pairs), size, size), np.uint8)
    if path.is_file() and key.is_file() and key.read_text() == data.fingerprint():
        for i, p in enumerate(pairs):   # masks are cheap to read again; images are the cost
            with Image.open(p.image) as im:
                masks[i] = load_mask(p, im.size, size, data.classes, data.palette)
        return np.load(path, mmap_mode="r"), masks
    with atomic_path(path, suffix=".npy") as tmp:
        images = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(pairs), size, size, data.channels))
        for i, p in enumerate(pairs):
            images[i], masks[i] = load_pair(p, size, data.classes, data.palette, data.channels)
        images.flush()
        del images
    key.write_text(data.fingerprint())
    return np.load(path, mmap_mode="r"), masks

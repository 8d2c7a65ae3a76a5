"""The images an anomaly model sees: good ones to fit, good and defective ones to set the threshold and to test.

Three layouts (``normal`` is the recipe's ``anomaly.normal``, default ``good``):

* **MVTec-AD** (``ROOT/train/<normal>``, ``ROOT/test/<normal|defect>``, no ``val/``; masks in
  ``ROOT/ground_truth/<defect>/<name>_mask.png``): ``train/`` must hold good images only. A share of them
  (``val_fraction``) is held out as a good-only validation set.
* **split folders** (``ROOT/{train,val,test}/<class>``, e.g. the bundled defect set; masks in
  ``ROOT/masks/<split>/<class>/<name>.png`` or ``ROOT/ground_truth/<class>/<name>_mask.png``): the model is
  fitted on ``train/<normal>`` only; defect images under ``train/`` are left out (listed as unused), those
  under ``val/`` may set the threshold (best F1).
* **class folders** (``ROOT/<class>``): the normal class is split train/val/test; defect images val/test.

Bad input is one readable :class:`EdgecnnError`: defect folders in an MVTec ``train/``, no good images,
a test split without good or defective images, a mask whose size differs from its image's.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edgecnn.data.decoded_split import decode_images
from edgecnn.data.folders import _class_images, _stratified_split, _subdirs
from edgecnn.errors import EdgecnnError

__all__ = ["AnomalySet", "Item", "discover_anomaly", "load_masks", "load_images"]


@dataclass(frozen=True)
class Item:
    """One validation or test image: its path, its class folder (the normal one for good images), its mask."""

    path: str
    kind: str
    defect: bool
    mask: str | None = None


@dataclass
class AnomalySet:
    root: Path
    layout: str
    normal: str
    train: list[str]
    val: list[Item]
    test: list[Item]
    unused: list[str] = field(default_factory=list)

    @property
    def defect_kinds(self) -> list[str]:
        return sorted({i.kind for i in self.test if i.defect})

    def counts(self) -> dict:
        def per_kind(items: list[Item]) -> dict[str, int]:
            out: dict[str, int] = {}
            for i in items:
                out[i.kind] = out.get(i.kind, 0) + 1
            return out

        return {"train": {self.normal: len(self.train)}, "val": per_kind(self.val), "test": per_kind(self.test)}

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in [*self.train, *(i.path for i in self.val + self.test), *(i.mask or "" for i in self.test)]:
            st = os.stat(p) if p else None
            h.update(f"{p}|{st.st_size if st else 0}|{st.st_mtime_ns if st else 0}\n".encode())
        return h.hexdigest()[:16]

    def to_json(self) -> dict:
        return {"root": str(self.root), "layout": self.layout, "normal": self.normal, "counts": self.counts(),
                "classes": [self.normal, *self.defect_kinds], "defect_kinds": self.defect_kinds,
                "unused_train_defects": len(self.unused)}


def _mask_of(root: Path, split: str, kind: str, image: str) -> str | None:
    name = Path(image)
    for cand in (root / "masks" / split / kind / name.name, root / "ground_truth" / kind / f"{name.stem}_mask.png",
                 root / "ground_truth" / kind / name.name):
        if cand.is_file():
            return str(cand)
    return None


def _items(root: Path, split: str, per_class: dict[str, list[str]], normal: str) -> list[Item]:
    return [Item(p, kind, kind != normal, None if kind == normal else _mask_of(root, split, kind, p))
            for kind in sorted(per_class) for p in per_class[kind]]


def discover_anomaly(root: str | os.PathLike, *, normal: str = "good", val_fraction: float = 0.15,
                     test_fraction: float = 0.2, seed: int = 0) -> AnomalySet:
    """Find the good training images and the labelled val/test images under ``root``.

    Args:
        root: an MVTec-AD category, a split-folder tree or a class-folder tree (module docstring).
        normal: the class folder of defect-free images.
        val_fraction: share of good images held out for the threshold where the layout has no ``val/``.
        test_fraction: class-folder layout: share of every class held out for testing.
        seed: seed of those splits.

    Raises:
        EdgecnnError: a missing folder, defects in an MVTec ``train/``, no good images, a test split
            without both good and defective images, a mask of another size than its image.
    """
    root = Path(root)
    if not root.is_dir():
        raise EdgecnnError(f"dataset folder not found: {str(root)!r}. Pass --data with an MVTec-AD category "
                           f"(train/{normal}, test/<defect>), ROOT/{{train,val,test}}/<class> or ROOT/<class>.")
    top = {d.name for d in _subdirs(root)}
    unused: list[str] = []
    if "train" in top and "test" in top and "val" not in top:
        layout = "mvtec"
        train_classes = _class_images(root / "train")
        if not train_classes.get(normal):
            _no_good(root, normal)
        others = sorted(c for c, ps in train_classes.items() if c != normal and ps)
        if others:
            raise EdgecnnError(
                f"{str(root / 'train')!r} holds defect folders {others}: an anomaly model is fitted on good images "
                f"only (MVTec-AD layout: train/{normal}/ only, defects under test/<defect>/). Move those folders "
                f"to test/ (or to val/ to set the threshold with them), or set anomaly.normal if {others[0]!r} is "
                "the defect-free class.")
        good = train_classes.get(normal, [])
        parts = _stratified_split({normal: good}, (val_fraction, 0.0), seed, ("train", "val", "_"))
        train = parts["train"].get(normal, [])
        val = _items(root, "val", parts["val"], normal)
        test = _items(root, "test", _class_images(root / "test"), normal)
    elif "train" in top:
        layout = "split-folders"
        train_classes = _class_images(root / "train")
        train = train_classes.get(normal, [])
        unused = [p for c, ps in train_classes.items() if c != normal for p in ps]
        val = _items(root, "val", _class_images(root / "val"), normal) if "val" in top else []
        test = _items(root, "test", _class_images(root / "test"), normal) if "test" in top else []
        if not test:
            raise EdgecnnError(f"{str(root)!r} has train/ but no test/ images; add ROOT/test/<class>/ folders "
                               f"(good and defective) to measure the model.")
        if not val:
            parts = _stratified_split({normal: train}, (val_fraction, 0.0), seed, ("train", "val", "_"))
            train, val = parts["train"].get(normal, []), _items(root, "val", parts["val"], normal)
    else:
        layout = "class-folders"
        per_class = _class_images(root)
        parts = _stratified_split(per_class, (val_fraction, test_fraction), seed, ("train", "val", "test"))
        train = parts["train"].get(normal, [])
        defects_train = {c: ps for c, ps in parts["train"].items() if c != normal}
        val_defects = _stratified_split(defects_train, (0.5, 0.0), seed, ("test", "val", "_"))
        val = _items(root, "val", {**parts["val"], **{c: parts["val"].get(c, []) + ps
                                                         for c, ps in val_defects["val"].items()}}, normal)
        test = _items(root, "test", {**parts["test"], **{c: parts["test"].get(c, []) + ps
                                                           for c, ps in val_defects["test"].items()}}, normal)
    if not train:
        _no_good(root, normal)
    if not any(i.defect for i in test) or all(i.defect for i in test):
        raise EdgecnnError(f"the test split of {str(root)!r} needs good ({normal!r}) and defective images to measure "
                           f"AUROC; it has {len(test)} image(s), {sum(i.defect for i in test)} defective. Add "
                           "test/<defect>/ and test/" + normal + "/ images.")
    ds = AnomalySet(root, layout, normal, train, val, test, unused)
    _check_masks(ds.val + ds.test)
    return ds


def _no_good(root: Path, normal: str) -> None:
    where = root / "train" if (root / "train").is_dir() else root
    found = sorted(d.name for d in _subdirs(where))
    raise EdgecnnError(f"no good training images under {str(where)!r}: expected images in a folder named {normal!r} "
                       f"(anomaly.normal); found folders {found}. Put the defect-free images there, or set "
                       "anomaly.normal to their folder's name.")


def _check_masks(items: list[Item]) -> None:
    for it in items:
        if it.mask is None:
            continue
        with Image.open(it.path) as im, Image.open(it.mask) as m:
            if im.size != m.size:
                raise EdgecnnError(f"mask {it.mask!r} is {m.size[0]}x{m.size[1]} but its image {it.path!r} is "
                                   f"{im.size[0]}x{im.size[1]}; a ground-truth mask must have its image's size "
                                   "(white = defect). Re-export the mask at the image's size or remove it.")


def load_images(paths: list[str], size: int) -> np.ndarray:
    """(N, size, size, 3) float32 RGB 0-255 through the one preprocessing (`load_image`), decoded in threads."""
    return decode_images(paths, size, 3)


def load_masks(items: list[Item], size: int) -> np.ndarray:
    """(N, size, size) bool: the defect pixels (nearest-neighbour resize), all False for good images;
    a defective image without a mask file is all False too (``has_mask`` tells them apart)."""
    out = np.zeros((len(items), size, size), bool)
    for i, it in enumerate(items):
        if it.mask:
            with Image.open(it.mask) as m:
                out[i] = np.asarray(m.convert("L").resize((size, size), Image.NEAREST)) > 127
    return out

"""Detection data in the formats users already have: images, their boxes and the boxes' classes.

:func:`discover_detection` reads a folder or a file and works out which layout it holds (the first
that matches, in this order):

* ``bundled``: the defect set of :mod:`edgecnn.data.defects` (a ``meta.json`` whose image records
  carry ``path``, ``class``, ``split`` and ``bbox`` ``[x0, y0, x1, y1]``, x1/y1 exclusive). The
  detection classes are the defect kinds (every class but ``good``); ``good`` images are negatives.
* ``ultralytics``: a ``data.yaml`` (``path``, ``train``, ``val``, optional ``test``, ``names`` as a
  list or an ``{id: name}`` dict) over ``images/`` + ``labels/`` YOLO text files, one
  ``class cx cy w h`` line per object, normalised to 0-1.
* ``voc``: Pascal VOC, ``Annotations/*.xml`` + ``JPEGImages/``, optional ``ImageSets/Main/{train,val,test}.txt``.
* ``coco``: a COCO JSON file (``images``, ``annotations`` with ``bbox`` ``[x, y, w, h]`` in pixels,
  ``categories``); a folder holding one, or one per split (``instances_train2017.json``, ...).

Every box becomes ``[x0, y0, x1, y1]`` float32 in the image's own pixels, in continuous pixel-edge
coordinates (pixel ``i`` covers ``[i, i + 1)``; a box covering pixels 3..5 is ``[3, ., 6, .]``).
A layout without a val or test split gets them from its train images by a seeded, stratified shuffle.

The annotation rules are docs/detection.md's ("Data"): a box partly outside its image is clipped
(counted in ``notes``); one wholly outside, of zero or negative size, or a duplicate is skipped (listed
in ``skipped`` with the reason); an unknown class or a malformed line/record/file is one
:class:`EdgecnnError` naming the file and line; a missing or unreadable image is skipped (listed); an
image without a label file is a negative; COCO crowd and VOC difficult objects are left out (counted);
width and height are the upright file's, a declared size of a resized copy scales the boxes.

Example:
    >>> ds = discover_detection("data/defects")                        # doctest: +SKIP
    >>> ds.layout, ds.classes                                           # doctest: +SKIP
    ('bundled', ['scratch', 'crack', 'spot'])
    >>> pixels, boxes, classes = load_item(ds.splits["train"][0], 128)  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgecnn.data.folders import IMAGE_SUFFIXES, SPLITS
from edgecnn.data.preprocess import Size, load_image
from edgecnn.detect.boxes import cxcywh_to_xyxy, xywh_to_xyxy
from edgecnn.errors import EdgecnnError, did_you_mean

__all__ = ["LAYOUTS", "DetItem", "DetectionSet", "discover_detection", "load_item"]

LAYOUTS = ("ultralytics", "coco", "voc", "bundled")
"""The annotation layouts :func:`discover_detection` reads."""
GOOD = "good"                  # the bundled set's defect-free class: negatives, not a detection class
YOLO_TOLERANCE = 0.01          # a normalised YOLO value may overshoot 0-1 by this much (export rounding)
CLIP_NOTE_PX = 0.01            # clipping by less than this is rounding, not worth a note
SIZE_RATIO_TOLERANCE = 0.01    # declared vs file size: same aspect within 1 % = a resized copy
_EXIF_ORIENTATION = 0x0112
_SPLIT_WORDS = {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}


# ---------------------------------------------------------------------------------------------------------
# The result types
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DetItem:
    """One image and its objects.

    Attributes:
        image: the image file's path.
        boxes: (K, 4) float32 ``[x0, y0, x1, y1]`` in the image's own pixels (pixel-edge coordinates),
            every box inside the image with positive width and height; K may be 0 (a negative).
        classes: (K,) int64 indices into the set's ``classes``.
        width, height: the image's size in pixels, upright (as ``load_image`` decodes it).

    The arrays are read-only; two items compare equal only when they are the same object.
    """

    image: str
    boxes: np.ndarray
    classes: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        boxes = np.array(self.boxes, np.float32).reshape(-1, 4)
        classes = np.array(self.classes, np.int64).reshape(-1)
        if len(boxes) != len(classes):
            raise ValueError(f"DetItem needs one class per box. Received {len(boxes)} boxes and "
                             f"{len(classes)} classes for {self.image!r}.")
        boxes.setflags(write=False)
        classes.setflags(write=False)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", classes)


@dataclass
class DetectionSet:
    """A detection dataset: its items per split, its class names, and what was left out and why.

    Attributes:
        root: the dataset's folder (relative paths in ``to_json`` are relative to it).
        layout: one of :data:`LAYOUTS`.
        classes: class names; ``DetItem.classes`` index into it.
        splits: ``{"train": [...], "val": [...], "test": [...]}``.
        skipped: ``(where, reason)`` for each image or box left out (``where`` is a file, ``file:line``
            or ``file#annotation``).
        notes: one line per rule that changed something without skipping it (boxes clipped, crowd or
            difficult objects left out, splits made by shuffling, ...).
    """

    root: Path
    layout: str
    classes: list[str]
    splits: dict[str, list[DetItem]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A sha256 hex digest that changes when an image is added, removed, renamed or changes its byte
        size, when a box or a class changes, or when the class names change. It does not depend on where
        the dataset lies (paths are taken relative to ``root``) nor on file times."""
        h = hashlib.sha256(f"{self.layout}|{'|'.join(self.classes)}\n".encode())
        for split in SPLITS:
            for item in self.splits.get(split, []):
                size = os.path.getsize(item.image) if os.path.exists(item.image) else -1
                h.update(f"{split}|{self._rel(item.image)}|{size}|{item.width}x{item.height}|".encode())
                h.update(item.boxes.tobytes() + item.classes.tobytes())
        return h.hexdigest()

    def counts(self) -> dict:
        """Per split: ``images``, ``negatives`` (images without objects), ``boxes``, and ``per_class``
        ``{name: {"images": n, "boxes": n}}`` (an image counts once per class it shows)."""
        out: dict[str, Any] = {}
        for split in SPLITS:
            items = self.splits.get(split, [])
            per_class = {c: {"images": 0, "boxes": 0} for c in self.classes}
            for item in items:
                for c, n in zip(*np.unique(item.classes, return_counts=True)):
                    per_class[self.classes[c]]["images"] += 1
                    per_class[self.classes[c]]["boxes"] += int(n)
            out[split] = {"images": len(items), "negatives": sum(len(i.classes) == 0 for i in items),
                          "boxes": sum(len(i.classes) for i in items), "per_class": per_class}
        return out

    def to_json(self) -> dict:
        """A JSON-ready summary for the run directory's ``dataset.json``: root, layout, classes, counts,
        fingerprint, skipped (the first 200, and their total), notes, and ``test_files`` (``[path, None]``
        per test image, what the service's validation client reads)."""
        return {
            "root": str(self.root), "layout": self.layout, "classes": list(self.classes),
            "counts": self.counts(), "fingerprint": self.fingerprint(),
            "skipped_total": len(self.skipped),
            "skipped": [[where, why] for where, why in self.skipped[:200]],
            "notes": list(self.notes),
            "test_files": [[item.image, None] for item in self.splits.get("test", [])],
        }

    def _rel(self, path: str) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).as_posix()


# ---------------------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------------------
def discover_detection(path: str | os.PathLike, *, val_fraction: float = 0.15, test_fraction: float = 0.15,
                       seed: int = 0, classes: list[str] | None = None) -> DetectionSet:
    """Read a detection dataset in any of :data:`LAYOUTS` and split it into train/val/test.

    Args:
        path: a dataset folder, or the file itself: a ``data.yaml``, a COCO ``.json`` or the bundled
            set's ``meta.json``.
        val_fraction, test_fraction: the share of the train images moved to val / test, used only
            where the layout has no such split (a seeded shuffle, stratified by each image's first
            class, negatives as their own group).
        seed: the shuffle's seed.
        classes: the class names in index order. Where the layout names its classes (``data.yaml``'s
            ``names``) they must agree; COCO and VOC names are mapped onto this order (an annotation
            of a class not in it is an error); default: the layout's own order (COCO: by category id,
            VOC: sorted names, bundled: the defect kinds).

    Returns:
        The :class:`DetectionSet`.

    Raises:
        EdgecnnError: no dataset at ``path``, a malformed annotation file, an unknown class, no
            readable image, or a split too small to divide.

    Example:
        >>> ds = discover_detection("datasets/coco8/coco8.yaml")   # doctest: +SKIP
        >>> ds.counts()["val"]["images"]                            # doctest: +SKIP
        4
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise EdgecnnError(f"{name} should be a number in [0, 1). Received {name}={value!r}.")
    if val_fraction + test_fraction >= 1:
        raise EdgecnnError(f"val_fraction + test_fraction should be below 1 (train keeps the rest). Received "
                           f"val_fraction={val_fraction}, test_fraction={test_fraction}.")
    if classes is not None and (isinstance(classes, str) or not all(isinstance(c, str) for c in classes)
                                or len(set(classes)) != len(classes) or not classes):
        raise EdgecnnError(f"classes should be a list of distinct class names. Received classes={classes!r}.")
    layout, source = _find_layout(Path(path).expanduser())
    log = _Log()
    root, names, found = _READERS[layout](source, list(classes) if classes else None, log)
    if not any(found.values()):
        raise EdgecnnError(f"no readable image in the {layout} dataset at {str(path)!r} "
                           f"({len(log.skipped)} skipped, e.g. {log.skipped[:1]}). Check the image paths.")
    if not found.get("train"):
        raise EdgecnnError(f"the {layout} dataset at {str(path)!r} has no readable train image "
                           f"({len(log.skipped)} skipped, e.g. {log.skipped[:1]}). Check its train split's paths.")
    splits = _fill_splits(found, val_fraction, test_fraction, seed, log)
    return DetectionSet(root, layout, names, splits, log.skipped, log.notes())


def load_item(item: DetItem, size: Size, channels: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One item's pixels at the model's size and its boxes in those pixels.

    The image goes through :func:`edgecnn.data.preprocess.load_image` (the whole image resized to
    ``size``, no letterbox), so x is scaled by ``size / width`` and y by ``size / height``.

    Args:
        item: the image and its boxes.
        size: the model's input side, or ``(height, width)``.
        channels: 3 (RGB) or 1 (grey).

    Returns:
        ``(pixels, boxes, classes)``: float32 (size, size, channels) 0-255; (K, 4) float32 boxes in the
        resized image's pixels; (K,) int64 classes.

    Example:
        >>> pixels, boxes, classes = load_item(item, 128)    # doctest: +SKIP
    """
    pixels = load_image(item.image, size, channels)
    height, width = pixels.shape[:2]
    scale = np.array([width / item.width, height / item.height] * 2, np.float32)
    return pixels, (item.boxes * scale).astype(np.float32), item.classes.copy()


# ---------------------------------------------------------------------------------------------------------
# Shared machinery: the log of skipped and adjusted things, the box rules, image sizes, the splits
# ---------------------------------------------------------------------------------------------------------
class _Log:
    """What discovery left out (``skipped``) and how often each adjusting rule fired (``counted``)."""

    _NOTES = {
        "clipped": "{n} box(es) reached outside their image and were clipped to it",
        "crowd": "{n} COCO crowd annotation(s) (iscrowd=1) left out; their images stay",
        "difficult": "{n} VOC object(s) marked difficult left out; their images stay",
        "resized": "{n} image(s) are a resized copy of the size their annotation declares; boxes scaled",
        "unlisted": "{n} VOC image(s) are in no ImageSets/Main split file and were left out",
    }

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []
        self.counted: Counter[str] = Counter()
        self.extra: list[str] = []

    def skip(self, where: str, reason: str) -> None:
        self.skipped.append((where, reason))

    def notes(self) -> list[str]:
        return [self._NOTES[k].format(n=n) for k, n in sorted(self.counted.items())] + self.extra


def _make_item(image: Path, raw: list[tuple[list[float], int, str]], size: tuple[int, int], log: _Log) -> DetItem:
    """An item from raw boxes ``(xyxy in pixels, class, where)``, applying the box rules in order:
    zero or negative size -> skipped; clip to the image; nothing left -> skipped; duplicate -> skipped."""
    width, height = size
    boxes, classes, seen = [], [], set()
    for (x0, y0, x1, y1), cls, where in raw:
        box = f"[{x0:g}, {y0:g}, {x1:g}, {y1:g}]"
        if not (x1 > x0 and y1 > y0):
            log.skip(where, f"zero-size or negative box {box} (x1 <= x0 or y1 <= y0)")
            continue
        clipped = (min(max(x0, 0.0), width), min(max(y0, 0.0), height),
                   min(max(x1, 0.0), width), min(max(y1, 0.0), height))
        if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
            log.skip(where, f"box {box} lies wholly outside the {width}x{height} image")
            continue
        if max(abs(a - b) for a, b in zip(clipped, (x0, y0, x1, y1))) > CLIP_NOTE_PX:
            log.counted["clipped"] += 1
        key = (cls, *(round(v, 3) for v in clipped))
        if key in seen:
            log.skip(where, f"duplicate of an earlier box {box} of the same class in this image")
            continue
        seen.add(key)
        boxes.append(clipped)
        classes.append(cls)
    return DetItem(str(image), np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64),
                   width, height)


def _image_size(path: Path, log: _Log, where: str | None = None) -> tuple[int, int] | None:
    """``(width, height)`` of the upright image (EXIF orientation applied), read from its header; a missing
    or unreadable file is skipped (logged) and gives None."""
    if not path.is_file():
        log.skip(where or str(path), f"image file not found: {path}")
        return None
    try:
        with Image.open(path) as im:
            width, height = im.size
            # A PNG's getexif() decodes the whole image unless its eXIf chunk came before the pixels: only
            # those (and every JPEG/TIFF/WebP header) are read here. A quarter turn swaps the sides.
            exif = im.getexif() if im.format != "PNG" or "exif" in im.info else {}
            if exif.get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for a bad file
        log.skip(where or str(path), f"unreadable image {path}: {type(e).__name__}: {e}")
        return None
    if width < 1 or height < 1:
        log.skip(where or str(path), f"empty image {path}")
        return None
    return width, height


def _declared_scale(declared: tuple[float, float] | None, actual: tuple[int, int], where: str,
                    log: _Log) -> tuple[float, float] | None:
    """The (x, y) scale from an annotation's declared size to the file's; None (logged) when they disagree
    in aspect ratio (a rotated or another image)."""
    if not declared or not all(declared) or tuple(declared) == tuple(actual):
        return 1.0, 1.0
    sx, sy = actual[0] / declared[0], actual[1] / declared[1]
    if abs(sx / sy - 1) > SIZE_RATIO_TOLERANCE:
        log.skip(where, f"the annotation declares {declared[0]:g}x{declared[1]:g} pixels but the image file is "
                        f"{actual[0]}x{actual[1]}: another aspect ratio (rotated, or another image)")
        return None
    log.counted["resized"] += 1
    return sx, sy


def _class_index(name: str, names: list[str], where: str, what: str) -> int:
    if name not in names:
        raise EdgecnnError(f"unknown class {name!r} in {where}. Allowed {what}: {names}.{did_you_mean(name, names)} "
                           "Fix the annotation, or pass classes= (data.classes in a recipe) listing every class.")
    return names.index(name)


def _fill_splits(found: dict[str, list[DetItem]], val_fraction: float, test_fraction: float, seed: int,
                 log: _Log) -> dict[str, list[DetItem]]:
    """Every split present; missing val/test are taken from train by a seeded shuffle stratified by each
    image's first class (negatives their own group), ``round(n * fraction)`` images, at least 1 each."""
    missing = [s for s, f in (("val", val_fraction), ("test", test_fraction)) if not found.get(s)]
    splits = {s: list(found.get(s) or []) for s in SPLITS}
    if not missing:
        return splits
    pool = splits["train"]
    fractions = {"val": val_fraction, "test": test_fraction}
    wanted = {s: max(1, round(len(pool) * fractions[s])) if fractions[s] else 0 for s in missing}
    if sum(wanted.values()) >= len(pool):
        raise EdgecnnError(f"the dataset has {len(pool)} train image(s) and no {' or '.join(missing)} split; "
                           f"splitting off {wanted} leaves no train image. Add images, or give the "
                           f"{' and '.join(missing)} split(s) in the annotation files.")
    rng = np.random.default_rng(seed)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, item in enumerate(pool):
        groups[int(item.classes[0]) if len(item.classes) else -1].append(i)
    keys = np.zeros(len(pool))
    for g in sorted(groups):   # rank within its group + jitter, over the group's size: spreads each group
        idx = np.asarray(groups[g])[rng.permutation(len(groups[g]))]
        keys[idx] = (np.arange(len(idx)) + rng.random(len(idx))) / len(idx)
    order, start = list(np.argsort(keys, kind="stable")), 0
    for s in missing:
        take = sorted(order[start:start + wanted[s]])
        splits[s] = [pool[i] for i in take]
        start += wanted[s]
    splits["train"] = [pool[i] for i in sorted(order[start:])]
    log.extra.append(f"{' and '.join(missing)} split(s) taken from train by a seeded shuffle (seed={seed}, "
                     + ", ".join(f"{s}_fraction={fractions[s]}" for s in missing) + ")")
    return splits


# ---------------------------------------------------------------------------------------------------------
# Finding the layout
# ---------------------------------------------------------------------------------------------------------
def _find_layout(path: Path) -> tuple[str, Any]:
    """``(layout, source)``: what :data:`_READERS` takes for ``path`` (a folder or a file)."""
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            return "ultralytics", path
        if path.suffix.lower() == ".json":
            return ("bundled", path) if _is_bundled_meta(path) else ("coco", {None: path})
        raise EdgecnnError(f"{str(path)!r} is not a detection dataset file. Allowed: a data.yaml (Ultralytics), "
                           "a COCO .json, the bundled set's meta.json, or a dataset folder.")
    if not path.is_dir():
        raise EdgecnnError(f"detection dataset not found: {str(path)!r}. Pass a dataset folder, a data.yaml or a "
                           "COCO .json file (generate the bundled set with `edgecnn data make-defects data/defects`).")
    if (path / "meta.json").is_file() and _is_bundled_meta(path / "meta.json"):
        return "bundled", path / "meta.json"
    yamls = sorted(p for p in path.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and _is_data_yaml(p))
    if len(yamls) > 1:
        raise EdgecnnError(f"{str(path)!r} holds several dataset yaml files: {[p.name for p in yamls]}. "
                           "Pass the one to use (--data path/to/data.yaml).")
    if yamls:
        return "ultralytics", yamls[0]
    if (path / "Annotations").is_dir():
        return "voc", path
    cocos = _coco_files(path)
    if cocos:
        return "coco", cocos
    raise EdgecnnError(
        f"no detection dataset found in {str(path)!r}. Allowed layouts: an Ultralytics data.yaml (with images/ "
        "and labels/), a COCO .json (here or in annotations/), Pascal VOC (Annotations/ + JPEGImages/), or the "
        "bundled defect set (meta.json). A class-per-folder tree has no boxes: write one of these, or use "
        "task: classify.")


def _is_bundled_meta(path: Path) -> bool:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    records = meta.get("images") if isinstance(meta, dict) else None
    return (isinstance(records, list) and bool(records) and isinstance(records[0], dict)
            and {"path", "class", "split", "bbox"} <= set(records[0]))


def _is_data_yaml(path: Path) -> bool:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(cfg, dict) and "train" in cfg and ("names" in cfg or "nc" in cfg)


def _coco_files(folder: Path) -> dict[str | None, Path]:
    """The COCO JSON files in ``folder``, ``folder/annotations`` or ``folder/<split>/`` by split (their name
    or folder says train/val/valid/test); one file alone is ``{None: file}``."""
    candidates = [p for d in (folder, folder / "annotations") if d.is_dir() for p in sorted(d.glob("*.json"))]
    candidates += [p for d in sorted(folder.iterdir()) if d.is_dir() and d.name in ("train", "val", "valid", "test")
                   for p in sorted(d.glob("*.json"))]
    found = [p for p in candidates if _looks_like_coco(p)]
    if len(found) == 1:
        return {None: found[0]}
    by_split: dict[str | None, Path] = {}
    for p in found:
        words = f"{p.parent.name} {p.stem}".lower()
        split = next((s for s, w in _SPLIT_WORDS.items() if any(x in words for x in w)), None)
        if split is None or split in by_split:
            listed = [str(f.relative_to(folder)) for f in found]
            raise EdgecnnError(f"{str(folder)!r} holds several COCO files: {listed}, and their names do "
                               "not say one train, val and test. Pass the one to use (--data path/to/instances.json).")
        by_split[split] = p
    return by_split


def _looks_like_coco(path: Path) -> bool:
    """A JSON object whose first 64 KiB name ``images`` and ``annotations`` or ``categories`` (a COCO file
    may be hundreds of MB; it is parsed once, by the reader)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(65536)
    except OSError:
        return False
    return head.lstrip().startswith("{") and '"images"' in head and ('"annotations"' in head or '"categories"' in head)


# ---------------------------------------------------------------------------------------------------------
# Ultralytics: data.yaml + images/ + labels/
# ---------------------------------------------------------------------------------------------------------
def _read_ultralytics(yaml_path: Path, classes: list[str] | None, log: _Log):
    import yaml

    try:
        cfg = yaml.safe_load(yaml_path.read_text())
    except yaml.YAMLError as e:
        raise EdgecnnError(f"cannot parse {yaml_path}: {e}. Fix the YAML syntax.") from None
    if not isinstance(cfg, dict) or "train" not in cfg:
        raise EdgecnnError(f"{yaml_path} is not an Ultralytics data.yaml: it needs the keys path, train, val and "
                           f"names. Received keys {sorted(cfg) if isinstance(cfg, dict) else type(cfg).__name__}.")
    names = _yolo_names(cfg, yaml_path)
    if classes is not None and classes != names:
        raise EdgecnnError(f"classes={classes} disagree with the names of {yaml_path}: {names}. YOLO class ids "
                           "index names, so leave classes out or make them equal.")
    root = Path(str(cfg.get("path") or "."))
    if not root.is_absolute():   # relative to the yaml's folder; the yaml's folder itself if that is missing
        root = yaml_path.parent / root if (yaml_path.parent / root).is_dir() else yaml_path.parent
    found: dict[str, list[DetItem]] = {}
    for split in SPLITS:
        spec = cfg.get(split)
        if spec:
            images = [img for entry in (spec if isinstance(spec, list) else [spec])
                      for img in _yolo_images(root, str(entry), yaml_path, split)]
            found[split] = [item for img in images if (item := _yolo_item(img, names, log)) is not None]
    return root.absolute(), names, found


def _yolo_names(cfg: dict, yaml_path: Path) -> list[str]:
    names = cfg.get("names")
    if names is None and isinstance(cfg.get("nc"), int):
        names = [f"class{i}" for i in range(cfg["nc"])]
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            by_id = {}
        if sorted(by_id) != list(range(len(names))):
            raise EdgecnnError(f"names in {yaml_path} should map the ids 0..{len(names) - 1} to class names. Received "
                               f"ids {list(names)}. Number the classes from 0 without gaps.")
        names = [by_id[i] for i in range(len(by_id))]
    if not isinstance(names, list) or not names:
        raise EdgecnnError(f"names in {yaml_path} should be a list of class names or an {{id: name}} dict. "
                           f"Received names={names!r}.")
    names = [str(n) for n in names]
    if "nc" in cfg and cfg["nc"] != len(names):
        raise EdgecnnError(f"{yaml_path} says nc={cfg['nc']} but names lists {len(names)} classes. Make them agree.")
    if len(set(names)) != len(names):
        raise EdgecnnError(f"names in {yaml_path} repeat a class: {names}. Give each class id its own name.")
    return names


def _yolo_images(root: Path, entry: str, yaml_path: Path, split: str) -> list[Path]:
    """A split's images: a folder (searched recursively), a .txt list (lines relative to the list's folder,
    then to the dataset root), or one image; a path relative to the root, with Ultralytics' fallback that
    a missing ``../x`` is tried as ``x``."""
    path = Path(entry) if Path(entry).is_absolute() else root / entry
    if not path.exists() and entry.startswith("../"):
        path = root / entry[3:]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if path.is_file() and path.suffix.lower() == ".txt":
        listed = [Path(ln.strip()) for ln in path.read_text().splitlines() if ln.strip()]
        return [path.parent / p if (path.parent / p).exists() or not (root / p).exists() else root / p
                for p in listed]
    if path.is_file():
        return [path]
    raise EdgecnnError(f"the {split} images of {yaml_path} are not found: {split}: {entry!r} resolves to {path}. "
                       "Give a folder of images, a .txt list of images or a list of them, relative to path: "
                       f"({root}).")


def _yolo_label_path(image: Path) -> Path:
    """Ultralytics' rule (``img2label_paths``): the last ``images`` path component becomes ``labels``, the
    suffix ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(str(image).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def _yolo_item(image: Path, names: list[str], log: _Log) -> DetItem | None:
    size = _image_size(image, log)
    if size is None:
        return None
    label = _yolo_label_path(image)
    if not label.is_file():
        return _make_item(image, [], size, log)     # no label file: an image with no objects
    width, height = size
    raw = []
    for n, line in enumerate(label.read_text().splitlines(), 1):
        where, values = f"{label}:{n}", line.split()
        if not values:
            continue
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            numbers = []
        if not numbers or not all(math.isfinite(v) for v in numbers) or not (len(numbers) == 5 or (
                len(numbers) > 6 and len(numbers) % 2 == 1)):
            raise EdgecnnError(f"malformed YOLO label at {where}: {line.strip()!r}. Allowed: 'class cx cy w h' "
                               "(five numbers, normalised 0-1) or a polygon 'class x1 y1 x2 y2 x3 y3 ...'.")
        cls = numbers[0]
        if cls != int(cls) or not 0 <= cls < len(names):
            raise EdgecnnError(f"unknown class id {values[0]} at {where}. Allowed: 0..{len(names) - 1} "
                               f"({names}). Fix the label, or add the class to names in the data.yaml.")
        coords = numbers[1:]
        if any(not -YOLO_TOLERANCE <= v <= 1 + YOLO_TOLERANCE for v in coords):
            raise EdgecnnError(f"YOLO coordinates at {where} should be normalised to 0-1. Received {coords}. If they "
                               "are pixels, divide x and w by the image width and y and h by its height.")
        if len(coords) == 4:
            x0, y0, x1, y1 = cxcywh_to_xyxy(np.asarray(coords, np.float64)).tolist()
        else:  # a segment polygon: its bounding box, as Ultralytics' detection task reads it
            xs, ys = coords[0::2], coords[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        raw.append(([x0 * width, y0 * height, x1 * width, y1 * height], int(cls), where))
    return _make_item(image, raw, size, log)


# ---------------------------------------------------------------------------------------------------------
# COCO JSON
# ---------------------------------------------------------------------------------------------------------
def _read_coco(files: dict[str | None, Path], classes: list[str] | None, log: _Log):
    loaded = {split: (path, _load_coco(path)) for split, path in files.items()}
    categories: dict[int, str] = {}
    for path, data in loaded.values():
        for i, cat in enumerate(data["categories"]):
            if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
                raise EdgecnnError(f"categories[{i}] in {path} should be {{'id': int, 'name': str, ...}}. "
                                   f"Received {cat!r}.")
            if categories.setdefault(cat["id"], str(cat["name"])) != str(cat["name"]):
                raise EdgecnnError(f"category id {cat['id']} is {categories[cat['id']]!r} in one COCO file and "
                                   f"{cat['name']!r} in {path}. Use the same categories in every split's file.")
    own = [categories[k] for k in sorted(categories)]
    if len(set(own)) != len(own):
        raise EdgecnnError(f"two COCO categories share a name: {own}. Give each category its own name.")
    names = classes if classes is not None else own
    index = {cid: names.index(name) for cid, name in categories.items() if name in names}
    found: dict[str, list[DetItem]] = {}
    for split, (path, data) in loaded.items():
        found[split or "train"] = _coco_items(path, data, categories, index, names, log)
    root = Path(os.path.commonpath([p.parent.absolute() for p in files.values()]))
    return root.parent if root.name == "annotations" else root, names, found


def _load_coco(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EdgecnnError(f"cannot read the COCO file {path}: {e}. Fix the JSON.") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list) or not data["categories"]:
        raise EdgecnnError(f"{path} is not a COCO detection file: it needs 'images', 'annotations' and "
                           f"'categories' lists. Received keys {sorted(data) if isinstance(data, dict) else '-'}.")
    if not isinstance(data.setdefault("annotations", []), list):
        raise EdgecnnError(f"'annotations' in {path} should be a list. Received {type(data['annotations']).__name__}.")
    return data


def _coco_items(path: Path, data: dict, categories: dict[int, str], index: dict[int, int], names: list[str],
                log: _Log) -> list[DetItem]:
    images: dict[Any, dict] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise EdgecnnError(f"images[{i}] in {path} should be {{'id', 'file_name', 'width', 'height'}}. "
                               f"Received {img!r}.")
        if img["id"] in images:
            raise EdgecnnError(f"image id {img['id']!r} appears twice in {path}'s images. Give each image its own id.")
        images[img["id"]] = img
    raw: dict[Any, list] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}#annotation {ann.get('id', i) if isinstance(ann, dict) else i}"
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            got = ann.get("image_id") if isinstance(ann, dict) else ann
            raise EdgecnnError(f"{where} refers to image_id {got!r}, which is not in images. Fix the "
                               "annotation's image_id or add the image.")
        cid = ann.get("category_id")
        if cid not in categories:
            raise EdgecnnError(f"unknown category_id {cid!r} at {where}. Allowed ids: "
                               f"{ {k: categories[k] for k in sorted(categories)} }. Fix the annotation or add the "
                               "category.")
        if cid not in index:
            _class_index(categories[cid], names, where, "classes")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
            raise EdgecnnError(f"bbox at {where} should be [x, y, width, height] in pixels. Received {bbox!r}.")
        if ann.get("iscrowd", 0):
            log.counted["crowd"] += 1
            continue
        raw[ann["image_id"]].append((xywh_to_xyxy(np.asarray(bbox, np.float64)).tolist(), index[cid], where))
    bases = _coco_image_folders(path)
    items = []
    for img_id, img in images.items():
        where = f"{path}#image {img_id}"
        image = next((b / img["file_name"] for b in bases if (b / img["file_name"]).is_file()),
                     bases[0] / img["file_name"])
        item = _scaled_item(image, raw.get(img_id, []), (img.get("width"), img.get("height")), where, log)
        if item is not None:
            items.append(item)
    return items


def _coco_image_folders(path: Path) -> list[Path]:
    """Where a COCO file's ``file_name`` may lie: beside it, in ``images/`` beside it, and the same one
    level up (``annotations/instances_val2017.json`` + ``val2017/`` as COCO 2017 ships)."""
    folders = [path.parent, path.parent / "images", path.parent.parent, path.parent.parent / "images"]
    stem = path.stem.split("_")[-1]                       # instances_val2017 -> val2017
    folders += [path.parent.parent / stem, path.parent.parent / "images" / stem]
    return list(dict.fromkeys(folders))


def _scaled_item(image: Path, raw: list, declared: tuple[Any, Any], where: str, log: _Log) -> DetItem | None:
    """An item whose boxes are in a declared image size: scaled to the file's size (see :func:`_declared_scale`)."""
    size = _image_size(image, log, where)
    if size is None:
        return None
    dims = tuple(float(v) for v in declared) if all(isinstance(v, (int, float)) for v in declared) else None
    scale = _declared_scale(dims, size, where, log)
    if scale is None:
        return None
    sx, sy = scale
    return _make_item(image, [([b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy], c, w) for b, c, w in raw], size, log)


# ---------------------------------------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------------------------------------
def _read_voc(root: Path, classes: list[str] | None, log: _Log):
    parsed = {p.stem: _parse_voc(p) for p in sorted((root / "Annotations").glob("*.xml"))}
    own = sorted({obj[0] for ann in parsed.values() for obj in ann["objects"]})
    names = classes if classes is not None else own
    if not names:
        raise EdgecnnError(f"no objects in {root / 'Annotations'}: no class to detect. Add annotations, or pass "
                           "classes= (data.classes) to train on negatives.")
    jpeg = root / "JPEGImages"
    unannotated = {p.stem: p for p in sorted(jpeg.glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES} \
        if jpeg.is_dir() else {}
    lists = _voc_image_sets(root)
    ids_of = lists or {"train": sorted(set(parsed) | set(unannotated))}
    if lists:
        listed = {i for ids in lists.values() for i in ids}
        log.counted["unlisted"] += len((set(parsed) | set(unannotated)) - listed)
    found = {}
    for split, ids in ids_of.items():
        items = []
        for image_id in ids:
            if image_id not in parsed:     # an image without its XML: no objects
                image = unannotated.get(image_id, jpeg / f"{image_id}.jpg")
                item = _scaled_item(image, [], (None, None), str(image), log)
            else:
                ann = parsed[image_id]
                image = jpeg / ann["filename"] if ann["filename"] and (jpeg / ann["filename"]).is_file() \
                    else unannotated.get(image_id, jpeg / (ann["filename"] or f"{image_id}.jpg"))
                raw = []
                for name, difficult, box, where in ann["objects"]:
                    if difficult:
                        log.counted["difficult"] += 1
                        continue
                    raw.append((box, _class_index(name, names, where, "classes"), where))
                item = _scaled_item(image, raw, ann["size"], ann["file"], log)
            if item is not None:
                items.append(item)
        found[split] = items
    return root.absolute(), names, found


def _parse_voc(path: Path) -> dict:
    """One VOC XML: filename, declared size and ``(name, difficult, [x0, y0, x1, y1], where)`` per object; the
    1-based inclusive ``xmin..xmax`` pixels become the pixel edges ``[xmin - 1, xmax]``."""
    try:
        tree = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise EdgecnnError(f"cannot parse the VOC annotation {path}: {e}. Fix the XML.") from None

    def number(node: ET.Element | None, tag: str, where: str) -> float:
        text = node.findtext(tag) if node is not None else None
        try:
            value = float(text.strip()) if text is not None else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise EdgecnnError(f"<{tag}> at {where} should be a number of pixels. Received {text!r}. Every "
                               "<object> needs <bndbox> with <xmin>, <ymin>, <xmax>, <ymax>.")
        return value

    objects = []
    for k, obj in enumerate(tree.findall("object"), 1):
        where = f"{path}:object {k}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise EdgecnnError(f"<object> {k} of {path} has no <name>. Give every object its class name.")
        box = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (number(box, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "", "false")
        objects.append((name, difficult, [xmin - 1, ymin - 1, xmax, ymax], where))
    size = tree.find("size")
    declared = (None, None)
    if size is not None and size.findtext("width") and size.findtext("height"):
        declared = (number(size, "width", str(path)), number(size, "height", str(path)))
    return {"file": str(path), "filename": (tree.findtext("filename") or "").strip(), "size": declared,
            "objects": objects}


def _voc_image_sets(root: Path) -> dict[str, list[str]]:
    """``ImageSets/Main/{train,val,test}.txt`` (``trainval.txt`` less ``val.txt`` when ``train.txt`` is
    missing); ``{}`` when there are none. Per-class files (``cat_train.txt``) are not read."""
    folder = root / "ImageSets" / "Main"

    def ids(name: str) -> list[str] | None:
        f = folder / f"{name}.txt"
        return [ln.split()[0] for ln in f.read_text().splitlines() if ln.strip()] if f.is_file() else None

    val, test, train = ids("val"), ids("test"), ids("train")
    if train is None and (trainval := ids("trainval")) is not None:
        train = [i for i in trainval if i not in set(val or [])]
    return {s: v for s, v in (("train", train), ("val", val), ("test", test)) if v is not None}


# ---------------------------------------------------------------------------------------------------------
# The bundled defect set
# ---------------------------------------------------------------------------------------------------------
def _read_bundled(meta_path: Path, classes: list[str] | None, log: _Log):
    meta = json.loads(meta_path.read_text())
    root = meta_path.parent
    kinds = [c for c in meta.get("classes") or sorted({r["class"] for r in meta["images"]}) if c != GOOD]
    names = classes if classes is not None else kinds
    found: dict[str, list[DetItem]] = {s: [] for s in SPLITS}
    for i, rec in enumerate(meta["images"]):
        where = f"{meta_path}#images[{i}]"
        if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
            raise EdgecnnError(f"{where} should be a record with path, class, split and bbox. Received {rec!r}.")
        if rec.get("split") not in SPLITS:
            raise EdgecnnError(f"split {rec.get('split')!r} at {where} should be one of {list(SPLITS)}.")
        cls, bbox = rec.get("class"), rec.get("bbox")
        raw = []
        if cls != GOOD:
            index = _class_index(str(cls), names, where, "classes (the defect kinds; 'good' = no defect)")
            if bbox is None:
                log.skip(where, f"a {cls!r} image without its bbox: its defect cannot be located")
                continue
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise EdgecnnError(f"bbox at {where} should be [x0, y0, x1, y1] in pixels or null. Received {bbox!r}.")
            raw.append(([float(v) for v in bbox], index, where))
        image = root / rec["path"]
        size = _image_size(image, log, where)
        if size is not None:
            found[rec["split"]].append(_make_item(image, raw, size, log))
    return root.absolute(), names, found


_READERS = {"ultralytics": _read_ultralytics, "coco": _read_coco, "voc": _read_voc, "bundled": _read_bundled}

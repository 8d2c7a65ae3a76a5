"""Find the images of a dataset on disk and split them, with errors a user can act on.

Layouts understood:
  * split folders:  ROOT/{train,val,test}/<class>/*.png   (val or test may be missing: carved from train)
  * class folders:  ROOT/<class>/*.png                     (deterministic stratified split)
  * MVTec-AD:       ROOT/train/good/*.png, ROOT/test/<defect|good>/*.png (+ ground_truth/, ignored);
                    every image is pooled per class, then split, because MVTec's train has no defects.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecnn.errors import EdgecnnError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SPLITS = ("train", "val", "test")
_IGNORED_DIRS = {"masks", "ground_truth", "__pycache__"}


@dataclass
class Dataset:
    """Image paths and integer labels per split; ``classes[i]`` names label ``i``."""

    root: Path
    layout: str
    classes: list[str]
    splits: dict[str, list[tuple[str, int]]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    channels: int = 3     # what the loaders decode to: 3 (RGB) or 1 (grey), the recipe's data.channels

    def paths(self, split: str) -> list[str]:
        return [p for p, _ in self.splits[split]]

    def labels(self, split: str) -> np.ndarray:
        return np.array([y for _, y in self.splits[split]], dtype=np.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {c: int((self.labels(s) == i).sum()) for i, c in enumerate(self.classes)} for s in self.splits}

    def fingerprint(self) -> str:
        """Changes when any file is added, removed, renamed, resized or relabelled."""
        import hashlib

        h = hashlib.sha256()
        for s in SPLITS:
            for p, y in self.splits[s]:
                h.update(f"{s}|{os.path.relpath(p, self.root)}|{y}|{os.path.getsize(p)}\n".encode())
        return h.hexdigest()


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
                  and p.name not in _IGNORED_DIRS)


def _images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_images(root: Path) -> dict[str, list[str]]:
    return {d.name: _images(d) for d in _subdirs(root)}


def _stratified_split(per_class: dict[str, list[str]], fractions: tuple[float, float], seed: int,
                      names: tuple[str, str, str]) -> dict[str, dict[str, list[str]]]:
    """Split each class by (second, third) fractions; the rest goes to the first name."""
    out: dict[str, dict[str, list[str]]] = {n: {} for n in names}
    for ci, (cls, paths) in enumerate(sorted(per_class.items())):
        rng = np.random.default_rng([seed, ci])
        order = [paths[i] for i in rng.permutation(len(paths))]
        n_b = max(1, round(len(order) * fractions[0])) if fractions[0] else 0
        n_c = max(1, round(len(order) * fractions[1])) if fractions[1] else 0
        out[names[1]][cls] = sorted(order[:n_b])
        out[names[2]][cls] = sorted(order[n_b:n_b + n_c])
        out[names[0]][cls] = sorted(order[n_b + n_c:])
    return out


def _check_images(paths: list[str]) -> list[tuple[str, str]]:
    """Decode every image once (in threads); return (path, reason) for the unreadable ones."""
    from PIL import Image

    def check(p: str) -> tuple[str, str] | None:
        try:
            with Image.open(p) as im:
                im.load()
                if im.width < 1 or im.height < 1:
                    return p, "empty image"
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            return p, f"{type(e).__name__}: {e}"
        return None

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        return [r for r in pool.map(check, paths) if r is not None]


def discover(root: str | os.PathLike, *, val_fraction: float = 0.15, test_fraction: float = 0.15,
             seed: int = 0, min_images_per_class: int = 10, skip_bad_images: bool = False,
             check_images: bool = True, channels: int = 3) -> Dataset:
    """Scan a dataset folder, split it, and validate it.

    Args:
        root: dataset folder (split folders, class folders, or an MVTec-AD category).
        val_fraction, test_fraction: used only where the layout has no such split.
        seed: seed of the deterministic stratified split.
        min_images_per_class: a class with fewer images (over all splits) is an error.
        skip_bad_images: drop unreadable images with a warning instead of failing.
        check_images: decode every image up front so a corrupt file fails here, by path.
        channels: what the loaders decode every image to: 3 (RGB) or 1 (grey).

    Raises:
        EdgecnnError: missing folder, no images, one class, a too-small class, corrupt images.
    """
    root = Path(root)
    if not root.is_dir():
        hint = (" Generate the bundled set with `edgecnn data make-defects data/defects`."
                if "defects" in str(root) else "")
        raise EdgecnnError(f"dataset folder not found: {str(root)!r}. Pass --data with a folder of "
                           f"class subfolders (ROOT/<class>/*.png) or ROOT/{{train,val,test}}/<class>/.{hint}")
    top = {d.name for d in _subdirs(root)}
    per_split: dict[str, dict[str, list[str]]]
    if "train" in top and {d.name for d in _subdirs(root / "train")} == {"good"} and "test" in top:
        layout = "mvtec"
        pooled: dict[str, list[str]] = {}
        for split in ("train", "test"):
            for cls, paths in _class_images(root / split).items():
                pooled.setdefault(cls, []).extend(paths)
        per_split = _stratified_split(pooled, (val_fraction, test_fraction), seed, SPLITS)
    elif "train" in top:
        layout = "split-folders"
        train = _class_images(root / "train")
        val = _class_images(root / "val") if "val" in top else None
        test = _class_images(root / "test") if "test" in top else None
        if val is None and test is None:
            per_split = _stratified_split(train, (val_fraction, test_fraction), seed, SPLITS)
        elif val is None:
            per_split = {**_stratified_split(train, (val_fraction, 0.0), seed, ("train", "val", "_")), "test": test}
            per_split.pop("_", None)
        elif test is None:
            per_split = {**_stratified_split(train, (test_fraction, 0.0), seed, ("train", "test", "_")), "val": val}
            per_split.pop("_", None)
        else:
            per_split = {"train": train, "val": val, "test": test}
    else:
        layout = "class-folders"
        per_split = _stratified_split(_class_images(root), (val_fraction, test_fraction), seed, SPLITS)

    classes = sorted({c for split in per_split.values() for c, paths in split.items() if paths})
    total = sum(len(p) for split in per_split.values() for p in split.values())
    if total == 0:
        raise EdgecnnError(f"no images found under {str(root)!r} (looked for {', '.join(IMAGE_SUFFIXES)} "
                           "inside class subfolders). Put each class's images in ROOT/<class>/.")
    if len(classes) < 2:
        raise EdgecnnError(f"only one class found under {str(root)!r}: {classes}. A classifier needs at least "
                           "two class folders (e.g. good/ and defect/).")
    unknown = {c for split in ("val", "test") for c in per_split[split] if per_split[split][c]} - set(
        c for c, p in per_split["train"].items() if p)
    if unknown:
        raise EdgecnnError(f"class(es) {sorted(unknown)} appear in val/test but have no training images under "
                           f"{str(root / 'train')!r}. Add training images or remove those folders.")

    skipped: list[tuple[str, str]] = []
    if check_images:
        all_paths = [p for split in per_split.values() for paths in split.values() for p in paths]
        bad = _check_images(all_paths)
        if bad and not skip_bad_images:
            listing = "\n  ".join(f"{p}: {why}" for p, why in bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise EdgecnnError(f"{len(bad)} unreadable image(s) under {str(root)!r}:\n  {listing}{more}\n"
                               "Fix or delete them, or pass --skip-bad-images to continue without them.")
        skipped = bad
        bad_set = {p for p, _ in bad}
        per_split = {s: {c: [p for p in ps if p not in bad_set] for c, ps in d.items()} for s, d in per_split.items()}

    for cls in classes:
        n = sum(len(per_split[s].get(cls, [])) for s in SPLITS)
        if n < min_images_per_class:
            raise EdgecnnError(f"class {cls!r} has {n} image(s) under {str(root)!r}; at least "
                               f"{min_images_per_class} are needed (data.min_images_per_class). Add images "
                               "or remove the class folder.")
    for s in SPLITS:
        if not any(per_split[s].get(c) for c in classes):
            raise EdgecnnError(f"the {s} split of {str(root)!r} is empty; add images or let edgecnn split "
                               "the class folders itself.")

    index = {c: i for i, c in enumerate(classes)}
    splits = {s: [(p, index[c]) for c in classes for p in per_split[s].get(c, [])] for s in SPLITS}
    return Dataset(root=root, layout=layout, classes=classes, splits=splits, skipped=skipped, channels=channels)

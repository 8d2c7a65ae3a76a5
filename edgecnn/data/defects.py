"""The bundled defect-inspection dataset: photographed textures with drawn scratches, cracks and spots.

Four classes, ``good``, ``scratch``, ``crack`` and ``spot``, drawn on random crops of the brick,
grass and gravel photographs that ship with scikit-image (no network needed). Every image has its
own random generator seeded with ``(seed, class_index, image_index)``, so the same arguments give
byte-identical files, and image ``i`` of a class does not depend on ``per_class`` or ``splits``.

Layout written under ``out_dir``::

    {train,val,test}/<class>/<class>_00000.png        RGB, size x size
    masks/{train,val,test}/<class>/<class>_00000.png  L, 255 on the defect (defect classes only)
    meta.json                                         settings, counts, per-image texture/bbox/hard
    contact_sheet.png                                 one row of examples per class

Example:
    >>> from edgecnn.data.defects import make_defects
    >>> summary = make_defects("data/defects", seed=0)   # doctest: +SKIP
    >>> summary["counts"]["test"]["crack"]                # doctest: +SKIP
    90
"""
from __future__ import annotations

import functools
import json
import math
import numbers
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from edgecnn.errors import EdgecnnError

__all__ = ["CLASSES", "TEXTURES", "GENERATOR", "GENERATOR_VERSION", "make_defects"]

CLASSES = ("good", "scratch", "crack", "spot")
SPLITS = ("train", "val", "test")
GENERATOR = "edgecnn.data.defects"
GENERATOR_VERSION = 3  # bump whenever the drawing changes: a folder made by another version is refused

# Texture name -> mild base tint (RGB gains) so each surface gets a plausible colour.
TEXTURES: dict[str, tuple[float, float, float]] = {
    "brick": (1.08, 0.95, 0.86),
    "grass": (0.94, 1.06, 0.88),
    "gravel": (1.04, 1.00, 0.94),
}
HARD_FRACTION = 0.12  # share of defect images drawn faint and/or small
# Hard mode -> (contrast factor range, size factor range): faint or small, never invisible.
HARD_MODES = {"faint": ((0.62, 0.76), (1.0, 1.0)), "small": ((1.0, 1.0), (0.5, 0.7)),
              "both": ((0.74, 0.86), (0.6, 0.8))}
MASK_THRESHOLD = 0.3  # geometric coverage at which a pixel counts as defect in the mask
SHEET_COLUMNS = 8


# ----------------------------------------------------------------------------------------------
# Public API


def make_defects(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    per_class: int = 450,
    size: int = 128,
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2),
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """Generate the defect dataset into ``out_dir`` (atomically), or reuse an identical one there.

    Args:
        out_dir: Folder to create. Generated in a hidden sibling ``.<name>.tmp-<pid>`` and renamed
            into place at the end, so a half-written ``out_dir`` never exists.
        seed: Non-negative seed; the same seed and arguments give byte-identical files.
        per_class: Images per class (10 to 99999); the set holds ``4 * per_class`` images.
        size: Side of the square images in pixels (32 to 512).
        splits: Train/val/test fractions, each >= 0, summing to 1; applied per class (stratified).
        progress: Called as ``progress(done, total)`` after each image.
        overwrite: Replace an existing ``out_dir`` made with other settings (or not by this tool).

    Returns:
        A summary: ``out_dir``, ``generator``, ``version``, ``seed``, ``size``, ``per_class``,
        ``splits``, ``classes``, ``counts`` (``{split: {class: n}}``), ``total`` and ``reused``
        (True when an identical set was already there and nothing was written).

    Raises:
        EdgecnnError: A bad argument, or ``out_dir`` exists with other settings and ``overwrite``
            is False.

    Example:
        >>> s = make_defects("/tmp/defects", seed=0, per_class=12, size=64)  # doctest: +SKIP
        >>> s["total"]                                                        # doctest: +SKIP
        48
    """
    out_dir, counts = _check_args(out_dir, seed, per_class, size, splits, progress, overwrite)
    seed, per_class, size, splits = int(seed), int(per_class), int(size), tuple(float(f) for f in splits)
    settings = {"version": GENERATOR_VERSION, "seed": seed, "size": size, "per_class": per_class,
                "splits": list(splits)}

    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        existing = _existing_settings(out_dir)
        if existing == settings:
            return _reuse(out_dir)
        if not overwrite:
            raise EdgecnnError(_conflict_message(out_dir, existing, settings))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        meta = _generate(tmp, seed=seed, per_class=per_class, size=size, splits=splits,
                         counts=counts, progress=progress)
        _move_into_place(tmp, out_dir, settings)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _summary(out_dir, meta, reused=False)


# ----------------------------------------------------------------------------------------------
# Arguments, reuse and the atomic move


def _check_args(out_dir, seed, per_class, size, splits, progress, overwrite) -> tuple[Path, list[int]]:
    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not isinstance(out_dir, (str, os.PathLike)):
        raise EdgecnnError(f"out_dir should be a folder path. Received out_dir={out_dir!r}.")
    path = Path(out_dir).expanduser().absolute()
    if not path.name:
        raise EdgecnnError(f"out_dir should name a folder to create, not a root. Received out_dir={out_dir!r}.")
    if not is_int(seed) or seed < 0:
        raise EdgecnnError(f"seed should be an integer >= 0. Received seed={seed!r}.")
    if not is_int(per_class) or not 10 <= per_class <= 99999:
        raise EdgecnnError(f"per_class should be an integer from 10 to 99999. Received per_class={per_class!r}.")
    if not is_int(size) or not 32 <= size <= 512:
        raise EdgecnnError(f"size should be an integer from 32 to 512 (pixels). Received size={size!r}.")
    if (
        not isinstance(splits, Sequence) or isinstance(splits, str) or len(splits) != 3
        or not all(isinstance(f, numbers.Real) and not isinstance(f, bool) and math.isfinite(f) for f in splits)
    ):
        raise EdgecnnError(
            f"splits should be three numbers (train, val, test fractions). Received splits={splits!r}."
        )
    if any(f < 0 for f in splits) or abs(sum(splits) - 1.0) > 1e-6:
        raise EdgecnnError(
            "splits should be three fractions >= 0 that sum to 1, e.g. (0.6, 0.2, 0.2). "
            f"Received splits={tuple(splits)!r}."
        )
    if progress is not None and not callable(progress):
        raise EdgecnnError(
            f"progress should be a callable progress(done, total) or None. Received progress={progress!r}."
        )
    if not isinstance(overwrite, bool):
        raise EdgecnnError(f"overwrite should be True or False. Received overwrite={overwrite!r}.")
    counts = _split_counts(per_class, splits)
    for name, frac, n in zip(SPLITS, splits, counts):
        if frac > 0 and n == 0:
            raise EdgecnnError(
                f"splits gives the {name} split {frac} of {per_class} images per class, which rounds to 0. "
                f"Received splits={tuple(splits)!r}, per_class={per_class}; raise per_class or that fraction."
            )
    return path, counts


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding: the counts sum to ``n`` and each is within 1 of ``n * fraction``."""
    raw = [round(f * n, 9) for f in fractions]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda k: (-(raw[k] - counts[k]), k))
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    return counts


def _existing_settings(out_dir: Path) -> dict | None:
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        return None
    return {k: meta.get(k) for k in ("version", "seed", "size", "per_class", "splits")}


def _conflict_message(out_dir: Path, existing: dict | None, wanted: dict) -> str:
    fix = "Pass overwrite=True (--overwrite on the command line) to replace it, or choose another folder."
    if existing is None:
        what = "exists and is not a defect set made by this tool (no readable meta.json)"
        if not out_dir.is_dir():
            what = "exists and is a file, not a folder"
        return f"{out_dir} {what}. {fix}"
    diff = ", ".join(f"{k}={existing[k]!r} (asked {wanted[k]!r})" for k in wanted if existing[k] != wanted[k])
    return f"{out_dir} already holds a defect set made with other settings: {diff}. {fix}"


def _reuse(out_dir: Path) -> dict:
    meta = json.loads((out_dir / "meta.json").read_text())
    missing = [img["path"] for img in meta["images"] if not (out_dir / img["path"]).is_file()]
    if missing:
        raise EdgecnnError(
            f"{out_dir} has a meta.json but {len(missing)} of its images are missing (e.g. {missing[0]}). "
            "Pass overwrite=True (--overwrite on the command line) to regenerate it, or choose another folder."
        )
    return _summary(out_dir, meta, reused=True)


def _move_into_place(tmp: Path, out_dir: Path, settings: dict) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing ``out_dir`` is moved aside first and deleted after."""
    old = None
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)  # also replaces an empty folder
    except OSError:
        if old is not None:
            os.rename(old, out_dir)
            raise
        if _existing_settings(out_dir) == settings:  # another process finished the same set first
            return
        raise
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()


def _summary(out_dir: Path, meta: dict, *, reused: bool) -> dict:
    keys = ("generator", "version", "seed", "size", "per_class", "splits", "classes", "counts", "total")
    return {"out_dir": str(out_dir), **{k: meta[k] for k in keys}, "reused": reused}


# ----------------------------------------------------------------------------------------------
# Generation


def _generate(root: Path, *, seed: int, per_class: int, size: int, splits: Sequence[float],
              counts: list[int], progress: Callable[[int, int], None] | None) -> dict:
    split_of = [name for name, n in zip(SPLITS, counts) for _ in range(n)]
    total, done = len(CLASSES) * per_class, 0
    images: list[dict] = []
    sheet: dict[str, list[tuple[np.ndarray, str]]] = {}
    for ci, cls in enumerate(CLASSES):
        for split, n in zip(SPLITS, counts):
            if n:
                (root / split / cls).mkdir(parents=True)
                if cls != "good":
                    (root / "masks" / split / cls).mkdir(parents=True)
        normal: list[tuple[np.ndarray, str]] = []
        hard_ones: list[tuple[np.ndarray, str]] = []
        for i in range(per_class):
            rgb, mask, info = _make_image(np.random.default_rng([seed, ci, i]), cls, size)
            rel = f"{split_of[i]}/{cls}/{cls}_{i:05d}.png"
            _save_png(rgb, root / rel)
            record = {"path": rel, "class": cls, "split": split_of[i], "texture": info["texture"],
                      "mask": None, "bbox": None, "hard": False}
            if mask is not None:
                record.update(mask=f"masks/{rel}", bbox=info["bbox"], hard=info["hard"])
                _save_png(mask, root / "masks" / rel)
            images.append(record)
            caption = info["texture"] + (" hard" if record["hard"] else "")
            bucket = hard_ones if record["hard"] else normal
            if len(bucket) < SHEET_COLUMNS:
                bucket.append((rgb, caption))
            done += 1
            if progress is not None:
                progress(done, total)
        n_hard = min(len(hard_ones), 2)  # the sheet shows ordinary examples, then up to two hard ones
        sheet[cls] = (normal[: SHEET_COLUMNS - n_hard] + hard_ones[:n_hard] + normal[SHEET_COLUMNS - n_hard:])[
            :SHEET_COLUMNS]

    meta = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "per_class": per_class,
        "splits": list(splits),
        "classes": list(CLASSES),
        "textures": list(TEXTURES),
        "hard_fraction": HARD_FRACTION,
        "counts": {s: {c: n for c in CLASSES} for s, n in zip(SPLITS, counts)},
        "total": total,
        "bbox_format": "[x0, y0, x1, y1] in pixels, x1/y1 exclusive: mask[y0:y1, x0:x1] holds every defect pixel",
        "images": images,
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    _contact_sheet(sheet, size).save(root / "contact_sheet.png", format="PNG")
    return meta


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG")


def _make_image(rng: np.random.Generator, cls: str, size: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """One image: surface, the defect for ``cls`` (if any), sensor noise -> (RGB uint8, mask or None, info)."""
    img, texture = _surface(rng, size)
    info: dict[str, Any] = {"texture": texture}
    mask = None
    if cls != "good":
        hard = bool(rng.random() < HARD_FRACTION)
        mode = str(rng.choice(list(HARD_MODES))) if hard else "normal"
        (f_lo, f_hi), (s_lo, s_hi) = HARD_MODES.get(mode, ((1.0, 1.0), (1.0, 1.0)))
        faint, small = rng.uniform(f_lo, f_hi), rng.uniform(s_lo, s_hi)
        shape, paint = _DEFECTS[cls]
        for _ in range(20):  # redraw a defect that fell (almost) outside the image
            coverage = shape(rng, size, small)
            if (coverage >= MASK_THRESHOLD).sum() >= max(8, size * size // 2000):
                break
        paint(rng, img, coverage, faint)
        mask = np.where(coverage >= MASK_THRESHOLD, 255, 0).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        info.update(hard=hard, bbox=[int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
    img = img + rng.normal(0.0, rng.uniform(0.004, 0.02), img.shape).astype(np.float32)
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8), mask, info


@functools.cache
def _texture(name: str) -> np.ndarray:
    from skimage import data

    return np.asarray(getattr(data, name)(), dtype=np.float32) / 255.0


def _surface(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A random crop of a texture photo, flipped/rotated, jittered and mildly tinted: (H, W, 3) floats."""
    name = list(TEXTURES)[int(rng.integers(len(TEXTURES)))]
    tex = _texture(name)
    side = min(tex.shape) * rng.uniform(0.22, 0.55)
    x0 = rng.uniform(0, tex.shape[1] - side)
    y0 = rng.uniform(0, tex.shape[0] - side)
    g = np.asarray(Image.fromarray(tex).resize((size, size), Image.Resampling.BILINEAR,
                                               box=(x0, y0, x0 + side, y0 + side)))
    g = np.rot90(g, int(rng.integers(4)))
    if rng.random() < 0.5:
        g = g[:, ::-1]
    mean = float(g.mean())
    g = (g - mean) * rng.uniform(0.75, 1.3) + mean + rng.uniform(-0.08, 0.08)
    tint = np.asarray(TEXTURES[name], np.float32) * (1.0 + rng.normal(0.0, 0.04, 3)).astype(np.float32)
    return np.clip(g[:, :, None] * tint, 0.0, 1.0).astype(np.float32), name


# ----------------------------------------------------------------------------------------------
# Defects: a shape function returns the anti-aliased coverage (0..1 per pixel) of a random defect,
# ``small`` < 1 shrinks it; a paint function blends it into ``img`` in place, ``faint`` < 1 fades it.


def _blend(img: np.ndarray, alpha: np.ndarray, target: np.ndarray) -> None:
    img += alpha[:, :, None] * (target - img)


def _scratch_shape(rng: np.random.Generator, size: int, small: float) -> np.ndarray:
    length = size * rng.uniform(0.4, 0.95) * small
    width = max(0.8, rng.uniform(1.2, 3.0) * size / 128 * (0.85 if small < 1 else 1.0))
    cx, cy = rng.uniform(0.15, 0.85, 2) * size
    theta = rng.uniform(0, math.pi)
    bend = rng.uniform(-0.12, 0.12) * length  # gently curved: a quadratic Bezier
    d = np.array([math.cos(theta), math.sin(theta)])
    n = np.array([-d[1], d[0]])
    p0, p2 = np.array([cx, cy]) - d * length / 2, np.array([cx, cy]) + d * length / 2
    p1 = (p0 + p2) / 2 + n * bend
    t = np.linspace(0, 1, max(8, int(length / 4)))[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    return _polyline_coverage(size, [(pts, np.full(len(pts), width))])


def _scratch_paint(rng: np.random.Generator, img: np.ndarray, coverage: np.ndarray, faint: float) -> None:
    # Lighter (bare material catching light) or darker (groove) than the surface it crosses; the
    # direction favours the one with room for contrast, so scratches do not vanish into the texture.
    under = float((img.mean(axis=2) * coverage).sum() / max(float(coverage.sum()), 1e-6))
    light = rng.random() < min(max(1.5 - 2 * under, 0.1), 0.9)
    delta = rng.uniform(0.4, 0.6)
    level = min(under + delta, 1.0) if light else max(under - delta, 0.02)
    target = np.full(3, level, np.float32) * (1 + rng.normal(0, 0.03, 3)).astype(np.float32)
    strength = rng.uniform(0.75, 1.0) * faint
    along = 0.8 + 0.2 * _smooth_noise(rng, img.shape[0], 5)  # uneven pressure along the scratch
    _blend(img, coverage * along * strength, target)


def _crack_shape(rng: np.random.Generator, size: int, small: float) -> np.ndarray:
    paths: list[tuple[np.ndarray, np.ndarray]] = []
    step = max(1.5, 2.2 * size / 128)

    def walk(start, theta0, length, width, depth):
        pts, theta = [np.asarray(start, float)], theta0
        n = max(2, int(length / step))
        for k in range(n):
            theta += 0.3 * (theta0 - theta) + rng.normal(0, 0.55)
            pts.append(pts[-1] + step * rng.uniform(0.6, 1.4) * np.array([math.cos(theta), math.sin(theta)]))
            if depth < 2 and k > 1 and rng.random() < 0.07:
                side = 1 if rng.random() < 0.5 else -1
                walk(pts[-1], theta + side * rng.uniform(0.5, 1.2), (n - k) * step * rng.uniform(0.3, 0.7),
                     width * 0.6, depth + 1)
        pts_a = np.array(pts)
        paths.append((pts_a, width * np.linspace(1.0, 0.35, len(pts_a))))

    length = size * rng.uniform(0.45, 0.95) * small
    width = max(1.0, rng.uniform(1.7, 3.3) * size / 128 * (0.9 if small < 1 else 1.0))
    start = rng.uniform(0.2, 0.8, 2) * size
    theta = rng.uniform(0, 2 * math.pi)
    frac = rng.uniform(0.3, 0.7)
    walk(start, theta, length * frac, width, 0)
    walk(start, theta + math.pi, length * (1 - frac), width, 0)
    return _polyline_coverage(size, paths)


def _crack_paint(rng: np.random.Generator, img: np.ndarray, coverage: np.ndarray, faint: float) -> None:
    # A shadowed gap, dark but keeping a trace of the surface colour, with chipped edges that catch
    # a little light.
    strength = rng.uniform(0.85, 1.0) * faint
    rim = np.asarray(Image.fromarray(coverage).filter(ImageFilter.MaxFilter(3))) - coverage
    _blend(img, rim * rng.uniform(0.1, 0.25) * strength, np.ones(3, np.float32))
    _blend(img, coverage * strength, img * rng.uniform(0.03, 0.15))


SPOT_COLOURS = np.array([
    (0.55, 0.30, 0.14),  # rust
    (0.16, 0.14, 0.10),  # oil
    (0.33, 0.42, 0.20),  # mould
    (0.30, 0.22, 0.30),  # ink / dye
    (0.93, 0.90, 0.80),  # dried residue (lighter)
    (0.75, 0.65, 0.45),  # dust / clay (lighter)
], np.float32)


def _spot_shape(rng: np.random.Generator, size: int, small: float) -> np.ndarray:
    r = size * rng.uniform(0.07, 0.19) * small
    cx, cy = rng.uniform(0.12, 0.88, 2) * size
    cov = _blob(rng, size, cx, cy, r)
    for _ in range(int(rng.integers(0, 4))):  # satellite droplets
        a, dist = rng.uniform(0, 2 * math.pi), r * rng.uniform(1.0, 1.8)
        cov = np.maximum(cov, _blob(rng, size, cx + dist * math.cos(a), cy + dist * math.sin(a),
                                    r * rng.uniform(0.15, 0.35)))
    return cov


def _spot_paint(rng: np.random.Generator, img: np.ndarray, coverage: np.ndarray, faint: float) -> None:
    size = img.shape[0]
    # A random one of the three stains that differ most from the surface under them: a stain the
    # colour of the surface is not a defect anyone could see (faint cases come from `faint`).
    under = img[coverage > 0.5].mean(axis=0) if (coverage > 0.5).any() else img.reshape(-1, 3).mean(axis=0)
    distinct = np.argsort(-np.abs(SPOT_COLOURS - under).sum(axis=1))[:3]
    colour = SPOT_COLOURS[int(distinct[int(rng.integers(3))])]
    colour = colour * (1 + rng.normal(0, 0.08, 3)).astype(np.float32)
    luma = img.mean(axis=2, keepdims=True)
    target = colour * (0.55 + 0.45 * luma / max(float(luma.mean()), 1e-3))  # stain keeps the texture
    strength = rng.uniform(0.75, 0.95) * faint
    mottle = 0.7 + 0.3 * _smooth_noise(rng, size, 6)
    _blend(img, coverage * mottle * strength, target.astype(np.float32))


_DEFECTS = {"scratch": (_scratch_shape, _scratch_paint), "crack": (_crack_shape, _crack_paint),
            "spot": (_spot_shape, _spot_paint)}


def _blob(rng: np.random.Generator, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Soft-edged irregular ellipse: radius wobbles with a few low harmonics, smoothstep edge."""
    aspect, angle = rng.uniform(0.45, 1.0), rng.uniform(0, math.pi)
    soft = rng.uniform(0.15, 0.5) + 1.5 / max(r, 1.0)
    amps = rng.uniform(0.0, 0.12, 4)
    phases = rng.uniform(0, 2 * math.pi, 4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / aspect
    phi = np.arctan2(v, u)
    radius = r * (1 + sum(a * np.cos((k + 2) * phi + p) for k, (a, p) in enumerate(zip(amps, phases))))
    t = np.clip((1 + soft / 2 - np.hypot(u, v) / radius) / soft, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _polyline_coverage(size: int, paths: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Anti-aliased coverage of polylines ``(points (N, 2) as x, y; widths (N,))`` from distance fields."""
    cov = np.zeros((size, size), np.float32)
    for pts, widths in paths:
        for (a, b), (wa, wb) in zip(zip(pts[:-1], pts[1:]), zip(widths[:-1], widths[1:])):
            pad = max(wa, wb) / 2 + 1.5
            x0, x1 = max(int(min(a[0], b[0]) - pad), 0), min(int(max(a[0], b[0]) + pad) + 1, size)
            y0, y1 = max(int(min(a[1], b[1]) - pad), 0), min(int(max(a[1], b[1]) + pad) + 1, size)
            if x0 >= x1 or y0 >= y1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            ab = b - a
            t = np.clip(((xx - a[0]) * ab[0] + (yy - a[1]) * ab[1]) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
            dist = np.hypot(xx - (a[0] + t * ab[0]), yy - (a[1] + t * ab[1]))
            alpha = np.clip((wa + t * (wb - wa)) / 2 + 0.5 - dist, 0.0, 1.0)
            np.maximum(cov[y0:y1, x0:x1], alpha, out=cov[y0:y1, x0:x1])
    return cov


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a ``cells`` x ``cells`` random grid upsampled bicubically."""
    grid = rng.random((cells, cells), dtype=np.float32)
    up = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))
    return np.clip(up, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Contact sheet


def _contact_sheet(rows: dict[str, list[tuple[np.ndarray, str]]], size: int) -> Image.Image:
    """One row per class: the class name, then up to eight examples captioned texture (+ 'hard')."""
    tile, pad, caption, label_w = max(size, 96), 6, 14, 90
    font = ImageFont.load_default(size=12)
    big = ImageFont.load_default(size=16)
    width = label_w + SHEET_COLUMNS * (tile + pad) + pad
    height = len(rows) * (tile + caption + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (cls, examples) in enumerate(rows.items()):
        y = pad + r * (tile + caption + pad)
        draw.text((pad, y + tile // 2 - 8), cls, fill=(0, 0, 0), font=big)
        for c, (rgb, text) in enumerate(examples):
            x = label_w + pad + c * (tile + pad)
            sheet.paste(Image.fromarray(rgb).resize((tile, tile), Image.Resampling.NEAREST), (x, y))
            draw.text((x, y + tile + 1), text, fill=(200, 0, 0) if "hard" in text else (60, 60, 60), font=font)
    return sheet

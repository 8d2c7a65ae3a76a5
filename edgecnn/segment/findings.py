"""The report's pictures of a segmentation run: masks over images for the best and worst test cases.

Drawn once by the evaluate stage (numpy + Pillow) into ``findings/segment/``; the report section
(:mod:`edgecnn.report.task_sections.segment`) only links them. Each picture is one row: the image,
the true mask, the float model's mask and the int8 artifact's, each class in its colour over the image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgecnn._io import atomic_path, write_json
from edgecnn.segment.data import SegmentData
from edgecnn.segment.metrics import confusion_matrix, mean_iou

FOLDER = "findings/segment"
# Background is left clear; the defect classes get saturated colours that read on every texture.
COLOURS = ((0, 0, 0), (255, 40, 40), (255, 220, 0), (0, 220, 255), (60, 255, 60), (255, 0, 255), (255, 140, 0))
SCALE = 2  # small inputs (64-128 px) drawn twice as large


def colour_of(class_id: int) -> tuple[int, int, int]:
    return COLOURS[class_id % len(COLOURS)] if class_id else (0, 0, 0)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8 RGB: ``image`` (0-255) with each non-background class of ``mask`` blended in its colour."""
    out = np.clip(image, 0, 255).astype(np.float32)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    for c in np.unique(mask):
        if c:
            sel = mask == c
            out[sel] = (1 - alpha) * out[sel] + alpha * np.asarray(colour_of(int(c)), np.float32)
    return out.round().astype(np.uint8)


def mask_png(mask: np.ndarray) -> Image.Image:
    """A class-id mask as a palette PNG: pixel values are the class ids, shown in the class colours."""
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette([v for c in range(256) for v in colour_of(c)])
    return im


def image_miou(truth: np.ndarray, pred: np.ndarray, k: int) -> float:
    return mean_iou(confusion_matrix(truth, pred, k))


def _row(tiles: list[np.ndarray], titles: list[str]) -> Image.Image:
    h, w = tiles[0].shape[:2]
    pad, head = 4, 14
    sheet = Image.new("RGB", (len(tiles) * (w * SCALE + pad) + pad, h * SCALE + head + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, title) in enumerate(zip(tiles, titles)):
        x = pad + i * (w * SCALE + pad)
        sheet.paste(Image.fromarray(tile).resize((w * SCALE, h * SCALE), Image.Resampling.NEAREST), (x, head))
        draw.text((x, 1), title, fill=(0, 0, 0))
    return sheet


def write_examples(run_dir: Path, data: SegmentData, images: np.ndarray, truth: np.ndarray, float_masks: np.ndarray,
                   int8_masks: np.ndarray | None, int8_name: str | None, n: int) -> list[dict]:
    """Draw the ``n`` best and ``n`` worst test images (float mIoU per image, images with a defect)
    and write ``findings/segment/examples.json``; returns its entries."""
    k = len(data.classes)
    folder = run_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    with_defect = [i for i in range(len(truth)) if truth[i].any()] or list(range(len(truth)))
    scores = {i: image_miou(truth[i], float_masks[i], k) for i in with_defect}
    ranked = sorted(with_defect, key=lambda i: (scores[i], i))
    picks = [("worst", i) for i in ranked[:n]] + [("best", i) for i in ranked[::-1][:n] if i not in ranked[:n]]
    out = []
    for kind, i in picks:
        tiles = [np.clip(images[i], 0, 255).astype(np.uint8), overlay(images[i], truth[i]),
                 overlay(images[i], float_masks[i])]
        titles = ["image", "truth", f"float {scores[i]:.2f}"]
        entry = {"kind": kind, "index": int(i), "image": str(Path(data.splits["test"][i].image).name),
                 "float_miou": scores[i]}
        if int8_masks is not None:
            entry["int8_miou"] = image_miou(truth[i], int8_masks[i], k)
            entry["int8_agreement"] = float(np.mean(int8_masks[i] == float_masks[i]))
            tiles.append(overlay(images[i], int8_masks[i]))
            titles.append(f"int8 {entry['int8_miou']:.2f}")
        entry["file"] = f"{FOLDER}/{kind}_{sum(e['kind'] == kind for e in out)}.png"
        with atomic_path(run_dir / entry["file"]) as tmp:
            _row(tiles, titles).save(tmp, format="PNG")
        out.append(entry)
    write_json(folder / "examples.json", {"int8": int8_name, "classes": data.classes,
                                          "colours": {c: list(colour_of(i)) for i, c in enumerate(data.classes)},
                                          "examples": out})
    return out

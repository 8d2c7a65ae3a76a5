"""A recipe for a user's own image folder, chosen from the folder itself (``edgecnn run --data FOLDER``).

The defect recipe flips images horizontally and vertically, which is right for textures and wrong
for anything with an up side (digits, text, parts in a fixture). This module picks defaults that
are safe for any classification folder and says why for each one:

* no flips, no rotation (orientation may carry the label); only zoom and contrast jitter;
* EfficientNet-Lite0 from its offline ImageNet weights (on 27 defect images per class it reached
  0.811 test top-1 vs 0.728 for MobileNetV2 and 0.253 from random init,
  ``benchmarks/results/transfer_vs_scratch*.json``);
* the input size nearest to the images' median side on the ladder the ImageNet backbones are
  published at (96 ... 224 px), so 32 px scans become 96 px, not 224 px;
* batch size and epochs from the number of training images (about 200 one-cycle fine-tuning steps);
* the int8 chooser on, held to the default budget (verified by default): an int8 file ships only when a
  route keeps the val top-1 within half a point and 98.5 % agreement; ``model.int8.onnx`` must also be
  faster than ``model.onnx`` here, while ``model.int8.tflite`` is judged on size (it is for phones and
  boards, whose int8 kernels this machine does not time).

:func:`recipe_for_folder` only reads image headers, so it is cheap and trains nothing.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from edgecnn.compress.chooser import list_routes
from edgecnn.config import CompressConfig, Recipe, recipe_from_dict
from edgecnn.data.folders import discover

__all__ = ["AutoRecipe", "BACKBONE", "INPUT_SIZES", "recipe_for_folder", "recipe_for_target"]

BACKBONE = "efficientnet_lite0"
# Routes the auto recipe leaves out. NNCF's accuracy control took 9 of 19 chooser minutes on 4,000 digits and its
# pick kept 40 convolutions float (4.9x slower than float in onnxruntime): the greedy mixed route ends the ladder
# instead. Per-tensor ONNX weights collapsed to chance on 28 px digits, and on lfw_subset the per-tensor pick that
# agreed on all 170 agreement images flipped 1 of 30 test images where per-channel flipped none, at 3 % of latency.
LEFT_OUT_ROUTES = {"onnx-int8-nncf": "minutes, and a pick slower than float",
                   "onnx-int8-minmax": "per-tensor weights: fragile, and per-channel costs ~3 % of latency"}
# The resolutions Keras publishes its ImageNet MobileNets at; all multiples of the backbones' stride 32.
INPUT_SIZES = (96, 128, 160, 192, 224)
FINETUNE_STEPS = 200  # about the default recipe's fine-tuning: 5 one-cycle epochs x 34 steps on 1,080 images
# BatchNorm keeps ImageNet's statistics while fine-tuning, whatever the batch size. Trained on scikit-learn's
# digits at 96 px (batches of 32) it ended at val top-1 0.84 against 0.99 frozen: its moving averages trail the
# changing weights, and re-estimated on the mostly black images they shrink some variances until +-1 grey
# level flips 67 % of answers, int8's rounding with it (benchmarks/results/int8_fragility_digits.json).
_SAMPLE = 200  # image headers read to find the typical size


@dataclass(frozen=True)
class AutoRecipe:
    """The chosen recipe and, per choice, one line saying what was chosen and why."""

    recipe: Recipe
    reasons: dict[str, str]  # dotted key (``model.input_size``) -> "value: why"


def _image_stats(paths: list[str]) -> tuple[int, int, bool]:
    """Median (width, height) and whether every image is greyscale, from the headers of a sample."""
    from PIL import Image

    step = max(1, len(paths) // _SAMPLE)
    widths, heights, grey = [], [], True
    for p in paths[::step]:
        with Image.open(p) as im:  # reads the header only
            widths.append(im.width)
            heights.append(im.height)
            grey = grey and im.mode in ("1", "L", "LA", "I", "I;16", "F")
    return int(median(widths)), int(median(heights)), grey


def _nearest_size(side: int) -> int:
    # ties go to the larger size: upsampling a little loses less than throwing pixels away
    return min(INPUT_SIZES, key=lambda s: (abs(s - side), -s))


def _batch_size(n_train: int) -> int:
    """The largest power of two <= n_train / 10 (at least ten steps per epoch), within 8..32."""
    return int(min(32, max(8, 2 ** math.floor(math.log2(max(1, n_train / 10))))))


def _name(folder: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-._") or "images"
    return f"auto-{stem}"


def recipe_for_folder(path: str | os.PathLike) -> AutoRecipe:
    """Choose a safe recipe for a folder of class subfolders (with or without train/val/test).

    Args:
        path: the image folder, in any layout :func:`edgecnn.data.folders.discover` reads.

    Returns:
        AutoRecipe: the validated recipe (name ``auto-<folder>``) and one reason per choice.

    Raises:
        EdgecnnError: the folder is missing, has no images, one class or a too-small class.

    Example:
        >>> auto = recipe_for_folder("data/digits")          # doctest: +SKIP
        >>> auto.recipe.data.augment.flip, auto.recipe.model.input_size   # doctest: +SKIP
        ('none', 96)
    """
    folder = Path(path).resolve()
    ds = discover(folder, check_images=False)  # the run checks every image; the layout and counts suffice here
    n_train = len(ds.splits["train"])
    width, height, grey = _image_stats([p for s in ds.splits.values() for p, _ in s])
    side = int(math.sqrt(width * height))
    size = _nearest_size(side)
    batch = _batch_size(n_train)
    steps = math.ceil(n_train / batch)
    ft_epochs = min(15, max(3, round(FINETUNE_STEPS / steps)))
    head_epochs = min(10, max(2, round(ft_epochs / 4)))

    if size > side:
        size_why = f"the ladder {list(INPUT_SIZES)} size nearest the images' median {width}x{height} (upsampled)"
    elif size < side:
        size_why = (f"the ladder {list(INPUT_SIZES)} size nearest the images' median {width}x{height}; "
                    f"{max(INPUT_SIZES)} is the resolution the ImageNet weights were trained at")
    else:
        size_why = f"the images' median size {width}x{height}, on the ladder {list(INPUT_SIZES)}"
    reasons = {
        "data.path": f"{ds.layout}, {len(ds.classes)} classes, "
                       + ", ".join(f"{len(v)} {k}" for k, v in ds.splits.items()) + " images"
                       + ("; greyscale, read as RGB (grey repeated over 3 channels)" if grey else ""),
        "data.augment.flip": "none: a flip can change the class of digits, text or parts with an up side "
                             "(ask with --set data.augment.flip=horizontal)",
        "data.augment.rotation": "0.0: for the same reason; only zoom 0.1 and contrast 0.1 jitter",
        "model.name": f"{BACKBONE} with offline ImageNet weights: the best small-data transfer measured here "
                      "(0.811 vs MobileNetV2 0.728 and random init 0.253 on 27 images per class)",
        "model.input_size": f"{size}: {size_why}",
        "data.batch_size": f"{batch}: about ten or more steps per epoch on {n_train} training images (8..32)",
        "train.head.epochs": f"{head_epochs}: a quarter of the fine-tuning epochs (2..10)",
        "train.finetune.epochs": f"{ft_epochs}: about {FINETUNE_STEPS} steps at {steps} steps per epoch (3..15)",
        "train.finetune.blocks": "every block (99 = all)",
        "train.finetune.schedule": ("onecycle, peaking at 0.3x the head's learning rate: a warm-up, then cosine; it "
                                    "reached in half the steps what a cosine decay from 0.1x did "
                                    "(benchmarks/results/train_levers.json)"),
        "compress": (f"the int8 chooser, held to the default budget (val top-1 drop <= "
                     f"{CompressConfig().max_accuracy_drop:g}, agreement >= {CompressConfig().min_agreement:g}); a "
                     "runtime with no route that holds ships no int8 file and the run exits 1"),
        "compress.prefer": ("litert: size (model.int8.tflite is for phones and boards, whose int8 kernels this "
                            "machine does not time); onnxruntime: latency (an int8 ONNX slower than model.onnx here "
                            "is no pick)"),
        "compress.routes": "every route but " + "; ".join(f"{r} ({why})" for r, why in LEFT_OUT_ROUTES.items()),
        "train.finetune.train_batchnorm": ("false: BatchNorm keeps ImageNet's statistics (trained, it left a digits "
                                           "model at val top-1 0.84 against 0.99, and fragile in int8)"),
    }
    raw: dict[str, Any] = {
        "name": _name(folder),
        "description": f"chosen by `edgecnn run --data` for {folder}",
        "data": {"path": str(folder), "batch_size": batch,
                 "augment": {"flip": "none", "rotation": 0.0, "zoom": 0.1, "contrast": 0.1}},
        "model": {"name": BACKBONE, "input_size": size, "args": {"weights": "imagenet"}},
        "train": {"seed": 0, "optimizer": "adam", "head": {"epochs": head_epochs, "lr": 0.003},
                  "finetune": {"blocks": 99, "epochs": ft_epochs, "lr_factor": 0.3, "schedule": "onecycle",
                               "train_batchnorm": False},
                  "early_stopping_patience": 5},
        "compress": {"prefer": {"litert": "size", "onnxruntime": "latency", "openvino": "latency"},
                     "routes": [r.name for r in list_routes() if r.name not in LEFT_OUT_ROUTES]},
    }
    return AutoRecipe(recipe_from_dict(raw, source=f"auto recipe for {folder}"), reasons)


def recipe_for_target(path: str | os.PathLike, target: str, search_dir: str | os.PathLike) -> AutoRecipe:
    """A recipe for a folder and a microcontroller profile (``edgecnn run --data FOLDER --target PROFILE``).

    The model is what :func:`edgecnn.mcu.search.search_mcu` picks: candidates that do not fit ``target`` are
    dropped before training, the rest trained briefly in ``search_dir``; the recipe trains the pick fully, with
    the folder's safe augmentation, and gates it on the profile. Raises ``NoCandidateFits`` (one line naming the
    constraint no candidate met) when nothing fits.
    """
    from edgecnn.mcu.search import candidate_of, mcu_recipe, search_mcu

    base = recipe_for_folder(path)
    augment = base.recipe.data.augment.model_dump(mode="json")
    found = search_mcu(path, target, out_dir=search_dir, augment=augment, batch_size=base.recipe.data.batch_size)
    raw = mcu_recipe(candidate_of(found.pick), str(Path(path).resolve()), target, name=f"{base.recipe.name}-{target}",
                     batch_size=base.recipe.data.batch_size, augment=augment)
    reasons = {"data.path": base.reasons["data.path"], "data.augment.flip": base.reasons["data.augment.flip"],
               "model": (f"{found.pick.label}: the best val top-1 ({found.pick.val_top1:.3f}) of the "
                         f"{sum(r.trained for r in found.rows)} of {len(found.rows)} candidates that fit {target} "
                         f"(the rest dropped before training); {search_dir}/mcu_search.json has the front"),
               "budgets": f"{target}: arena and flash within the profile's share, checked on the int8 file in TFLM"}
    return AutoRecipe(recipe_from_dict(raw, source=f"auto recipe for {path} on {target}"), reasons)

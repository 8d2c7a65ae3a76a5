"""Grad-CAM: where a classifier looks, and how often that is where the defect is.

``gradcam`` follows Selvaraju et al. (2017): the gradient of a class's *logit* (the ``classifier``
layer, before the softmax, so a saturated probability does not flatten the map) with respect to the
last 4-D feature map, averaged over space, weights that feature map's channels; the weighted sum,
passed through ReLU and bilinearly upsampled to the input size, is the heatmap.

``localisation_score`` checks the maps against ground truth on the bundled defect set, whose
``meta.json`` records each defect's bounding box: the fraction of defect test images whose heatmap
peak falls inside the box, beside the fraction a uniformly random peak would score (mean box area
over image area).

Example:
    >>> from edgecnn.evaluate.gradcam import gradcam, localisation_score
    >>> maps = gradcam(model, images)                       # doctest: +SKIP
    >>> maps.shape, float(maps.min()), float(maps.max())    # doctest: +SKIP
    ((8, 128, 128), 0.0, 1.0)
    >>> localisation_score("export/defects-mobilenetv2")    # doctest: +SKIP
    {'fraction': 0.63, 'chance': 0.21, 'n': 270, ...}
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgecnnError

__all__ = ["gradcam", "find_feature_layer", "logits_tensor", "localisation_score", "gradcam_plot", "GRADCAM_JSON"]

GRADCAM_JSON = "gradcam.json"
_GLOBAL_POOLS = ("GlobalAveragePooling2D", "GlobalMaxPooling2D")


def find_feature_layer(model) -> str:
    """Name of the layer whose 4-D output feeds the global pooling of the head.

    Prefers the input of the layer named ``pool`` (every edgecnn head's GlobalAveragePooling2D);
    otherwise the input of the first global pooling layer; otherwise the last layer with a 4-D output.

    Raises:
        EdgecnnError: the model has no layer with a 4-D (N, H, W, C) output.
    """
    pool = next((layer for layer in model.layers if layer.name == "pool"), None)
    if pool is None:
        pool = next((layer for layer in model.layers if type(layer).__name__ in _GLOBAL_POOLS), None)
    if pool is not None:
        inbound = pool._inbound_nodes[0].inbound_layers  # noqa: SLF001 - public in tf_keras graphs
        inbound = inbound[0] if isinstance(inbound, (list, tuple)) else inbound
        if len(inbound.output_shape) == 4:
            return inbound.name
    four_d = [layer.name for layer in model.layers if _is_4d(layer)]
    if not four_d:
        raise EdgecnnError(f"Grad-CAM needs a convolutional feature map, but model {model.name!r} has no layer "
                           "with a 4-D (N, H, W, C) output. Pass layer=<name> of a conv layer.")
    return four_d[-1]


def _is_4d(layer) -> bool:
    try:
        shape = layer.output_shape
    except (AttributeError, RuntimeError):
        return False
    return isinstance(shape, tuple) and len(shape) == 4


def logits_tensor(model):
    """The pre-softmax output: the ``classifier`` layer's output, else the input of a final softmax."""
    names = {layer.name for layer in model.layers}
    if "classifier" in names:
        return model.get_layer("classifier").output
    last = model.layers[-1]
    kind = type(last).__name__
    if kind == "Softmax" or (kind == "Activation" and getattr(last.activation, "__name__", "") == "softmax"):
        return last.input
    return model.output


def gradcam(model, images: np.ndarray, class_index: int | np.ndarray | None = None,
            layer: str | None = None, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM heatmaps for a batch of images.

    Args:
        model: a functional tf_keras classifier (an edgecnn model: input RGB 0-255, in-graph normalisation).
        images: (N, H, W, 3) float pixels 0-255 at the model's input size (a single (H, W, 3) image works too).
        class_index: the class to explain: None = each image's predicted class, an int = that class for
            all images, or an (N,) array of per-image classes (e.g. the true labels).
        layer: name of the 4-D feature layer; default :func:`find_feature_layer` (the input of ``pool``).
        batch_size: images per gradient pass.

    Returns:
        float32 (N, H, W) heatmaps in [0, 1] (each scaled by its own maximum; all zeros where no
        location raised the class's logit).

    Raises:
        EdgecnnError: a bad image shape, class index or layer name.
    """
    from edgecnn._tf import keras, tf

    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    expected = tuple(model.input_shape[1:])
    if images.ndim != 4 or any(e is not None and e != s for e, s in zip(expected, images.shape[1:])):
        raise EdgecnnError(f"gradcam: images must have shape (N, {', '.join(map(str, expected))}). "
                           f"Received shape {images.shape}; resize them to the model's input size.")
    n = len(images)
    layer = layer or find_feature_layer(model)
    try:
        feature = model.get_layer(layer).output
    except ValueError:
        raise EdgecnnError(f"gradcam: no layer named {layer!r} in model {model.name!r}; 4-D layers: "
                           f"{', '.join(m.name for m in model.layers if _is_4d(m))}.") from None
    if len(feature.shape) != 4:
        raise EdgecnnError(f"gradcam: layer {layer!r} has output shape {tuple(feature.shape)}; "
                           "Grad-CAM needs a 4-D (N, H, W, C) feature map.")
    logits = logits_tensor(model)
    n_classes = int(logits.shape[-1])
    if class_index is None:
        targets = None
    else:
        targets = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,)).copy()
        if targets.min(initial=0) < 0 or targets.max(initial=0) >= n_classes:
            raise EdgecnnError(f"gradcam: class_index must be in 0..{n_classes - 1}. "
                               f"Received {np.unique(targets).tolist()}.")
    probe = keras.Model(model.inputs, [feature, logits])
    maps = []
    for start in range(0, n, batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size])
        with tf.GradientTape() as tape:
            fmap, out = probe(x, training=False)
            cls = tf.argmax(out, axis=1) if targets is None else tf.constant(targets[start:start + batch_size])
            score = tf.gather(out, cls, axis=1, batch_dims=1)
        grads = tape.gradient(score, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1))[..., None]
        cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0].numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1)
        cam = np.where(peak[:, None, None] > 0, cam / np.maximum(peak, 1e-12)[:, None, None], 0.0)
        maps.append(np.clip(cam, 0.0, 1.0).astype(np.float32))
    return np.concatenate(maps) if maps else np.zeros((0, *images.shape[1:3]), np.float32)


# ----------------------------------------------------------------------------------------------
# Localisation against the bundled set's bounding boxes


def _defect_test_images(root: Path) -> list[dict]:
    """meta.json records of the test images that have a defect bounding box."""
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise EdgecnnError(f"no meta.json under {str(root)!r}: localisation needs the bundled defect set "
                           "(its meta.json records each defect's bounding box). Make one with "
                           "`edgecnn data make-defects DIR`.")
    meta = json.loads(meta_path.read_text())
    return [m for m in meta.get("images", []) if m.get("split") == "test" and m.get("bbox")]


def peak_inside(heatmap: np.ndarray, bbox: list[int], image_size: tuple[int, int]) -> bool:
    """Whether the heatmap's maximum, mapped to original-image pixels, lies in ``bbox`` [x0, y0, x1, y1).

    An all-zero heatmap (no location raised the class's logit) has no peak and counts as a miss.
    """
    if not np.max(heatmap) > 0:
        return False
    h, w = heatmap.shape
    iy, ix = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    oh, ow = image_size
    x, y = (ix + 0.5) * ow / w, (iy + 0.5) * oh / h
    x0, y0, x1, y1 = bbox
    return bool(x0 <= x < x1 and y0 <= y < y1)


def localisation_score(run_dir: str | os.PathLike, *, layer: str | None = None, limit: int | None = None,
                       write: bool = True, model=None) -> dict[str, Any]:
    """How often the reference model's Grad-CAM peak falls inside the defect's bounding box.

    Uses every defect test image of the run's dataset (``dataset.json`` "root", which must hold the
    bundled set's ``meta.json``), explaining each image's *true* class.

    Args:
        run_dir: a run directory with model.keras, labels.txt and dataset.json.
        layer: the feature layer to explain (default: :func:`find_feature_layer`).
        limit: use at most this many images (spread over the classes), for quick checks.
        write: also write the result to ``RUN_DIR/gradcam.json``.
        model: the loaded model.keras, when the caller already has it.

    Returns:
        ``{"fraction", "chance", "n", "per_class": {cls: {"fraction", "chance", "n"}}, "layer", "grid",
        "target": "true class", "dataset", "meta_sha256", "model_sha256", "limit"}``; ``chance`` is the
        mean bbox area / image area (the score of a peak placed uniformly at random).

    Raises:
        EdgecnnError: no model.keras, the dataset is not on disk, or it has no bounding boxes.
    """
    from edgecnn._io import write_json
    from edgecnn._trust import load_keras

    run_dir = Path(run_dir)
    if model is None:
        if not (run_dir / "model.keras").is_file():
            raise EdgecnnError(f"no model.keras in {str(run_dir)!r}; train the run first (`edgecnn train`).")
        model = load_keras(run_dir / "model.keras")
    root, classes = _dataset_root_and_classes(run_dir)
    records = _defect_test_images(root)
    records = [r for r in records if r["class"] in classes]
    if not records:
        raise EdgecnnError(f"{root / 'meta.json'} lists no test image with a defect bounding box in the run's "
                           f"classes {classes}.")
    if limit is not None and len(records) > limit:
        by_class: dict[str, list[dict]] = {}
        for r in records:
            by_class.setdefault(r["class"], []).append(r)
        picked: list[dict] = []
        while len(picked) < limit:
            for group in by_class.values():
                if group and len(picked) < limit:
                    picked.append(group.pop(0))
        records = picked
    from edgecnn.data.decoded_split import BATCH, decode_images

    size, channels = int(model.input_shape[1]), int(model.input_shape[-1])
    paths = [str(root / r["path"]) for r in records]
    labels = np.array([classes.index(r["class"]) for r in records])
    originals = [_image_hw(p) for p in paths]
    layer = layer or find_feature_layer(model)
    hits_parts = []
    for start in range(0, len(paths), BATCH):   # a batch of images and heatmaps at a time: memory flat in N
        end = start + BATCH
        maps = gradcam(model, decode_images(paths[start:end], size, channels), class_index=labels[start:end],
                       layer=layer)
        hits_parts += [peak_inside(m, r["bbox"], o) for m, r, o in zip(maps, records[start:end], originals[start:end])]
    hits = np.array(hits_parts)
    areas = np.array([(r["bbox"][2] - r["bbox"][0]) * (r["bbox"][3] - r["bbox"][1]) / (o[0] * o[1])
                      for r, o in zip(records, originals)])
    per_class = {}
    for c in sorted({r["class"] for r in records}, key=classes.index):
        sel = np.array([r["class"] == c for r in records])
        per_class[c] = {"fraction": float(hits[sel].mean()), "chance": float(areas[sel].mean()), "n": int(sel.sum())}
    result = {"fraction": float(hits.mean()), "chance": float(areas.mean()), "n": int(len(records)),
              "per_class": per_class, "layer": layer,
              "grid": list(model.get_layer(layer).output_shape[1:3]), "target": "true class", "limit": limit,
              "dataset": str(root), "meta_sha256": _sha256_or_none(root / "meta.json"),
              "model_sha256": _sha256_or_none(run_dir / "model.keras")}
    if write:
        write_json(run_dir / GRADCAM_JSON, result)
    return result


def _sha256_or_none(path: Path) -> str | None:
    from edgecnn._io import sha256_file

    return sha256_file(path) if path.is_file() else None


def _image_hw(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def _dataset_root_and_classes(run_dir: Path) -> tuple[Path, list[str]]:
    ds_json = run_dir / "dataset.json"
    if not ds_json.is_file():
        raise EdgecnnError(f"no dataset.json in {str(run_dir)!r}; it is written by `edgecnn run`.")
    info = json.loads(ds_json.read_text())
    root = Path(info["root"])
    if not root.is_dir():
        raise EdgecnnError(f"the run's dataset {str(root)!r} (dataset.json) is no longer on disk; "
                           "regenerate it (`edgecnn data make-defects`) or restore it there.")
    labels = run_dir / "labels.txt"
    classes = labels.read_text().split() if labels.is_file() else list(info["classes"])
    return root, classes


# ----------------------------------------------------------------------------------------------
# The overlay figure


def gradcam_plot(rows: dict[str, list[dict]], path: str | os.PathLike, *, alpha: float = 0.65) -> Path:
    """A grid of Grad-CAM overlays: one row per class, one column per example.

    Each example: ``{"image": (H, W, 3) 0-255, "heatmap": (h, w) in [0, 1], "title": str,
    "bbox": [x0, y0, x1, y1] in image pixels or None}``; the heatmap is resized to the image.
    """
    from matplotlib.patches import Rectangle
    from PIL import Image

    from edgecnn.report.plots import figure, save_figure

    names = [r for r in rows if rows[r]]
    ncols = max((len(rows[r]) for r in names), default=1)
    fig = figure(2.1 * ncols + 0.6, 2.35 * max(1, len(names)))
    if not names:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no images", ha="center", va="center")
        ax.set_axis_off()
        return save_figure(fig, path)
    axes = fig.subplots(len(names), ncols, squeeze=False)
    for r, name in enumerate(names):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rows[name]):
                ax.set_axis_off()
                continue
            ex = rows[name][c]
            img = np.clip(np.asarray(ex["image"]), 0, 255).astype(np.uint8)
            h, w = img.shape[:2]
            heat = np.asarray(ex["heatmap"], dtype=np.float32)
            if heat.shape != (h, w):
                heat = np.asarray(Image.fromarray(heat).resize((w, h), Image.BILINEAR))
            ax.imshow(img, interpolation="nearest")
            # opacity grows with the evidence, so the surface stays visible where the model does not look
            ax.imshow(heat, cmap="jet", alpha=np.clip(heat, 0, 1) * alpha, vmin=0, vmax=1, interpolation="bilinear")
            if ex.get("bbox"):
                x0, y0, x1, y1 = ex["bbox"]
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="white", lw=1.6))
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="black", lw=0.6,
                                       ls="--"))
            title = ex.get("title", "")
            if heat.max() > 0:
                iy, ix = np.unravel_index(int(np.argmax(heat)), heat.shape)
                ax.plot([ix], [iy], marker="+", color="white", ms=10, mew=2)
            else:
                title += "\n(no evidence for the class)"
            ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=10)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=axes, shrink=0.6,
                 label="Grad-CAM evidence (opacity grows with it)")
    return save_figure(fig, path)

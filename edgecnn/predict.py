"""`edgecnn predict`: labels and probabilities for image files, from any model edgecnn can run.

The model may be ``imagenet`` (a backbone with offline ImageNet weights -- MobileNetV2 by default,
EfficientNet-Lite0/1/2 -- and the 1000 class names shipped in the package), a run directory (its
model.keras and labels.txt), or an artifact
(.keras / .tflite / .onnx) whose folder holds manifest.json or labels.txt. Images go through
:func:`edgecnn.data.preprocess.load_image`, the preprocessing of training, evaluation and the service.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edgecnn.data.preprocess import load_image
from edgecnn.errors import EdgecnnError

IMAGENET = "imagenet"
DEFAULT_IMAGENET_MODEL = "mobilenet_v2"


def _labels_near(folder: Path) -> list[str]:
    manifest = folder / "manifest.json"
    if manifest.is_file():
        labels = json.loads(manifest.read_text()).get("labels")
        if labels:
            return list(labels)
    txt = folder / "labels.txt"
    if txt.is_file():
        return [line.strip() for line in txt.read_text().splitlines() if line.strip()]
    raise EdgecnnError(f"no labels for the model in {str(folder)!r}: expected manifest.json or labels.txt beside it.")


class Predictor:
    """A runner plus its labels: ``Predictor.open("imagenet")(images) -> probabilities``."""

    def __init__(self, runner, labels: list[str]):
        self.runner, self.labels = runner, labels
        if runner.output.shape[-1] != len(labels):
            raise EdgecnnError(f"the model has {runner.output.shape[-1]} outputs but {len(labels)} labels were found.")

    @property
    def input_size(self) -> int:
        return self.runner.input_size

    @property
    def input_channels(self) -> int:
        return int(self.runner.input.shape[-1])

    @classmethod
    def open(cls, model: str | os.PathLike, threads: int | None = None, *,
             imagenet_model: str = DEFAULT_IMAGENET_MODEL) -> Predictor:
        """``model``: 'imagenet' (then ``imagenet_model`` names the backbone), a run directory or an artifact."""
        from edgecnn.runtime import load_runner

        if str(model) == IMAGENET:
            return cls(_ImagenetRunner(imagenet_model), _imagenet_labels())
        path = Path(model)
        if path.is_dir():
            artifact = path / "model.keras"
            if not artifact.is_file():
                raise EdgecnnError(f"{str(path)!r} has no model.keras; pass an artifact file instead.")
            return cls(load_runner(artifact, threads), _labels_near(path))
        if not path.exists():
            raise EdgecnnError(f"model not found: {str(path)!r}. Pass 'imagenet', a run directory or an artifact "
                               "(.keras, .tflite, .onnx).")
        return cls(load_runner(path, threads), _labels_near(path.parent))

    def top(self, images: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        probs = self.runner(images)
        order = np.argsort(-probs, axis=1)[:, :k]
        return [[(self.labels[j], float(p[j])) for j in row] for p, row in zip(probs, order)]


def _imagenet_labels() -> list[str]:
    from edgecnn.arch.weights import imagenet_class_names

    return imagenet_class_names()


def imagenet_models() -> list[str]:
    """Backbones ``predict imagenet --model`` accepts: those with offline ImageNet weights."""
    from edgecnn.arch.weights import CHECKPOINTS

    return sorted(CHECKPOINTS)


class _ImagenetRunner:
    """A backbone with its offline ImageNet weights and classifier, in memory (no artifact file needed)."""

    backend = "keras"

    def __init__(self, name: str = DEFAULT_IMAGENET_MODEL):
        from edgecnn.arch import create_model, get_model_entry
        from edgecnn.errors import did_you_mean
        from edgecnn.runtime.base import TensorSpec

        allowed = imagenet_models()
        if name not in allowed:
            raise EdgecnnError(
                f"--model {name!r} has no offline ImageNet weights.{did_you_mean(name, allowed)} "
                f"Allowed: {', '.join(allowed)} (see the ImageNet column of `edgecnn models`)."
            )
        self.input_size = get_model_entry(name).default_input_size
        self.model = create_model(name, include_top=True, weights=IMAGENET, dropout=0.0)
        self.input = TensorSpec("image", (None, self.input_size, self.input_size, 3), "float32")
        self.output = TensorSpec("probs", (None, 1000), "float32")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.model(np.asarray(images, np.float32), training=False).numpy()


def predict_files(model: str, images: list[str], top: int = 5, *, imagenet_model: str | None = None,
                  ) -> list[tuple[str, list[tuple[str, float]]]]:
    """Top-k (label, probability) for each image file.

    Each file is read by :func:`edgecnn.data.preprocess.load_image` at the model's input size,
    so the model sees the pixels evaluation and the service give it.

    Args:
        model: 'imagenet', a run directory, or an artifact file.
        images: image files.
        top: how many classes per image.
        imagenet_model: with model='imagenet', the backbone (one of :func:`imagenet_models`; default
            ``mobilenet_v2``); an error with any other model.

    Raises:
        EdgecnnError: bad ``top``, unknown model or backbone without offline ImageNet weights, unreadable image.
    """
    if top < 1:
        raise EdgecnnError(f"--top must be >= 1. Received {top}.")
    if imagenet_model is not None and str(model) != IMAGENET:
        raise EdgecnnError(f"--model names an ImageNet backbone and needs MODEL 'imagenet'. Received MODEL {model!r}; "
                           "drop --model or pass 'imagenet'.")
    predictor = Predictor.open(model, imagenet_model=imagenet_model or DEFAULT_IMAGENET_MODEL)
    batch = np.stack([load_image(p, predictor.input_size, predictor.input_channels) for p in images])
    return list(zip(images, predictor.top(batch, top)))


def _run_manifest(model: str | os.PathLike) -> dict:
    """The manifest beside ``model`` (a run directory or an artifact), or {}."""
    path = Path(model)
    folder = path if path.is_dir() else path.parent
    manifest = folder / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.is_file() else {}


def is_detector(model: str | os.PathLike) -> bool:
    """Whether ``model`` is a run directory or artifact of ``task: detect`` (its manifest says so)."""
    return str(model) != IMAGENET and _run_manifest(model).get("task") == "detect"


def detect_files(model: str | os.PathLike, images: list[str], *, threshold: float | None = None,
                 draw: str | os.PathLike | None = None) -> list[tuple[str, list[dict]]]:
    """Each image's boxes from a detection run directory or artifact: ``[{"label", "score", "box"}]`` with the box
    ``[x0, y0, x1, y1]`` in the image's own pixels, at ``threshold`` (default: the run's report threshold); the
    same post-processing as evaluation and the service. ``draw``: a folder where each image is written with its
    boxes (``<name>.boxes.png``)."""
    from PIL import Image

    from edgecnn.detect.outputs import detections_of
    from edgecnn.runtime import load_runner

    meta = _run_manifest(model).get("detect", {})
    labels = _labels_near(Path(model) if Path(model).is_dir() else Path(model).parent)
    threshold = float(meta.get("report_threshold", 0.3)) if threshold is None else threshold
    if not 0 < threshold < 1:
        raise EdgecnnError(f"--threshold must be between 0 and 1. Received {threshold}.")
    path = Path(model) / "model.keras" if Path(model).is_dir() else Path(model)
    if path.suffix == ".keras":
        from edgecnn.arch import detection  # noqa: F401  (the decode layer, for load_model)
    runner = load_runner(path)
    size, channels = runner.input_size, runner.input_channels
    out = []
    for file in images:
        dets = detections_of(runner(load_image(file, size, channels)[None]), size,
                             score_threshold=min(threshold, float(meta.get("score_threshold", 0.05))),
                             iou_threshold=float(meta.get("iou_threshold", 0.5)),
                             max_detections=int(meta.get("max_detections", 100)))[0].above(threshold)
        with Image.open(file) as im:
            w, h = im.size
        scale = np.array([w / size, h / size] * 2, np.float32)
        found = [{"label": labels[c] if c < len(labels) else str(c), "score": float(s),
                  "box": [round(float(v), 1) for v in b * scale]}
                 for b, s, c in zip(dets.boxes, dets.scores, dets.classes)]
        if draw is not None:
            from edgecnn.report.boxes import draw_boxes

            folder = Path(draw)
            folder.mkdir(parents=True, exist_ok=True)
            draw_boxes(file, {"boxes": [f["box"] for f in found]},
                       labels={"boxes": [f"{f['label']} {f['score']:.2f}" for f in found]}
                       ).save(folder / f"{Path(file).stem}.boxes.png")
        out.append((file, found))
    return out

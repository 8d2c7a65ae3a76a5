"""Training a detector: targets from boxes as each paper assigns them, the papers' losses, and the fit.

* SSD (Liu et al. 2016), for ``ssdlite_*``: an anchor is positive for the ground-truth box it overlaps
  most when that IoU is >= 0.5, and each box's best anchor is positive whatever its IoU (so no box goes
  unassigned); anchors between 0.4 and 0.5 are ignored, the rest are background. Loss: softmax
  cross-entropy over the positives and the hardest negatives (3 per positive; at least 16 per image, so
  an image without objects still teaches the background), plus smooth L1 on the positives' box offsets,
  divided by the number of positives.
* CenterNet (Zhou et al. 2019), for ``centernet_*``: each box's centre cell carries a 1 in its class's
  heatmap, spread by a Gaussian whose radius is CornerNet's (a box shifted by that radius keeps IoU >= 0.7
  with the original); the centre cell also regresses log(size / stride) and the centre's offset in the
  cell. Loss: the paper's penalty-reduced focal loss (alpha 2, beta 4) over the heatmap plus L1 on size
  and offset at the centre cells, divided by the number of boxes.

Images are decoded, augmented (``edgecnn.detect.augment``: scale/translate, recipe flips, and 2x2 mosaics
that make one-object images into several-object ones; a box cut below half its area is dropped and
counted, never silently) and turned into targets in numpy, a batch at a time.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import atomic_path, write_json
from edgecnn._tf import keras, tf
from edgecnn.arch.detection import CENTERNET_STRIDE, HEAD_PREFIX, DetectionOutput, centernet_grid, ssd_anchors
from edgecnn.data.loader import without_autotune
from edgecnn.detect.boxes import encode_anchors, iou_matrix
from edgecnn.errors import EdgecnnError
from edgecnn.train import with_input_channels

log = logging.getLogger("edgecnn.detect")
POS_IOU, NEG_IOU = 0.5, 0.4
NEG_PER_POS, MIN_NEG = 3, 16


# ------------------------------------------------------------------------------------------- targets
def _anchor_xyxy(anchors: np.ndarray) -> np.ndarray:
    return np.concatenate([anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2], 1)


def ssd_targets(boxes: np.ndarray, classes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(A, 5): per anchor its class + 1 (0 background, -1 ignored) and its SSD offsets to the matched box."""
    out = np.zeros((len(anchors), 5), np.float32)
    if not len(boxes):
        return out
    iou = iou_matrix(_anchor_xyxy(anchors), boxes)          # (A, B)
    best_box = iou.argmax(1)
    best_iou = iou[np.arange(len(anchors)), best_box]
    label = np.where(best_iou >= POS_IOU, classes[best_box] + 1, np.where(best_iou >= NEG_IOU, -1, 0))
    forced = iou.argmax(0)                                   # each box's best anchor is positive
    best_box[forced] = np.arange(len(boxes))
    label[forced] = classes + 1
    pos = label > 0
    out[:, 0] = label
    out[pos, 1:] = encode_anchors(boxes[best_box[pos]], anchors[pos])
    return out


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CornerNet's radius (Law & Deng 2018, as CenterNet uses it): the smallest of the three cases' roots."""
    a1, b1, c1 = 1, height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def centernet_targets(boxes: np.ndarray, classes: np.ndarray, num_classes: int, input_size: int,
                      stride: int = CENTERNET_STRIDE) -> np.ndarray:
    """(G * G, K + 5): per cell the K heatmaps, log(w / stride), log(h / stride), the centre's offset in the
    cell (x, y) and 1 where a box's centre falls (the cells size and offset are learnt at)."""
    g = centernet_grid(input_size, stride)
    out = np.zeros((g, g, num_classes + 5), np.float32)
    ys, xs = np.mgrid[0:g, 0:g]
    for (x0, y0, x1, y1), c in zip(boxes, classes):
        w, h = (x1 - x0) / stride, (y1 - y0) / stride
        if w <= 0 or h <= 0:
            continue
        cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
        i, j = min(int(cy), g - 1), min(int(cx), g - 1)
        sigma = (2 * max(0.0, gaussian_radius(h, w)) + 1) / 6
        heat = np.exp(-((xs - j) ** 2 + (ys - i) ** 2) / (2 * sigma ** 2))
        out[..., c] = np.maximum(out[..., c], heat)
        out[i, j, c] = 1.0
        out[i, j, num_classes:num_classes + 5] = [math.log(w), math.log(h), cx - j, cy - i, 1.0]
    return out.reshape(g * g, num_classes + 5)


# ------------------------------------------------------------------------------------------- losses
def ssd_loss(num_classes: int):
    """SSD's loss on the raw head (N, A, K + 1 + 4) against :func:`ssd_targets`."""
    k1 = num_classes + 1

    def loss(y_true, raw):
        label = tf.cast(y_true[..., 0], tf.int32)
        pos = label > 0
        neg = tf.equal(label, 0)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(label, 0), logits=raw[..., :k1])
        n_pos = tf.reduce_sum(tf.cast(pos, tf.float32), axis=1)                      # per image
        n_neg = tf.minimum(tf.maximum(NEG_PER_POS * n_pos, MIN_NEG), tf.reduce_sum(tf.cast(neg, tf.float32), 1))
        neg_ce = tf.where(neg, ce, tf.zeros_like(ce))
        rank = tf.argsort(tf.argsort(neg_ce, axis=1, direction="DESCENDING"), axis=1)   # 0 = hardest negative
        hard = tf.logical_and(neg, tf.cast(rank, tf.float32) < n_neg[:, None])
        cls_loss = tf.reduce_sum(tf.where(tf.logical_or(pos, hard), ce, tf.zeros_like(ce)))
        diff = tf.abs(raw[..., k1:] - y_true[..., 1:])
        smooth = tf.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5)
        box_loss = tf.reduce_sum(tf.where(pos[..., None], smooth, tf.zeros_like(smooth)))
        return (cls_loss + box_loss) / tf.maximum(tf.reduce_sum(n_pos), 1.0)

    return loss


def centernet_loss(num_classes: int):
    """CenterNet's loss on the raw head (N, G * G, K + 4) against :func:`centernet_targets`."""
    k = num_classes

    def loss(y_true, raw):
        heat = y_true[..., :k]
        p = tf.clip_by_value(tf.sigmoid(raw[..., :k]), 1e-4, 1 - 1e-4)
        peak = tf.cast(tf.equal(heat, 1.0), tf.float32)
        pos = -tf.math.log(p) * (1 - p) ** 2 * peak
        neg = -tf.math.log(1 - p) * p ** 2 * (1 - heat) ** 4 * (1 - peak)
        mask = y_true[..., k + 4:k + 5]
        n = tf.maximum(tf.reduce_sum(mask), 1.0)
        size = tf.reduce_sum(tf.abs(raw[..., k:k + 2] - y_true[..., k:k + 2]) * mask)
        offset = tf.reduce_sum(tf.abs(tf.sigmoid(raw[..., k + 2:k + 4]) - y_true[..., k + 2:k + 4]) * mask)
        return (tf.reduce_sum(pos) + tf.reduce_sum(neg) + 0.1 * size + offset) / n

    return loss


def head_kind(model) -> DetectionOutput:
    """The model's decode layer (``detections``): its ``kind`` says which targets and loss train it."""
    layer = model.get_layer("detections")
    if not isinstance(layer, DetectionOutput):
        raise EdgecnnError(f"model {model.name!r} is not a detector of this project (no DetectionOutput layer "
                           "named 'detections'); use a builder of `edgecnn models --task detect`.")
    return layer


# ------------------------------------------------------------------------------------------- data
class Batches:
    """Augmented (images, targets) batches of a split, decoded in numpy a batch at a time.

    Args:
        items: the split's :class:`edgecnn.detect.data.DetItem` s.
        size: input side; ``channels``: 3 or 1.
        targets: ``(boxes, classes) -> target array`` of the head.
        training: shuffle (a new seeded order each epoch) and augment; else the split in order, as it is.
        flips: ``"none"``, ``"horizontal"``, ``"vertical"`` or ``"both"`` (the recipe's ``data.augment.flip``).
        mosaic: share of training samples made of four images (a 2x2 mosaic).
    """

    def __init__(self, items, size: int, channels: int, targets, batch_size: int, *, training: bool = False,
                 flips: str = "none", mosaic: float = 0.0, seed: int = 0):
        self.items, self.size, self.channels, self.targets = list(items), size, channels, targets
        self.batch_size, self.training, self.flips, self.mosaic = batch_size, training, flips, mosaic
        self.seed, self.epoch, self.dropped = seed, 0, 0

    def __len__(self) -> int:
        return max(1, math.ceil(len(self.items) / self.batch_size))

    def _sample(self, i: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from edgecnn.detect.data import load_item

        return load_item(self.items[i], self.size, self.channels)

    def _augmented(self, i: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from edgecnn.detect.augment import augment, mosaic

        if self.mosaic and rng.random() < self.mosaic and len(self.items) >= 4:
            picks = [i, *rng.choice(len(self.items), 3, replace=False)]
            image, boxes, classes = mosaic([self._sample(j, rng) for j in picks], self.size, rng)
        else:
            image, boxes, classes = self._sample(i, rng)
        image, boxes, classes, dropped = augment(image, boxes, classes, rng,
                                                hflip="horizontal" in self.flips or self.flips == "both",
                                                vflip="vertical" in self.flips or self.flips == "both")
        self.dropped += dropped
        return image, boxes, classes

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.items)) if self.training else np.arange(len(self.items))
        self.epoch += 1
        for start in range(0, len(order), self.batch_size):
            samples = [self._augmented(i, rng) if self.training else self._sample(i, rng)
                       for i in order[start:start + self.batch_size]]
            yield (np.stack([s[0] for s in samples]).astype(np.float32),
                   np.stack([self.targets(s[1], s[2]) for s in samples]).astype(np.float32))

    def dataset(self, target_shape: tuple[int, ...]):
        """The batches as a tf.data.Dataset (one pass per epoch)."""
        spec = (tf.TensorSpec((None, self.size, self.size, self.channels), tf.float32),
                tf.TensorSpec((None, *target_shape), tf.float32))
        return tf.data.Dataset.from_generator(lambda: iter(self), output_signature=spec).prefetch(2)


# ------------------------------------------------------------------------------------------- fit
def build_detector(model_cfg: Any, num_classes: int, size: int):
    """The recipe's registered detection builder with ``num_classes`` object classes at ``size`` px."""
    from edgecnn.arch import create_task_model

    return create_task_model(model_cfg.name, "detect", model_cfg.args, num_classes=num_classes, input_size=size)


def _set_trainable(model, head_only: bool, train_batchnorm: bool = False) -> None:
    for layer in model.layers:
        head = layer.name.startswith(HEAD_PREFIX)
        layer.trainable = head or (not head_only and (train_batchnorm or
                                                      not isinstance(layer, keras.layers.BatchNormalization)))


def train_detector(recipe: Any, data: Any, size: int, run_dir: Path) -> dict:
    """Build and train the recipe's detector on ``data`` (a :class:`edgecnn.detect.data.DetectionSet`): the
    head alone over the frozen encoder (``train.head``), then everything but BatchNorm at a lower rate
    (``train.finetune``: ``epochs`` and ``lr_factor``). Writes model.keras and history.json; a finished phase's
    weights are kept in ``checkpoints/`` so an interrupted run resumes after it."""
    started = time.perf_counter()
    t, d, cfg = recipe.train, recipe.data, recipe.detect
    keras.utils.set_random_seed(t.seed)
    k = len(data.classes)
    model = with_input_channels(build_detector(recipe.model, k, size), d.channels)   # 1: grey, as classifiers
    layer = head_kind(model)
    if layer.kind == "ssd":
        anchors = ssd_anchors(size)
        targets, loss, shape = (lambda b, c: ssd_targets(b, c, anchors)), ssd_loss(k), (len(anchors), 5)
    elif layer.kind == "centroid":   # FOMO (edgecnn.detect.centroid): a class per cell, object cells weighted
        from edgecnn.detect.centroid import centroid_loss, centroid_targets

        g = centernet_grid(size, layer.stride)
        targets = lambda b, c: centroid_targets(b, c, k, size, layer.stride)  # noqa: E731
        loss, shape = centroid_loss(k), (g * g,)
    else:
        g = centernet_grid(size)
        targets, loss = (lambda b, c: centernet_targets(b, c, k, size)), centernet_loss(k)
        shape = (g * g, k + 5)
    raw_model = keras.Model(model.input, model.get_layer(f"{HEAD_PREFIX}raw").output)
    train = Batches(data.splits["train"], size, d.channels, targets, d.batch_size, training=True,
                    flips=d.augment.flip, mosaic=cfg.mosaic, seed=t.seed)
    val = Batches(data.splits["val"], size, d.channels, targets, d.batch_size)
    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    history: dict[str, Any] = {"phases": [], "head": layer.kind}
    phases = [("head", t.head.epochs, t.head.lr, True), ("finetune", t.finetune.epochs,
                                                         t.head.lr * t.finetune.lr_factor, False)]
    for name, epochs, lr, head_only in phases:
        done = ckpt / f"{name}.weights.h5"
        if not epochs:
            continue
        if done.is_file():
            raw_model.load_weights(str(done))
            history = json.loads((ckpt / f"{name}.history.json").read_text())
            log.info("train: phase %s already finished; loaded %s", name, done)
            continue
        _set_trainable(model, head_only)
        steps = len(train) * epochs
        schedule = keras.optimizers.schedules.CosineDecay(lr, max(1, steps))
        raw_model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
        t0 = time.perf_counter()
        h = raw_model.fit(without_autotune(train.dataset(shape)), validation_data=without_autotune(val.dataset(shape)),
                          epochs=epochs, verbose=0)
        history["phases"].append({"name": name, "epochs": epochs, "lr": lr, "trainable": "head" if head_only
                                  else "all but BatchNorm", "seconds": round(time.perf_counter() - t0, 1),
                                  **{key: [round(float(v), 5) for v in vals] for key, vals in h.history.items()}})
        log.info("train: phase %s, %d epochs, loss %.4f -> %.4f, val %.4f (%.0f s)", name, epochs,
                 h.history["loss"][0], h.history["loss"][-1], h.history["val_loss"][-1], time.perf_counter() - t0)
        with atomic_path(done, suffix=".weights.h5") as tmp:
            raw_model.save_weights(str(tmp))
        write_json(ckpt / f"{name}.history.json", history)
    for layer_ in model.layers:
        layer_.trainable = True
    history["augment_dropped_boxes"] = train.dropped
    with atomic_path(run_dir / "model.keras", suffix=".keras") as tmp:
        model.save(str(tmp))
    history["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(run_dir / "history.json", history)
    return history

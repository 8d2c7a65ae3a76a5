"""Knowledge distillation: a small student trained on a larger teacher's softened answers.

Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network": the student's loss is
``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels, student)``.
The teacher's soft targets say *how* wrong each other class is, which a from-scratch microcontroller
net (``dsconv`` 0.25 at 96 px) learns from much faster than from the labels alone.

The teacher is any classifier of the same classes: a Keras model file, a run directory (its
``model.keras``; its ``labels.txt`` must list the same classes in the same order) or a recipe YAML
(its run directory, trained first when it is missing).

Offline soft targets: the teacher answers once per training image, un-augmented, at its own input size
and channels (:func:`soft_targets`), and the student learns every augmented view of that image from
this answer. The augmentations are chosen to keep the class (flips, a few degrees, 10 % zoom), so the
teacher's answer holds for each view; the teacher costs one pass over the training split instead of a
forward pass per batch (at 128 px MobileNetV2 that was 3-4x the cost of training a 96 px dsconv), and
it sees its own resolution (MobileNetV2 of the default recipe: val top-1 0.97 at 128 px, 0.71 on 96 px
images upsampled). Training batches carry each image's index into the table as their label.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from edgecnn._tf import keras, tf
from edgecnn.errors import EdgecnnError

__all__ = ["Distiller", "indexed", "load_teacher", "logits_of", "resolve_teacher", "soft_loss", "teacher_logits"]


def logits_of(model):
    """A model sharing ``model``'s weights that answers its logits: the input of a final softmax, if it has
    one (every zoo classifier), else ``log(p)`` (equal to the logits up to a per-image constant, which
    softmax ignores)."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return keras.Model(model.inputs, last.input, name=f"{model.name}_logits")
    probs = model.output
    return keras.Model(model.inputs, keras.layers.Lambda(lambda p: tf.math.log(p + 1e-7))(probs),
                       name=f"{model.name}_logits")


def resolve_teacher(spec: str | os.PathLike) -> tuple[Path, Path | None]:
    """(model file, its labels.txt or None) for a teacher given as a model file or a run directory."""
    p = Path(spec)
    if p.suffix in (".yaml", ".yml"):   # the pipeline trains a recipe teacher and passes its run directory
        raise EdgecnnError(f"train.distill.teacher: {str(p)!r} is a recipe; `edgecnn run` trains it and uses its "
                           "run directory. Called directly, give the run directory or the model file.")
    if p.is_dir():
        model = p / "model.keras"
        if not model.is_file():
            raise EdgecnnError(f"train.distill.teacher: the run directory {str(p)!r} has no model.keras. "
                               "Run its recipe first (edgecnn run RECIPE), or name the recipe YAML as the "
                               "teacher to have it trained.")
        return model, (p / "labels.txt") if (p / "labels.txt").is_file() else None
    if not p.is_file():
        raise EdgecnnError(f"train.distill.teacher: {str(p)!r} does not exist. Give a Keras model file "
                           "(.keras/.h5), a run directory with model.keras, or a recipe YAML.")
    labels = p.parent / "labels.txt"
    return p, labels if labels.is_file() else None


def load_teacher(spec: str | os.PathLike, classes: list[str]):
    """The teacher model (frozen), checked against the student's classes."""
    path, labels = resolve_teacher(spec)
    try:
        teacher = keras.models.load_model(str(path), compile=False)
    except Exception as e:  # noqa: BLE001 - a file Keras cannot read: one message
        raise EdgecnnError(f"train.distill.teacher: cannot load {str(path)!r} as a Keras model ({e}).") from None
    n_out = int(teacher.output_shape[-1])
    if n_out != len(classes):
        raise EdgecnnError(f"train.distill.teacher: {str(path)!r} answers {n_out} classes; the data set has "
                           f"{len(classes)} ({', '.join(classes)}). The teacher must be a classifier of the "
                           "same classes.")
    if labels is not None:
        names = [s for s in labels.read_text().splitlines() if s.strip()]
        if names != list(classes):
            raise EdgecnnError(f"train.distill.teacher: its labels.txt lists {names}; the data set's classes "
                               f"are {list(classes)}. The teacher must answer the same classes in the same order.")
    teacher.trainable = False
    return teacher


class Distiller(keras.Model):
    """Trains ``student`` on the table ``soft`` (N, K) of teacher probabilities at temperature T plus the
    labels ``labels`` (N,), for batches whose label is the image's row in the tables (see the module doc).

    ``call`` is the student and validation batches carry true labels, so validation, early stopping and
    the restored best epoch use the student's own loss on the labels. Training logs add ``distill_loss``
    (the soft term).
    """

    def __init__(self, student, soft: np.ndarray, labels: np.ndarray, *, alpha: float, temperature: float):
        super().__init__(name="distiller")
        self.student, self.student_logits = student, logits_of(student)
        self.soft = tf.constant(soft, tf.float32)
        self.labels = tf.constant(labels, tf.int64)
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.distill_tracker = keras.metrics.Mean(name="distill_loss")

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def train_step(self, data):
        x, index, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        index = tf.reshape(tf.cast(index, tf.int64), [-1])
        y, soft_targets = tf.gather(self.labels, index), tf.gather(self.soft, index)
        with tf.GradientTape() as tape:
            logits = self.student_logits(x, training=True)
            probs = tf.nn.softmax(logits)
            hard = self.compiled_loss(y, probs, sample_weight, regularization_losses=self.student.losses)
            soft = soft_loss(soft_targets, logits, self.temperature)
            # like the compiled loss: a replica's share of the global mean
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = self.alpha * soft / replicas + (1.0 - self.alpha) * hard
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.compiled_metrics.update_state(y, probs, sample_weight)
        self.distill_tracker.update_state(soft)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        logs = super().test_step(data)
        logs.pop("distill_loss", None)   # a training figure only
        return logs

    @property
    def metrics(self):
        return [*super().metrics, self.distill_tracker]


def indexed(ds, split: str = "train"):
    """``ds`` with each ``split`` image labelled by its row (the Distiller's tables), other splits unchanged."""
    return dataclasses.replace(ds, splits={**ds.splits, split: [(p, i) for i, (p, _) in enumerate(ds.splits[split])]})


def teacher_logits(teacher, ds, split: str) -> np.ndarray:
    """The teacher's logits (N, K) for every image of a split, un-augmented, at its input size and channels."""
    from edgecnn.data.loader import make_dataset

    size = int(teacher.input_shape[1])
    as_logits = logits_of(teacher)
    out = []
    for x, _ in make_dataset(ds, split, size, 64, cache="none"):
        if x.shape[-1] != teacher.input_shape[-1]:
            x = tf.repeat(x[..., :1], int(teacher.input_shape[-1]), axis=-1)
        out.append(as_logits(x, training=False).numpy())
    return np.concatenate(out)


def soft_loss(soft_targets, student_logits, temperature: float):
    """Mean over the batch of ``T^2 * KL(soft_targets || softmax(student_logits / T))``: Hinton et al.'s soft
    term, scaled by T^2 so its gradients keep their size as T changes."""
    per_image = tf.reduce_sum(soft_targets * (tf.math.log(soft_targets + 1e-12)
                                              - tf.nn.log_softmax(student_logits / temperature)), axis=-1)
    return tf.reduce_mean(per_image) * temperature * temperature

"""Knowledge distillation: a small student trained on a larger teacher's softened answers.

Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network": the student's loss is
``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels, student)``.
The teacher's soft targets say *how* wrong each other class is, which a from-scratch microcontroller
net (``dsconv`` 0.25 at 96 px) learns from much faster than from the labels alone.

The teacher is any classifier of the same classes: a Keras model file, a run directory (its
``model.keras``; its ``labels.txt`` must list the same classes in the same order) or a recipe YAML
(its run directory, trained first when it is missing). It sees the student's own batches (augmented,
at the student's input size), resized to its input size and given three channels when the student's
images are grey: it answers for exactly what the student sees.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from edgecnn._tf import keras, tf
from edgecnn.errors import EdgecnnError

__all__ = ["Distiller", "load_teacher", "logits_of", "resolve_teacher", "soft_loss", "teacher_accuracy",
           "teacher_input"]

log = logging.getLogger("edgecnn.train")


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
    """(model file, its labels.txt or None) for a teacher given as a file, a run directory or a recipe."""
    p = Path(spec)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise EdgecnnError(f"train.distill.teacher: no recipe at {str(p)!r}. Give a recipe YAML, a run "
                               "directory with model.keras, or a Keras model file.")
        from edgecnn._io import write_text
        from edgecnn.config import dump_recipe, load_recipe
        from edgecnn.pipeline import Run

        recipe = load_recipe(p)
        recipe.data.path = str(Path(recipe.data.path).resolve())
        run = Run(recipe, Path("export") / recipe.name)   # where `edgecnn run` of that recipe puts it
        write_text(run.dir / "recipe.yaml", dump_recipe(recipe))
        log.info("distill: the teacher is %s's model in %s (trained now unless current)", p, run.dir)
        run.train()
        p = run.dir
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
    """Trains ``student`` on a frozen ``teacher``'s soft targets plus the labels (see the module doc).

    ``call`` is the student, so validation, early stopping and the restored best epoch use the student's
    own loss on the labels. The training logs add ``distill_loss`` (the soft term).
    """

    def __init__(self, student, teacher, *, alpha: float, temperature: float):
        super().__init__(name="distiller")
        self.student, self.teacher = student, teacher
        self.student_logits, self.teacher_logits = logits_of(student), logits_of(teacher)
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.distill_tracker = keras.metrics.Mean(name="distill_loss")

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        t = self.temperature
        soft_targets = tf.nn.softmax(self.teacher_logits(teacher_input(self.teacher, x), training=False) / t)
        soft_targets = tf.stop_gradient(soft_targets)
        with tf.GradientTape() as tape:
            logits = self.student_logits(x, training=True)
            probs = tf.nn.softmax(logits)
            hard = self.compiled_loss(y, probs, sample_weight, regularization_losses=self.student.losses)
            soft = soft_loss(soft_targets, logits, t)
            # like the compiled loss: a replica's share of the global mean
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = self.alpha * soft / replicas + (1.0 - self.alpha) * hard
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.compiled_metrics.update_state(y, probs, sample_weight)
        self.distill_tracker.update_state(soft)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [*super().metrics, self.distill_tracker]


def soft_loss(soft_targets, student_logits, temperature: float):
    """Mean over the batch of ``T^2 * KL(soft_targets || softmax(student_logits / T))``: Hinton et al.'s soft
    term, scaled by T^2 so its gradients keep their size as T changes."""
    per_image = tf.reduce_sum(soft_targets * (tf.math.log(soft_targets + 1e-12)
                                              - tf.nn.log_softmax(student_logits / temperature)), axis=-1)
    return tf.reduce_mean(per_image) * temperature * temperature


def teacher_input(teacher, x):
    """The student's batch ``x`` as the teacher takes it: resized to its input, grey tiled to RGB when needed."""
    size = tuple(int(d) for d in teacher.input_shape[1:3])
    if tuple(x.shape[1:3]) != size:
        x = tf.image.resize(x, size, method="bilinear")
    channels = int(teacher.input_shape[-1])
    if x.shape[-1] != channels:
        x = tf.repeat(x[..., :1], channels, axis=-1)
    return x


def teacher_accuracy(teacher, data) -> float:
    """The teacher's top-1 on (image, label) batches at the student's input size: what it answers in training."""
    correct = total = 0
    for x, y, *_ in data:
        p = np.argmax(teacher(teacher_input(teacher, x), training=False).numpy(), axis=-1)
        correct += int((p == np.asarray(y)).sum())
        total += len(p)
    return correct / max(total, 1)

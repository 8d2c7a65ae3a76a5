"""Knowledge distillation (``train.distill``): the soft term, the student-only updates, the teacher checks."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgecnn._tf import keras, tf
from edgecnn.config import recipe_from_dict
from edgecnn.errors import EdgecnnError

TINY_RECIPE = Path(__file__).resolve().parent / "recipes" / "tiny.yaml"


def _recipe(data: Path, **distill):
    raw = yaml.safe_load(TINY_RECIPE.read_text())
    raw["data"]["path"] = str(data)
    raw["train"] = {"head": {"epochs": 1, "lr": 0.003}, "distill": distill}
    return recipe_from_dict(raw)


def test_soft_loss_is_t2_times_the_kl_divergence():
    from edgecnn.distill import soft_loss

    rng = np.random.default_rng(0)
    t_logits, s_logits, temp = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3, 4.0

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(t_logits / temp), softmax(s_logits / temp)
    expected = np.mean(np.sum(p * np.log(p / q), -1)) * temp ** 2
    got = float(soft_loss(tf.constant(p, tf.float32), tf.constant(s_logits, tf.float32), temp))
    assert got == pytest.approx(expected, rel=1e-4)
    assert float(soft_loss(tf.constant(p, tf.float32), tf.constant(t_logits, tf.float32), temp)) == \
        pytest.approx(0.0, abs=1e-5)


def test_logits_of_a_zoo_model_are_its_pre_softmax_outputs():
    from edgecnn.arch import create_model
    from edgecnn.distill import logits_of

    model = create_model("dsconv", num_classes=3, input_size=32, alpha=0.25, depth=2)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    logits = logits_of(model)(x).numpy()
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_distiller_follows_the_soft_targets_of_each_row():
    """alpha = 1: the student learns the table row named by each batch label, not the labels' classes."""
    from edgecnn.arch import create_model
    from edgecnn.distill import Distiller

    keras.utils.set_random_seed(0)
    student = create_model("dsconv", num_classes=3, input_size=32, alpha=0.25, depth=2, dropout=0.0)
    x = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    rows = np.array([5, 4, 3, 2, 1, 0])                 # image k is row rows[k] of the tables
    wanted = np.array([2, 0, 1, 2, 0, 1])               # the teacher's class for each row
    soft = np.full((6, 3), 0.02, np.float32)
    soft[np.arange(6), wanted] = 0.96
    labels = (wanted + 1) % 3                           # the hard labels disagree with the teacher everywhere
    model = Distiller(student, soft, labels, alpha=1.0, temperature=1.0)
    model.compile(keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    hist = model.fit(x, rows, batch_size=6, epochs=80, verbose=0)
    assert hist.history["distill_loss"][-1] < hist.history["distill_loss"][0]
    np.testing.assert_array_equal(np.argmax(student.predict(x, verbose=0), -1), wanted[rows])


def test_student_learns_from_a_run_directory_teacher(tiny_defects, tiny_run, tmp_path):
    """The tiny run's model teaches a fresh student end to end: the teacher's figures are recorded, the
    saved model is the plain student."""
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import load_arrays
    from edgecnn.train import train

    ds = discover(tiny_defects, min_images_per_class=5)
    recipe = _recipe(tiny_defects, teacher=str(tiny_run), alpha=0.7, temperature=3.0)
    result = train(recipe, ds, tmp_path / "run")
    info = result.history["distill"]
    assert info["alpha"] == 0.7 and info["temperature"] == 3.0 and info["teacher"] == str(tiny_run)
    teacher = keras.models.load_model(str(tiny_run / "model.keras"), compile=False)
    images, labels = load_arrays(ds, "val", 32)
    expected = float(np.mean(np.argmax(teacher.predict(images, verbose=0), -1) == labels))
    assert info["teacher_val_accuracy"] == pytest.approx(expected) and info["teacher_input_size"] == 32
    phase = result.history["phases"][0]
    assert phase["distill_loss"][0] > 0 and np.isfinite(phase["val_loss"][0])
    assert "val_distill_loss" not in phase
    saved = keras.models.load_model(str(tmp_path / "run" / "model.keras"), compile=False)
    assert saved.name == "dsconv" and saved.output_shape[-1] == len(ds.classes)  # the student, not the wrapper


def test_teacher_of_other_classes_is_refused(tiny_defects, tiny_run, tmp_path):
    from edgecnn.distill import load_teacher

    with pytest.raises(EdgecnnError, match="answers 4 classes; the data set has 3"):
        load_teacher(tiny_run / "model.keras", ["a", "b", "c"])
    other = tmp_path / "teacher"
    shutil.copytree(tiny_run, other)
    names = (other / "labels.txt").read_text().split()
    (other / "labels.txt").write_text("\n".join(reversed(names)) + "\n")
    with pytest.raises(EdgecnnError, match="same classes in the same order"):
        load_teacher(other, names)
    with pytest.raises(EdgecnnError, match="does not exist"):
        load_teacher(tmp_path / "nothing.keras", names)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgecnnError, match="has no model.keras"):
        load_teacher(tmp_path / "empty", names)
    from edgecnn.pipeline import teacher_run

    with pytest.raises(EdgecnnError, match="no recipe at"):
        teacher_run(str(tmp_path / "missing.yaml"))
    assert teacher_run(str(other)) == str(other)   # a run directory is used as it is


def test_teacher_file_is_part_of_the_training_fingerprint(tiny_defects, tmp_path):
    """A retrained teacher (another file at the same path) retrains the student."""
    from edgecnn.pipeline import Run

    teacher = tmp_path / "teacher.keras"
    fps = []
    for content in (b"one", b"two"):
        teacher.write_bytes(content)
        fps.append(Run(_recipe(tiny_defects, teacher=str(teacher)), tmp_path / "run").train_fingerprint())
    fps.append(Run(_recipe(tiny_defects), tmp_path / "run").train_fingerprint())
    assert len(set(fps)) == 3


@pytest.mark.parametrize("mode, best_epoch", [("max", 1), ("min", 2)])
def test_restore_best_follows_the_monitored_figure(mode, best_epoch):
    """A distilled student is restored at its best val top-1 (max), a plain one at its lowest val loss (min)."""
    from edgecnn.train import RestoreBest

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    cb = RestoreBest("val_x", mode)
    cb.set_model(model)
    cb.on_train_begin()
    weights = []
    for epoch, value in enumerate((0.5, 0.9, 0.1)):
        model.set_weights([np.full((2, 1), epoch, np.float32), np.zeros(1, np.float32)])
        weights.append(model.get_weights()[0].copy())
        cb.on_epoch_end(epoch, {"val_x": value})
    cb.on_train_end()
    np.testing.assert_array_equal(model.get_weights()[0], weights[best_epoch])

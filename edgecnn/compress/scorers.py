"""What the int8 chooser holds a candidate to: a scorer, supplied by the task.

The chooser (:func:`edgecnn.compress.chooser.choose_with`) builds candidate artifacts and knows nothing of
what they compute; the scorer does. It computes the float model's answers on the validation images once
(:meth:`Scorer.prepare`), then scores each candidate's runner: the task's metric, its drop below the float
model's and the agreement with the float model's answers (:class:`Score`), and says whether that holds the
task's budget (:meth:`Scorer.holds`).

=========  ==============================  ==================================  ===============================
task       metric (drop = float - int8)    agreement with the float model      scorer
=========  ==============================  ==================================  ===============================
classify   top-1 on labelled val           share of images with the same top-1  :class:`TopOneScorer` (here)
anomaly    image AUROC on val              Spearman rank correlation of scores  ``edgecnn.anomaly.metrics.AurocScorer``
segment    mIoU on val pairs               share of pixels with the same class  ``edgecnn.segment.metrics.MiouScorer``
=========  ==============================  ==================================  ===============================

A scorer also says what its task offers the routes: ``has_labels`` (class labels and a classifier loss: QAT
fine-tuning and NNCF's top-1 validation need them) and ``head_layers`` (name fragments of the layers a
"float head" route keeps float). A route that needs what the task lacks is skipped with the reason.

    scorer = TopOneScorer(val_x, val_y, max_drop=0.005, min_agreement=0.985)
    result = choose_with(scorer, model, calib, "run/compress")
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecnn.data.decoded_split import Images, predict_in_batches
from edgecnn.errors import EdgecnnError

__all__ = ["Score", "Scorer", "TopOneScorer", "EPS"]

EPS = 1e-9  # budgets hold up to float rounding


@dataclass(frozen=True)
class Score:
    """One artifact's figures on the validation images.

    Attributes:
        metric: the task's figure (top-1, image AUROC, mIoU).
        drop: the reference's metric minus ``metric`` (> 0: the artifact is worse).
        agreement: how closely its answers follow the float model's (1.0 = the same).
        answers: its per-image answers (top-1 classes, scores, masks), for callers that keep them.
    """

    metric: float
    drop: float
    agreement: float
    answers: Any = None


class Scorer(abc.ABC):
    """The task's half of the int8 choice (see the module). Subclasses set the class attributes and
    implement :meth:`_reference` and :meth:`score`; the budget is ``max_drop`` and ``min_agreement``.

    Attributes:
        task: the task's registered name.
        metric_name, agreement_name: how the figures read in reasons and records ("top-1", "agreement").
        has_labels: the task has class labels and a classifier loss (QAT, NNCF).
        head_layers: name fragments of the layers a float-head route keeps float (empty: no such route applies).
        fixes: what a user can change when no route holds (the end of the chooser's reason).
        float_metric: the float model's metric on the validation images (after :meth:`prepare`).
        reference: what the drop is measured from (``float_metric`` unless given, e.g. an unpruned model's).
    """

    task: str = ""
    metric_name: str = "metric"
    agreement_name: str = "agreement"
    has_labels: bool = False
    head_layers: tuple[str, ...] = ()
    fixes: str = "raise the budget, add calibration images, or keep the float model for this target"

    def __init__(self, images: Images, *, max_drop: float, min_agreement: float | None = None,
                 reference: float | None = None):
        if not isinstance(max_drop, (int, float)) or not 0.0 <= max_drop <= 1.0:
            raise EdgecnnError(f"{type(self).__name__}: max_drop must be in [0, 1] (a fraction of the "
                               f"{self.metric_name}); received max_drop={max_drop!r}.")
        if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
            raise EdgecnnError(f"{type(self).__name__}: min_agreement must be in [0, 1]; received "
                               f"min_agreement={min_agreement!r}.")
        if getattr(images, "ndim", 4) != 4 or len(images) == 0:
            raise EdgecnnError(f"{type(self).__name__}: validation images must be (N, H, W, C) with N > 0; "
                               f"received shape {getattr(images, 'shape', None)}.")
        self.images = images
        self.max_drop, self.min_agreement = float(max_drop), min_agreement
        self.float_metric: float | None = None
        self.reference: float | None = None if reference is None else float(reference)

    # -- what a subclass supplies ---------------------------------------------------------------
    @abc.abstractmethod
    def _reference(self, float_model) -> float:
        """Compute and keep the float model's answers; return its metric."""

    @abc.abstractmethod
    def score(self, runner) -> Score:
        """The figures of ``runner`` (a :class:`edgecnn.runtime.Runner`) against the float model's answers."""

    @property
    def resolution(self) -> float:
        """The metric's smallest step on these images (one image of top-1; one pair of AUROC)."""
        return 1.0 / len(self.images)

    @property
    def agreement_images(self) -> int:
        """How many images the agreement was measured on."""
        return len(self.images)

    # -- shared ---------------------------------------------------------------------------------
    @property
    def prepared(self) -> bool:
        return self.float_metric is not None

    def prepare(self, float_model: Callable[[], Any]) -> None:
        """The float model's answers, once: ``float_model()`` gives something called like a runner
        (``__call__`` for the primary output, ``predict_outputs`` for every output); not called when
        the answers are already known."""
        if not self.prepared:
            self.float_metric = float(self._reference(float_model()))
        if self.reference is None:
            self.reference = self.float_metric

    def holds(self, score: Score) -> bool:
        """Whether ``score`` (a :class:`Score`, or a candidate with ``drop`` and ``agreement``) is within the
        budget: drop <= max_drop and agreement >= min_agreement."""
        return score.drop <= self.max_drop + EPS and (
            self.min_agreement is None or score.agreement >= self.min_agreement - EPS)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def probe(self) -> np.ndarray:
        """The image latency is timed on."""
        return np.asarray(self.images[0], np.float32)

    def budget_text(self) -> str:
        """``top-1 drop <= 0.0050 and agreement >= 0.9850`` (the agreement part only when there is one)."""
        return f"{self.metric_name} drop <= {self.max_drop:.4f}" + (
            f" and {self.agreement_name} >= {self.min_agreement:.4f}" if self.min_agreement is not None else "")

    def to_json(self) -> dict:
        return {"task": self.task, "metric": self.metric_name, "agreement": self.agreement_name,
                "max_drop": self.max_drop, "min_agreement": self.min_agreement, "float_metric": self.float_metric,
                "reference": self.reference, "images": len(self.images), "agreement_images": self.agreement_images}


class TopOneScorer(Scorer):
    """classify: top-1 on labelled val; agreement = share of images whose top-1 equals the float model's, over
    val and (when given) further unlabelled images, so that a small val split cannot pass a candidate on a
    handful of images.

    Args:
        images: (N, H, W, 3) val images 0-255, or a :class:`edgecnn.data.decoded_split.DecodedSplit`.
        labels: (N,) integer labels.
        max_drop, min_agreement: the budget (``compress.max_accuracy_drop``, ``compress.min_agreement``).
        reference: the top-1 the drop is measured from (default: the float model's own on val).
        ref_pred: the float model's val top-1, when already computed (the compress stage shares it); None with
            ``prepare`` never called: the runner scored is its own reference (agreement 1, drop from its top-1).
        extra: (images, the float model's top-1 on them): further agreement images, no labels needed.
    """

    task = "classify"
    metric_name = "top-1"
    agreement_name = "agreement"
    has_labels = True
    fixes = "raise max_accuracy_drop, give train= for QAT, add calibration images, or keep the float model for " \
            "this target"

    def __init__(self, images: Images, labels, *, max_drop: float, min_agreement: float | None = None,
                 reference: float | None = None, ref_pred: np.ndarray | None = None,
                 extra: tuple[np.ndarray, np.ndarray] | None = None):
        super().__init__(images, max_drop=max_drop, min_agreement=min_agreement, reference=reference)
        self.labels = np.asarray(labels).astype(np.int64).ravel()
        if len(self.labels) != len(images):
            raise EdgecnnError(f"validation images must be (N, H, W, 3) with N labels, N > 0; received images "
                               f"{images.shape} and {len(self.labels)} labels.")
        self.ref_pred, self.extra = ref_pred, extra
        if ref_pred is not None:
            self.float_metric = float((np.asarray(ref_pred) == self.labels).mean())

    @property
    def val(self) -> tuple[Images, np.ndarray]:
        """(images, labels): what QAT validates its fine-tuning on and NNCF its accuracy control."""
        return self.images, self.labels

    @property
    def agreement_images(self) -> int:
        return len(self.labels) + (len(self.extra[1]) if self.extra is not None else 0)

    def _reference(self, float_model) -> float:
        self.ref_pred = predict_in_batches(float_model, self.images).argmax(1)
        return float((self.ref_pred == self.labels).mean())

    def score(self, runner) -> Score:
        pred = predict_in_batches(runner, self.images).argmax(1)
        accuracy = float((pred == self.labels).mean())
        if self.ref_pred is None:   # a float reference measured against itself
            return Score(accuracy, float((accuracy if self.reference is None else self.reference) - accuracy), 1.0,
                         pred)
        same = [pred == self.ref_pred]
        if self.extra is not None:
            same.append(predict_in_batches(runner, self.extra[0]).argmax(1) == self.extra[1])
        return Score(accuracy, float(self.reference - accuracy), float(np.concatenate(same).mean()), pred)

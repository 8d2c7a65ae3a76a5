"""The accuracy-aware chooser: the cheapest int8 artifact whose metric drop fits the task's budget.

One chooser for every task: the task supplies a scorer (:mod:`edgecnn.compress.scorers`: top-1 and top-1
agreement for classify, image AUROC and score rank correlation for anomaly, mIoU and pixel agreement for
segment) with the budget it is held to; :func:`choose` is the classifier's entry (labelled val arrays),
:func:`choose_with` the engine every task calls. Below, "top-1" reads as the task's metric.

Routes are tried in tiers, cheapest first; after each tier, if any candidate's drop (float top-1
minus candidate top-1 on the validation split) is within ``max_accuracy_drop``, the search stops
and the fastest (or smallest) of those is chosen. Otherwise it escalates:

1. ``ptq``          TFLite full-int8 (per-channel weights) and ONNX QDQ MinMax per-tensor
2. ``calibration``  ONNX per-channel MinMax, Percentile, Entropy
3. ``qat``          a few epochs of quantisation-aware training, then TFLite int8 (needs ``train``)
4. ``mixed``        keep the most sensitive layers float: TFLite via QuantizationDebugger,
                    ONNX via qdq_loss_debug on the best calibration so far

When every route has been tried and none fits, ``result.chosen`` is None and ``result.reason``
says so with the best drop reached. Every candidate is reported: route, artifact, accuracy, drop,
size and latency p50/p95 at ``threads`` threads (the report draws the Pareto front from these).

    result = choose(model, val_x, val_y, calib, "export/run/compress", ChooseOptions(max_accuracy_drop=0.005))
    result.chosen.artifact if result.chosen else result.reason
    write_json("compress.json", result.to_json())

A route declares what it needs beyond a float model (``needs_labels``: class labels and a classifier loss;
``needs_head``: the task's head layers, kept float); a task whose scorer lacks it skips the route with the
reason under ``skipped``. A route that raises is recorded as that candidate's ``error`` (and logged with
its traceback when the exception is not an :class:`EdgecnnError`); the search goes on without it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import artifact_bytes, copy_artifact, remove_artifact_path, write_bytes
from edgecnn.compress.scorers import EPS, Scorer, TopOneScorer
from edgecnn.data.decoded_split import DecodedSplit, Images, predict_in_batches
from edgecnn.errors import EdgecnnError, did_you_mean
from edgecnn.quantize.calibration import check_calibration

log = logging.getLogger("edgecnn.compress")
TIERS = ("ptq", "calibration", "qat", "mixed")
PREFER = ("latency", "size")
DEFAULT_MIN_AGREEMENT = 0.985  # the pipeline's default: at most 1.5 % of val images change their top-1 class
# "Slower than float": p50 above the float twin's by more than the resolution of a timing interleaved with the twin
# (:func:`_slower_than_float`); a tie is no evidence either way.
SPEED_RESOLUTION = 0.02


@dataclass
class Candidate:
    """One artifact the chooser built and measured (or the reason it could not). ``accuracy`` is the task's
    metric (top-1, image AUROC, mIoU), ``drop`` the reference's minus it, ``agreement`` the task's agreement
    with the float model (see :mod:`edgecnn.compress.scorers`)."""

    route: str
    tier: str
    runtime: str
    artifact: Path | None = None
    accuracy: float | None = None
    drop: float | None = None
    agreement: float | None = None
    size_bytes: int | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    within_budget: bool = False
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    float_heavy_ops: int | None = None  # Conv/MatMul/Gemm onnxruntime still runs in float (ONNX artifacts)
    float_p50_ms: float | None = None   # its float twin in the same runtime, same threads (prefer latency)
    slower_than_float: bool = False     # within the accuracy budget but slower than float: no pick

    @property
    def speedup(self) -> float | None:
        """Float p50 over int8 p50 in the same runtime (> 1: the int8 file is faster)."""
        if not self.float_p50_ms or not self.latency_p50_ms:
            return None
        return self.float_p50_ms / self.latency_p50_ms

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("route", "tier", "runtime", "accuracy", "drop", "agreement", "size_bytes",
                                            "latency_p50_ms", "latency_p95_ms", "float_p50_ms", "speedup",
                                            "slower_than_float", "within_budget",
                                            "seconds", "float_heavy_ops", "notes", "error")}
        d["artifact"] = str(self.artifact) if self.artifact else None
        return d


@dataclass
class ChooseResult:
    """What :func:`choose` found: the chosen candidate (or None and why) and every candidate."""

    chosen: Candidate | None
    reason: str
    max_accuracy_drop: float
    float_accuracy: float
    reference_accuracy: float
    candidates: list[Candidate]
    skipped: dict[str, str]
    threads: int
    val_images: int = 0
    agreement_images: int = 0   # val plus the further unlabelled images the agreement was measured on
    metric: str = "top-1"       # what accuracy/drop/agreement are (the scorer's names)
    agreement_metric: str = "agreement"
    resolution: float | None = None   # the metric's step on val (default: one val image)

    @property
    def ok(self) -> bool:
        return self.chosen is not None

    def to_json(self) -> dict:
        return {"chosen": self.chosen.route if self.chosen else None,
                "artifact": str(self.chosen.artifact) if self.chosen and self.chosen.artifact else None,
                "reason": self.reason, "max_accuracy_drop": self.max_accuracy_drop,
                "float_accuracy": self.float_accuracy, "reference_accuracy": self.reference_accuracy,
                "latency_threads": self.threads, "val_images": self.val_images,
                "agreement_images": self.agreement_images or self.val_images,
                "resolution": self.resolution if self.resolution is not None else
                1.0 / self.val_images if self.val_images else None,
                "metric": self.metric, "agreement_metric": self.agreement_metric,
                "candidates": [c.to_json() for c in self.candidates],
                "skipped": dict(self.skipped)}


@dataclass(frozen=True)
class ChooseOptions:
    """Everything the chooser can be told; the recipe's ``compress:`` section builds one
    (:meth:`edgecnn.config.CompressConfig.choose_options`) and takes its defaults from here.

    Attributes:
        max_accuracy_drop: allowed top-1 drop vs the reference, in [0, 1] (0.005 = half a point).
        min_agreement: also require this top-1 agreement with the float model on val (None: drop only).
        routes: route names to consider (None: every registered route, see :func:`list_routes`).
        runtimes: only routes whose artifact runs in these runtimes (None: all).
        prefer: ``'latency'``: a candidate slower than its float twin in its runtime (p50 at ``threads``) is
            not within budget, and the fastest fit wins; ``'size'``: size alone (the target's CPU is not this
            one), the smallest fit wins.
        exhaustive: try every route instead of stopping at the first that fits.
        sensitive_top_k: how many layers the mixed routes keep float.
        qat_scheme: ``'default'``, ``'pqat'`` (the model is pruned) or ``'cqat'`` (clustered).
        qat_epochs, qat_lr: QAT fine-tuning, cosine-decayed from ``qat_lr``.
        qat_distill: fit the float model's probabilities instead of the labels (self-distillation).
        threads, warmup, runs: the latency measurement of every candidate; ``runs=0`` skips it.
        slow_route_seconds: the time limit of a slow route's search (QAT's fine-tuning stops at the first batch
            past it; the mixed routes start no further round after it); NNCF's accuracy control cannot be
            stopped from outside and is not bounded.
        target_cpu: the CPU the ONNX int8 files are quantised for (:data:`edgecnn.quantize.TARGET_CPUS`:
            ``host``, ``arm64``, ``x86-avx2``, ``x86-vnni``); NNCF's route picks its own types.
    """

    max_accuracy_drop: float = 0.005
    min_agreement: float | None = None
    routes: tuple[str, ...] | None = None
    runtimes: tuple[str, ...] | None = None
    prefer: str = "latency"
    exhaustive: bool = False
    sensitive_top_k: int = 3
    qat_scheme: str = "default"
    qat_epochs: int = 2
    qat_lr: float = 1e-4
    qat_distill: bool = True
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    slow_route_seconds: float = 300.0
    target_cpu: str = "host"

    def replace(self, **changes: Any) -> ChooseOptions:
        """A copy with ``changes``; an unknown name is a TypeError that lists the accepted ones."""
        known = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise TypeError(f"unknown chooser option(s) {unknown}.{did_you_mean(unknown[0], known)} "
                            f"Accepted: {', '.join(known)}.")
        for key in ("routes", "runtimes"):
            if changes.get(key) is not None:
                changes[key] = tuple(changes[key])
        return dataclasses.replace(self, **changes)


@dataclass
class ChooseContext:
    """What a route function may use; routes cache shared work (the float ONNX, QAT model) in ``cache``.

    ``model`` is None when only a float ONNX is given (:func:`choose_onnx`); ``scorer`` is the task's
    (:mod:`edgecnn.compress.scorers`): it holds the validation images, the float model's answers on them and
    the budget. ``val`` is the classifier's (images, labels), None for a task without class labels.
    """

    model: Any
    calibration: np.ndarray
    workdir: Path
    options: ChooseOptions = ChooseOptions()
    train: Any = None
    val: tuple[Images, np.ndarray] | None = None
    float_onnx: Path | None = None
    opset: int = 17
    cache: dict[str, Any] = field(default_factory=dict)
    done: list[Candidate] = field(default_factory=list)
    scorer: Scorer | None = None

    def fits(self, path: Path, runtime: str = "onnxruntime") -> tuple[float, float, bool]:
        """(drop, agreement, within budget) of an artifact on the val split, without timing it."""
        from edgecnn.runtime import load_runner

        runner = load_runner(path, threads=0, runtime=runtime)
        try:
            s = self.scorer.score(runner)
        finally:
            runner.close()
        return s.drop, s.agreement, self.scorer.holds(s)

    def float_reference(self):
        """The float model called like a runner (``__call__``: its first output; ``predict_outputs``: all):
        the Keras model when given, else the float ONNX in onnxruntime."""
        if self.model is not None:
            return _KerasOutputs(self.model)
        from edgecnn.runtime import load_runner

        return load_runner(self.onnx_path(), threads=0, runtime="onnxruntime")

    def onnx_path(self) -> Path:
        """The float ONNX: the one given, else ``model`` exported into the workdir once per ``cache``.

        A ``model.onnx`` an earlier run left there is not reused: the model (or the exporter) may have
        changed since, and its int8 candidates would then quantise the old one.
        """
        if self.float_onnx is not None and Path(self.float_onnx).is_file():
            return Path(self.float_onnx)
        from edgecnn.export import get_format

        path = self.workdir / get_format("onnx").filename   # the export's name: export copies it (float_twins)
        if self.cache.get("float_onnx_of") is not self.model or not path.is_file():
            from edgecnn.quantize import keras_to_onnx

            keras_to_onnx(self.model, path, opset=self.opset)
            self.cache["float_onnx_of"] = self.model
        self.float_onnx = path
        return path


@dataclass(frozen=True)
class Route:
    name: str
    tier: str
    runtime: str
    filename: str
    fn: Callable[[ChooseContext, Path], dict | None]
    description: str = ""
    needs_model: bool = True  # False: runs from a float ONNX alone (choose_onnx)
    needs_labels: bool = False  # class labels and a classifier loss (QAT fine-tuning, NNCF's top-1 control)
    needs_head: bool = False    # the task's head layers (scorer.head_layers), which it keeps float

    def not_for(self, model, scorer: Scorer) -> str | None:
        """Why this route does not apply to ``scorer``'s task or to a missing Keras model (None: it applies)."""
        if self.needs_model and model is None:
            return "needs the Keras model; only a float ONNX was given"
        if self.needs_labels and not scorer.has_labels:
            return (f"needs class labels and a classifier loss; task {scorer.task!r} has none (its int8 choice "
                    f"is held to {scorer.metric_name})")
        if self.needs_head and not scorer.head_layers:
            return f"keeps the task's head float; task {scorer.task!r} names no head layers"
        return None


_ROUTES: dict[str, Route] = {}


def register_route(name: str, *, tier: str, runtime: str, filename: str, description: str = "",
                   needs_model: bool = True, needs_labels: bool = False, needs_head: bool = False):
    """Register ``fn(ctx, path) -> notes | None`` that writes one candidate artifact at ``path``.

    ``needs_model=False`` marks a route that needs only ``ctx.onnx_path()`` (no Keras model), so
    :func:`choose_onnx` can run it on an imported ONNX file. ``needs_labels`` marks a route that needs
    class labels and a classifier loss (QAT, NNCF); ``needs_head`` one that keeps the task's head layers
    (``ctx.scorer.head_layers``) float. A task whose scorer lacks either skips the route with the reason.
    """
    from edgecnn.runtime import runtime_names

    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}; received {tier!r}")
    if runtime not in runtime_names():
        raise ValueError(f"runtime must be one of {runtime_names()}; received {runtime!r}")

    def wrap(fn):
        _ROUTES[name] = Route(name, tier, runtime, filename, fn, description, needs_model, needs_labels, needs_head)
        return fn

    return wrap


def list_routes() -> list[Route]:
    """Every registered route in escalation order (tier order, then registration order)."""
    return sorted(_ROUTES.values(), key=lambda r: TIERS.index(r.tier))


# ------------------------------------------------------------------------------------------ routes
@register_route("tflite-int8", tier="ptq", runtime="litert", filename="model.int8.tflite",
                description="TFLite full-int8 PTQ (per-channel weights, int8 in/out)")
def _tflite_int8(ctx: ChooseContext, path: Path):
    from edgecnn.quantize import tflite_int8

    write_bytes(path, tflite_int8(ctx.model, ctx.calibration))
    return {"calibration": "minmax", "weights": "per-channel"}


@register_route("tflite-int8-percentile", tier="calibration", runtime="litert", filename="model.int8-percentile.tflite",
                description="TFLite full-int8, activation ranges narrowed to their 99.999th percentile")
def _tflite_int8_percentile(ctx: ChooseContext, path: Path):
    from edgecnn.quantize import tflite_int8

    write_bytes(path, tflite_int8(ctx.model, ctx.calibration, method="percentile"))
    return {"calibration": "percentile", "weights": "per-channel"}


def _onnx_route(method: str, per_channel: bool):
    def fn(ctx: ChooseContext, path: Path):
        from edgecnn.quantize import quantize_onnx

        quantize_onnx(ctx.onnx_path(), path, ctx.calibration, method=method, per_channel=per_channel,
                      target=ctx.options.target_cpu)
        return {"calibration": method, "weights": "per-channel" if per_channel else "per-tensor",
                "target_cpu": ctx.options.target_cpu}

    return fn


def _onnx(name: str, tier: str, filename: str, description: str, needs_model: bool = False,
          needs_labels: bool = False, needs_head: bool = False):
    return register_route(name, tier=tier, runtime="onnxruntime", filename=filename, description=description,
                          needs_model=needs_model, needs_labels=needs_labels, needs_head=needs_head)


_onnx("onnx-int8-minmax", "ptq", "model.int8-minmax.onnx",
      "ONNX QDQ int8, MinMax, per-tensor weights")(_onnx_route("minmax", False))
_onnx("onnx-int8-minmax-pc", "calibration", "model.int8-minmax-pc.onnx",
      "ONNX QDQ int8, MinMax, per-channel weights")(_onnx_route("minmax", True))
_onnx("onnx-int8-percentile", "calibration", "model.int8-percentile.onnx",
      "ONNX QDQ int8, 99.999th-percentile ranges, per-channel")(_onnx_route("percentile", True))
_onnx("onnx-int8-entropy", "calibration", "model.int8-entropy.onnx",
      "ONNX QDQ int8, entropy (KL) ranges, per-channel")(_onnx_route("entropy", True))


def _best_onnx_calibration(ctx: ChooseContext) -> tuple[str, bool, Path | None]:
    """(method, per_channel, artifact) of the ONNX PTQ candidate with the smallest drop so far (else per-channel
    min/max and no artifact)."""
    tried = [c for c in ctx.done if c.runtime == "onnxruntime" and c.drop is not None and c.artifact is not None
             and c.notes.get("calibration") and not c.notes.get("float_nodes") and c.tier in ("ptq", "calibration")]
    if not tried:
        return "minmax", True, None
    best = min(tried, key=lambda c: (c.drop, -c.agreement))
    return best.notes["calibration"], best.notes["weights"] == "per-channel", best.artifact


@_onnx("onnx-int8-ends-float", "calibration", "model.int8-ends-float.onnx",
       "ONNX QDQ int8 (best calibration so far) with the first and last Conv/MatMul float")
def _onnx_ends_float(ctx: ChooseContext, path: Path):
    from edgecnn.quantize import quantize_onnx
    from edgecnn.quantize.onnx_graph import onnx_end_nodes
    from edgecnn.quantize.onnx_qdq import preprocessed

    method, per_channel, _ = _best_onnx_calibration(ctx)
    with preprocessed(ctx.onnx_path()) as prep:  # node names as quantize_onnx sees them
        nodes = onnx_end_nodes(prep)
    quantize_onnx(ctx.onnx_path(), path, ctx.calibration, method=method, per_channel=per_channel, exclude_nodes=nodes,
                  target=ctx.options.target_cpu)
    return {"calibration": method, "weights": "per-channel" if per_channel else "per-tensor", "float_nodes": nodes}


def _qat_model(ctx: ChooseContext):
    """The QAT-fine-tuned model, trained once per compress stage (shared by the LiteRT and ONNX QAT routes)."""
    if "qat_model" in ctx.cache:
        return ctx.cache["qat_model"], ctx.cache["qat_notes"]
    from edgecnn.compress.qat import fine_tune_qat, quantize_aware, unsupported_layers

    if ctx.train is None:
        raise _Skip("no training data given (train=...); QAT needs a few epochs of fine-tuning")
    from edgecnn.compress._fit import StopAfter

    float_layers = unsupported_layers(ctx.model)
    o = ctx.options
    qat = quantize_aware(ctx.model, scheme=o.qat_scheme)
    limit = StopAfter(o.slow_route_seconds)
    history = fine_tune_qat(qat, ctx.train, _val_for_fit(ctx.val), epochs=o.qat_epochs, lr=o.qat_lr, schedule="cosine",
                            teacher=ctx.model if o.qat_distill else None, callbacks=[limit])
    notes = {"scheme": o.qat_scheme, "epochs": o.qat_epochs, "lr": o.qat_lr, "distilled": o.qat_distill,
             "float_in_qat": [n for n, _, _ in float_layers],
             "final": {k: round(v[-1], 4) for k, v in history.items()}}
    if limit.stopped_at is not None:
        notes["stopped_at_time_limit"] = {"seconds": o.slow_route_seconds, "epoch": limit.stopped_at[0],
                                          "batch": limit.stopped_at[1]}
        log.warning("chooser: QAT stopped at its %.0f s time limit (epoch %d, batch %d)", o.slow_route_seconds,
                    *limit.stopped_at)
    ctx.cache["qat_model"], ctx.cache["qat_notes"] = qat, notes
    return qat, notes


@_onnx("onnx-int8-qat", "qat", "model.qat.int8.onnx", needs_model=True, needs_labels=True,
       description="the QAT model (trained once, shared with tflite-int8-qat) as fully fused QDQ ONNX, "
                   "its learned activation ranges kept")
def _onnx_qat(ctx: ChooseContext, path: Path):
    from edgecnn.quantize.onnx_qat import qat_to_onnx_int8

    qat, notes = _qat_model(ctx)
    method, _, _ = _best_onnx_calibration(ctx)
    return {**notes, **qat_to_onnx_int8(qat, path, ctx.calibration, method=method, opset=ctx.opset,
                                              target=ctx.options.target_cpu),
            "calibration": method, "weights": "per-channel"}


@_onnx("onnx-int8-nncf", "mixed", "model.int8-nncf.onnx",
       "NNCF quantize_with_accuracy_control: int8, layers reverted to float until the val top-1 drop fits",
       needs_labels=True)
def _onnx_nncf(ctx: ChooseContext, path: Path):
    from edgecnn.quantize.onnx_nncf import quantize_onnx_accuracy_control

    images, labels = ctx.val
    # NNCF validates from a list of images: the val split is read into memory for this route only
    return quantize_onnx_accuracy_control(ctx.onnx_path(), path, ctx.calibration, np.asarray(images), labels,
                                          max_drop=ctx.scorer.max_drop)


@_onnx("onnx-int8-mixed", "mixed", "model.int8-mixed.onnx",
       "ONNX QDQ int8 (best calibration so far); the layers qdq_loss_debug ranks worst kept float, "
       "doubling their number (5 rounds at most) until the val budget holds")
def _onnx_mixed(ctx: ChooseContext, path: Path):
    from edgecnn.quantize import onnx_node_sensitivity, quantize_onnx
    from edgecnn.quantize.onnx_graph import onnx_first_layer
    from edgecnn.quantize.onnx_qdq import preprocessed

    method, per_channel, base = _best_onnx_calibration(ctx)
    if base is None:
        base = path.with_name("model.int8-base.onnx")
        quantize_onnx(ctx.onnx_path(), base, ctx.calibration, method=method, per_channel=True,
                      target=ctx.options.target_cpu)
    rows = [r for r in onnx_node_sensitivity(ctx.onnx_path(), base, ctx.calibration) if r["loss_db"] > 0]
    with preprocessed(ctx.onnx_path()) as prep:
        first = onnx_first_layer(prep)
    k, rounds, nodes = ctx.options.sensitive_top_k, [], []
    t0 = time.perf_counter()
    while True:  # greedy: the worst k layers float, then 2k, 4k, ... until the budget holds or all are float
        nodes = [name for r in rows[:k] for name in r["nodes"]]
        if set(first) & set(nodes):  # the first conv float without the normalisation before it collapses
            nodes = list(dict.fromkeys(first + nodes))
        quantize_onnx(ctx.onnx_path(), path, ctx.calibration, method=method, per_channel=per_channel,
                      exclude_nodes=nodes, target=ctx.options.target_cpu)
        drop, agree, ok = ctx.fits(path)
        rounds.append({"layers_float": min(k, len(rows)), "drop": round(drop, 4), "agreement": round(agree, 4)})
        if ok or k >= len(rows) or len(rounds) >= 5:
            break
        if time.perf_counter() - t0 > ctx.options.slow_route_seconds:
            rounds[-1]["stopped_at_time_limit"] = ctx.options.slow_route_seconds
            break
        k *= 2
    return {"calibration": method, "weights": "per-channel" if per_channel else "per-tensor", "float_nodes": nodes,
            "rounds": rounds}


def _openvino_route(method: str):
    """QDQ int8 ONNX (per-channel weights) converted to OpenVINO IR, measured in OpenVINO."""

    def fn(ctx: ChooseContext, path: Path):
        from edgecnn.export.openvino import onnx_to_openvino_ir
        from edgecnn.quantize import quantize_onnx
        from edgecnn.runtime import get_runtime

        ok, why = get_runtime("openvino").available()
        if not ok:
            raise _Skip(why)
        qdq = path.with_name(path.name + ".qdq.onnx")
        try:
            quantize_onnx(ctx.onnx_path(), qdq, ctx.calibration, method=method, per_channel=True,
                          target=ctx.options.target_cpu)
            onnx_to_openvino_ir(qdq, path)
        finally:
            remove_artifact_path(qdq)
        return {"calibration": method, "weights": "per-channel", "ir": "FakeQuantize from QDQ"}

    return fn


register_route("openvino-int8-minmax", tier="ptq", runtime="openvino", filename="model.int8-minmax.openvino",
               description="OpenVINO IR int8 from QDQ ONNX, MinMax, per-channel",
               needs_model=False)(_openvino_route("minmax"))
register_route("openvino-int8-percentile", tier="calibration", runtime="openvino",
               filename="model.int8-percentile.openvino",
               description="OpenVINO IR int8 from QDQ ONNX, 99.999th-percentile ranges",
               needs_model=False)(_openvino_route("percentile"))


@register_route("tflite-int8-qat", tier="qat", runtime="litert", filename="model.qat.int8.tflite",
                description="quantisation-aware fine-tuning, then TFLite full-int8", needs_labels=True)
def _tflite_qat(ctx: ChooseContext, path: Path):
    from edgecnn.compress.qat import to_tflite_int8

    qat, notes = _qat_model(ctx)
    write_bytes(path, to_tflite_int8(qat, ctx.calibration))
    return dict(notes)


@register_route("tflite-int8-mixed", tier="mixed", runtime="litert", filename="model.int8-mixed.tflite",
                description="TFLite int8 with the most sensitive ops float (QuantizationDebugger)")
def _tflite_mixed(ctx: ChooseContext, path: Path):
    from edgecnn.quantize import tflite_int8, tflite_sensitive_nodes

    nodes = tflite_sensitive_nodes(ctx.model, ctx.calibration, top_k=ctx.options.sensitive_top_k)
    write_bytes(path, tflite_int8(ctx.model, ctx.calibration, denylisted_nodes=nodes))
    return {"float_nodes": nodes}


def _in_head(name: str, ctx: ChooseContext) -> bool:
    return any(h in name for h in ctx.scorer.head_layers)


@register_route("tflite-int8-float-head", tier="mixed", runtime="litert", filename="model.int8-float-head.tflite",
                description="TFLite int8 backbone under a float head: the task's head layers denylisted (selective "
                            "quantisation)", needs_head=True)
def _tflite_float_head(ctx: ChooseContext, path: Path):
    from ai_edge_litert.interpreter import Interpreter

    from edgecnn.quantize import tflite_int8

    names = [t["name"] for t in Interpreter(model_path=str(_float_twin(ctx, "litert"))).get_tensor_details()]
    nodes = [n for n in names if _in_head(n, ctx)]
    if not nodes:
        raise EdgecnnError(f"tflite-int8-float-head: no tensor of the float TFLite graph is in the head layers "
                           f"{list(ctx.scorer.head_layers)}; the head was renamed or is not in this model.")
    write_bytes(path, tflite_int8(ctx.model, ctx.calibration, denylisted_nodes=nodes))
    return {"float_nodes": nodes, "head_layers": list(ctx.scorer.head_layers)}


@_onnx("onnx-int8-float-head", "mixed", "model.int8-float-head.onnx",
       "ONNX QDQ int8 (best calibration so far) with the task's head layers float", needs_head=True)
def _onnx_float_head(ctx: ChooseContext, path: Path):
    import onnx

    from edgecnn.quantize import quantize_onnx
    from edgecnn.quantize.onnx_qdq import preprocessed

    method, per_channel, _ = _best_onnx_calibration(ctx)
    with preprocessed(ctx.onnx_path()) as prep:  # node names as quantize_onnx sees them
        nodes = [n.name for n in onnx.load(str(prep)).graph.node if _in_head(n.name, ctx)]
    if not nodes:
        raise EdgecnnError(f"onnx-int8-float-head: no node of the float ONNX graph is in the head layers "
                           f"{list(ctx.scorer.head_layers)}; the head was renamed or is not in this model.")
    quantize_onnx(ctx.onnx_path(), path, ctx.calibration, method=method, per_channel=per_channel, exclude_nodes=nodes,
                  target=ctx.options.target_cpu)
    return {"calibration": method, "weights": "per-channel" if per_channel else "per-tensor", "float_nodes": nodes}


def _float_twin(ctx: ChooseContext, runtime: str) -> Path:
    """The float model as ``runtime`` runs it, written into the workdir once per compress stage."""
    if runtime == "onnxruntime":
        return ctx.onnx_path()
    if runtime == "openvino":
        from edgecnn.export.openvino import onnx_to_openvino_ir

        path = ctx.workdir / "model.float.openvino"
        if ctx.cache.get("float_ir_of") is not ctx.onnx_path() or not path.exists():
            onnx_to_openvino_ir(ctx.onnx_path(), path)
            ctx.cache["float_ir_of"] = ctx.onnx_path()
        return path
    if runtime == "litert" and ctx.model is not None:
        from edgecnn.export import get_format
        from edgecnn.quantize.converters import tflite_converter

        path = ctx.workdir / get_format("tflite-fp32").filename   # the export's name: export copies it
        if ctx.cache.get("float_tflite_of") is not ctx.model or not path.is_file():
            write_bytes(path, tflite_converter(ctx.model).convert())
            ctx.cache["float_tflite_of"] = ctx.model
        return path
    raise _Skip(f"no float twin to time in {runtime}")


def _slower_than_float(ctx: ChooseContext, c: Candidate, image: np.ndarray) -> bool:
    """Whether ``c`` runs slower than its float twin at the chooser's threads, by more than
    ``SPEED_RESOLUTION``. The verdict comes from the two timed interleaved, in rounds, so whatever comes and
    goes on the machine hits both alike. Timed apart, the tiny anomaly recipe's PTQ file once read 1.04 ms
    against its twin's 0.85, measured earlier, and was passed over; the next candidate, as large, read 0.74 in
    the same run, and so did the PTQ file in the next run. Its p50s are then those of the interleaved rounds."""
    if c.float_p50_ms is None or c.latency_p50_ms is None:
        return False
    from edgecnn.runtime import load_runner
    from edgecnn.runtime.latency import interleaved_latency

    o = ctx.options
    runners = {k: load_runner(p, threads=o.threads, runtime=c.runtime)
               for k, p in (("int8", c.artifact), ("float", _float_twin(ctx, c.runtime)))}
    try:
        lat = interleaved_latency(runners, image, rounds=5, runs=max(10, o.runs // 2), warmup=o.warmup)
    finally:
        for r in runners.values():
            r.close()
    c.latency_p50_ms, c.float_p50_ms = round(lat["int8"]["p50_ms"], 4), round(lat["float"]["p50_ms"], 4)
    c.notes["speed_timing"] = "interleaved with the float twin"
    return c.latency_p50_ms > c.float_p50_ms * (1 + SPEED_RESOLUTION)


def _float_p50(ctx: ChooseContext, runtime: str, image: np.ndarray) -> float | None:
    """p50 latency (ms) of the float twin in ``runtime`` at the chooser's threads, measured once per stage."""
    key = ("float_p50", runtime, ctx.options.threads)
    if key not in ctx.cache:
        from edgecnn.runtime import load_runner
        from edgecnn.runtime.latency import measure_latency

        try:
            twin = _float_twin(ctx, runtime)
        except _Skip:
            ctx.cache[key] = None
            return None
        runner = load_runner(twin, threads=ctx.options.threads, runtime=runtime)
        try:
            lat = measure_latency(runner, image, warmup=ctx.options.warmup, runs=ctx.options.runs)
        finally:
            runner.close()
        ctx.cache[key] = round(lat["p50_ms"], 4)
        log.info("chooser: float twin %s in %s: p50 %.3f ms at %d thread(s)", twin.name, runtime, ctx.cache[key],
                 ctx.options.threads)
    return ctx.cache[key]


class _Skip(Exception):
    """A route that does not apply (no training data, ...): reported under ``skipped``, not as an error."""


# ----------------------------------------------------------------------------------------- measure
def _predict_keras(model, images: Images, batch: int = 64) -> np.ndarray:
    return predict_in_batches(lambda x: model(x, training=False), images, batch)


def _val_for_fit(val: tuple[Images, np.ndarray]):
    """The val split as QAT's ``fit`` takes it: arrays as they are, a decoded split as a tf.data.Dataset
    read a batch at a time (batches of 32, fine_tune_qat's, so the figures equal the arrays')."""
    images, labels = val
    if not isinstance(images, DecodedSplit):
        return val
    from edgecnn.data.loader import decoded_split_dataset

    return decoded_split_dataset(images, batch_size=32)


def _predict_onnx(path: str | os.PathLike, images: Images) -> np.ndarray:
    from edgecnn.runtime import load_runner

    runner = load_runner(Path(path), threads=0, runtime="onnxruntime")
    try:
        return predict_in_batches(runner, images)
    finally:
        runner.close()


class _KerasOutputs:
    """A Keras model called like a runner: ``__call__`` gives its first output, ``predict_outputs`` all."""

    def __init__(self, model):
        self.model = model

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = self.model(images, training=False)
        return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        out = self.model(np.asarray(images, np.float32), training=False)
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def _measure(c: Candidate, scorer: Scorer, threads: int, warmup: int, runs: int) -> Any:
    """Score ``c`` with ``scorer`` in the runtime its route is for, then its size and latency; returns its
    answers (the scorer's per-image answers: top-1 classes for classify)."""
    from edgecnn.runtime import load_runner
    from edgecnn.runtime.latency import measure_latency

    runner = load_runner(c.artifact, threads=threads, runtime=c.runtime)  # the runtime the route is for
    try:
        s = scorer.score(runner)
        c.accuracy, c.drop, c.agreement = s.metric, s.drop, s.agreement
        c.size_bytes = artifact_bytes(c.artifact)
        if runs:
            lat = measure_latency(runner, scorer.probe(), warmup=warmup, runs=runs)
            c.latency_p50_ms, c.latency_p95_ms = round(lat["p50_ms"], 4), round(lat["p95_ms"], 4)
    finally:
        runner.close()
    return s.answers


def measure_candidate(c: Candidate, images: Images, labels: np.ndarray, ref_pred: np.ndarray | None,
                      reference_acc: float | None, options: ChooseOptions) -> np.ndarray:
    """Measure one artifact like the chooser measures its candidates (accuracy, drop and agreement on val,
    size, p50/p95 at ``options.threads``); ``ref_pred`` None measures a float reference against itself.
    Returns its val predictions (top-1 class per image)."""
    scorer = TopOneScorer(images, labels, max_drop=options.max_accuracy_drop, min_agreement=options.min_agreement,
                          reference=reference_acc, ref_pred=ref_pred)
    return _measure(c, scorer, options.threads, options.warmup, options.runs)


def float_top1(model, images: Images, cache: dict[str, Any], *, float_onnx: str | os.PathLike | None = None
               ) -> np.ndarray:
    """The float model's top-1 on ``images`` (the Keras ``model``, else ``float_onnx`` in onnxruntime), computed
    once per ``cache``: the compress stage's float accuracy and every runtime's chooser call share it."""
    key = ("float_top1", id(model) if model is not None else str(float_onnx), id(images))
    if key not in cache:
        cache[key] = (_predict_keras(model, images) if model is not None
                      else _predict_onnx(float_onnx, images)).argmax(1)
    return cache[key]


def _resolve_routes(routes: Iterable[str] | None, runtimes: Iterable[str] | None) -> list[Route]:
    known = {r.name: r for r in list_routes()}
    if routes is None:
        chosen = list(known.values())
    else:
        names = list(routes)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise EdgecnnError(f"unknown route(s) {unknown}.{did_you_mean(unknown[0], known)} "
                               f"Known routes: {', '.join(known)}.")
        chosen = sorted((known[n] for n in names), key=lambda r: TIERS.index(r.tier))
    if runtimes is not None:
        rts = set(runtimes)
        offered = sorted({r.runtime for r in known.values()})
        bad = sorted(rts - set(offered))
        if bad:
            raise EdgecnnError(f"no int8 route runs in runtime(s) {bad}; the routes' runtimes: {offered}."
                               f"{did_you_mean(bad[0], offered)}")
        chosen = [r for r in chosen if r.runtime in rts]
    if not chosen:
        raise EdgecnnError("no route left to try: check routes= and runtimes=.")
    return chosen


def choose(model, val_images, val_labels, calibration, workdir: str | os.PathLike,
           options: ChooseOptions | None = None, *, train: Any = None, reference_accuracy: float | None = None,
           float_onnx: str | os.PathLike | None = None, cache: dict[str, Any] | None = None,
           agreement_images: np.ndarray | None = None, **changes: Any) -> ChooseResult:
    """Escalate through the int8 routes until one keeps the top-1 drop within ``max_accuracy_drop``.

    Args:
        model: the float ``tf_keras`` model (or a stripped pruned / clustered one), RGB 0-255 input; None with
            ``float_onnx`` runs only the routes that need no Keras model (see :func:`choose_onnx`).
        val_images: (N, H, W, 3) float32 0-255 validation images (never the test split), or a
            :class:`edgecnn.data.decoded_split.DecodedSplit` (read a batch at a time: memory flat in N).
        val_labels: (N,) integer labels.
        calibration: (M, H, W, 3) training images for calibration, M >= 10.
        workdir: where candidate artifacts are written (created; e.g. ``<run>/compress``).
        options: what to try and what fits (:class:`ChooseOptions`; default: its defaults).
        train: (images, labels) or a batched tf.data.Dataset for the QAT route; None skips QAT.
        reference_accuracy: the top-1 the drop is measured from (default: ``model``'s own on val; pass
            the unpruned float model's accuracy when ``model`` is pruned/clustered).
        float_onnx: an existing float ONNX of ``model`` to quantise (default: exported into ``workdir``).
        cache: work shared between calls (the compress stage passes one dict to every runtime's call, so the
            QAT model is trained once for the LiteRT and the ONNX QAT routes).
        agreement_images: (M, H, W, 3) further images, no labels needed, over which the agreement with the
            float model is measured besides val: on a small val split one flipped image is several points of
            agreement, so the compress stage adds training images up to a few hundred.
        **changes: :class:`ChooseOptions` fields to override, e.g. ``max_accuracy_drop=0.01, runs=0``.

    Returns:
        :class:`ChooseResult`; ``.chosen`` is None with ``.reason`` when the budget is unreachable.

    Raises:
        EdgecnnError: invalid budget or arguments, too few calibration images, mismatched validation arrays.
        TypeError: an unknown option name (the message lists the accepted ones).
    """
    o = (options or ChooseOptions()).replace(**changes)
    max_accuracy_drop, min_agreement, prefer = o.max_accuracy_drop, o.min_agreement, o.prefer
    if not isinstance(max_accuracy_drop, (int, float)) or not 0.0 <= max_accuracy_drop <= 1.0:
        raise EdgecnnError(f"max_accuracy_drop must be in [0, 1] (a fraction of top-1, 0.005 = 0.5 points); "
                           f"received max_accuracy_drop={max_accuracy_drop!r}.")
    if prefer not in PREFER:
        raise EdgecnnError(f"prefer must be one of {list(PREFER)}; received prefer={prefer!r}.")
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise EdgecnnError(f"min_agreement must be in [0, 1] (0.98 = 98 % of val images keep the float top-1); "
                           f"received min_agreement={min_agreement!r}.")
    cal = check_calibration(calibration, what="the chooser's int8 routes")
    # a decoded split stays on disk (read a batch at a time); anything else becomes a float32 array
    images = val_images if isinstance(val_images, DecodedSplit) else np.asarray(val_images, np.float32)
    labels = np.asarray(val_labels).astype(np.int64).ravel()
    if images.ndim != 4 or len(images) == 0 or len(images) != len(labels):
        raise EdgecnnError(f"validation images must be (N, H, W, 3) with N labels, N > 0; received images "
                           f"{images.shape} and {len(labels)} labels.")
    if tuple(images.shape[1:]) != tuple(cal.shape[1:]):
        raise EdgecnnError(f"validation and calibration images differ in size: {images.shape[1:]} vs {cal.shape[1:]}.")
    _resolve_routes(o.routes, o.runtimes)
    if model is None and float_onnx is None:
        raise EdgecnnError("choose needs a Keras model or a float ONNX (float_onnx=...); received neither.")
    cache = cache if cache is not None else {}
    ref_pred = float_top1(model, images, cache, float_onnx=float_onnx)
    extra = None
    if agreement_images is not None and len(agreement_images):
        extra = (np.asarray(agreement_images, np.float32),
                 float_top1(model, agreement_images, cache, float_onnx=float_onnx))
    scorer = TopOneScorer(images, labels, max_drop=max_accuracy_drop, min_agreement=min_agreement,
                          reference=reference_accuracy, ref_pred=ref_pred, extra=extra)
    return choose_with(scorer, model, cal, workdir, o, train=train, float_onnx=float_onnx, cache=cache)


def choose_with(scorer: Scorer, model, calibration, workdir: str | os.PathLike, options: ChooseOptions | None = None,
                *, train: Any = None, float_onnx: str | os.PathLike | None = None, cache: dict[str, Any] | None = None,
                **changes: Any) -> ChooseResult:
    """The chooser for any task: escalate through the routes until one holds ``scorer``'s budget.

    Args:
        scorer: the task's (:mod:`edgecnn.compress.scorers`): the validation images, the metric and agreement
            it measures, the budget (``max_drop``, ``min_agreement``) and what the task offers the routes.
        model: the float ``tf_keras`` model, RGB 0-255 input; None with ``float_onnx`` runs only the routes that
            need no Keras model.
        calibration: (M, H, W, C) training images for calibration, M >= 10.
        workdir: where candidate artifacts are written (created).
        options: what to try (:class:`ChooseOptions`; its ``max_accuracy_drop`` and ``min_agreement`` are the
            classifier's and unused here: the scorer holds the budget).
        train: training data for the QAT routes (a task with class labels); None skips QAT.
        float_onnx: an existing float ONNX of ``model`` (default: exported into ``workdir`` when a route needs it).
        cache: work shared between calls (float twins, the QAT model, their latencies).
        **changes: :class:`ChooseOptions` fields to override.

    Returns:
        :class:`ChooseResult` with the scorer's metric names; ``.chosen`` is None with ``.reason`` when no route
        held. A candidate whose route raised has ``error`` set (the exception's type and message).

    Raises:
        EdgecnnError: bad options, too few calibration images, calibration and validation images of two sizes.
    """
    o = (options or ChooseOptions()).replace(**changes)
    prefer = o.prefer
    if prefer not in PREFER:
        raise EdgecnnError(f"prefer must be one of {list(PREFER)}; received prefer={prefer!r}.")
    cal = check_calibration(calibration, what="the chooser's int8 routes")
    if scorer.image_shape != tuple(cal.shape[1:]):
        raise EdgecnnError(f"validation and calibration images differ in size: {scorer.image_shape} vs "
                           f"{cal.shape[1:]}.")
    todo = _resolve_routes(o.routes, o.runtimes)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if model is None and float_onnx is None:
        raise EdgecnnError("choose needs a Keras model or a float ONNX (float_onnx=...); received neither.")
    cache = cache if cache is not None else {}
    ctx = ChooseContext(model, cal, workdir, o, train=train, val=getattr(scorer, "val", None),
                        float_onnx=Path(float_onnx) if float_onnx else None, cache=cache, scorer=scorer)
    scorer.prepare(ctx.float_reference)
    metric, agreement = scorer.metric_name, scorer.agreement_name
    log.info("chooser: float %s %.4f (reference %.4f), budget %s, %d route(s)", metric, scorer.float_metric,
             scorer.reference, scorer.budget_text(), len(todo))
    # A budget under one step of the metric holds only a candidate that loses nothing: it reads as a tolerance
    # and is a budget of 0. From one step up it allows whole steps (images, for top-1): strict, but what it says
    # (the default recipe's 0.005 on 360 val images allows one, on purpose stricter than its 0.01 test budget).
    if 0 < scorer.max_drop < scorer.resolution - EPS:
        log.warning("chooser: the budget %.4f is under one step of the validation %s (%.4f, %d images), so it "
                    "holds only candidates that lose nothing, like a budget of 0; use a larger validation split, "
                    "or a budget of at least %.4f to allow one step", scorer.max_drop, metric, scorer.resolution,
                    len(scorer.images), scorer.resolution)
    skipped: dict[str, str] = {}
    probe = scorer.probe()
    for tier in TIERS:
        tier_routes = [r for r in todo if r.tier == tier]
        for route in tier_routes:
            c = Candidate(route.name, route.tier, route.runtime)
            path = workdir / route.filename
            t0 = time.perf_counter()
            try:
                why = route.not_for(model, scorer)
                if why:
                    raise _Skip(why)
                notes = route.fn(ctx, path)
                c.notes = dict(notes or {})
                c.artifact = path
                if path.suffix == ".onnx":  # does the QDQ graph really run int8 in onnxruntime?
                    from edgecnn.quantize.onnx_graph import onnx_float_ops

                    ops = onnx_float_ops(path)
                    c.float_heavy_ops, c.notes["ops"] = ops["heavy_float"], ops
                _measure(c, scorer, o.threads, o.warmup, o.runs)
                c.within_budget = scorer.holds(c)
                if prefer == "latency" and o.runs and c.within_budget:   # an int8 file slower than float is no pick
                    c.float_p50_ms = _float_p50(ctx, route.runtime, probe)
                    c.slower_than_float = _slower_than_float(ctx, c, probe)
                    c.within_budget = not c.slower_than_float
            except _Skip as e:
                skipped[route.name] = str(e)
                log.info("chooser: %s skipped: %s", route.name, e)
                continue
            except EdgecnnError as e:
                if "calibration images" in str(e):
                    raise
                c.error = str(e)
            except Exception as e:  # one route failing (a converter bug, an op) must not end the search
                c.error = f"{type(e).__name__}: {e}"
                log.warning("chooser: %s raised %s", route.name, type(e).__name__, exc_info=True)
            c.seconds = round(time.perf_counter() - t0, 2)
            if c.error:
                log.warning("chooser: %s failed: %s", route.name, c.error)
                remove_artifact_path(path)
                c.artifact = None
            else:
                log.info("chooser: %-22s %s %.4f drop %+.4f %s %.4f size %8.1f KB p50 %s ms%s", route.name, metric,
                         c.accuracy, c.drop, agreement, c.agreement, c.size_bytes / 1024, c.latency_p50_ms,
                         " (within budget)" if c.within_budget else
                         f" (slower than float: {c.float_p50_ms} ms)" if c.slower_than_float else "")
            ctx.done.append(c)
            if not o.exhaustive and c.within_budget:   # routes are in cost order: the first that holds ends it
                break
        if not o.exhaustive and any(c.within_budget for c in ctx.done):
            break
    chosen, reason = _verdict(ctx.done, skipped, scorer, o)
    log.info("chooser: %s", reason)
    return ChooseResult(chosen, reason, scorer.max_drop, scorer.float_metric, scorer.reference, ctx.done, skipped,
                        o.threads, val_images=len(scorer.images), agreement_images=scorer.agreement_images,
                        metric=metric, agreement_metric=agreement, resolution=scorer.resolution)


def _verdict(cands: list[Candidate], skipped: dict[str, str], scorer: Scorer, o: ChooseOptions
             ) -> tuple[Candidate | None, str]:
    """The pick among ``cands`` (the fastest or smallest within budget) and the reason, or None and why not."""
    metric, agreement, prefer = scorer.metric_name, scorer.agreement_name, o.prefer
    failed = [c for c in cands if c.error]
    fits = [c for c in cands if c.within_budget]
    if fits:
        key = (lambda c: (c.latency_p50_ms if c.latency_p50_ms is not None else math.inf, c.size_bytes)) \
            if prefer == "latency" else (lambda c: (c.size_bytes, c.latency_p50_ms or math.inf))
        chosen = min(fits, key=key)
        reason = (f"{chosen.route}: {metric} drop {chosen.drop:+.4f} <= {scorer.max_drop:.4f}, {agreement} "
                  f"{chosen.agreement:.4f} "
                  f"(tier '{chosen.tier}'; {'lowest latency' if prefer == 'latency' else 'smallest'} of "
                  f"{len(fits)} within budget)")
        if failed:
            reason += " Failed: " + "; ".join(f"{c.route} ({c.error})" for c in failed) + "."
        return chosen, reason
    measured = [c for c in cands if c.drop is not None]
    tried = ", ".join(c.route for c in cands) or "none"
    slow = [c for c in measured if c.slower_than_float]
    if measured:
        best = min(measured, key=lambda c: c.drop)
        agree_txt = f" and {agreement} >= {scorer.min_agreement:.4f}" if scorer.min_agreement is not None else ""
        reason = (f"budget unreachable: no route keeps the {metric} drop <= {scorer.max_drop:.4f}{agree_txt}"
                  f"{' and is not slower than float' if prefer == 'latency' and o.runs else ''}; "
                  f"the best was {best.route} with drop {best.drop:+.4f} ({metric} {best.accuracy:.4f} vs reference "
                  f"{scorer.reference:.4f}, {agreement} {best.agreement:.4f}). "
                  f"Tried: {tried}.")
        if slow:
            reason += (" Within the accuracy budget but slower than the float model in the same runtime: "
                       + "; ".join(f"{c.route} p50 {c.latency_p50_ms:.3f} ms vs float {c.float_p50_ms:.3f} ms"
                                   for c in slow)
                       + " (set compress.prefer to size for this runtime if size alone matters).")
    else:
        reason = f"budget unreachable: every route failed or was skipped. Tried: {tried}."
    if failed:
        reason += " Failed: " + "; ".join(f"{c.route} ({c.error})" for c in failed) + "."
    if skipped:
        reason += " Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + "."
    reason += f" Fixes: {scorer.fixes}."
    return None, reason


def choose_onnx(float_onnx: str | os.PathLike, val_images, val_labels, calibration, workdir: str | os.PathLike,
                options: ChooseOptions | None = None, **changes: Any) -> ChooseResult:
    """The chooser on a float ONNX file alone (an imported model, no Keras): the routes that need no Keras model.

    Top-1 drop and agreement are measured against the float ONNX's own predictions in onnxruntime.
    ``options.routes`` may name only such routes (``needs_model=False``); None means all of them.

    Example:
        >>> r = choose_onnx("run/model.onnx", vx, vy, calib, "work", runtimes=["onnxruntime"])  # doctest: +SKIP
    """
    o = options or ChooseOptions()
    onnx_only = [r.name for r in list_routes() if not r.needs_model]
    routes = changes.pop("routes", o.routes)
    if routes is not None:
        bad = [r for r in routes if r not in onnx_only]
        if bad:
            raise EdgecnnError(f"choose_onnx: route(s) {bad} need the Keras model; routes that run on an ONNX file "
                               f"alone: {onnx_only}.")
    path = Path(float_onnx)
    if not path.is_file():
        raise EdgecnnError(f"float ONNX model not found: {str(path)!r}; choose_onnx needs the fp32 .onnx file.")
    return choose(None, val_images, val_labels, calibration, workdir, o, float_onnx=path,
                  routes=tuple(routes) if routes is not None else tuple(onnx_only), **changes)


def copy_chosen(result: ChooseResult, dest: str | os.PathLike) -> Path | None:
    """Copy the chosen artifact to ``dest`` (atomically); returns the path, or None when nothing was chosen."""
    if result.chosen is None or result.chosen.artifact is None:
        return None
    return copy_artifact(result.chosen.artifact, dest)


__all__ = ["Candidate", "ChooseOptions", "ChooseResult", "ChooseContext", "Route", "choose", "choose_onnx",
           "choose_with", "copy_chosen", "float_top1", "measure_candidate",
           "list_routes", "register_route", "TIERS"]

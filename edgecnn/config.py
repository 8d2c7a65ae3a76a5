"""The typed recipe: one YAML file says everything a run does (data, model, train, export, compress,
evaluate, budgets).

Unknown keys are errors (a typo must not silently fall back to a default), and every error names
the file and the key path, e.g. ``models/x.yaml: train.head.epochs: Input should be greater than 0``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator

from edgecnn._strict import Strict
from edgecnn.budget_schema import (
    BudgetsConfig,  # the recipe's `budgets:`: a list of budget targets
)
from edgecnn.compress.chooser import DEFAULT_MIN_AGREEMENT, ChooseOptions, list_routes
from edgecnn.data.config import DataConfig
from edgecnn.errors import EdgecnnError, did_you_mean
from edgecnn.export import list_formats
from edgecnn.importing import PRESETS, SOURCE_FORMATS
from edgecnn.quantize import (
    MIN_CALIBRATION,
    ONNX_CALIBRATION_METHODS,
    TARGET_CPUS,
    TFLITE_CALIBRATION_METHODS,
)
from edgecnn.tasks import DEFAULT_TASK, task_names
from edgecnn.tasks.anomaly import AnomalyConfig
from edgecnn.tasks.detect import DetectConfig
from edgecnn.tasks.segment import SegmentConfig

# Names (formats, routes, runtimes) are validated against their registries, never a copied list:
# a newly registered format or route is accepted by the next recipe without touching this file.


_Strict = Strict


def _known_names(values: list[str], known: tuple[str, ...] | list[str], what: str) -> list[str]:
    bad = [v for v in values if v not in known]
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; known: {list(known)}.{did_you_mean(bad[0], known)}")
    return values


class ModelConfig(_Strict):
    name: str = "mobilenet_v2"
    input_size: int | None = Field(None, ge=16, le=1024)
    args: dict[str, Any] = Field(default_factory=dict, description="extra builder arguments (alpha, weights, ...)")


class PhaseConfig(_Strict):
    epochs: int = Field(5, ge=0, le=1000)
    lr: float = Field(1e-3, gt=0, le=10)
    features: Literal["cached", "augmented"] = Field("cached", description=(
        "the head phase on a frozen backbone: cached trains the head on the backbone's features of the "
        "un-augmented images, computed once (one inference pass instead of one per epoch); augmented runs the "
        "backbone on every augmented batch of every epoch"))


class FinetuneConfig(_Strict):
    blocks: int = Field(0, ge=0, description="top backbone blocks to unfreeze; 0 skips phase 2")
    epochs: int = Field(5, ge=0, le=1000)
    lr_factor: float = Field(0.1, gt=0, le=1, description="phase-2 lr = head lr x lr_factor")
    schedule: Literal["cosine", "onecycle", "step", "constant"] = Field("cosine", description=(
        "cosine: decay from the phase-2 lr; onecycle: a linear warm-up over the first `warmup` of the steps from "
        "a tenth of it, then cosine decay"))
    warmup: float = Field(0.15, ge=0, lt=1, description="onecycle: the share of phase 2's steps spent warming up")
    train_batchnorm: bool = False
    lr_decay: float = Field(1.0, gt=0, le=1, description=(
        "layer-wise decay: the k-th unfrozen block from the top trains at phase-2 lr x lr_decay^k "
        "(smaller steps closer to the input); 1.0 = one rate for all"))


class DistillConfig(_Strict):
    """``train.distill``: learn from a teacher's soft targets as well as the labels (edgecnn/distill.py)."""

    teacher: str | None = Field(None, description=(
        "a classifier of the same classes: a Keras model file, a run directory (its model.keras) or a recipe "
        "YAML (its run, trained first when missing); none: no distillation"))
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft (teacher) term; 1 - alpha on the labels")
    temperature: float = Field(4.0, gt=0, le=100, description="softmax temperature of both sides' soft targets")


class DistributeConfig(_Strict):
    """``train.distribute``: train in one process, on every local device, or on several workers.

    ``data.batch_size`` is the batch of one replica (one device of one worker); the global batch is
    ``data.batch_size x replicas``. With ``lr_scaling: linear`` every learning rate of the recipe is
    multiplied by the replica count (the linear rule: lr grows with the global batch), so a recipe
    tuned on one device keeps its lr per image; ``none`` uses the rates as written. See docs/distributed.md.
    """

    strategy: Literal["none", "mirrored", "multi_worker"] = Field("none", description=(
        "none: one process, TF's default device; mirrored: tf.distribute.MirroredStrategy over all local "
        "devices; multi_worker: tf.distribute.MultiWorkerMirroredStrategy, the cluster read from TF_CONFIG"))
    lr_scaling: Literal["linear", "none"] = Field(
        "linear", description="linear: lr x replicas (global batch / data.batch_size); none: lr as written")
    heartbeat_timeout_s: int = Field(
        60, ge=5, le=3600, description="multi_worker: a worker silent this long is declared dead (TF's default is 10)")

    def task(self) -> tuple[str, int, int, bool]:
        """This process's ``(task type, index, worker count, is chief)`` from ``TF_CONFIG``.

        One process (``("worker", 0, 1, True)``) unless the strategy is multi_worker and TF_CONFIG is
        set. The chief is task ``chief``, else ``worker`` 0 (TensorFlow's rule); only it writes the run
        directory.

        Raises:
            EdgecnnError: TF_CONFIG is not JSON of the form ``{"cluster": {...}, "task": {"type", "index"}}``.
        """
        raw = os.environ.get("TF_CONFIG", "")
        if self.strategy != "multi_worker" or not raw.strip():
            return "worker", 0, 1, True
        try:
            conf = json.loads(raw)
            cluster, task = conf["cluster"], conf["task"]
            workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
            kind, index = str(task["type"]), int(task["index"])
            if kind not in ("chief", "worker") or not 0 <= index < len(cluster.get(kind, [])):
                raise ValueError(f"task {kind} {index} is not a chief or worker of the cluster")
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise EdgecnnError(
                f"TF_CONFIG is not a valid cluster description ({e}). Received TF_CONFIG={raw[:300]!r}. Expected "
                'e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}; '
                "see docs/distributed.md.") from None
        chief = kind == "chief" or (index == 0 and "chief" not in cluster)
        return kind, index, workers, chief

    @property
    def is_chief(self) -> bool:
        """False only on a multi_worker task other than the chief: such a task trains and writes nothing."""
        return self.task()[3]


class TrainConfig(_Strict):
    seed: int = 0
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    freeze_backbone: Literal["auto", "yes", "no"] = Field(
        "auto", description="auto: freeze when the backbone starts from pretrained weights")
    head: PhaseConfig = PhaseConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    early_stopping_patience: int = Field(3, ge=1)
    class_weights: bool = False
    distill: DistillConfig = DistillConfig()
    distribute: DistributeConfig = DistributeConfig()


def default_formats() -> list[str]:
    """The export formats a recipe gets when it names none: every registered format marked ``default``."""
    return [f.name for f in list_formats() if f.default]


class ExportConfig(_Strict):
    formats: list[str] = Field(default_factory=default_formats, description="see `edgecnn formats`")
    calibration_images: int = Field(200, ge=MIN_CALIBRATION)
    opset: int = Field(17, ge=13, le=21)
    tflite_calibration: Literal[TFLITE_CALIBRATION_METHODS] = "minmax"
    onnx_calibration: Literal[ONNX_CALIBRATION_METHODS] = "minmax"
    onnx_per_channel: bool = True

    @field_validator("formats")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _known_names(v, [f.name for f in list_formats()], "format")


class PruneConfig(_Strict):
    """Magnitude pruning before quantisation (``edgecnn.compress.pruning``)."""

    enabled: bool = False
    target_sparsity: float = Field(0.5, gt=0, lt=1, description="fraction of zeros per pruned kernel")
    structured_2_4: bool = Field(False, description="2:4 structured sparsity instead of unstructured")
    layers: Literal["all", "pointwise"] = Field("all", description="pointwise = 1x1 Conv2D only (XNNPACK sparse)")
    exclude: list[str] = Field(default_factory=list, description="layer names to keep dense")
    epochs: int = Field(2, ge=1, le=100)
    lr: float = Field(1e-4, gt=0, le=1)
    frequency: int = Field(100, ge=1, description="apply the schedule every N steps")
    sparse_tflite: bool = Field(False, description="also write model.pruned.sparse.tflite (fp32, sparse weights)")


class ClusterConfig(_Strict):
    """Weight clustering (``edgecnn.compress.clustering``); after pruning it preserves the zeros."""

    enabled: bool = False
    clusters: int = Field(16, ge=2, le=256)
    init: Literal["kmeans++", "linear", "density", "random"] = "kmeans++"
    epochs: int = Field(1, ge=1, le=100)
    lr: float = Field(1e-5, gt=0, le=1)


class QatConfig(_Strict):
    """The chooser's QAT route (scheme follows the model: pqat after pruning, cqat after clustering)."""

    epochs: int = Field(ChooseOptions.qat_epochs, ge=1, le=100)
    lr: float = Field(ChooseOptions.qat_lr, gt=0, le=1, description="peak learning rate, cosine-decayed to 0")
    distill: bool = Field(ChooseOptions.qat_distill, description="fit the float model's probabilities, not the labels")


class CompressConfig(_Strict):
    """The ``compress:`` stage: optional pruning/clustering, then the accuracy-aware int8 chooser.

    On by default (verified by default): every int8 format the recipe exports is the chooser's pick for
    its runtime -- the cheapest route whose validation top-1 drop fits ``max_accuracy_drop``, whose top-1
    agreement with the float model reaches ``min_agreement`` and, unless ``prefer`` asks for size alone for
    that runtime, which is not slower than its float twin there. When no route holds for a runtime, its
    int8 file is not shipped and the run fails (exit 1) with the doctor's summary. ``enabled: false``
    opts out in so many words: int8 files are then plain PTQ, marked unverified in the manifest and report.
    Every candidate is recorded in ``compress.json``.
    """

    enabled: bool = True
    max_accuracy_drop: float = Field(ChooseOptions.max_accuracy_drop, ge=0, le=1,
                                     description="allowed top-1 drop vs the float model")
    min_agreement: float | None = Field(DEFAULT_MIN_AGREEMENT, ge=0, le=1,
                                        description="also require this top-1 agreement on val (null: drop only)")
    routes: list[str] = Field(default_factory=lambda: [r.name for r in list_routes()],
                              description="int8 routes the chooser may try, cheapest tier first")
    runtimes: list[str] = Field(default_factory=lambda: sorted({r.runtime for r in list_routes()}),
                                description="runtimes to pick an int8 artifact for (those the routes run in); "
                                            "only those whose int8 format the recipe exports are chosen for")
    prefer: Literal["latency", "size"] | dict[str, Literal["latency", "size"]] = Field(
        ChooseOptions.prefer, description="latency: an int8 pick must not be slower than its float twin in its "
                                          "runtime (and the fastest fit wins); size: size alone (the target's "
                                          "CPU is not this one); one value, or one per runtime")
    sensitive_top_k: int = Field(ChooseOptions.sensitive_top_k, ge=1, le=50,
                                 description="layers the mixed routes keep float")
    latency_runs: int = Field(ChooseOptions.runs, ge=0, description="timed runs per candidate at 1 thread (0 = skip)")
    slow_route_seconds: float = Field(ChooseOptions.slow_route_seconds, gt=0,
                                      description="time limit of QAT's fine-tuning and the mixed routes' search")
    exhaustive: bool = Field(ChooseOptions.exhaustive,
                             description="try every route instead of stopping at the first that fits")
    target_cpu: str = Field(ChooseOptions.target_cpu,
                            description="the CPU the int8 files are quantised for: host (this machine), arm64, "
                                        "x86-avx2 or x86-vnni (edgecnn.quantize.TARGET_CPUS)")
    prune: PruneConfig = PruneConfig()
    cluster: ClusterConfig = ClusterConfig()
    qat: QatConfig = QatConfig()

    @field_validator("routes")
    @classmethod
    def _known_routes(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("routes must name at least one route")
        return _known_names(v, [r.name for r in list_routes()], "route")

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, v: list[str]) -> list[str]:
        return _known_names(v, sorted({r.runtime for r in list_routes()}), "runtime with int8 routes")

    @field_validator("target_cpu")
    @classmethod
    def _known_target_cpu(cls, v: str) -> str:
        return _known_names([v], list(TARGET_CPUS), "target_cpu")[0]

    @field_validator("prefer")
    @classmethod
    def _known_prefer_runtimes(cls, v):
        if isinstance(v, dict):
            _known_names(list(v), sorted({r.runtime for r in list_routes()}), "runtime with int8 routes")
        return v

    def prefer_for(self, runtime: str) -> str:
        """``latency`` or ``size`` for one runtime (a per-runtime ``prefer`` names some; the rest: latency)."""
        return self.prefer.get(runtime, "latency") if isinstance(self.prefer, dict) else self.prefer

    @property
    def qat_scheme(self) -> str:
        if self.cluster.enabled:
            return "cqat"
        return "pqat" if self.prune.enabled else "default"

    def choose_options(self, **changes: Any) -> ChooseOptions:
        """This section as the chooser's options (``changes`` override, e.g. ``routes=`` for one runtime)."""
        runtimes = changes.get("runtimes") or self.runtimes
        prefer = {self.prefer_for(rt) for rt in runtimes}
        return ChooseOptions(
            max_accuracy_drop=self.max_accuracy_drop, min_agreement=self.min_agreement, routes=tuple(self.routes),
            runtimes=tuple(self.runtimes), prefer="size" if prefer == {"size"} else "latency",
            exhaustive=self.exhaustive,
            sensitive_top_k=self.sensitive_top_k, qat_scheme=self.qat_scheme, qat_epochs=self.qat.epochs,
            qat_lr=self.qat.lr, qat_distill=self.qat.distill, runs=self.latency_runs,
            slow_route_seconds=self.slow_route_seconds, target_cpu=self.target_cpu).replace(**changes)


class EvaluateConfig(_Strict):
    warmup: int = Field(20, ge=0)
    runs: int = Field(200, ge=10)
    threads: list[int] = Field(default_factory=lambda: [1, 0], description="0 = all cores")
    top_k: int = Field(5, ge=2)
    runtimes: list[str] | None = Field(
        None, description="runtimes to evaluate each artifact in besides the one its manifest names (always "
                          "measured); None = every registered runtime that runs it and is evaluated by default "
                          "(all but tflm), [] = none")

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, v: list[str] | None) -> list[str] | None:
        from edgecnn.runtime import (
            runtime_names,  # the registry; cheap, imports no runtime package
        )

        return None if v is None else _known_names(v, runtime_names(), "runtime")


class ImportConfig(_Strict):
    """The ``import:`` section: where an imported run's model came from (``edgecnn import``), as provenance."""

    source: str = Field(..., description="the model file or SavedModel folder that was imported")
    source_format: Literal[SOURCE_FORMATS]
    preprocess: Literal[tuple(PRESETS)] = "raw"
    bgr: bool = False
    trust_code: bool = False
    input_size: int | None = Field(None, ge=16, le=1024, description="the square side, for dynamic-size models")
    labels: str | None = Field(None, description="labels.txt given with --labels (else the data's class names)")


class Recipe(_Strict):
    # `import` is a Python keyword: the field is import_, the YAML key is import
    model_config = ConfigDict(**_Strict.model_config, serialize_by_alias=True, validate_by_name=True)

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    task: str = Field(DEFAULT_TASK, description="what the model does: a name from edgecnn.tasks.task_names()")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    # factories, not instances: their defaults read the registries when a recipe is made, not at import
    export: ExportConfig = Field(default_factory=ExportConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    evaluate: EvaluateConfig = EvaluateConfig()
    budgets: BudgetsConfig = BudgetsConfig()
    import_: ImportConfig | None = Field(None, alias="import", description="set by `edgecnn import`")
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig, description="task: anomaly settings")
    segment: SegmentConfig = Field(default_factory=SegmentConfig, description="task: segment settings")
    detect: DetectConfig = Field(default_factory=DetectConfig, description="task: detect settings")

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        return _known_names([v], task_names(), "task")[0]

    def section_dump(self, *sections: str) -> dict[str, Any]:
        return {s: getattr(self, s).model_dump(mode="json") for s in sections}


def _format_validation(source: str, e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README 'Recipe reference')"
        lines.append(f"{source}: {where}: {msg} (received {err.get('input')!r})")
    return "invalid recipe:\n  " + "\n  ".join(lines)


def load_recipe(path: str | os.PathLike, **overrides: Any) -> Recipe:
    """Read and validate a recipe file.

    Raises:
        EdgecnnError: missing file, bad YAML or invalid values (every problem listed, with its key path).
    """
    path = Path(path)
    if not path.is_file():
        raise EdgecnnError(f"recipe not found: {str(path)!r}. "
                           "Pass a YAML file such as models/defects-mobilenetv2.yaml.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise EdgecnnError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise EdgecnnError(f"{path}: a recipe must be a mapping of sections; received {type(raw).__name__}.")
    raw.setdefault("name", path.stem)
    return recipe_from_dict(raw, source=str(path), **overrides)


def recipe_from_dict(raw: dict[str, Any], source: str = "<recipe>", **overrides: Any) -> Recipe:
    try:
        recipe = Recipe(**raw)
    except ValidationError as e:
        raise EdgecnnError(_format_validation(source, e)) from None
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".")
        setattr(getattr(recipe, section), key, value)
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)

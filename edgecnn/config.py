"""The typed recipe: one YAML file says everything a run does (data, model, train, export, compress,
evaluate, budgets).

Unknown keys are errors (a typo must not silently fall back to a default), and every error names
the file and the key path, e.g. ``models/x.yaml: train.head.epochs: Input should be greater than 0``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgecnn.errors import EdgecnnError
from edgecnn.budget_schema import BudgetsConfig  # the recipe's `budgets:`: a list of budget targets


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _known_names(values: list[str], known: tuple[str, ...], what: str) -> list[str]:
    bad = [v for v in values if v not in known]
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; known: {list(known)}")
    return values


class AugmentConfig(_Strict):
    """Keras preprocessing layers applied to training batches only."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "horizontal_and_vertical"
    rotation: float = Field(0.05, ge=0, le=0.5, description="fraction of a full turn")
    zoom: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)


class DataConfig(_Strict):
    path: str = "data/defects"
    generate: Literal["defects"] | None = Field(
        None, description="generate the bundled defect set at `path` when it does not exist")
    generate_seed: int = 0
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    split_seed: int = 0
    min_images_per_class: int = Field(10, ge=2)
    skip_bad_images: bool = False
    batch_size: int = Field(32, ge=1, le=4096)
    augment: AugmentConfig = AugmentConfig()


class ModelConfig(_Strict):
    name: str = "mobilenet_v2"
    input_size: int | None = Field(None, ge=16, le=1024)
    args: dict[str, Any] = Field(default_factory=dict, description="extra builder arguments (alpha, weights, ...)")


class PhaseConfig(_Strict):
    epochs: int = Field(5, ge=0, le=1000)
    lr: float = Field(1e-3, gt=0, le=10)


class FinetuneConfig(_Strict):
    blocks: int = Field(0, ge=0, description="top backbone blocks to unfreeze; 0 skips phase 2")
    epochs: int = Field(5, ge=0, le=1000)
    lr_factor: float = Field(0.1, gt=0, le=1, description="phase-2 lr = head lr x lr_factor")
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    train_batchnorm: bool = False


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


FORMAT_NAMES = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx", "onnx-int8")


class ExportConfig(_Strict):
    formats: list[str] = Field(default_factory=lambda: list(FORMAT_NAMES))
    calibration_images: int = Field(200, ge=10)
    opset: int = Field(17, ge=13, le=21)
    tflite_calibration: Literal["minmax", "percentile"] = "minmax"
    onnx_calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    onnx_per_channel: bool = True

    @field_validator("formats")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _known_names(v, FORMAT_NAMES, "format")


ROUTE_NAMES = ("tflite-int8", "tflite-int8-percentile", "onnx-int8-minmax", "onnx-int8-minmax-pc",
               "onnx-int8-percentile", "onnx-int8-entropy", "tflite-int8-qat", "tflite-int8-mixed", "onnx-int8-mixed")


class PruneConfig(_Strict):
    """Magnitude pruning before quantisation (``edgecnn.compress.prune``)."""

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
    """Weight clustering (``edgecnn.compress.cluster``); after pruning it preserves the zeros."""

    enabled: bool = False
    clusters: int = Field(16, ge=2, le=256)
    init: Literal["kmeans++", "linear", "density", "random"] = "kmeans++"
    epochs: int = Field(1, ge=1, le=100)
    lr: float = Field(1e-5, gt=0, le=1)


class QatConfig(_Strict):
    """The chooser's QAT route (scheme follows the model: pqat after pruning, cqat after clustering)."""

    epochs: int = Field(2, ge=1, le=100)
    lr: float = Field(1e-4, gt=0, le=1, description="peak learning rate, cosine-decayed to 0")
    distill: bool = Field(True, description="fit the float model's probabilities, not the labels")


class CompressConfig(_Strict):
    """The ``compress:`` stage: optional pruning/clustering, then the accuracy-aware int8 chooser.

    When enabled, ``model.int8.tflite`` and ``model.int8.onnx`` are the chooser's pick for each
    runtime (the cheapest route whose validation top-1 drop fits ``max_accuracy_drop``) instead of
    plain post-training quantisation; every candidate is recorded in ``compress.json``.
    """

    enabled: bool = False
    max_accuracy_drop: float = Field(0.005, ge=0, le=1, description="allowed top-1 drop vs the float model")
    min_agreement: float | None = Field(None, ge=0, le=1, description="also require this top-1 agreement on val")
    routes: list[str] = Field(default_factory=lambda: list(ROUTE_NAMES),
                              description="int8 routes the chooser may try, cheapest tier first")
    runtimes: list[Literal["litert", "onnxruntime"]] = Field(default_factory=lambda: ["litert", "onnxruntime"])
    prefer: Literal["latency", "size"] = "latency"
    sensitive_top_k: int = Field(3, ge=1, le=50, description="layers the mixed routes keep float")
    latency_runs: int = Field(50, ge=0, description="timed runs per candidate at 1 thread (0 = skip)")
    exhaustive: bool = Field(False, description="try every route instead of stopping at the first tier that fits")
    prune: PruneConfig = PruneConfig()
    cluster: ClusterConfig = ClusterConfig()
    qat: QatConfig = QatConfig()

    @field_validator("routes")
    @classmethod
    def _known_routes(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("routes must name at least one route")
        return _known_names(v, ROUTE_NAMES, "route")

    @property
    def qat_scheme(self) -> str:
        if self.cluster.enabled:
            return "cqat"
        return "pqat" if self.prune.enabled else "default"


class EvaluateConfig(_Strict):
    warmup: int = Field(20, ge=0)
    runs: int = Field(200, ge=10)
    threads: list[int] = Field(default_factory=lambda: [1, 0], description="0 = all cores")
    top_k: int = Field(5, ge=2)
    runtimes: list[str] | None = Field(
        None, description="runtimes to evaluate each artifact in besides the one its manifest names (always "
                          "measured); None = every registered runtime that runs it, [] = none")

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, v: list[str] | None) -> list[str] | None:
        from edgecnn.runtime import runtime_names   # the registry; cheap, imports no runtime package

        return None if v is None else _known_names(v, runtime_names(), "runtime")


class Recipe(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    compress: CompressConfig = CompressConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    budgets: BudgetsConfig = BudgetsConfig()

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
        raise EdgecnnError(f"recipe not found: {str(path)!r}. Pass a YAML file such as models/defects-mobilenetv2.yaml.")
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

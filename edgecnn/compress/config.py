"""``CompressConfig``: the recipe's ``compress:`` section (proposed to hang under ``Recipe.compress``).

    compress:
      enabled: true
      max_accuracy_drop: 0.005        # top-1 on the val split, vs the float model
      prune: {enabled: true, target_sparsity: 0.5, epochs: 2}
      cluster: {enabled: false}
      qat: {epochs: 2, lr: 1.0e-5}
      routes: [tflite-int8, onnx-int8-minmax, onnx-int8-minmax-pc, onnx-int8-percentile,
               onnx-int8-entropy, tflite-int8-qat, tflite-int8-mixed, onnx-int8-mixed]

Unknown keys are errors, like every section of the recipe.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ROUTE_NAMES = ("tflite-int8", "onnx-int8-minmax", "onnx-int8-minmax-pc", "onnx-int8-percentile", "onnx-int8-entropy",
               "tflite-int8-qat", "tflite-int8-mixed", "onnx-int8-mixed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    lr: float = Field(1e-5, gt=0, le=1)


class CompressConfig(_Strict):
    enabled: bool = False
    max_accuracy_drop: float = Field(0.005, ge=0, le=1, description="allowed top-1 drop vs the float model")
    routes: list[str] = Field(default_factory=lambda: list(ROUTE_NAMES),
                              description="int8 routes the chooser may try, cheapest tier first")
    runtimes: list[Literal["litert", "onnxruntime"]] = Field(default_factory=lambda: ["litert", "onnxruntime"])
    prefer: Literal["latency", "size"] = "latency"
    sensitive_top_k: int = Field(3, ge=1, le=50, description="layers the mixed routes keep float")
    calibration_images: int = Field(200, ge=10)
    latency_runs: int = Field(50, ge=0, description="timed runs per candidate at 1 thread (0 = skip)")
    exhaustive: bool = Field(False, description="try every route instead of stopping at the first tier that fits")
    prune: PruneConfig = PruneConfig()
    cluster: ClusterConfig = ClusterConfig()
    qat: QatConfig = QatConfig()

    @field_validator("routes")
    @classmethod
    def _known_routes(cls, v: list[str]) -> list[str]:
        bad = [r for r in v if r not in ROUTE_NAMES]
        if bad:
            raise ValueError(f"unknown route(s) {bad}; known: {list(ROUTE_NAMES)}")
        if not v:
            raise ValueError("routes must name at least one route")
        return v

    @property
    def qat_scheme(self) -> str:
        if self.cluster.enabled:
            return "cqat"
        return "pqat" if self.prune.enabled else "default"

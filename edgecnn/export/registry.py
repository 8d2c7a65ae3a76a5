"""The format registry: every exporter is a pure function registered under a name and a filename."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import artifact_bytes
from edgecnn._plugins import import_submodules
from edgecnn.errors import EdgecnnError, did_you_mean
from edgecnn.quantize.calibration import check_calibration

log = logging.getLogger("edgecnn.export")


@dataclass
class ExportContext:
    """What an exporter may need besides the model: calibration images and options.

    Attributes:
        run_dir: the run directory the artifact is written into.
        calibration: (N, H, W, 3) RGB 0-255 images, N >= ``edgecnn.quantize.MIN_CALIBRATION``, for int8 formats.
        opset: the ONNX opset.
        tflite_calibration: one of ``edgecnn.quantize.TFLITE_CALIBRATION_METHODS``.
        onnx_calibration: one of ``edgecnn.quantize.ONNX_CALIBRATION_METHODS``.
        onnx_per_channel: per-channel ONNX weight scales.
        target_cpu: the CPU int8 ONNX files are quantised for (``edgecnn.quantize.TARGET_CPUS``).
    """

    run_dir: Path
    calibration: np.ndarray | None = None
    opset: int = 17
    tflite_calibration: str = "minmax"
    onnx_calibration: str = "minmax"
    onnx_per_channel: bool = True
    target_cpu: str = "host"


@dataclass(frozen=True)
class FormatSpec:
    name: str
    filename: str
    runtime: str
    precision: str
    parent: str
    fn: Callable[..., Path]
    needs_calibration: bool = False
    description: str = ""
    default: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


_FORMATS: dict[str, FormatSpec] = {}


def register_format(name: str, *, filename: str, runtime: str, precision: str, parent: str = "model.keras",
                    needs_calibration: bool = False, description: str = "", default: bool = True):
    """Register ``fn(model, path, ctx) -> path`` as the format ``name``, written to ``filename``.

    ``runtime`` (a name in :func:`edgecnn.runtime.runtime_names`) is the runtime that runs the file by
    default; ``default=False`` leaves the format out of recipes that name no formats.
    """
    from edgecnn.runtime import runtime_names

    if runtime not in runtime_names():
        raise ValueError(f"runtime must be one of {runtime_names()}; received {runtime!r}")

    def wrap(fn):
        _FORMATS[name] = FormatSpec(name, filename, runtime, precision, parent, fn, needs_calibration, description,
                                    default)
        return fn

    return wrap


def _ensure_loaded() -> None:
    # Every module of the package is imported (a new format is a new module); the format modules
    # import TensorFlow only inside their exporters, so listing stays TF-free.
    import_submodules("edgecnn.export")


def list_formats() -> list[FormatSpec]:
    """Every registered format, in registration order (the ONNX module, then the TFLite one)."""
    _ensure_loaded()
    return list(_FORMATS.values())


def format_depth(spec: FormatSpec) -> int:
    """How many formats lie between ``spec`` and model.keras (onnx 0, onnx-int8 1, openvino-int8 2):
    exporting in this order makes every parent file before its children."""
    by_file = {f.filename: f for f in list_formats()}
    depth, parent = 0, spec.parent
    while parent in by_file and depth < len(by_file):
        depth, parent = depth + 1, by_file[parent].parent
    return depth


def get_format(name: str) -> FormatSpec:
    _ensure_loaded()
    if name not in _FORMATS:
        raise EdgecnnError(f"unknown export format {name!r}.{did_you_mean(name, _FORMATS)} "
                           f"Known formats: {', '.join(_FORMATS)}.")
    return _FORMATS[name]


def export(name: str, model, ctx: ExportContext) -> Path:
    """Run one exporter, check its file exists and is non-empty, log one line (Ultralytics' try_export).

    Args:
        name: a registered format (see :func:`list_formats`).
        model: the ``tf_keras`` model taking NHWC RGB 0-255.
        ctx: the run directory, calibration images and options.

    Returns:
        The path of the written artifact (``ctx.run_dir / spec.filename``).

    Raises:
        EdgecnnError: unknown format, too few calibration images for an int8 format, or a failed export.
    """
    spec = get_format(name)
    if spec.needs_calibration:
        check_calibration(ctx.calibration, what=name)
    path = ctx.run_dir / spec.filename
    t0 = time.perf_counter()
    try:
        out = spec.fn(model, path, ctx)
    except EdgecnnError:
        raise
    except Exception as e:
        raise EdgecnnError(f"export to {name} failed: {type(e).__name__}: {e}") from e
    if not out.exists() or artifact_bytes(out) == 0:
        raise EdgecnnError(f"export to {name} produced no file at {out}")
    log.info("exported %-15s %-22s %8.1f KB in %.1fs", name, out.name, artifact_bytes(out) / 1024,
             time.perf_counter() - t0)
    return out

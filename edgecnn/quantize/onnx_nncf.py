"""NNCF post-training int8 with accuracy control on an ONNX model: layers go back to float until top-1 holds.

    info = quantize_onnx_accuracy_control("model.onnx", "model.int8-nncf.onnx", calib, val_x, val_y, max_drop=0.005)

``nncf.quantize_with_accuracy_control`` quantises the whole graph, measures top-1 on the validation
images with onnxruntime, and, while the drop exceeds ``max_drop``, ranks the quantised layers by
their contribution to the error and reverts the worst to float, re-validating each time. The output
is a QDQ ONNX like onnxruntime's (uint8/int8 with NNCF's presets); :func:`onnx_float_ops` says how
many heavy layers it left float.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from edgecnn._io import atomic_path
from edgecnn.errors import EdgecnnError
from edgecnn.quantize.calibration import check_calibration
from edgecnn.quantize.onnx_graph import drop_clips_before_quantize
from edgecnn.quantize.onnx_qdq import onnx_input_name

log = logging.getLogger("edgecnn.quantize")


def quantize_onnx_accuracy_control(src: str | os.PathLike, dst: str | os.PathLike, calibration_images, val_images,
                                   val_labels, *, max_drop: float = 0.005, max_iterations: int = 8) -> dict:
    """QDQ int8 ONNX by NNCF with accuracy control (top-1 on ``val_images``), written atomically at ``dst``.

    Args:
        src: float32 ONNX (input NHWC RGB 0-255).
        dst: output path.
        calibration_images: (N, H, W, 3) float32 0-255, N >= ``MIN_CALIBRATION``.
        val_images, val_labels: the validation split whose top-1 drop is controlled.
        max_drop: the absolute top-1 drop NNCF may leave (the recipe's ``max_accuracy_drop``).
        max_iterations: at most this many revert-and-revalidate rounds.

    Returns:
        ``{"max_drop": ..., "iterations": ...}`` for the candidate's notes.

    Raises:
        EdgecnnError: too few calibration images, mismatched validation arrays, missing ``src``.
    """
    import nncf
    import onnx
    import onnxruntime as ort
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    cal = check_calibration(calibration_images, what="NNCF int8")
    val_x = np.asarray(val_images, np.float32)
    val_y = np.asarray(val_labels).astype(np.int64).ravel()
    if len(val_x) == 0 or len(val_x) != len(val_y):
        raise EdgecnnError(f"NNCF accuracy control needs validation images with one label each; received "
                           f"{len(val_x)} images and {len(val_y)} labels.")
    src = Path(src)
    if not src.is_file():
        raise EdgecnnError(f"float ONNX model not found: {str(src)!r}. Export it first (format 'onnx').")
    name = onnx_input_name(src)
    model = onnx.load(str(src))

    def validate(candidate: onnx.ModelProto, items) -> tuple[float, list[float]]:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(candidate.SerializeToString(), so, providers=["CPUExecutionProvider"])
        hits = [float(sess.run(None, {name: x})[0].argmax() == y) for x, y in items]
        return float(np.mean(hits)), hits  # per-image values let NNCF rank layers by the images they flip

    calib_ds = nncf.Dataset(list(cal), lambda img: {name: img[None]})
    val_ds = nncf.Dataset(list(zip(val_x[:, None], val_y)))
    quantized = nncf.quantize_with_accuracy_control(
        model, calib_ds, val_ds, validate, max_drop=float(max_drop), drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(cal),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=max_iterations))
    dropped = drop_clips_before_quantize(quantized)  # else onnxruntime runs those convs in float
    with atomic_path(Path(dst)) as tmp:
        onnx.save(quantized, str(tmp))
    log.info("NNCF accuracy control: %s -> %s (max_drop %.4f)", src.name, Path(dst).name, max_drop)
    return {"max_drop": float(max_drop), "max_iterations": max_iterations, "clips_dropped": dropped}


__all__ = ["quantize_onnx_accuracy_control"]

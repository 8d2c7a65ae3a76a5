"""Static QDQ int8 ONNX (onnxruntime.quantization), calibrated on images, with the CPU's preferred types.

    quantize_onnx("model.onnx", "model.int8.onnx", images, method="percentile", per_channel=True)
    quantize_onnx("model.onnx", "model.mixed.onnx", images, exclude_nodes=nodes)     # those stay float

Activation type and ``reduce_range`` follow the target CPU (:func:`edgecnn.quantize.cpu.target_features`:
this machine's flags for ``target="host"``) unless given.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from edgecnn._io import atomic_path
from edgecnn.errors import EdgecnnError, did_you_mean
from edgecnn.quantize.calibration import CalibrationReader, check_calibration
from edgecnn.quantize.cpu import target_features

log = logging.getLogger("edgecnn.quantize")
ONNX_CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
ONNX_INT8_TYPES = ("uint8", "int8")


def onnx_input_name(path: str | os.PathLike) -> str:
    """The name of the graph input that is not an initializer (the image)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def onnx_node_names(path: str | os.PathLike) -> list[str]:
    """Names of the nodes of an ONNX graph (what ``exclude_nodes`` refers to), after quant_pre_process."""
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]


@contextlib.contextmanager
def preprocessed(src: str | os.PathLike, dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """A temporary ``quant_pre_process``-ed copy of ``src`` (shape inference + optimisation, as onnxruntime
    advises before quantising): the graph whose node names ``exclude_nodes`` refers to."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=dir, prefix=".quantize-onnx-") as tmpdir:
        prep = Path(tmpdir) / "prep.onnx"
        quant_pre_process(str(src), str(prep), skip_symbolic_shape=True)
        yield prep


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, calibration_images, *, method: str = "minmax",
                  per_channel: bool = True, reduce_range: bool | None = None, activation_type: str | None = None,
                  exclude_nodes: Iterable[str] = (), percentile: float = 99.999,
                  symmetric_activations: bool = False,
                  tensor_ranges: dict[str, tuple[float, float]] | None = None, target: str = "host") -> Path:
    """Static QDQ int8 ONNX (int8 weights; uint8 or int8 activations) from a float ONNX, calibrated on images.

    ``quant_pre_process`` (shape inference + graph optimisation) runs first, as onnxruntime advises.
    ``dst`` is written atomically: on any error no file is left behind.

    Args:
        src: float32 ONNX (e.g. ``model.onnx`` from the exporter; input RGB 0-255 NHWC).
        dst: output path.
        calibration_images: (N, H, W, 3) float32 0-255, N >= ``MIN_CALIBRATION`` (a few hundred is typical).
        method: ``'minmax'``, ``'entropy'`` (KL) or ``'percentile'`` activation ranges.
        per_channel: per-output-channel weight scales (better accuracy, same speed on CPU).
        reduce_range: 7-bit weights; None follows ``target`` (True on AVX2 without VNNI).
        activation_type: ``'uint8'`` or ``'int8'``; None follows ``target`` (int8 on ARM, else uint8).
        exclude_nodes: node names to keep float (see :func:`~edgecnn.quantize.onnx_sensitive_nodes`).
        percentile: the percentile for ``method='percentile'``.
        symmetric_activations: symmetric activation ranges (some NPUs want them).
        tensor_ranges: ``{tensor: (rmin, rmax)}`` fixed real ranges instead of calibrated ones (e.g. learned
            by QAT, see :mod:`edgecnn.quantize.onnx_qat`); names absent after pre-processing are ignored.
        target: the CPU the file is for, a key of :data:`~edgecnn.quantize.cpu.TARGET_CPUS` (``host``: this
            machine's flags; ``arm64``: S8S8; ``x86-avx2``: U8S8 with 7-bit weights; ``x86-vnni``: U8S8).

    Returns:
        ``dst`` as a Path.

    Raises:
        EdgecnnError: too few calibration images, unknown method / type / node names / target, missing ``src``.

    Example:
        >>> quantize_onnx("run/model.onnx", "run/model.int8.onnx", calib, method="percentile")  # doctest: +SKIP
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in ONNX_CALIBRATION_METHODS:
        raise EdgecnnError(f"method must be one of {list(ONNX_CALIBRATION_METHODS)}; received method={method!r}."
                           f"{did_you_mean(method, ONNX_CALIBRATION_METHODS)}")
    if activation_type is not None and activation_type not in ONNX_INT8_TYPES:
        raise EdgecnnError(f"activation_type must be one of {list(ONNX_INT8_TYPES)} or None (detect the CPU); "
                           f"received activation_type={activation_type!r}.")
    if not 0 < percentile <= 100:
        raise EdgecnnError(f"percentile must be in (0, 100]; received percentile={percentile!r}.")
    cal = check_calibration(calibration_images, what=f"ONNX int8 ({method})")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise EdgecnnError(f"float ONNX model not found: {str(src)!r}. Export it first (format 'onnx').")
    cpu = target_features(target)
    reduce = cpu.reduce_range if reduce_range is None else bool(reduce_range)
    act = activation_type or cpu.onnx_activation_type
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    exclude = list(exclude_nodes)
    calib_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile}[method]
    extra = {"CalibTensorRangeSymmetric": bool(symmetric_activations), "CalibPercentile": float(percentile)}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with preprocessed(src, dst.parent) as prep:
        if exclude:
            names = set(onnx_node_names(prep))
            unknown = sorted(set(exclude) - names)
            if unknown:
                raise EdgecnnError(f"exclude_nodes: {unknown} are not nodes of {src.name} (after pre-processing)."
                                   f"{did_you_mean(unknown[0], names)}")
        if tensor_ranges:
            extra["TensorQuantOverrides"] = _range_overrides(prep, tensor_ranges)
        folded = _folded(src)   # a normalisation folded into the first conv: its padding stays float (copies)
        plumbing = _fold_plumbing(folded, prep)
        with atomic_path(dst) as tmp:
            reader = CalibrationReader(cal, onnx_input_name(prep))
            extra["CalibStridedMinMax"] = reader.stride()     # despite the name, every method; bounds memory
            quantize_static(str(prep), str(tmp), reader,
                            quant_format=QuantFormat.QDQ, activation_type=qtype[act],
                            weight_type=qtype[cpu.onnx_weight_type], per_channel=per_channel, reduce_range=reduce,
                            calibrate_method=calib_method, nodes_to_exclude=(exclude + plumbing) or None,
                            extra_options=extra)
            if folded is not None:
                _correct_fold(folded, tmp)
    log.info("quantised %s -> %s (%s, %s activations, per_channel=%s, reduce_range=%s, %d node(s) float, for %s)",
             src.name, dst.name, method, act, per_channel, reduce, len(exclude), target)
    return dst


def _folded(src: Path):
    """The float model when the export folded its normalisation (``onnx_fold.fold_record``), else None."""
    import onnx

    from edgecnn.quantize.onnx_fold import fold_record

    model = onnx.load(str(src))
    return model if fold_record(model) is not None else None


def _fold_plumbing(folded, prep: Path) -> list[str]:
    """The data-movement nodes before a folded first conv (``onnx_fold.input_plumbing``), in ``prep``'s names."""
    import onnx

    from edgecnn.quantize.onnx_fold import fold_record, input_plumbing

    if folded is None:
        return []
    return input_plumbing(onnx.load(str(prep), load_external_data=False), fold_record(folded)["conv"])


def _correct_fold(folded, quantized: Path) -> None:
    """Bias correction for a normalisation folded into the first conv (``onnx_fold.correct_folded_bias``)."""
    import onnx

    from edgecnn.quantize.onnx_fold import correct_folded_bias

    q = onnx.load(str(quantized))
    if correct_folded_bias(folded, q):
        onnx.save(q, str(quantized))


def _range_overrides(prep: Path, ranges: dict[str, tuple[float, float]]) -> dict:
    """onnxruntime's ``TensorQuantOverrides`` (rmin/rmax) for the ``ranges`` whose tensor the graph still has."""
    import numpy as np
    import onnx

    g = onnx.load(str(prep), load_external_data=False).graph
    names = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    out = {t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in ranges.items() if t in names}
    log.info("fixed ranges for %d of %d tensor(s)", len(out), len(ranges))
    return out


__all__ = ["ONNX_CALIBRATION_METHODS", "ONNX_INT8_TYPES", "onnx_input_name", "onnx_node_names", "preprocessed",
           "quantize_onnx"]

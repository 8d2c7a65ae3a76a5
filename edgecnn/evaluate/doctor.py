"""Why is my int8 artifact worse or slower than float? ``edgecnn doctor RUN [ARTIFACT]``.

For each int8 artifact of a run directory (``model.int8.tflite``, ``model.int8.onnx``,
``model.int8.openvino/``; or one file, e.g. a candidate under ``RUN/compress/``), in each runtime
that runs it, against its float twin (``model.fp32.tflite`` / ``model.keras``, ``model.onnx``,
``model.openvino``):

* **error per layer** on validation images: SQNR (dB) and cosine of every layer's output against
  float, cumulative (all the error that reached it) and local (what the layer adds: ``loss_db``,
  ``share`` of the error), with the op type, the output's scale, the share of values clipped at the
  calibrated range, and per-tensor / per-channel weights. ONNX: onnxruntime's ``qdq_loss_debug``
  (:func:`~edgecnn.quantize.onnx_node_sensitivity`); TFLite: every tensor of the file and its float
  twin in LiteRT (:func:`~edgecnn.quantize.tflite_sensitivity.tflite_tensor_sensitivity`). OpenVINO
  runs the same QDQ graph (``model.int8.openvino`` is converted from ``model.int8.onnx``), so its
  per-layer figures are onnxruntime's of that graph; its own intermediate tensors are not read.
* **time per op**, int8 beside float: onnxruntime's profiler and OpenVINO's PERF_COUNT
  (:mod:`edgecnn.evaluate.op_profile`), grouped by op type, with the share left in float ops and
  Q/DQ and the per-op sum beside the measured end-to-end time; LiteRT end to end only (its Python
  API has no per-op profiler). The CPU's int8 instruction path (:func:`~edgecnn.quantize.cpu_features`).
* **a verdict** in plain words from those figures.

    d = diagnose("export/run")                      # every int8 artifact; writes RUN/doctor.json
    print(format_diagnosis(d))
    d = diagnose("export/run", "compress/model.int8-minmax.onnx", profile=False)   # per-layer only

``doctor.json`` is merged into ``report.json`` under ``"doctor"`` when the run has one; the report's
"Int8 doctor" section renders it.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import write_json
from edgecnn.errors import EdgecnnError, did_you_mean
from edgecnn.report.task_sections.doctor import DOCTOR_JSON

__all__ = ["diagnose", "format_diagnosis", "int8_path", "ort_requantised", "AGREEMENT_OK", "DOCTOR_JSON"]

log = logging.getLogger("edgecnn.doctor")

AGREEMENT_OK = 0.99
"""Top-1 agreement with the float twin below which the doctor explains where the error comes from."""
AGREEMENT_IMAGES = 256          # images the agreement and output SQNR are measured on (at most)
LAYER_IMAGES = 16               # images every intermediate tensor is recorded for (memory: all of them)
PROFILE_RUNS, PROFILE_WARMUP = 50, 5
LATENCY_ROUNDS, LATENCY_RUNS = 5, 20   # interleaved int8 / float batch-1 timing at 1 thread
_SUFFIXES = (".tflite", ".onnx", ".openvino")


# ----------------------------------------------------------------------------------------------
# The run, its int8 artifacts and their float twins


def _check_run(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise EdgecnnError(f"run directory not found: {str(run_dir)!r}. Pass a folder made by `edgecnn run` "
                           "(it holds recipe.yaml, manifest.json and the artifacts).")
    if not (run_dir / "recipe.yaml").is_file() and not (run_dir / "manifest.json").is_file():
        raise EdgecnnError(f"{str(run_dir)!r} is not a run directory (no recipe.yaml, no manifest.json). "
                           "Create one with `edgecnn run RECIPE --output DIR`.")


def _is_int8(path: Path) -> bool:
    """Whether an artifact computes in int8 (a QDQ / QLinear ONNX, an int8-activation TFLite, a FakeQuantize IR)."""
    if path.suffix == ".onnx":
        import onnx

        g = onnx.load(str(path), load_external_data=False).graph
        return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "ConvInteger", "MatMulInteger")
                   or n.op_type.startswith("QLinear") for n in g.node)
    if path.suffix == ".tflite":
        from edgecnn.quantize.tflite_sensitivity import tflite_graph

        nodes, constants = tflite_graph(path.read_bytes())
        from ai_edge_litert.interpreter import Interpreter

        types = {d["name"]: np.dtype(d["dtype"]) for d in Interpreter(model_path=str(path)).get_tensor_details()}
        return any(types.get(o) in (np.dtype(np.int8), np.dtype(np.uint8))
                   for n in nodes if n.op_type not in ("QUANTIZE", "DEQUANTIZE") for o in n.output)
    if path.is_dir() and path.suffix == ".openvino":
        xml = next(path.glob("*.xml"), None)
        return xml is not None and 'type="FakeQuantize"' in xml.read_text(errors="replace")
    return False


def _int8_files(run_dir: Path) -> list[str]:
    """The run's int8 artifacts the doctor reads, in the export registry's order."""
    from edgecnn.export import list_formats

    names = [f.filename for f in list_formats() if f.precision == "int8" and f.filename.endswith(_SUFFIXES)]
    return [n for n in names if (run_dir / n).exists()]


def _resolve(run_dir: Path, artifact: str | os.PathLike) -> Path:
    """The artifact's path (relative to the run, or as given), checked: it exists and it is int8."""
    given = Path(artifact)
    path = given if given.is_absolute() or given.exists() and not (run_dir / given).exists() else run_dir / given
    if path.suffix == ".xml":
        path = path.parent
    known = _int8_files(run_dir) + sorted(str(p.relative_to(run_dir)) for p in (run_dir / "compress").glob("*")
                                          if p.suffix in _SUFFIXES and "int8" in p.name)
    if not path.exists():
        raise EdgecnnError(f"unknown artifact {str(artifact)!r}: not found in {str(run_dir)!r}."
                           f"{did_you_mean(str(artifact), known)} The int8 artifacts there: "
                           f"{', '.join(known) or 'none'}.")
    if path.suffix not in _SUFFIXES:
        raise EdgecnnError(f"{path.name!r} is not an artifact the doctor reads; it reads .tflite, .onnx and "
                           f".openvino/ files. The int8 artifacts of the run: {', '.join(known) or 'none'}.")
    if not _is_int8(path):
        raise EdgecnnError(f"{path.name!r} is a float artifact: the doctor compares an int8 artifact with its float "
                           f"twin. Pass one of the run's int8 artifacts: {', '.join(known) or 'none'}.")
    return path


def _float_twin(run_dir: Path, path: Path) -> Path:
    """The float model an int8 artifact is compared with (see the module docstring)."""
    in_compress = path.parent.name == "compress" and path.parent.parent.resolve() == run_dir.resolve()
    if path.suffix == ".onnx":
        order = ["compress/model.onnx", "model.onnx"] if in_compress else ["model.onnx", "compress/model.onnx"]
    elif path.suffix == ".tflite":
        order = (["compress/model.clustered.keras", "compress/model.pruned.keras", "model.keras"] if in_compress
                 else ["model.fp32.tflite", "model.keras"])
    else:
        order = ["model.openvino", "model.onnx"]
    for name in order:
        if (run_dir / name).exists():
            return run_dir / name
    raise EdgecnnError(f"no float twin for {path.name!r} in {str(run_dir)!r}: looked for {', '.join(order)}. "
                       "Export the float format too (e.g. `edgecnn export RUN -f onnx -f tflite-fp32`).")


def _float_tflite(twin: Path, tmp: Path) -> Path:
    """A float .tflite of the twin: the file itself, or ``model.keras`` converted (TensorFlow, imported here)."""
    if twin.suffix == ".tflite":
        return twin
    from edgecnn._io import write_bytes
    from edgecnn._tf import keras
    from edgecnn.quantize import quantize_scope, tflite_converter

    log.info("doctor: converting %s to a float .tflite to compare with", twin.name)
    with quantize_scope():
        model = keras.models.load_model(str(twin), compile=False)
        return write_bytes(tmp / "float.tflite", tflite_converter(model).convert())


# ----------------------------------------------------------------------------------------------
# Images: the run's val split, else its training images (what calibration draws from)


def _run_images(run_dir: Path, size: int, channels: int) -> tuple[Any, str]:
    """The images the doctor runs: the val split (decoded once into RUN/splits/), else train images."""
    import yaml

    from edgecnn.data.decoded_split import SPLITS_DIR, decode_images, decoded_split
    from edgecnn.data.folders import discover

    recipe = {}
    if (run_dir / "recipe.yaml").is_file():
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}
    d = recipe.get("data") or {}
    why = "the recipe names no data folder"
    if d.get("path") and Path(d["path"]).is_dir():
        try:
            ds = discover(d["path"], val_fraction=d.get("val_fraction", 0.15),
                          test_fraction=d.get("test_fraction", 0.15),
                          seed=d.get("split_seed", 0), min_images_per_class=d.get("min_images_per_class", 10),
                          skip_bad_images=d.get("skip_bad_images", False), check_images=False,
                          channels=d.get("channels", channels))
            if ds.paths("val"):
                return decoded_split(ds, "val", size, run_dir / SPLITS_DIR), "val split"
            paths = ds.paths("train")[:AGREEMENT_IMAGES]
            if paths:
                return decode_images(paths, size, channels), "training images (no val split; calibration's source)"
            why = "the data folder has no val or train images"
        except EdgecnnError as e:
            why = str(e)
    else:
        why = f"the data folder {d.get('path')!r} is not there" if d.get("path") else why
    decoded = sorted((run_dir / SPLITS_DIR).glob(f"val-{size}px-*.npy")) + \
        sorted((run_dir / SPLITS_DIR).glob(f"train-{size}px-*.npy"))
    if decoded:
        return np.load(decoded[0], mmap_mode="r"), f"decoded {decoded[0].name} ({why})"
    raise EdgecnnError(f"no images to diagnose {str(run_dir)!r} with: {why}, and {run_dir / SPLITS_DIR} holds no "
                       "decoded val split. Pass images=ARRAY (N, H, W, C) float32 0-255 to diagnose().")


def _take(images, n: int) -> np.ndarray:
    return np.asarray(images[:n], np.float32)


# ----------------------------------------------------------------------------------------------
# Measurements


def _agreement(int8_out: np.ndarray, float_out: np.ndarray) -> dict:
    from edgecnn.quantize.layer_error import cosine, sqnr_db

    agree = float(np.mean(int8_out.argmax(-1) == float_out.argmax(-1)))
    db = sqnr_db(float_out, int8_out)
    return {"agreement": round(agree, 4), "output_sqnr_db": round(db, 2) if np.isfinite(db) else None,
            "output_cosine": round(cosine(float_out, int8_out), 6)}


def _profile(runtime: str, int8_path: Path, twin: Path | None, image: np.ndarray) -> dict | None:
    from edgecnn.evaluate.op_profile import ort_profile, ov_profile, summarise_profile

    fn = {"onnxruntime": ort_profile, "openvino": ov_profile}.get(runtime)
    if fn is None:
        return None
    out = {"int8": summarise_profile(fn(int8_path, image, PROFILE_RUNS, 1, warmup=PROFILE_WARMUP))}
    if twin is not None:
        out["float"] = summarise_profile(fn(twin, image, PROFILE_RUNS, 1, warmup=PROFILE_WARMUP))
    return out


def _layers(path: Path, twin: Path, images: np.ndarray, run_dir: Path, tmp: Path) -> dict:
    """Per-layer figures of one artifact (see the module docstring for the instrument per format)."""
    if path.suffix == ".onnx":
        from edgecnn.quantize import onnx_node_sensitivity

        float_onnx = twin if twin.suffix == ".onnx" else run_dir / "model.onnx"
        return {"format": ".onnx", "float": float_onnx.name,
                "instrument": f"onnxruntime qdq_loss_debug: every tensor of the QDQ graph against {float_onnx.name}",
                "rows": onnx_node_sensitivity(float_onnx, path, images, max_images=len(images))}
    if path.suffix == ".tflite":
        from edgecnn.quantize import tflite_tensor_sensitivity

        ftfl = _float_tflite(twin, tmp)
        rows = tflite_tensor_sensitivity(ftfl, path, images, max_images=len(images))
        return {"format": ".tflite", "float": twin.name, "rows": rows,
                "instrument": "LiteRT built-in kernels, every tensor kept, against the same tensor names of "
                              f"{twin.name}{' (converted to .tflite)' if ftfl != twin else ''}",
                **({} if rows else {"note": "no tensor name matches the float twin's: the files do not come "
                                            "from one model, so there are no per-layer figures"})}
    parent = run_dir / "model.int8.onnx"
    if parent.is_file() and (run_dir / "model.onnx").is_file():
        out = _layers(parent, run_dir / "model.onnx", images, run_dir, tmp)
        out["note"] = ("OpenVINO's own intermediate tensors are not read (it compiles the graph into fused int8 "
                       "kernels); these are the figures of the QDQ graph it was converted from, model.int8.onnx, "
                       "measured in onnxruntime")
        return out
    return {"instrument": None, "rows": [], "note": "per-layer error is not covered for an OpenVINO IR without its "
                                                   "model.int8.onnx and model.onnx"}


def ort_requantised(path: str | os.PathLike) -> list[str]:
    """Conv/Gemm nodes a QDQ ONNX keeps float that onnxruntime quantises anyway when it loads the file.

    onnxruntime's ``WeightBiasQuantization`` graph transformer (1.21 on, level 1) gives a float Conv/Gemm
    that reads a DequantizeLinear and leads to a QuantizeLinear per-tensor int8 weights, so a node kept
    float with ``exclude_nodes`` between quantised neighbours runs int8 after all (OpenVINO runs it float).
    """
    import onnx
    import onnxruntime as ort

    src = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in src.initializer}
    kept = {n.name for n in src.node if n.op_type in ("Conv", "Gemm", "ConvTranspose", "MatMul") and len(n.input) > 1
            and n.input[1] in inits}
    if not kept:
        return []
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = str(Path(tmp) / "basic.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        g = onnx.load(so.optimized_model_filepath).graph
    producer = {o: n for n in g.node for o in n.output}
    return sorted(n.name for n in g.node if n.name in kept and len(n.input) > 1 and
                  getattr(producer.get(n.input[1]), "op_type", "") == "DequantizeLinear")


def _runtimes(path: Path, runtime: str | None) -> tuple[list[str], dict[str, str]]:
    """The runtimes that run ``path`` here (or the one named), and why the others are skipped."""
    from edgecnn.runtime import get_runtime, runtimes_for

    specs = runtimes_for(path)
    if runtime is not None:
        spec = get_runtime(runtime)
        if spec not in specs:
            raise EdgecnnError(f"runtime {runtime!r} does not run {path.name!r}; the runtimes that do: "
                               f"{', '.join(s.name for s in specs) or 'none'}.")
        specs = [spec]
    else:
        specs = [s for s in specs if s.evaluated_by_default]
    ok, skipped = [], {}
    for s in specs:
        avail, why = s.available()
        (ok.append(s.name) if avail else skipped.__setitem__(s.name, why))
    return ok, skipped


def _twin_in(runtime: str, twin: Path, float_tflite: Path | None) -> Path | None:
    """The float twin as a file this runtime opens (LiteRT needs a .tflite; OpenVINO takes the IR or the ONNX)."""
    from edgecnn.runtime import get_runtime

    if runtime == "litert":
        return float_tflite
    spec = get_runtime(runtime)
    return twin if spec.runs(twin) else None


# ----------------------------------------------------------------------------------------------
# The verdicts


def int8_path(flags: frozenset[str] | set[str]) -> str:
    """The int8 instruction path of a CPU with these :func:`~edgecnn.quantize.cpu_features` flags, in words."""
    if "amx" in flags:
        return "AMX-INT8 tiles and VNNI (VPDPBUSD): int8 has a 4x multiply path over fp32 and more"
    if "vnni" in flags:
        which = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-VNNI"
        return (f"{which} (VPDPBUSD: four u8 x s8 products summed into int32 in one instruction): int8 convolutions "
                "have a 4x multiply path over fp32")
    if "avx2" in flags:
        return ("AVX2 without VNNI: int8 goes through VPMADDUBSW + VPMADDWD (u8 x s8 pairs summed in int16, which can "
                "saturate, hence 7-bit weights with reduce_range): at most 2x fp32's multiply rate, no 4x path")
    if "arm_dotprod" in flags:
        return "ARM dot product (SDOT/UDOT: four int8 products per lane into int32): a 4x multiply path over fp32"
    if "arm" in flags:
        return "ARM NEON without dot product (widening SMLAL): int8 has about 2x fp32's multiply rate"
    return "no known SIMD int8 path (no AVX2, VNNI or ARM dot product): int8 may run scalar kernels"


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %" if x >= 0.01 or x == 0 else f"{x * 100:.1f} %"


def _layer_facts(r: dict) -> str:
    facts = []
    if r.get("weights") in ("per-tensor", "per-channel"):
        w = f"{r['weights']} weights"
        if r.get("weight_sqnr_db") is not None:
            w += f", worst channel {r['weight_sqnr_db']:.0f} dB"
        if r.get("weight_dead_channels"):
            w += f", {r['weight_dead_channels']} channel(s) rounded to zero"
        facts.append(w)
    elif r.get("weights") == "float":
        facts.append("kept float")
    if r.get("clipped") is not None:
        facts.append(f"{_pct(r['clipped'])} of activations clipped")
    if r.get("sqnr_db") is not None:
        facts.append(f"output SQNR {r['sqnr_db']:.1f} dB")
    return ", ".join(facts)


def _advice(r: dict, suffix: str) -> str:
    keep = ("keep it float (quantize_onnx(..., exclude_nodes=" + repr(r["nodes"]) + "); the onnx-int8-mixed route "
            "does this)") if suffix == ".onnx" else \
        (f"keep it float (tflite_int8(..., denylisted_nodes=[{r['tensor']!r}]); the tflite-int8-mixed route "
         "does this)")
    if r.get("weights") == "per-tensor" and (r.get("weight_dead_channels") or r.get("weight_sqnr_db") is None
                                             or r["weight_sqnr_db"] < 30):
        pc = "use per-channel weights (route onnx-int8-minmax-pc)" if suffix == ".onnx" else "use per-channel weights"
        return f"{keep.split(' (')[0]} or {pc}"
    if (r.get("clipped") or 0) > 0.01:
        return (f"its calibrated range clips {_pct(r['clipped'])} of values: calibrate on images like these (more of "
                f"them, or min/max instead of percentile), or {keep}")
    return keep


def _kinds(rows: list[dict]) -> str:
    """``4 Conv with per-tensor weights, 1 Gemm``: what the layers are."""
    counts: dict[str, int] = {}
    for r in rows:
        key = r["op_type"] + (f" with {r['weights']} weights" if r.get("weights") in ("per-tensor", "per-channel")
                              else "")
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items())


def _spread_advice(rows: list[dict], suffix: str) -> str:
    if sum(r.get("weights") == "per-tensor" for r in rows) > len(rows) / 2:
        return "use per-channel weights" + (" (route onnx-int8-minmax-pc)" if suffix == ".onnx" else "")
    if max((r.get("clipped") or 0) for r in rows) > 0.01:
        return "calibrate on more images like these: their ranges clip values"
    qat = "onnx-int8-qat" if suffix == ".onnx" else "tflite-int8-qat"
    mixed = "onnx-int8-mixed" if suffix == ".onnx" else "tflite-int8-mixed"
    return f"quantisation-aware training ({qat}) or several layers float ({mixed})"


def _cause(rows: list[dict]) -> dict | None:
    """The layer the verdict blames: among those adding at least a quarter of the largest share of the error, the
    one that loses the most SQNR itself. A layer after the damage (a classifier subtracting its mean) amplifies the
    noise that reached it and so takes a large share; the layer where the signal was lost has the large local loss.
    """
    if not rows:
        return None
    big = max(r.get("share", 0) for r in rows)
    return max((r for r in rows if r.get("share", 0) >= 0.25 * big), key=lambda r: r["loss_db"])


def _verdicts(entry: dict, flags: frozenset[str]) -> list[str]:
    name, out = entry["artifact"], []
    top = entry.get("top_layers") or []
    fmt = entry["layers"].get("format", Path(name).suffix)
    by_agreement: dict[float, list[str]] = {}
    for rt, m in entry["runtimes"].items():
        if "agreement" in m:
            by_agreement.setdefault(m["agreement"], []).append(rt)
    for a, rts in by_agreement.items():
        where = f"{name} in {' and '.join(rts)}: agreement {a:.3f} with {entry['float_twin']}"
        t = entry.get("cause")
        if a < AGREEMENT_OK and t is not None and (t["share"] >= 0.3 or t["loss_db"] >= 10):
            out.append(f"{where}: {_pct(t['share'])} of the error enters at {t['node']} ({t['op_type']}; local "
                       f"loss {t['loss_db']:.1f} dB; {_layer_facts(t)}): {_advice(t, fmt)}.")
        elif a < AGREEMENT_OK and top:
            out.append(f"{where}: no one layer causes it; the {len(top)} that add the most add "
                       f"{_pct(sum(r['share'] for r in top))} ({_kinds(top)}): {_spread_advice(top, fmt)}.")
        elif a < AGREEMENT_OK:
            out.append(f"{where}; no per-layer figures say where the error enters.")
        else:
            big = f"; the largest part of the error ({_pct(top[0]['share'])}) enters at {top[0]['node']} " \
                  f"({top[0]['op_type']})" if top else ""
            out.append(f"{where}: int8 holds{big}.")
    if entry.get("ort_requantised"):
        nodes = entry["ort_requantised"]
        listed = ", ".join(nodes[:4]) + (" ..." if len(nodes) > 4 else "")
        out.append(f"{name} keeps {len(nodes)} Conv/Gemm float ({listed}), but onnxruntime quantises their "
                   "weights per-tensor when it loads the file (its "
                   "WeightBiasQuantization transformer: a float Conv between DequantizeLinear and QuantizeLinear); in "
                   "onnxruntime they run int8 after all (OpenVINO runs them float). The per-layer figures describe "
                   "the file, not onnxruntime's rewrite.")
    path_words = int8_path(flags)
    for rt, m in entry["runtimes"].items():
        lat = m.get("latency")
        if not lat or not lat.get("ratio"):
            continue
        r = lat["ratio"]
        speed = (f"{r:.2f}x SLOWER than" if r > 1.05 else f"{1 / r:.2f}x faster than" if r < 0.95
                 else f"about as fast as ({r:.2f}x)")
        why = []
        prof = (m.get("profile") or {}).get("int8")
        if prof and prof.get("precision_share"):
            share = prof["precision_share"]
            left = share.get("float", 0) + share.get("qdq", 0)
            floats = [k for k, v in prof["op_types"].items() if v["precision"] in ("float", "qdq")][:3]
            why.append(f"{_pct(left)} of its op time is in float ops and Q/DQ ({', '.join(floats) or 'none'}), "
                       f"{_pct(share.get('int8', 0))} in int8 kernels, {_pct(share.get('layout', 0))} moving data")
        if r > 1.05:
            if "vnni" not in flags and "arm_dotprod" not in flags:
                why.append(f"this CPU has {path_words.split(':')[0]}, so int8 convolutions have no 4x multiply path")
            else:
                why.append(f"this CPU has {path_words.split(' (')[0]}, so the int8 kernels are not what is slow: the "
                           "time goes to what surrounds them")
            if lat["float_p50_ms"] < 0.3:
                why.append(f"the float model takes {lat['float_p50_ms']:.2f} ms, so fixed per-op costs (requantising, "
                           "layout) weigh more than the multiplies int8 saves")
        elif r >= 0.95 and "vnni" not in flags and "arm_dotprod" not in flags:
            why.append(f"this CPU has {path_words.split(':')[0]}")
        out.append(f"{name} is {speed} {lat['float']} in {rt} at 1 thread ({lat['int8_p50_ms']:.3f} vs "
                   f"{lat['float_p50_ms']:.3f} ms p50)" + (": " + "; ".join(why) if why else "") + ".")
    return out


# ----------------------------------------------------------------------------------------------
# The public functions


def diagnose(run_dir: str | os.PathLike, artifact: str | os.PathLike | None = None, *, runtime: str | None = None,
             images=None, top: int = 5, profile: bool = True, write: bool = True) -> dict:
    """Why an int8 artifact is worse or slower than its float twin: per-layer error, per-op time, a verdict.

    Args:
        run_dir: a run directory made by ``edgecnn run`` (or ``edgecnn import``).
        artifact: one int8 artifact, relative to the run (``model.int8.onnx``, a candidate
            ``compress/model.int8-minmax.onnx``) or a path; None = every int8 artifact of the run.
        runtime: only this runtime (``onnxruntime``, ``openvino``, ``litert``); None = every runtime that
            runs the artifact here.
        images: (N, H, W, C) float32 0-255 images; None = the run's val split (training images when
            it has none).
        top: how many layers ``top_layers`` lists (those that add the most error).
        profile: also time int8 against float and profile per op (seconds per runtime); False gives
            the per-layer error and agreement only (what the compress stage asks for a failed candidate).
        write: write ``RUN/doctor.json`` (this call's artifacts replace their earlier entries) and
            merge it into ``report.json`` under ``"doctor"`` when that exists.

    Returns:
        ``{"run", "machine", "cpu": {"flags", "int8_path"}, "images", "artifacts": {name: {"artifact",
        "float_twin", "runtimes": {rt: {"agreement", "output_sqnr_db", "output_cosine", "latency",
        "profile"}}, "skipped", "layers", "top_layers", "verdicts"}}}``.

    Raises:
        EdgecnnError: not a run directory, an unknown or float artifact, a runtime that does not run it,
            no float twin, no images.

    Example:
        >>> d = diagnose("export/defects-mobilenetv2", profile=False)     # doctest: +SKIP
        >>> print(format_diagnosis(d))                                     # doctest: +SKIP
    """
    from edgecnn.quantize import cpu_features
    from edgecnn.runtime import load_runner
    from edgecnn.runtime.latency import interleaved_latency, machine_info

    run_dir = Path(run_dir)
    _check_run(run_dir)
    if top < 1:
        raise EdgecnnError(f"top must be >= 1; received top={top}.")
    if artifact is not None:
        paths = [_resolve(run_dir, artifact)]
    else:
        paths = [run_dir / n for n in _int8_files(run_dir)]
        if not paths:
            raise EdgecnnError(f"{str(run_dir)!r} has no int8 artifact (model.int8.tflite, model.int8.onnx, "
                               "model.int8.openvino): add tflite-int8 / onnx-int8 to export.formats, or name a "
                               "candidate under compress/.")
    flags = cpu_features().flags
    result: dict[str, Any] = {"run": str(run_dir), "machine": machine_info(),
                              "cpu": {"flags": sorted(flags), "int8_path": int8_path(flags)},
                              "threads": 1, "artifacts": {}}
    with tempfile.TemporaryDirectory(prefix="edgecnn-doctor-") as tmpdir:
        tmp = Path(tmpdir)
        for path in paths:
            name = str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)
            twin = _float_twin(run_dir, path)
            rts, skipped = _runtimes(path, runtime)
            if not rts:
                raise EdgecnnError(f"no runtime can run {name!r} here: " +
                                   "; ".join(f"{k}: {v}" for k, v in skipped.items()))
            first = load_runner(path, threads=1, runtime=rts[0])
            if images is None:
                imgs, source = _run_images(run_dir, first.input_size, first.input_channels)
            else:
                imgs, source = images, "given images"
            sample = _take(imgs, AGREEMENT_IMAGES)
            if len(sample) == 0:
                raise EdgecnnError("diagnose: no images (an empty array or split).")
            result["images"] = {"source": source, "agreement": int(len(sample)),
                                "per_layer": int(min(LAYER_IMAGES, len(sample)))}
            log.info("doctor: %s against %s in %s on %d images", name, twin.name, ", ".join(rts), len(sample))
            float_tflite = _float_tflite(twin, tmp) if "litert" in rts else None
            entry: dict[str, Any] = {"artifact": name, "float_twin": twin.name, "runtimes": {}, "skipped": skipped}
            for rt in rts:
                runner = first if rt == rts[0] else load_runner(path, threads=1, runtime=rt)
                ftwin = _twin_in(rt, twin, float_tflite)
                m: dict[str, Any] = {}
                if ftwin is None:
                    m["note"] = f"{rt} does not run the float twin {twin.name}"
                    entry["runtimes"][rt] = m
                    continue
                frunner = load_runner(ftwin, threads=1, runtime=rt)
                m.update(_agreement(_predict(runner, sample), _predict(frunner, sample)))
                if profile:
                    image = sample[:1]
                    p50 = {k: v["p50_ms"] for k, v in interleaved_latency(
                        {"int8": runner, "float": frunner}, image, rounds=LATENCY_ROUNDS, runs=LATENCY_RUNS).items()}
                    m["latency"] = {"int8_p50_ms": round(p50["int8"], 4), "float_p50_ms": round(p50["float"], 4),
                                    "ratio": round(p50["int8"] / p50["float"], 4), "threads": 1,
                                    "float": ftwin.name if ftwin.parent != tmp else f"{twin.name} (as .tflite)"}
                    prof = _profile(rt, path, ftwin, image)
                    if prof is not None:
                        m["profile"] = prof
                    else:
                        m["profile_note"] = (f"{rt} has no per-op profiler in its Python API (LiteRT's is in the C++ "
                                             "benchmark_model tool, --enable_op_profiling): end-to-end times only")
                entry["runtimes"][rt] = m
            if path.suffix == ".onnx" and "onnxruntime" in rts:
                entry["ort_requantised"] = ort_requantised(path)
            entry["layers"] = _layers(path, twin, sample[:LAYER_IMAGES], run_dir, tmp)
            entry["layers"]["images"] = int(min(LAYER_IMAGES, len(sample)))
            rows = entry["layers"]["rows"]
            entry["top_layers"] = sorted(rows, key=lambda r: (-r.get("share", 0), -r["loss_db"]))[:top]
            entry["cause"] = _cause(rows)
            entry["verdicts"] = _verdicts(entry, flags)
            result["artifacts"][name] = entry
    if write:
        _write(run_dir, result)
    return result


def _predict(runner, images: np.ndarray) -> np.ndarray:
    from edgecnn.data.decoded_split import predict_in_batches

    return np.asarray(predict_in_batches(runner, images), np.float64)


def _write(run_dir: Path, result: dict) -> None:
    """``RUN/doctor.json`` (earlier entries of other artifacts kept) and report.json's ``"doctor"``."""
    path = run_dir / DOCTOR_JSON
    old: dict = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
    merged = {**result, "artifacts": {**(old.get("artifacts") or {}), **result["artifacts"]}}
    write_json(path, merged)
    report = run_dir / "report.json"
    if report.is_file():
        try:
            rep = json.loads(report.read_text())
        except json.JSONDecodeError:
            log.warning("doctor: report.json is unreadable; the figures are in %s only", path)
            return
        rep["doctor"] = {"file": DOCTOR_JSON, "cpu": merged["cpu"], "images": merged.get("images"),
                         "artifacts": {k: {"float_twin": a["float_twin"], "verdicts": a["verdicts"],
                                           "runtimes": {rt: {kk: vv for kk, vv in m.items() if kk != "profile"} |
                                                        ({"op_types": {p: v["op_types"] for p, v in
                                                                       m["profile"].items()}} if "profile" in m
                                                         else {})
                                                        for rt, m in a["runtimes"].items()},
                                           "layers": a["layers"]["rows"]}
                                       for k, a in merged["artifacts"].items()}}
        write_json(report, rep)


def format_diagnosis(d: dict) -> str:
    """The doctor's figures as text for a terminal: per artifact, the verdicts, the runtimes' agreement and
    timing, the layers that add the most error and the op types int8 and float spend their time in."""
    lines = [f"CPU int8 path: {d['cpu']['int8_path']}"]
    if d.get("images"):
        im = d["images"]
        lines.append(f"images: {im['source']} ({im['agreement']} for agreement, {im['per_layer']} per layer)")
    for name, a in d["artifacts"].items():
        lines += ["", f"== {name}  (float twin: {a['float_twin']})"]
        lines += [f"  * {v}" for v in a["verdicts"]]
        for rt, m in a["runtimes"].items():
            if "agreement" not in m:
                lines.append(f"  {rt}: {m.get('note', 'not measured')}")
                continue
            lat = m.get("latency")
            timing = (f"  p50 int8 {lat['int8_p50_ms']:.3f} ms vs float {lat['float_p50_ms']:.3f} ms "
                      f"({lat['ratio']:.2f}x)" if lat else "")
            lines.append(f"  {rt}: agreement {m['agreement']:.4f}  output SQNR {m['output_sqnr_db']} dB  "
                         f"cosine {m['output_cosine']:.4f}{timing}")
            for prec, p in (m.get("profile") or {}).items():
                lines.append(f"    {prec}, profiler on: per-op sum {p['total_us'] / 1e3:.3f} ms of end-to-end "
                             f"{p['end_to_end_us'] / 1e3:.3f} ms ({p['ops_over_end_to_end']:.0%}); "
                             + ", ".join(f"{k} {_pct(v)}" for k, v in sorted(p["precision_share"].items(),
                                                                             key=lambda kv: -kv[1])))
                lines.append("      " + ", ".join(f"{op} {v['us'] / 1e3:.3f} ms" for op, v in
                                                  list(p["op_types"].items())[:6]))
            if m.get("profile_note"):
                lines.append(f"    {m['profile_note']}")
        for rt, why in a.get("skipped", {}).items():
            lines.append(f"  {rt}: skipped ({why})")
        layers = a["layers"]
        if a["top_layers"]:
            lines.append(f"  layers adding the most error ({layers['images']} images; {layers['instrument']}):")
            lines.append(f"    {'layer':<34} {'op':<18} {'share':>6} {'local dB':>8} {'cum dB':>7} {'cos':>7} "
                         f"{'scale':>9} {'clip':>6}  weights")
            for r in a["top_layers"]:
                w = r.get("weights") or "-"
                w += _weight_note(r)
                lines.append(f"    {_short(r['node'], 34):<34} {r['op_type']:<18} {_pct(r['share']):>6} "
                             f"{r['loss_db']:>8.2f} {_num(r['sqnr_db'], 7, 1)} {_num(r['cosine'], 7, 4)} "
                             f"{_num(r['scale'], 9, 5)} {_clip(r['clipped'])}  {w}")
        if layers.get("note"):
            lines.append(f"  note: {layers['note']}")
    return "\n".join(lines)


def _weight_note(r: dict) -> str:
    """`` (worst channel 12 dB, 3 zeroed)``: the weight figures of a layer row, or nothing."""
    bits = [f"worst channel {r['weight_sqnr_db']:.0f} dB"] if r.get("weight_sqnr_db") is not None else []
    if r.get("weight_dead_channels"):
        bits.append(f"{r['weight_dead_channels']} zeroed")
    return f" ({', '.join(bits)})" if bits else ""


def _clip(x: float | None) -> str:
    return f"{'-':>6}" if x is None else f"{x * 100:>5.1f}%"


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else "…" + s[-(n - 1):]


def _num(x, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{digits}f}"

"""Latency on a microcontroller, *estimated* from the int8 graph: MACs per op times published per-op costs.

Nothing here runs on a microcontroller. :func:`estimate_latency` reads the int8 ``.tflite`` that TFLite
Micro would run, counts per operator its multiply-accumulates (convolutions, depthwise convolutions,
fully-connected) or its output elements (everything else), and turns them into cycles with the per-core
costs of :data:`CORE_COSTS`, then into milliseconds at the profile's clock (:data:`PROFILE_CORES`). The
result says so: ``"kind": "estimate"`` with its ``basis`` (the table row, the clock, the sources).

How the costs were set (the sources are in :data:`SOURCES`; docs/mcu.md says the same):

* Cortex-M7 convolution, ~1.7 cycles per MAC: the CMSIS-NN paper's CIFAR-10 network (Lai, Suda &
  Chandra 2018, arXiv:1801.06601; three 5x5 convolutions, ~12.3 M MACs, 8-bit CMSIS-NN kernels) ran in
  99.1 ms on an STM32F746 (Cortex-M7, 216 MHz): 21.4 M cycles / 12.3 M MACs = 1.74 cycles per MAC with
  its pooling and activations folded in.
* Cortex-M4 convolution, ~3.2 cycles per MAC: the M7 figure times 1.9, the M4/M7 cycles-per-inference
  ratio of the same TFLM model measured on an STM32F429 (M4, 180 MHz, 88 ms per 1000 inferences) and a
  SAM V71 (M7, 300 MHz, 28 ms) in the public tflite-micro-benchmark table (quietcricket/tflite-micro-
  benchmark): 88 x 180 / (28 x 300) = 1.89. The M4 issues one dual 16-bit MAC (SMLAD) per cycle but
  not the M7's dual issue.
* Depthwise convolution costs 2x a convolution per MAC (no reuse of the input across output channels:
  CMSIS-NN's ``arm_depthwise_conv_s8`` cannot use the im2col + 2x2 matrix kernel the paper describes);
  fully-connected 1.2x (weights are read once per MAC, from flash).
* Element-wise ops (ADD with requantisation, PAD, QUANTIZE, MEAN, SOFTMAX, ...): cycles per output
  element; plus a fixed interpreter cost per operator (TFLM's invoke loop and a kernel's prologue).

These are deliberately simple and their error is not small: flash wait states, caches (the M7's), the
tensor layout and the TFLM/CMSIS-NN version move real figures by tens of percent, and the depthwise factor
is a judgement, not a measurement. Use the estimate to rank candidates and to see which layers dominate;
measure on the board (TFLM's ``MicroProfiler``) before promising a frame rate.

Example:
    >>> est = estimate_latency(open("model.int8.tflite", "rb").read(), "cortex-m4-256k")   # doctest: +SKIP
    >>> est["ms"], est["kind"]                                                          # doctest: +SKIP
    (412.3, 'estimate')
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgecnn.errors import EdgecnnError, did_you_mean

__all__ = ["CoreCost", "CORE_COSTS", "PROFILE_CORES", "SOURCES", "OpCost", "op_costs", "estimate_latency",
           "core_of", "write_run_latency", "LATENCY_JSON"]

SOURCES = {
    "cmsis-nn": "L. Lai, N. Suda, V. Chandra, 'CMSIS-NN: Efficient Neural Network Kernels for Arm Cortex-M CPUs', "
                "arXiv:1801.06601 (2018): 8-bit CIFAR-10 CNN on STM32F746 (Cortex-M7 @ 216 MHz), 99.1 ms per "
                "image, 4.6x the runtime of the baseline kernels",
    "m4-vs-m7": "quietcricket/tflite-micro-benchmark (GitHub README): the same TFLM model per 1000 inferences, "
                "STM32F429 (Cortex-M4 @ 180 MHz) 88 ms, SAM V71 (Cortex-M7 @ 300 MHz) 28 ms, nRF52840 "
                "(Cortex-M4F @ 64 MHz) 208 ms",
    "tflm": "R. David et al., 'TensorFlow Lite Micro: Embedded Machine Learning on TinyML Systems', MLSys 2021 "
            "(arXiv:2010.08678): the interpreter adds a small fixed cost per operator",
}


@dataclass(frozen=True)
class CoreCost:
    """Per-op costs on one core with CMSIS-NN int8 kernels (cycles per MAC or per output element)."""

    core: str
    conv_cycles_per_mac: float
    depthwise_cycles_per_mac: float
    fc_cycles_per_mac: float
    elementwise_cycles_per_element: float
    op_overhead_cycles: float
    basis: str


CORE_COSTS: dict[str, CoreCost] = {c.core: c for c in (
    CoreCost("cortex-m7", 1.74, 3.5, 2.1, 3.0, 2000,
             "conv 1.74 cycles/MAC from CMSIS-NN's CIFAR-10 run (99.1 ms x 216 MHz / 12.3 M MACs); depthwise 2x, "
             "fully-connected 1.2x; element-wise 3 cycles per element; 2,000 cycles per operator"),
    CoreCost("cortex-m4", 3.3, 6.6, 4.0, 5.0, 3000,
             "the Cortex-M7 costs x 1.9 (M4/M7 cycles for the same TFLM model, quietcricket/tflite-micro-benchmark); "
             "element-wise 5 cycles per element; 3,000 cycles per operator"),
    CoreCost("cortex-m33", 3.3, 6.6, 4.0, 5.0, 3000,
             "taken as the Cortex-M4's (same DSP extension, single issue); no separate published figure used"),
    CoreCost("xtensa-lx7", 3.3, 6.6, 4.0, 5.0, 3000,
             "ESP32-S3 without ESP-NN's vector kernels, taken as the Cortex-M4's; ESP-NN is faster: no published "
             "per-op figure used"),
)}


@dataclass(frozen=True)
class ProfileCore:
    core: str
    clock_mhz: float
    part: str


# The core and a typical clock of each MCU profile (edgecnn.budget_schema.MCU_PROFILES names the boards).
PROFILE_CORES: dict[str, ProfileCore] = {
    "cortex-m4-256k": ProfileCore("cortex-m4", 100.0, "STM32F411 at 100 MHz (nRF52840: 64 MHz)"),
    "cortex-m7-1m": ProfileCore("cortex-m7", 480.0, "STM32H743 at 480 MHz (i.MX RT1062: 600 MHz)"),
    "esp32-s3": ProfileCore("xtensa-lx7", 240.0, "ESP32-S3 at 240 MHz"),
    "cortex-m33-512k": ProfileCore("cortex-m33", 160.0, "STM32U575 at 160 MHz"),
}

_CONV, _DEPTHWISE, _FC = "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"
_FREE = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})   # a view of the same bytes in TFLM: no work


@dataclass(frozen=True)
class OpCost:
    """One operator: what it computes and its estimated cycles."""

    index: int
    op: str
    layer: str
    macs: int
    elements: int
    cycles: float


def core_of(profile: str) -> ProfileCore:
    """The core and clock of an MCU profile; an unknown name gets the list."""
    if profile not in PROFILE_CORES:
        raise EdgecnnError(f"no latency model for target {profile!r}.{did_you_mean(profile, PROFILE_CORES)} "
                           f"Targets with one: {', '.join(PROFILE_CORES)}.")
    return PROFILE_CORES[profile]


def _shape(t) -> list[int]:
    return [int(d) for d in (t.shape if t.shape is not None else [])]


def op_costs(data: bytes, core: str) -> list[OpCost]:
    """Per operator of an int8 ``.tflite`` (subgraph 0, execution order): MACs, output elements, cycles on ``core``.

    MACs: CONV_2D ``out_h * out_w * out_c * k_h * k_w * in_c``; DEPTHWISE_CONV_2D ``out_h * out_w * out_c *
    k_h * k_w``; FULLY_CONNECTED ``out_features * in_features`` (per batch row). Every other op is counted
    by its output elements. Shapes come from the graph alone (weights play no part).
    """
    from tflite_micro import runtime

    from edgecnn.runtime.tflm_runner import model_ops

    if core not in CORE_COSTS:
        raise EdgecnnError(f"no per-op costs for core {core!r}; known: {', '.join(CORE_COSTS)}.")
    cost = CORE_COSTS[core]
    model = runtime.convert_bytearray_to_object(bytearray(data))   # the schema tflite_micro ships
    sg = model.subgraphs[0]
    out = []
    for use, op in zip(model_ops(data), sg.operators or []):
        ins = [sg.tensors[int(i)] if int(i) >= 0 else None for i in (op.inputs if op.inputs is not None else [])]
        o = _shape(sg.tensors[int(op.outputs[0])]) if op.outputs is not None and len(op.outputs) else []
        elements = int(np.prod(o)) if o else 0
        macs = 0
        if use.op == _CONV and len(ins) > 1 and ins[1] is not None:
            k = _shape(ins[1])                       # (out_c, k_h, k_w, in_c)
            macs = elements * k[1] * k[2] * k[3]
        elif use.op == _DEPTHWISE and len(ins) > 1 and ins[1] is not None:
            k = _shape(ins[1])                       # (1, k_h, k_w, out_c)
            macs = elements * k[1] * k[2]
        elif use.op == _FC and len(ins) > 1 and ins[1] is not None:
            k = _shape(ins[1])                       # (out_features, in_features)
            macs = elements * k[1]
        if use.op in _FREE:
            cycles = 0.0
        elif use.op == _CONV:
            cycles = macs * cost.conv_cycles_per_mac + cost.op_overhead_cycles
        elif use.op == _DEPTHWISE:
            cycles = macs * cost.depthwise_cycles_per_mac + cost.op_overhead_cycles
        elif use.op == _FC:
            cycles = macs * cost.fc_cycles_per_mac + cost.op_overhead_cycles
        else:
            cycles = elements * cost.elementwise_cycles_per_element + cost.op_overhead_cycles
        out.append(OpCost(use.index, use.op, use.layer, macs, elements, float(cycles)))
    return out


def estimate_latency(data: bytes, target: str, *, clock_mhz: float | None = None) -> dict:
    """Estimated single-inference latency of an int8 ``.tflite`` in TFLite Micro + CMSIS-NN on ``target``.

    Args:
        data: the int8 flatbuffer.
        target: an MCU profile name (``cortex-m4-256k``, ``cortex-m7-1m``, ``esp32-s3``, ``cortex-m33-512k``).
        clock_mhz: the core clock; default the profile's typical part (:data:`PROFILE_CORES`).

    Returns:
        ``{"kind": "estimate", "ms", "cycles", "macs", "target", "core", "clock_mhz", "basis", "sources",
        "by_op": {op: ms}, "top_layers": [...]}``: never a measurement.

    Raises:
        EdgecnnError: an unknown target.
    """
    pc = core_of(target)
    clock = float(clock_mhz or pc.clock_mhz)
    ops = op_costs(data, pc.core)
    cycles = sum(o.cycles for o in ops)
    by_op: dict[str, float] = {}
    for o in ops:
        by_op[o.op] = by_op.get(o.op, 0.0) + o.cycles
    top = sorted(ops, key=lambda o: -o.cycles)[:5]
    cost = CORE_COSTS[pc.core]
    return {
        "kind": "estimate",
        "ms": round(cycles / (clock * 1e3), 2),
        "cycles": int(round(cycles)),
        "macs": int(sum(o.macs for o in ops)),
        "op_count": len(ops),
        "target": target, "core": pc.core, "clock_mhz": clock, "part": pc.part,
        "by_op_ms": {k: round(v / (clock * 1e3), 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "top_layers": [{"layer": o.layer, "op": o.op, "macs": o.macs, "ms": round(o.cycles / (clock * 1e3), 3)}
                       for o in top],
        "costs": asdict(cost),
        "basis": (f"MACs per op from the int8 graph x CMSIS-NN per-op costs for {pc.core} ({cost.basis}), at "
                  f"{clock:g} MHz ({pc.part}); an estimate, not a measurement: flash wait states, caches and the "
                  "TFLM/CMSIS-NN version move real figures by tens of percent"),
        "sources": SOURCES,
    }


LATENCY_JSON = "mcu_latency.json"


def write_run_latency(run_dir: str | os.PathLike, targets: list[str] | None = None) -> Path:
    """Write ``<run_dir>/mcu_latency.json``: the estimate for ``model.int8.tflite`` on each target.

    The report's MCU section can show it beside the measured arena and flash; it is labelled an estimate.
    Default targets: the profiles the run's budgets name, else every profile with a latency model.
    """
    import yaml

    from edgecnn._io import write_json

    run = Path(run_dir)
    tflite = run / "model.int8.tflite"
    if not tflite.exists():
        raise EdgecnnError(f"{str(run)!r} has no model.int8.tflite to estimate; run `edgecnn run` first (an int8 file "
                           "withheld by the chooser is not shipped, so there is nothing to estimate).")
    if targets is None:
        recipe = yaml.safe_load((run / "recipe.yaml").read_text()) if (run / "recipe.yaml").exists() else {}
        named = [t.get("profile") for t in (recipe.get("budgets") or []) if isinstance(t, dict)]
        targets = [p for p in named if p in PROFILE_CORES] or list(PROFILE_CORES)
    data = tflite.read_bytes()
    return write_json(run / LATENCY_JSON, {"artifact": "model.int8.tflite", "kind": "estimate",
                                           "targets": {t: estimate_latency(data, t) for t in targets}})


def main(argv: list[str] | None = None) -> int:
    """``python -m edgecnn.mcu.latency RUN_DIR [TARGET ...]``: print the estimates, write mcu_latency.json."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m edgecnn.mcu.latency RUN_DIR [TARGET ...]", file=sys.stderr)
        return 2
    try:
        path = write_run_latency(args[0], args[1:] or None)
    except EdgecnnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import json

    for t, e in json.loads(path.read_text())["targets"].items():
        print(f"{t}: {e['ms']:.1f} ms estimated ({e['macs'] / 1e6:.1f} M MACs, {e['core']} at {e['clock_mhz']:g} MHz)")
    print(f"basis and per-op split: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

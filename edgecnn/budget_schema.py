"""The budget schema: one target model for a budgets.yaml's ``targets:`` and a recipe's ``budgets:``.

A *target* selects artifacts (file globs, a runtime) at one setting (threads, batch) and lists the
budgets every selected artifact must hold::

    - name: linux-x86-1thread       # [A-Za-z0-9._-]+, unique
      artifacts: "model.int8.*"     # glob or list of globs over the artifacts' file names (default "*")
      runtime: any                  # any, or a name from edgecnn.runtime.runtime_names()
      threads: 1                    # 0 = every core the job may use
      batch: 1
      budgets:
        p50_ms: 10                  # p50_ms / p95_ms / p99_ms: latency per call, milliseconds
        p95_ref: 3.5                # p50_ref / p95_ref / p99_ref: in units of the reference workload's p50
        min_accuracy: 0.95          # fractions 0..1
        max_accuracy_drop: 0.01     # vs model.keras
        min_agreement: 0.98         # top-1 agreement with model.keras
        max_size_kb: 3000           # file size, KiB (1024 bytes)
        max_peak_memory_mb: 300     # peak RSS of the process that loads and runs the artifact, MiB
        max_slowdown_vs: {baseline: ../baseline_run, max_ratio: 1.10, metric: p50}
        max_arena_kb: 256           # smallest TFLite Micro tensor arena, KiB (int8 .tflite, report.json)
        max_flash_kb: 1024          # model bytes + estimated TFLM kernel code, KiB (report.json)
    - name: phone-kernels
      artifacts: model.int8.tflite  # evaluated in litert-arm64 too (evaluate.runtimes; docs/arm64.md)
      budgets:
        min_target_agreement: 0.99  # top-1 agreement of the target-CPU run with the host run, same file
    - name: board
      artifacts: model.int8.tflite
      profile: cortex-m4-256k       # a microcontroller (MCU_PROFILES): sets max_arena_kb and max_flash_kb

The keys, units and ranges are data (:data:`BUDGET_KEYS`); one parser checks them wherever they
come from, so a budget copied from a recipe into a budgets.yaml (``edgecnn.evaluate.budget_file``)
means the same thing, and ``edgecnn.evaluate.budgets`` judges both. This module sits below the
recipe (``edgecnn.config``) and the evaluate layer, and imports neither.
"""
from __future__ import annotations

import fnmatch
import io
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import PlainSerializer, PlainValidator, RootModel
from pydantic_core import PydanticCustomError

from edgecnn.errors import EdgecnnError, did_you_mean

__all__ = ["BUDGET_KEYS", "MCU_PROFILES", "REPORT_FIGURES", "BudgetError", "BudgetKey", "BudgetsConfig", "Limit",
           "McuProfile", "NumberSpec", "Target", "TargetParser", "parse_budget_targets", "runtime_names", "runtime_of",
           "targets_to_json"]

log = logging.getLogger("edgecnn.budgets")


class BudgetError(EdgecnnError):
    """Budgets that cannot be used; ``problems`` lists every ``place: message``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems) if len(problems) == 1 else
                         f"{len(problems)} problems in the budgets:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------------------------
# Runtimes: the names a target's `runtime:` may take
def runtime_names() -> tuple[str, ...]:
    """The names a target's ``runtime:`` may take besides ``any``: the runtime registry's."""
    from edgecnn.runtime import runtime_names as registered

    return registered()


def runtime_of(entry: dict, file: str) -> str | None:
    """The runtime an artifact entry (report.json / manifest.json) was run in: its ``runtime`` field,
    else the registry's default runtime for the file's suffix (``.tflite`` -> litert, ...)."""
    if entry.get("runtime"):
        return entry["runtime"]
    from edgecnn.runtime import runtimes_for

    found = runtimes_for(file)
    return found[0].name if found else None


# ----------------------------------------------------------------------------------------------
# The schema, as data
_TIME = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "sec": 1e3, "min": 6e4}
_SIZE_KB = {"b": 1 / 1024, "kb": 1.0, "kib": 1.0, "k": 1.0, "mb": 1024.0, "mib": 1024.0, "m": 1024.0,
            "gb": 1024.0 ** 2, "gib": 1024.0 ** 2}
_SIZE_MB = {k: v / 1024 for k, v in _SIZE_KB.items()}


@dataclass(frozen=True)
class NumberSpec:
    """A numeric key: its own unit (in the key's name), the units it might be mistaken for, the range."""

    what: str
    unit: str | None = None                       # accepted as a suffix, e.g. "20 ms"
    convert: dict[str, float] | None = None       # other units -> the key's unit, for the hint
    lo: float | None = None
    lo_open: bool = False
    hi: float | None = None
    integer: bool = False


_MS = NumberSpec("milliseconds", "ms", _TIME, lo=0, lo_open=True)
_REF = NumberSpec("multiples of the reference workload's p50 (a plain number)", lo=0, lo_open=True)
_FRACTION = NumberSpec("a fraction between 0 and 1", lo=0, hi=1)
_RATIO = NumberSpec("a ratio, e.g. 1.10 for 10 % slower", lo=0, lo_open=True)


@dataclass(frozen=True)
class BudgetKey:
    """One budget key: how its value is read, the figure it is judged on, and that figure's unit.

    Attributes:
        name: the key, e.g. ``p95_ms``; ``min_*`` keys hold when measured >= allowed, others <=.
        value: the number's spec (unit, range); ``max_slowdown_vs`` takes a mapping instead.
        figure: the measured figure it is compared with (``accuracy``, ``size_kb``, ``p95_ms``, ...).
        unit: the unit of the value and of the figure, as printed ("" for fractions).
        timed: measured per (threads, batch), so a target's ``threads``/``batch`` select the figure.
    """

    name: str
    value: NumberSpec
    figure: str
    unit: str = ""
    timed: bool = False

    @property
    def upper(self) -> bool:
        """True when the measured figure must stay at or below the limit."""
        return not self.name.startswith("min_")


BUDGET_KEYS: dict[str, BudgetKey] = {k.name: k for k in (
    BudgetKey("p50_ms", _MS, "p50_ms", "ms", timed=True),
    BudgetKey("p95_ms", _MS, "p95_ms", "ms", timed=True),
    BudgetKey("p99_ms", _MS, "p99_ms", "ms", timed=True),
    BudgetKey("p50_ref", _REF, "p50_ref", "× ref", timed=True),
    BudgetKey("p95_ref", _REF, "p95_ref", "× ref", timed=True),
    BudgetKey("p99_ref", _REF, "p99_ref", "× ref", timed=True),
    BudgetKey("min_accuracy", _FRACTION, "accuracy"),
    BudgetKey("max_accuracy_drop", _FRACTION, "accuracy_drop"),
    BudgetKey("min_agreement", _FRACTION, "agreement"),
    BudgetKey("max_size_kb", NumberSpec("KiB (1024 bytes)", "kb", _SIZE_KB, lo=0, lo_open=True), "size_kb", "KiB"),
    BudgetKey("max_peak_memory_mb", NumberSpec("MiB", "mb", _SIZE_MB, lo=0, lo_open=True), "peak_memory_mb", "MiB",
              timed=True),
    BudgetKey("max_slowdown_vs", _RATIO, "slowdown", "×", timed=True),
    BudgetKey("max_arena_kb", NumberSpec("KiB (1024 bytes)", "kb", _SIZE_KB, lo=0, lo_open=True), "arena_kb", "KiB"),
    BudgetKey("max_flash_kb", NumberSpec("KiB (1024 bytes)", "kb", _SIZE_KB, lo=0, lo_open=True), "flash_kb", "KiB"),
    # a target-CPU runtime (litert-arm64, onnxruntime-arm64): its answers vs the host runtime's, same file
    BudgetKey("min_target_agreement", _FRACTION, "target_agreement"),
    # task: anomaly (image scores and anomaly maps)
    BudgetKey("min_auroc", _FRACTION, "auroc"),
    BudgetKey("max_auroc_drop", _FRACTION, "auroc_drop"),
    BudgetKey("min_pixel_auroc", _FRACTION, "pixel_auroc"),
    BudgetKey("min_pro", _FRACTION, "pro"),
    BudgetKey("min_f1", _FRACTION, "f1"),
    BudgetKey("min_score_correlation", _FRACTION, "score_correlation"),
    # task: segment (a class per pixel)
    BudgetKey("min_miou", _FRACTION, "miou"),
    BudgetKey("max_miou_drop", _FRACTION, "miou_drop"),
    BudgetKey("min_pixel_accuracy", _FRACTION, "pixel_accuracy"),
    BudgetKey("min_pixel_agreement", _FRACTION, "pixel_agreement"),
    # task: detect (boxes): COCO mAP@0.5:0.95 and @0.5, the drop from model.keras, box agreement with it
    BudgetKey("min_map", _FRACTION, "map"),
    BudgetKey("min_map50", _FRACTION, "map50"),
    BudgetKey("max_map_drop", _FRACTION, "map_drop"),
    BudgetKey("min_box_agreement", _FRACTION, "box_agreement"),
    # task: detect with a centroid (FOMO) head: objects found by their centre cell, cells as float's
    BudgetKey("min_centroid_f1", _FRACTION, "centroid_f1"),
    BudgetKey("min_cell_agreement", _FRACTION, "cell_agreement"),
)}
REPORT_FIGURES: tuple[str, ...] = tuple(k.figure for k in BUDGET_KEYS.values() if not k.timed and k.figure != "size_kb")
"""Figures judged from report.json (the evaluate stage's measurements), not measured again by `edgecnn check`."""
_SLOWDOWN_KEYS = {"baseline": "path", "max_ratio": _RATIO, "metric": ("p50", "p95", "p99")}
_TARGET_KEYS = ("name", "artifacts", "runtime", "threads", "batch", "profile", "optional", "budgets")


# ----------------------------------------------------------------------------------------------
# Microcontroller profiles: a target's `profile:` sets max_arena_kb and max_flash_kb
MCU_RESERVE = 0.25   # of SRAM and of flash, left to everything that is not the model (the headroom rule)


@dataclass(frozen=True)
class McuProfile:
    """A microcontroller board class: its SRAM and flash, and the budgets they leave the model.

    The headroom rule: the tensor arena may use SRAM minus :data:`MCU_RESERVE` (a quarter kept for the
    stack, the RTOS or SDK, the camera frame and the application's buffers), and the model with its
    kernels flash minus the same share (bootloader, application, SDK; on an ESP32 the Wi-Fi stack).
    """

    name: str
    sram_kb: int
    flash_kb: int
    example: str

    @property
    def max_arena_kb(self) -> float:
        return self.sram_kb * (1 - MCU_RESERVE)

    @property
    def max_flash_kb(self) -> float:
        return self.flash_kb * (1 - MCU_RESERVE)

    def limits(self) -> dict[str, float]:
        """The budgets this profile sets (budget key -> KiB)."""
        return {"max_arena_kb": self.max_arena_kb, "max_flash_kb": self.max_flash_kb}


MCU_PROFILES: dict[str, McuProfile] = {p.name: p for p in (
    McuProfile("cortex-m4-256k", 256, 1024, "STM32F411, nRF52840 (Arduino Nano 33 BLE Sense)"),
    McuProfile("cortex-m7-1m", 1024, 2048, "STM32H743, i.MX RT1062 (Teensy 4.x)"),
    McuProfile("esp32-s3", 512, 8192, "ESP32-S3-WROOM-1-N8 (internal SRAM, no PSRAM)"),
    McuProfile("cortex-m33-512k", 512, 2048, "STM32U575, nRF5340 application core"),
)}
TIME_UNITS = _TIME  # for other sections' seconds/milliseconds hints (a budgets.yaml's measurement:)


@dataclass(frozen=True)
class Limit:
    """One budget of a target: ``key`` (e.g. "p95_ms") and its ``value``, at ``line`` of a file
    (None when it comes from a recipe)."""

    key: str
    value: float
    line: int | None = None
    baseline: Path | None = None      # max_slowdown_vs only
    metric: str = "p50"               # max_slowdown_vs only

    @property
    def spec(self) -> BudgetKey:
        return BUDGET_KEYS[self.key]

    @property
    def upper(self) -> bool:
        """True when the measured figure must stay at or below the value."""
        return self.spec.upper

    @property
    def figure(self) -> str:
        """The name of the measured figure this limit is judged on (a slowdown names its metric and baseline)."""
        if self.key == "max_slowdown_vs":
            return f"slowdown_{self.metric}:{self.baseline}"
        return self.spec.figure


@dataclass(frozen=True)
class Target:
    """Artifacts (globs over file names, a runtime) at one setting (threads, batch), and their budgets."""

    name: str
    artifacts: tuple[str, ...] = ("*",)
    runtime: str = "any"
    threads: int = 1
    batch: int = 1
    limits: tuple[Limit, ...] = ()
    line: int | None = None
    profile: str | None = None        # the MCU_PROFILES entry that set max_arena_kb / max_flash_kb
    optional: bool = False            # a budget nothing measured is "not measured" without failing the run

    def matches(self, file: str, runtime: str | None) -> bool:
        """True when the artifact file ``file``, run in ``runtime``, is one of this target's."""
        return (any(fnmatch.fnmatchcase(file, g) for g in self.artifacts)
                and (self.runtime == "any" or runtime == self.runtime))


# ----------------------------------------------------------------------------------------------
# Parsing, with line numbers when the nodes come from a file
def _line(node) -> int | None:
    mark = getattr(node, "start_mark", None)
    return None if mark is None else mark.line + 1


class TargetParser:
    """Checks YAML nodes against the schema and collects every problem as ``source[:line]: message``.

    Nodes composed from a file carry lines; nodes built from Python data (a recipe) do not, and
    their messages name the target and key instead.
    """

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []
        self._constructor = yaml.SafeLoader("")

    def error(self, node_or_line, msg: str) -> None:
        line = node_or_line if isinstance(node_or_line, int) or node_or_line is None else _line(node_or_line)
        place = f"{self.source}:{line}" if line is not None else self.source
        self.problems.append(f"{place}: {msg}" if place else msg)

    def value(self, node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node, where: str, allowed) -> dict[str, tuple[Any, Any]] | None:
        """{key: (key_node, value_node)} of a mapping node; unknown and duplicate keys are reported."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{where} must be a mapping (key: value); received {self._describe(node)}")
            return None
        out: dict[str, tuple[Any, Any]] = {}
        for k, v in node.value:
            key = self.value(k) if isinstance(k, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.error(k, f"{where}: keys must be names; received {self._describe(k)}")
                continue
            if key in out:
                self.error(k, f"duplicate key {key!r} in {where} (first at line {_line(out[key][0])})")
                continue
            if key not in allowed:
                self.error(k, f"unknown key {key!r} in {where}; allowed: {', '.join(allowed)}."
                              f"{did_you_mean(key, allowed)}")
                continue
            out[key] = (k, v)
        return out

    def _describe(self, node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        if node.tag.endswith(":null"):
            return "nothing (empty value)"
        return repr(self.value(node))

    def number(self, key: str, node, spec: NumberSpec) -> float | None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{key} must be a number ({spec.what}); received {self._describe(node)}")
            return None
        raw = self.value(node)
        if raw is None:
            self.error(node, f"{key} has no value; give a number ({spec.what}) or remove the key")
            return None
        if isinstance(raw, bool):
            self.error(node, f"{key} must be a number ({spec.what}); received {node.value!r}")
            return None
        if isinstance(raw, str):
            value = self._with_unit(key, node, raw, spec)
            if value is None:
                return None
        elif isinstance(raw, (int, float)):
            value = float(raw)
        else:
            self.error(node, f"{key} must be a number ({spec.what}); received {raw!r}")
            return None
        if math.isnan(value) or math.isinf(value):
            self.error(node, f"{key} must be a finite number; received {node.value!r}")
            return None
        if spec.integer and value != int(value):
            self.error(node, f"{key} must be a whole number; received {node.value!r}")
            return None
        too_low = spec.lo is not None and (value <= spec.lo if spec.lo_open else value < spec.lo)
        too_high = spec.hi is not None and value > spec.hi
        if too_low or too_high:
            lo = "" if spec.lo is None else f"{'>' if spec.lo_open else '>='} {spec.lo:g}"
            hi = "" if spec.hi is None else f"<= {spec.hi:g}"
            rng = " and ".join(x for x in (lo, hi) if x)
            hint = ""
            if spec is _FRACTION and value > 1:
                hint = "; write 0.95 for 95 %"
            self.error(node, f"impossible value {key}: {node.value}; it must be {rng} ({spec.what}){hint}")
            return None
        return int(value) if spec.integer else value

    def _with_unit(self, key: str, node, raw: str, spec: NumberSpec) -> float | None:
        m = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-zµ%]+)\s*", raw)
        if not m:
            self.error(node, f"{key} must be a number ({spec.what}); received {raw!r}")
            return None
        number, unit = float(m.group(1)), m.group(2)
        if spec.unit is not None and unit.lower() == spec.unit.lower():
            return number
        conv = {k.lower(): v for k, v in (spec.convert or {}).items()}
        if unit.lower() in conv:
            self.error(node, f"wrong unit in {key}: {raw!r}; {key} is in {spec.what} (the unit is part of the "
                             f"key's name): write {key}: {number * conv[unit.lower()]:g}")
        elif unit == "%" and spec is _FRACTION:
            self.error(node, f"wrong unit in {key}: {raw!r}; {key} is a fraction 0..1: write {key}: {number / 100:g}")
        elif unit == "%" and key == "max_ratio":
            self.error(node, f"wrong unit in {key}: {raw!r}; max_ratio is a plain ratio: write max_ratio: "
                             f"{1 + number / 100:g} for {number:g} % slower")
        else:
            self.error(node, f"wrong unit in {key}: {raw!r}; {key} is a plain number in {spec.what}")
        return None

    def choice(self, key: str, node, choices: tuple[str, ...]) -> str | None:
        raw = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(raw, str) or raw not in choices:
            shown = node.value if isinstance(node, yaml.ScalarNode) else self._describe(node)
            self.error(node, f"{key} must be one of {', '.join(choices)}; received {shown!r}."
                             f"{did_you_mean(str(shown), choices)}")
            return None
        return raw

    # -- sections ------------------------------------------------------------------------------
    def targets(self, node) -> list[Target]:
        """A list of targets (a budgets.yaml's ``targets:``, a recipe's ``budgets:``); names must be unique."""
        targets: list[Target] = []
        seen: dict[str, Target] = {}
        for i, t in enumerate(node.value):
            target = self.target(t, i)
            if target is None:
                continue
            if target.name in seen:
                first = seen[target.name].line
                self.error(target.line, f"duplicate target name {target.name!r}"
                                        + (f" (first at line {first})" if first is not None else ""))
            seen.setdefault(target.name, target)
            targets.append(target)
        return targets

    def target(self, node, index: int) -> Target | None:
        where = f"target #{index + 1}"
        if isinstance(node, yaml.MappingNode):  # name the target in messages when it has a usable name
            named = [v.value for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "name"
                     and isinstance(v, yaml.ScalarNode) and v.value]
            if named:
                where = f"target {named[0]!r}"
        m = self.mapping(node, where, _TARGET_KEYS)
        if m is None:
            return None
        line = _line(node)
        ok = True
        name = None
        if "name" not in m:
            self.error(node, f"{where} has no 'name'; give it one, e.g. name: linux-x86-1thread")
            ok = False
        else:
            name = self.value(m["name"][1]) if isinstance(m["name"][1], yaml.ScalarNode) else None
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                received = m["name"][1].value if isinstance(m["name"][1], yaml.ScalarNode) else "?"
                self.error(m["name"][1], f"target name must match [A-Za-z0-9][A-Za-z0-9._-]*; received {received!r}")
                ok = False
        globs: tuple[str, ...] = ("*",)
        if "artifacts" in m:
            v = m["artifacts"][1]
            raw = self.value(v)
            if isinstance(raw, str) and raw:
                globs = (raw,)
            elif isinstance(raw, list) and raw and all(isinstance(g, str) and g for g in raw):
                globs = tuple(raw)
            else:
                self.error(v, f"artifacts must be a glob or a list of globs, e.g. \"model.int8.*\"; received "
                              f"{self._describe(v)}")
                ok = False
        runtime = self.choice("runtime", m["runtime"][1], ("any", *runtime_names())) if "runtime" in m else "any"
        threads = self.number("threads", m["threads"][1], NumberSpec("threads (0 = all cores)", lo=0, integer=True)) \
            if "threads" in m else 1
        batch = self.number("batch", m["batch"][1], NumberSpec("images per call", lo=1, integer=True)) \
            if "batch" in m else 1
        if runtime is None or threads is None or batch is None:
            ok = False
        limits: list[Limit] = []
        profile = None
        if "profile" in m:
            profile = self.choice("profile", m["profile"][1], tuple(MCU_PROFILES))
            ok = ok and profile is not None
        if "budgets" not in m:
            if "profile" not in m:
                self.error(node, f"{where} has no 'budgets'; add at least one, e.g. budgets: {{p95_ms: 20}}")
                ok = False
        else:
            b = self.mapping(m["budgets"][1], f"budgets of {where}", tuple(BUDGET_KEYS))
            if b is None:
                ok = False
            elif not m["budgets"][1].value:
                self.error(m["budgets"][1], f"{where}: budgets is empty; add at least one budget")
                ok = False
            else:
                for key, (k, v) in b.items():
                    if key == "max_slowdown_vs":
                        lim = self.slowdown(k, v)
                    else:
                        val = self.number(key, v, BUDGET_KEYS[key].value)
                        lim = None if val is None else Limit(key, val, _line(k))
                    if lim is None:
                        ok = False
                    else:
                        limits.append(lim)
        if profile is not None:   # a key the target's budgets give explicitly wins over the profile's
            given = {lim.key for lim in limits}
            line_of = _line(m["profile"][0])
            limits += [Limit(k, v, line_of) for k, v in MCU_PROFILES[profile].limits().items() if k not in given]
        optional = False
        if "optional" in m:
            raw = self.value(m["optional"][1]) if isinstance(m["optional"][1], yaml.ScalarNode) else None
            if not isinstance(raw, bool):
                self.error(m["optional"][1], f"optional must be true or false; received "
                                             f"{self._describe(m['optional'][1])}")
                ok = False
            optional = raw is True
        if not ok:
            return None
        return Target(name, globs, runtime, int(threads), int(batch), tuple(limits), line, profile, optional)

    def slowdown(self, key_node, node) -> Limit | None:
        m = self.mapping(node, "max_slowdown_vs", tuple(_SLOWDOWN_KEYS))
        if m is None:
            return None
        if "max_ratio" not in m:
            self.error(node, "max_slowdown_vs needs max_ratio, e.g. {baseline: ../main_run, max_ratio: 1.10}")
            return None
        ratio = self.number("max_ratio", m["max_ratio"][1], _RATIO)
        metric = self.choice("metric", m["metric"][1], _SLOWDOWN_KEYS["metric"]) if "metric" in m else "p50"
        baseline = None
        if "baseline" in m:
            raw = self.value(m["baseline"][1])
            if not isinstance(raw, str) or not raw:
                self.error(m["baseline"][1], f"baseline must be a run directory path; received "
                                             f"{self._describe(m['baseline'][1])}")
                return None
            baseline = (self.base_dir / os.path.expandvars(raw)).resolve() if not os.path.isabs(raw) else Path(raw)
        if ratio is None or metric is None:
            return None
        return Limit("max_slowdown_vs", ratio, _line(key_node), baseline=baseline, metric=metric)


# ----------------------------------------------------------------------------------------------
# The recipe's `budgets:` section: the same list of targets
def parse_budget_targets(value: Any, source: str = "budgets") -> tuple[Target, ...]:
    """Validate a list of targets given as Python data (a recipe's ``budgets:`` section).

    The checks and messages are the budget file's; places are named by target instead of by line.
    The pre-target form ``{default: {...}, artifacts: {glob: {...}}}`` is converted (with a
    one-line deprecation note in the log) when the conversion gives the same verdicts, and
    rejected with the equivalent new form otherwise.

    Args:
        value: a list of target mappings, the old mapping form, or None (no budgets).
        source: how messages name the section.

    Returns:
        The targets (relative ``baseline:`` paths resolved against the working directory).

    Raises:
        BudgetError: every problem, each as ``source: message``.

    Example:
        >>> [t] = parse_budget_targets([{"name": "pc", "threads": 1, "budgets": {"p95_ms": 20}}])
        >>> t.name, t.limits[0].key, t.limits[0].value
        ('pc', 'p95_ms', 20.0)
    """
    if value is None:
        return ()
    if isinstance(value, (tuple, list)) and value and all(isinstance(t, Target) for t in value):
        return tuple(value)
    if isinstance(value, dict):
        value = _migrate_old_form(value, source)
    if not isinstance(value, (list, tuple)):
        raise BudgetError([f"{source or 'budgets'} must be a list of targets; received {type(value).__name__}. "
                               f"Write it as:\n{_NEW_FORM_EXAMPLE}"])
    if not value:
        return ()
    try:
        node = yaml.SafeDumper(io.StringIO(), sort_keys=False).represent_data(list(value))
    except yaml.YAMLError as e:
        raise BudgetError([f"{_place(source)}not plain YAML data: {e}"]) from None
    p = TargetParser(source, Path.cwd())
    targets = p.targets(node)
    if p.problems:
        raise BudgetError(p.problems)
    return tuple(targets)


def targets_to_json(targets: tuple[Target, ...]) -> list[dict]:
    """The targets as plain data that :func:`parse_budget_targets` reads back (a recipe's ``budgets:``)."""
    out = []
    for t in targets:
        budgets: dict[str, Any] = {}
        for lim in t.limits:
            if lim.key == "max_slowdown_vs":
                budgets[lim.key] = {"max_ratio": lim.value, "metric": lim.metric,
                                    **({"baseline": str(lim.baseline)} if lim.baseline is not None else {})}
            else:
                budgets[lim.key] = lim.value
        out.append({"name": t.name, "artifacts": t.artifacts[0] if len(t.artifacts) == 1 else list(t.artifacts),
                    "runtime": t.runtime, "threads": t.threads, "batch": t.batch,
                    **({"profile": t.profile} if t.profile else {}), "budgets": budgets})
    return out


_NEW_FORM_EXAMPLE = """\
budgets:
  - name: every-artifact
    artifacts: "*"
    threads: 1
    budgets: {min_accuracy: 0.95, max_accuracy_drop: 0.01, p95_ms: 100}
  - name: int8
    artifacts: "model.int8.*"
    budgets: {max_size_kb: 3500}"""


def _place(source: str) -> str:
    return f"{source}: " if source else ""


def _migrate_old_form(old: dict, source: str) -> list[dict]:
    """``{default: {...}, artifacts: {glob: {...}}}`` (the first recipe schema) as a list of targets.

    In the old form an artifact's glob overrides replaced the default's values; in the target list
    every matching target's budgets apply, so the tightest limit wins. The two agree when no
    override loosens a limit set before it and ``threads`` (which only p95_ms used) is the same
    everywhere a p95_ms is in play; otherwise the old form is rejected with the new one to edit.
    """
    unknown = set(old) - {"default", "artifacts"}
    if unknown:
        raise BudgetError([f"{_place(source)}unknown key(s) {sorted(unknown)}; budgets is a list of targets. "
                               f"Write it as:\n{_NEW_FORM_EXAMPLE}"])
    if not old:
        return []
    default = dict(old.get("default") or {})
    threads = default.pop("threads", 1)
    targets = [{"name": "default", "artifacts": "*", "threads": threads, "budgets": default}] if default else []
    seen: dict[str, list[float]] = {k: [v] for k, v in default.items() if isinstance(v, (int, float))}
    problems = []
    for i, (glob, budget) in enumerate((old.get("artifacts") or {}).items(), 1):
        budget = dict(budget or {})
        t = budget.pop("threads", threads)
        if t != threads and ("p95_ms" in seen or "p95_ms" in budget):
            problems.append(f"artifacts {glob!r} measures p95_ms at {t} threads, the default at {threads}")
        for key, v in budget.items():
            spec = BUDGET_KEYS.get(key)
            if spec is not None and isinstance(v, (int, float)):
                looser = [w for w in seen.get(key, []) if (v > w if spec.upper else v < w)]
                if looser:
                    problems.append(f"artifacts {glob!r} loosens {key} to {v:g} (set to {looser[0]:g} before)")
                seen.setdefault(key, []).append(v)
        if budget:
            targets.append({"name": f"artifacts-{i}", "artifacts": glob, "threads": t, "budgets": budget})
    new = yaml.safe_dump({"budgets": targets}, sort_keys=False, default_flow_style=None).rstrip()
    if problems:
        raise BudgetError([
            f"{_place(source)}the `default:`/`artifacts:` form is no longer read, and this one cannot be converted "
            f"exactly: {'; '.join(problems)}. In the new form every target's budgets apply to every artifact it "
            f"selects (the tightest limit wins), so narrow each target's `artifacts:` instead. Starting point:\n{new}"])
    log.warning("%s: the `default:`/`artifacts:` form is deprecated; read as the target list %s (write that "
                "instead, README 'Budgets')", source or "recipe budgets",
                yaml.safe_dump(targets, default_flow_style=True, sort_keys=False, width=10_000).strip())
    return targets


def _recipe_targets(value: Any) -> tuple[Target, ...]:
    """pydantic's hook: the recipe already names the section (``file: budgets: ...``), so the
    problems are reported without a place of their own and without pydantic's "Value error"."""
    try:
        return parse_budget_targets(value, source="")
    except BudgetError as e:
        raise PydanticCustomError("budgets", "{problems}", {"problems": str(e)}) from None


class BudgetsConfig(RootModel):
    """A recipe's ``budgets:`` section: a list of targets (the schema of a budgets.yaml's ``targets:``)."""

    root: Annotated[tuple[Target, ...], PlainValidator(_recipe_targets), PlainSerializer(targets_to_json)] = ()

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.root

    def __iter__(self):
        return iter(self.root)

    def __len__(self) -> int:
        return len(self.root)

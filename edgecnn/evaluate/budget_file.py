"""budgets.yaml: the limits a run's artifacts must hold, per target machine, kept apart from the recipe.

One model can carry budgets for several targets (a 1-thread line-side PC, a 4-thread board, ...).
Every error names the file and the line, e.g. ``budgets.yaml:12: unknown key 'p95'; allowed: ...``.
The schema (version 1; docs/ci.md has the full reference)::

    version: 1
    measurement:                      # optional; the defaults are shown
      warmup_runs: 20
      warmup_s: 0.5
      window_runs: 50
      window_s: 0.5
      tolerance_pct: 10               # last 3 windows' p50 and p95 agree within this
      stable_windows: 3
      min_rounds: 6                   # A/B rounds for relative and reference budgets
      max_time_s: 30                  # per artifact; then the result is flagged unstable
      confidence: 0.95
      cpus: null                      # e.g. [0] to pin the measuring processes
      unstable: warn                  # or error: an unstable measurement fails the check (exit 2)
    targets:
      - name: linux-x86-1thread       # [A-Za-z0-9._-]+, unique
        artifacts: "model.int8.*"     # glob or list of globs over manifest.json's artifacts (default "*")
        runtime: any                  # any | onnxruntime | litert
        threads: 1                    # 0 = every core the job may use
        batch: 1
        budgets:
          p50_ms: 10                  # p50_ms / p95_ms / p99_ms: latency per call, milliseconds
          p95_ms: 20
          p95_ref: 3.5                # p50_ref / p95_ref / p99_ref: in units of the reference workload's p50
          min_accuracy: 0.95          # fractions 0..1, from report.json
          max_accuracy_drop: 0.01     # vs model.keras (report.json's reference_accuracy)
          min_agreement: 0.98         # top-1 agreement with model.keras
          max_size_kb: 3000           # file size, KiB
          max_peak_memory_mb: 300     # peak RSS of the process that loads and runs the artifact, MiB
          max_slowdown_vs: {baseline: ../baseline_run, max_ratio: 1.10, metric: p50}
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgecnn.errors import EdgecnnError, did_you_mean
from edgecnn.evaluate.measure_protocol import MeasureOptions

__all__ = ["BudgetFile", "BudgetFileError", "Limit", "Target", "load_budget_file", "parse_budget_text",
           "BUDGET_KEYS", "RUNTIMES"]

VERSION = 1
RUNTIMES = ("any", "onnxruntime", "litert")


class BudgetFileError(EdgecnnError):
    """A budget file that cannot be used; ``problems`` lists every ``file:line: message``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems) if len(problems) == 1 else
                         f"{len(problems)} problems in the budget file:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------------------------
# The schema, as data
_TIME = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "sec": 1e3, "min": 6e4}
_SIZE_KB = {"b": 1 / 1024, "kb": 1.0, "kib": 1.0, "k": 1.0, "mb": 1024.0, "mib": 1024.0, "m": 1024.0,
            "gb": 1024.0 ** 2, "gib": 1024.0 ** 2}
_SIZE_MB = {k: v / 1024 for k, v in _SIZE_KB.items()}


@dataclass(frozen=True)
class _Number:
    """A numeric key: its own unit (in the key's name), the units it might be mistaken for, the range."""

    what: str
    unit: str | None = None                       # accepted as a suffix, e.g. "20 ms"
    convert: dict[str, float] | None = None       # other units -> the key's unit, for the hint
    lo: float | None = None
    lo_open: bool = False
    hi: float | None = None
    integer: bool = False


_MS = _Number("milliseconds", "ms", _TIME, lo=0, lo_open=True)
_REF = _Number("multiples of the reference workload's p50 (a plain number)", lo=0, lo_open=True)
_FRACTION = _Number("a fraction between 0 and 1", lo=0, hi=1)

BUDGET_KEYS: dict[str, _Number | str] = {
    "p50_ms": _MS, "p95_ms": _MS, "p99_ms": _MS,
    "p50_ref": _REF, "p95_ref": _REF, "p99_ref": _REF,
    "min_accuracy": _FRACTION, "max_accuracy_drop": _FRACTION, "min_agreement": _FRACTION,
    "max_size_kb": _Number("KiB (1024 bytes)", "kb", _SIZE_KB, lo=0, lo_open=True),
    "max_peak_memory_mb": _Number("MiB", "mb", _SIZE_MB, lo=0, lo_open=True),
    "max_slowdown_vs": "mapping",
}
_SLOWDOWN_KEYS = {"baseline": "path", "max_ratio": _Number("a ratio, e.g. 1.10 for 10 % slower", lo=0, lo_open=True),
                  "metric": ("p50", "p95", "p99")}
_TARGET_KEYS = ("name", "artifacts", "runtime", "threads", "batch", "budgets")
_TOP_KEYS = ("version", "measurement", "targets")
_MEASURE_KEYS: dict[str, _Number | str | tuple] = {
    "warmup_runs": _Number("calls", lo=0, integer=True),
    "warmup_s": _Number("seconds", "s", {k: v / 1e3 for k, v in _TIME.items()}, lo=0),
    "window_runs": _Number("calls", lo=1, integer=True),
    "window_s": _Number("seconds", "s", {k: v / 1e3 for k, v in _TIME.items()}, lo=0, lo_open=True),
    "tolerance_pct": _Number("percent", "%", lo=0, lo_open=True, hi=100),
    "stable_windows": _Number("windows", lo=2, integer=True),
    "min_rounds": _Number("rounds", lo=2, integer=True),
    "max_time_s": _Number("seconds", "s", {k: v / 1e3 for k, v in _TIME.items()}, lo=0, lo_open=True),
    "processes": _Number("processes", lo=1, hi=20, integer=True),
    "confidence": _Number("a probability", lo=0.5, hi=0.999),
    "cpus": "cpus",
    "unstable": ("warn", "error"),
}
_DEFAULT_MEASURE = MeasureOptions(max_time_s=30.0)


@dataclass(frozen=True)
class Limit:
    """One budget of a target: ``key`` (e.g. "p95_ms") and its ``value`` at ``line`` of the file."""

    key: str
    value: float
    line: int
    baseline: Path | None = None      # max_slowdown_vs only
    metric: str = "p50"               # max_slowdown_vs only

    @property
    def upper(self) -> bool:
        """True when the measured figure must stay at or below the value."""
        return not self.key.startswith("min_")


@dataclass(frozen=True)
class Target:
    name: str
    artifacts: tuple[str, ...]
    runtime: str
    threads: int
    batch: int
    limits: tuple[Limit, ...]
    line: int

    def matches(self, artifact: str, runtime: str | None) -> bool:
        import fnmatch

        return (any(fnmatch.fnmatchcase(artifact, g) for g in self.artifacts)
                and (self.runtime == "any" or runtime == self.runtime))


@dataclass(frozen=True)
class BudgetFile:
    path: Path
    source: str                       # how errors name the file
    targets: tuple[Target, ...]
    measurement: MeasureOptions = field(default_factory=lambda: _DEFAULT_MEASURE)
    sha256: str = ""


# ----------------------------------------------------------------------------------------------
# Parsing with line numbers
class _Parser:
    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []
        self._constructor = yaml.SafeLoader("")

    def error(self, node_or_line, msg: str) -> None:
        line = node_or_line if isinstance(node_or_line, int) else node_or_line.start_mark.line + 1
        self.problems.append(f"{self.source}:{line}: {msg}")

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
                self.error(k, f"duplicate key {key!r} in {where} (first at line {out[key][0].start_mark.line + 1})")
                continue
            if key not in allowed:
                self.error(k, f"unknown key {key!r} in {where}; allowed: {', '.join(allowed)}.{did_you_mean(key, allowed)}")
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

    def number(self, key: str, node, spec: _Number) -> float | None:
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

    def _with_unit(self, key: str, node, raw: str, spec: _Number) -> float | None:
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
    def document(self, root) -> tuple[MeasureOptions, list[Target]]:
        if root is None:
            self.error(1, "the budget file is empty; it needs `version: 1` and `targets:`")
            return _DEFAULT_MEASURE, []
        top = self.mapping(root, "the top level", _TOP_KEYS)
        if top is None:
            return _DEFAULT_MEASURE, []
        if "version" not in top:
            self.error(root, f"missing key 'version'; add `version: {VERSION}` at the top")
        else:
            v = self.value(top["version"][1]) if isinstance(top["version"][1], yaml.ScalarNode) else None
            if v != VERSION:
                self.error(top["version"][1], f"unsupported version {top['version'][1].value!r}; this edgecnn reads "
                                              f"version {VERSION}")
        measure = self.measurement(top["measurement"][1]) if "measurement" in top else _DEFAULT_MEASURE
        targets: list[Target] = []
        if "targets" not in top:
            self.error(root, "missing key 'targets'; list at least one target (see docs/ci.md)")
        else:
            node = top["targets"][1]
            if not isinstance(node, yaml.SequenceNode) or not node.value:
                self.error(node, f"targets must be a non-empty list of targets; received {self._describe(node)}")
            else:
                seen: dict[str, int] = {}
                for i, t in enumerate(node.value):
                    target = self.target(t, i)
                    if target is None:
                        continue
                    if target.name in seen:
                        self.error(target.line, f"duplicate target name {target.name!r} (first at line {seen[target.name]})")
                    seen.setdefault(target.name, target.line)
                    targets.append(target)
        return measure, targets

    def measurement(self, node) -> MeasureOptions:
        m = self.mapping(node, "measurement", tuple(_MEASURE_KEYS))
        if m is None:
            return _DEFAULT_MEASURE
        kwargs: dict[str, Any] = {}
        for key, (_, v) in m.items():
            spec = _MEASURE_KEYS[key]
            if key == "cpus":
                kwargs[key] = self.cpus(v)  # None: null, or a problem already reported
                continue
            val = self.number(key, v, spec) if isinstance(spec, _Number) else self.choice(key, v, spec)
            if val is not None:
                kwargs[key] = val
        defaults = _DEFAULT_MEASURE.to_json()
        defaults.update(kwargs)
        defaults["cpus"] = tuple(defaults["cpus"]) if defaults["cpus"] else None
        return MeasureOptions(**defaults)

    def cpus(self, node) -> tuple[int, ...] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return None
        vals = self.value(node) if isinstance(node, yaml.SequenceNode) else None
        if not vals or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in vals):
            self.error(node, f"cpus must be a list of CPU ids (whole numbers >= 0), e.g. [0, 1], or null; "
                             f"received {self._describe(node)}")
            return None
        try:
            allowed = os.sched_getaffinity(0)
        except AttributeError:
            return tuple(vals)
        bad = [c for c in vals if c not in allowed]
        if bad:
            self.error(node, f"cpus {bad} are not available to this job; available: {sorted(allowed)}")
            return None
        return tuple(vals)

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
        line = node.start_mark.line + 1
        ok = True
        name = None
        if "name" not in m:
            self.error(node, f"{where} has no 'name'; give it one, e.g. name: linux-x86-1thread")
            ok = False
        else:
            name = self.value(m["name"][1]) if isinstance(m["name"][1], yaml.ScalarNode) else None
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                self.error(m["name"][1], f"target name must match [A-Za-z0-9][A-Za-z0-9._-]*; received "
                                         f"{m['name'][1].value if isinstance(m['name'][1], yaml.ScalarNode) else '?'!r}")
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
        runtime = self.choice("runtime", m["runtime"][1], RUNTIMES) if "runtime" in m else "any"
        threads = self.number("threads", m["threads"][1], _Number("threads (0 = all cores)", lo=0, integer=True)) \
            if "threads" in m else 1
        batch = self.number("batch", m["batch"][1], _Number("images per call", lo=1, integer=True)) \
            if "batch" in m else 1
        if runtime is None or threads is None or batch is None:
            ok = False
        limits: list[Limit] = []
        if "budgets" not in m:
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
                    spec = BUDGET_KEYS[key]
                    if key == "max_slowdown_vs":
                        lim = self.slowdown(k, v)
                    else:
                        val = self.number(key, v, spec)  # type: ignore[arg-type]
                        lim = None if val is None else Limit(key, val, k.start_mark.line + 1)
                    if lim is None:
                        ok = False
                    else:
                        limits.append(lim)
        if not ok:
            return None
        return Target(name, globs, runtime, int(threads), int(batch), tuple(limits), line)

    def slowdown(self, key_node, node) -> Limit | None:
        m = self.mapping(node, "max_slowdown_vs", tuple(_SLOWDOWN_KEYS))
        if m is None:
            return None
        if "max_ratio" not in m:
            self.error(node, "max_slowdown_vs needs max_ratio, e.g. {baseline: ../main_run, max_ratio: 1.10}")
            return None
        ratio = self.number("max_ratio", m["max_ratio"][1], _SLOWDOWN_KEYS["max_ratio"])  # type: ignore[arg-type]
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
        return Limit("max_slowdown_vs", ratio, key_node.start_mark.line + 1, baseline=baseline, metric=metric)


def parse_budget_text(text: str, source: str = "budgets.yaml", base_dir: str | os.PathLike = ".") -> BudgetFile:
    """Parse budget-file text; relative baseline paths are resolved against ``base_dir``.

    Raises:
        BudgetFileError: every problem found, each as ``source:line: message``.
    """
    p = _Parser(source, Path(base_dir))
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise BudgetFileError([f"{source}:{line}: not valid YAML: {e.problem or e.context}"]) from None
    except yaml.YAMLError as e:
        raise BudgetFileError([f"{source}:1: not valid YAML: {e}"]) from None
    measure, targets = p.document(root)
    if p.problems:
        raise BudgetFileError(p.problems)
    return BudgetFile(Path(source), source, tuple(targets), measure,
                      hashlib.sha256(text.encode()).hexdigest())


def load_budget_file(path: str | os.PathLike) -> BudgetFile:
    """Read and validate a budgets.yaml.

    Args:
        path: the file. Relative ``baseline:`` paths in it are relative to its folder.

    Returns:
        BudgetFile with its targets, limits (each with its line) and measurement options.

    Raises:
        BudgetFileError: a missing file, bad YAML, unknown keys, wrong units or impossible values,
            every problem listed as ``path:line: message``.

    Example:
        >>> bf = load_budget_file("models/smoke.budgets.yaml")     # doctest: +SKIP
        >>> [(t.name, [l.key for l in t.limits]) for t in bf.targets]  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise BudgetFileError([f"budget file not found: {str(path)!r}; pass a budgets.yaml such as "
                               "models/smoke.budgets.yaml (schema: docs/ci.md)"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BudgetFileError([f"{path}: cannot read the budget file: {e}"]) from None
    bf = parse_budget_text(text, source=str(path), base_dir=path.resolve().parent)
    return BudgetFile(path, str(path), bf.targets, bf.measurement, bf.sha256)

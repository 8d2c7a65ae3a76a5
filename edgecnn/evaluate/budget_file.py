"""budgets.yaml: the budget targets of a run, per target machine, kept apart from the recipe.

One model can carry budgets for several targets (a 1-thread line-side PC, a 4-thread board, ...).
The targets are the recipe's ``budgets:`` targets (``edgecnn.budget_schema``: same keys, units and
checks); the file adds a version and the ``measurement:`` options of ``edgecnn check``. Every
error names the file and the line, e.g. ``budgets.yaml:12: unknown key 'p95'; allowed: ...``.
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
    targets:                          # required: a list of targets (edgecnn.budget_schema)
      - name: linux-x86-1thread
        artifacts: "model.int8.*"
        runtime: any
        threads: 1
        budgets: {p95_ms: 20, min_accuracy: 0.95, max_size_kb: 3000}
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgecnn.budget_schema import (
    TIME_UNITS,
    BudgetError,
    NumberSpec,
    Target,
    TargetParser,
)
from edgecnn.evaluate.measure_protocol import MeasureOptions

__all__ = ["BudgetFile", "load_budget_file", "parse_budget_text"]

VERSION = 1
_TOP_KEYS = ("version", "measurement", "targets")
_SECONDS = {k: v / 1e3 for k, v in TIME_UNITS.items()}
_MEASURE_KEYS: dict[str, NumberSpec | str | tuple] = {
    "warmup_runs": NumberSpec("calls", lo=0, integer=True),
    "warmup_s": NumberSpec("seconds", "s", _SECONDS, lo=0),
    "window_runs": NumberSpec("calls", lo=1, integer=True),
    "window_s": NumberSpec("seconds", "s", _SECONDS, lo=0, lo_open=True),
    "tolerance_pct": NumberSpec("percent", "%", lo=0, lo_open=True, hi=100),
    "stable_windows": NumberSpec("windows", lo=2, integer=True),
    "min_rounds": NumberSpec("rounds", lo=2, integer=True),
    "max_time_s": NumberSpec("seconds", "s", _SECONDS, lo=0, lo_open=True),
    "processes": NumberSpec("processes", lo=1, hi=20, integer=True),
    "confidence": NumberSpec("a probability", lo=0.5, hi=0.999),
    "cpus": "cpus",
    "unstable": ("warn", "error"),
}
_DEFAULT_MEASURE = MeasureOptions(max_time_s=30.0)


@dataclass(frozen=True)
class BudgetFile:
    """A validated budgets.yaml: its targets, the measurement protocol, and its hash."""

    path: Path
    source: str                       # how errors name the file
    targets: tuple[Target, ...]
    measurement: MeasureOptions = field(default_factory=lambda: _DEFAULT_MEASURE)
    sha256: str = ""


class _FileParser(TargetParser):
    """The schema's parser plus the file's own sections (version, measurement)."""

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
        if "targets" not in top:
            self.error(root, "missing key 'targets'; list at least one target (see docs/ci.md)")
            return measure, []
        node = top["targets"][1]
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.error(node, f"targets must be a non-empty list of targets; received {self._describe(node)}")
            return measure, []
        return measure, self.targets(node)

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
            val = self.number(key, v, spec) if isinstance(spec, NumberSpec) else self.choice(key, v, spec)
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


def parse_budget_text(text: str, source: str = "budgets.yaml", base_dir: str | os.PathLike = ".") -> BudgetFile:
    """Parse budget-file text; relative baseline paths are resolved against ``base_dir``.

    Raises:
        BudgetError: every problem found, each as ``source:line: message``.
    """
    p = _FileParser(source, Path(base_dir))
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise BudgetError([f"{source}:{line}: not valid YAML: {e.problem or e.context}"]) from None
    except yaml.YAMLError as e:
        raise BudgetError([f"{source}:1: not valid YAML: {e}"]) from None
    measure, targets = p.document(root)
    if p.problems:
        raise BudgetError(p.problems)
    return BudgetFile(Path(source), source, tuple(targets), measure,
                      hashlib.sha256(text.encode()).hexdigest())


def load_budget_file(path: str | os.PathLike) -> BudgetFile:
    """Read and validate a budgets.yaml.

    Args:
        path: the file. Relative ``baseline:`` paths in it are relative to its folder.

    Returns:
        BudgetFile with its targets, limits (each with its line) and measurement options.

    Raises:
        BudgetError: a missing file, bad YAML, unknown keys, wrong units or impossible values,
            every problem listed as ``path:line: message``.

    Example:
        >>> bf = load_budget_file("models/smoke.budgets.yaml")     # doctest: +SKIP
        >>> [(t.name, [l.key for l in t.limits]) for t in bf.targets]  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise BudgetError([f"budget file not found: {str(path)!r}; pass a budgets.yaml such as "
                               "models/smoke.budgets.yaml (schema: docs/ci.md)"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BudgetError([f"{path}: cannot read the budget file: {e}"]) from None
    bf = parse_budget_text(text, source=str(path), base_dir=path.resolve().parent)
    return BudgetFile(path, str(path), bf.targets, bf.measurement, bf.sha256)

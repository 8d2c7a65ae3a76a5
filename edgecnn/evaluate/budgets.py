"""The one budget checker: measured figures against targets, as a list of :class:`BudgetResult`.

Both gates use it: the evaluate stage (``check_budgets`` on report.json's figures, timed in
process) and ``edgecnn check`` (figures timed in subprocesses with noise control, accuracy from
report.json); so does ``edgecnn evaluate --url`` (``check_http_result``). The same targets and
the same figures give the same verdicts and units whichever path they come through.

Example:
    >>> from edgecnn.budget_schema import parse_budget_targets
    >>> targets = parse_budget_targets([{"name": "pc", "budgets": {"max_size_kb": 100}}])
    >>> [r] = check_targets(targets, [ArtifactFigures("model.onnx", runtime="onnxruntime",
    ...                                               figures={"size_kb": Figure(120.0)})])
    >>> r.ok, str(r)
    (False, 'model.onnx: max_size_kb broken: measured 120 KiB, allowed <= 100 KiB (target pc)')
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from edgecnn.budget_schema import BUDGET_KEYS, REPORT_FIGURES, Limit, Target, runtime_of
from edgecnn.runtime.latency import resolve_threads

__all__ = ["ArtifactFigures", "BudgetResult", "Figure", "check_budgets", "check_http_result", "check_targets",
           "report_figures"]

log = logging.getLogger("edgecnn.budgets")


@dataclass(frozen=True)
class Figure:
    """One measured figure, in the unit of the budget key judged on it (ms, KiB, MiB, fraction, ratio)."""

    value: float
    ci: tuple[float, float] | None = None     # confidence interval, when the measurement gives one
    unstable: bool = False                    # the measurement did not settle (edgecnn check)
    detail: str = ""                          # how it was obtained, for the reader


@dataclass
class ArtifactFigures:
    """Everything measured for one artifact.

    Attributes:
        name: its key in report.json / manifest.json (e.g. ``model.onnx``, or ``model.onnx@openvino``).
        file: the file name the targets' globs match (default: ``name``).
        runtime: the runtime it ran in (a target's ``runtime:`` filters on it).
        figures: figures that do not depend on the setting, by name (``accuracy``, ``size_kb``, ...).
        timed: figures per (threads, batch) setting (``p95_ms``, ``p95_ref``, ``peak_memory_mb``, ...);
            threads are resolved (0 already replaced by the core count).
    """

    name: str
    file: str = ""
    runtime: str | None = None
    figures: dict[str, Figure] = field(default_factory=dict)
    timed: dict[tuple[int, int], dict[str, Figure]] = field(default_factory=dict)
    unmeasured_ok: str | None = None   # why a figure this artifact lacks fails no budget (the float reference)
    skipped: str | None = None         # its runtime cannot run here (report.json's "skipped")

    def __post_init__(self):
        self.file = self.file or self.name

    def excuse(self, target: Target) -> str | None:
        """Why a budget of ``target`` that nothing measured here is no failure, or None (it fails).

        A runtime that cannot run on this machine is excused only for targets that did not name it
        (``runtime: any``): a target that names the runtime asked for exactly that measurement.
        """
        if self.skipped is not None and target.runtime == "any":
            return f"{self.runtime} cannot run here ({self.skipped})"
        return self.unmeasured_ok


@dataclass
class BudgetResult:
    """One budget of one target applied to one artifact: the verdict and the figures behind it.

    ``measured`` is None when nothing measured the figure (e.g. ``p95_ref`` in the evaluate stage,
    which only ``edgecnn check`` measures): then ``verdict`` is "not measured", and ``ok`` is False unless
    the target is ``optional: true`` or the artifact has an excuse (:meth:`ArtifactFigures.excuse`): a
    budget nothing measured never passes silently.
    """

    target: str
    artifact: str
    budget: str                   # the budget key, e.g. "p95_ms"
    allowed: float
    line: int | None = None       # the line in a budgets.yaml; None for a recipe's budgets
    threads: int = 1
    batch: int = 1
    measured: float | None = None
    ci: tuple[float, float] | None = None
    ok: bool = True
    unstable: bool = False
    marginal: bool = False
    detail: str = ""
    runtime: str | None = None
    optional: bool = False

    @property
    def key(self) -> str:
        return self.budget

    @property
    def verdict(self) -> str:
        return "not measured" if self.measured is None else "holds" if self.ok else "BROKEN"

    @property
    def comparison(self) -> str:
        return ">=" if self.budget.startswith("min_") else "<="

    @property
    def unit(self) -> str:
        return BUDGET_KEYS[self.budget].unit

    @property
    def timed(self) -> bool:
        return BUDGET_KEYS[self.budget].timed

    @property
    def title(self) -> str:
        what = (self.budget if self.budget != "max_slowdown_vs"
                else f"slowdown vs baseline ({self.detail.split(';')[0]})")
        where = f" @{self.threads}t" + (f" b{self.batch}" if self.batch != 1 else "") if self.timed else ""
        return f"{self.artifact}{where}: {what} {self.comparison} {self.allowed_text()}"

    def allowed_text(self) -> str:
        return _with_unit(f"{self.allowed:g}", self.unit)

    def measured_text(self) -> str:
        if self.measured is None:
            return "not measured"
        s = _with_unit(_fmt(self.measured), self.unit)
        if self.ci and not any(math.isnan(c) for c in self.ci):
            s += f" (95% CI {_fmt(self.ci[0])}–{_fmt(self.ci[1])})"
        return s

    def message(self, source: str) -> str:
        """The check's line: ``file:line: [target] title: verdict, measured ...`` plus any notes."""
        notes = [n for n, on in (("unstable measurement", self.unstable),
                                 ("the limit is inside the CI", self.marginal)) if on]
        place = f"{source}:{self.line}: " if self.line is not None else f"{source}: "
        return (f"{place}[{self.target}] {self.title}: {self.verdict}, measured {self.measured_text()}"
                + (f" [{'; '.join(notes)}]" if notes else ""))

    def __str__(self) -> str:
        where = f" @{self.threads}t" + (f" b{self.batch}" if self.batch != 1 else "") if self.timed else ""
        if self.measured is None:
            return (f"{self.artifact}{where}: {self.budget} not measured ({self.detail}), allowed "
                    f"{self.comparison} {self.allowed_text()} (target {self.target}"
                    f"{', optional' if self.optional else ''})")
        verdict = {"BROKEN": "broken"}.get(self.verdict, self.verdict)
        return (f"{self.artifact}{where}: {self.budget} {verdict}: measured {self.measured_text()}, allowed "
                f"{self.comparison} {self.allowed_text()} (target {self.target})")

    def to_json(self) -> dict:
        return {"target": self.target, "artifact": self.artifact, "runtime": self.runtime, "budget": self.budget,
                "threads": self.threads, "batch": self.batch, "comparison": self.comparison, "allowed": self.allowed,
                "unit": self.unit, "measured": self.measured, "ci": list(self.ci) if self.ci else None,
                "ok": self.ok, "verdict": self.verdict, "optional": self.optional, "unstable": self.unstable,
                "marginal": self.marginal,
                "line": self.line, "detail": self.detail, "title": self.title}


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.0f}"


def _with_unit(number: str, unit: str) -> str:
    return f"{number} {unit}" if unit else number


# ----------------------------------------------------------------------------------------------
# The checker
def check_targets(targets: Iterable[Target], artifacts: Iterable[ArtifactFigures]) -> list[BudgetResult]:
    """Every budget of every target against every artifact it selects (a pure function).

    Args:
        targets: from a budgets.yaml (``load_budget_file(...).targets``) or a recipe (``recipe.budgets``).
        artifacts: what was measured, per artifact; a timed budget reads the figures of the
            target's (threads, batch) setting.

    Returns:
        One BudgetResult per (target, selected artifact, budget), in target order. A figure that
        was not measured gives ``measured=None`` (verdict "not measured"), never a silent pass.
    """
    artifacts = list(artifacts)
    results = []
    for t in targets:
        threads = resolve_threads(t.threads)
        for a in artifacts:
            if not t.matches(a.file, a.runtime):
                continue
            timed = a.timed.get((threads, t.batch), {})
            for lim in t.limits:
                fig = (timed if lim.spec.timed else a.figures).get(lim.figure)
                results.append(_judge(t, a, lim, fig, threads))
    return results


def _judge(t: Target, a: ArtifactFigures, lim: Limit, fig: Figure | None, threads: int) -> BudgetResult:
    r = BudgetResult(t.name, a.name, lim.key, lim.value, lim.line, threads=threads, batch=t.batch,
                     runtime=a.runtime, optional=t.optional)
    if fig is None:
        excuse = a.excuse(t)
        r.ok = t.optional or excuse is not None
        r.detail = excuse or ("optional: true" if t.optional else "nothing measured it here")
        return r
    r.measured, r.ci, r.unstable, r.detail = fig.value, fig.ci, fig.unstable, fig.detail
    r.ok = fig.value <= lim.value if lim.upper else fig.value >= lim.value
    if fig.ci and not any(math.isnan(c) for c in fig.ci):
        r.marginal = fig.ci[0] <= lim.value <= fig.ci[1]
    return r


def report_figures(report: dict) -> list[ArtifactFigures]:
    """The figures of report.json (written by the evaluate stage): accuracy, accuracy drop against
    ``reference_accuracy``, agreement, size, and the in-process latency at each thread count (batch 1)."""
    ref = report.get("reference_accuracy")
    # TFLite Micro's arena and flash are properties of the file: every entry of that file is judged on them
    mcu_of = {a.get("file", n): a["mcu"] for n, a in report.get("artifacts", {}).items() if a.get("mcu")}
    # so is a target-CPU run's agreement with the host run (litert-arm64 ...): the lowest one, if several
    target_of: dict[str, dict] = {}
    for n, a in report.get("artifacts", {}).items():
        t = a.get("target") or {}
        prev = target_of.get(a.get("file", n))
        if t.get("host_agreement") is not None and (prev is None or t["host_agreement"] < prev["host_agreement"]):
            target_of[a.get("file", n)] = {**t, "runtime": a.get("runtime")}
    out = []
    for name, art in report.get("artifacts", {}).items():
        file = art.get("file", name)
        m = art.get("metrics", {})
        figs: dict[str, Figure] = {}
        mcu = art.get("mcu") or mcu_of.get(file)
        if mcu:
            figs["arena_kb"] = Figure(mcu["arena_bytes"] / 1024, detail=f"{mcu['arena_bytes']} bytes: the smallest "
                                      f"TFLite Micro tensor arena (report.json)")
            figs["flash_kb"] = Figure(mcu["flash_bytes"] / 1024, detail=f"{mcu['model_bytes']} model bytes + "
                                      f"{mcu['kernel_bytes_estimate']} estimated kernel bytes (report.json)")
        target = target_of.get(file)
        if target is not None:   # measured by a target-CPU runtime (edgecnn.runtime.arm64_child) on this file
            figs["target_agreement"] = Figure(float(target["host_agreement"]), detail=(
                f"top-1 agreement of {target['runtime']} ({target.get('cpu')} kernels) with "
                f"{target.get('host_runtime')} on this machine, {target.get('images')} test images (report.json)"))
        n = m.get("n", report.get("test_images", "?"))
        if m.get("accuracy") is not None:
            acc = float(m["accuracy"])
            ci = m.get("accuracy_ci95")
            figs["accuracy"] = Figure(acc, (float(ci[0]), float(ci[1])) if ci else None,
                                      detail=f"top-1 on {n} test images (report.json)")
            if ref is not None:
                figs["accuracy_drop"] = Figure(float(ref) - acc, detail=f"reference (model.keras) {ref:.4f} - "
                                                                        f"artifact {acc:.4f}")
        if m.get("agreement") is not None:
            figs["agreement"] = Figure(float(m["agreement"]), detail="top-1 agreement with model.keras (report.json)")
        for figure in REPORT_FIGURES:  # a task's own figures (auroc, miou, ...), as its evaluate stage wrote them
            if figure not in figs and isinstance(m.get(figure), (int, float)):
                figs[figure] = Figure(float(m[figure]), detail=f"{figure} on {n} test images (report.json)")
        if art.get("bytes") is not None:
            figs["size_kb"] = Figure(art["bytes"] / 1024, detail=f"{art['bytes']} bytes")
        timed = {(int(t), 1): {k: Figure(float(v[k]), detail=f"in-process, {v.get('runs', '?')} runs (report.json)")
                               for k in ("p50_ms", "p95_ms", "p99_ms") if v.get(k) is not None}
                 for t, v in art.get("latency", {}).items()}
        reference = name == report.get("reference")
        out.append(ArtifactFigures(name, file, runtime_of(art, file), figs, timed,
                                   unmeasured_ok="the float reference; a budget it lacks is measured on the "
                                                 "artifacts" if reference else None,
                                   skipped=art.get("skipped")))
    return out


def check_budgets(report: dict, budgets: Iterable[Target]) -> tuple[list[dict], list[BudgetResult]]:
    """The evaluate stage's gate: a recipe's budgets applied to report.json's figures.

    Args:
        report: report.json's content (``artifacts`` with metrics, latency, bytes; ``reference_accuracy``).
        budgets: the recipe's targets (``recipe.budgets``).

    Returns:
        (every check as JSON, the failing ones). A budget on a figure the evaluate stage does not measure
        (reference units, slowdown, peak memory, another batch or thread count, a runtime that failed) is
        a "not measured" check that fails like a broken one, unless its target says ``optional: true``
        (then ``edgecnn check`` is where it gets measured).
    """
    results = check_targets(budgets, report_figures(report))
    unmeasured = sorted({f"{r.target}: {r.budget}" + (f" @{r.threads}t b{r.batch}" if r.timed else "")
                         for r in results if r.measured is None and not r.ok})
    if unmeasured:
        log.warning("budgets nothing measured (they fail the run; measure them with `edgecnn check`, add the "
                    "thread count to evaluate.threads, or mark the target optional: true): %s", ", ".join(unmeasured))
    return [r.to_json() for r in results], [r for r in results if not r.ok]


def check_http_result(result: dict, run_dir, budgets: Iterable[Target]) -> list[BudgetResult]:
    """Budgets applied to what a client of the service saw (``serve.evaluate_via_http``'s result).

    Accuracy, the drop against the in-process float model (from report.json, when present), size,
    and the client-side p50/p95/p99 at the first concurrency level, which stands for every thread
    count: the service's thread budget is its own.
    """
    import json
    from pathlib import Path

    first = result["levels"][0] if result.get("levels") else {}
    name = result["version"]
    path = Path(run_dir) / name
    report: dict = {"artifacts": {name: {"metrics": {"accuracy": result["accuracy"]}, "bytes": path.stat().st_size}}}
    report_path = Path(run_dir) / "report.json"
    if report_path.is_file():
        report["reference_accuracy"] = json.loads(report_path.read_text()).get("reference_accuracy")
    [art] = report_figures(report)
    latency = {k: Figure(float(first[k]), detail="client-side, first concurrency level")
               for k in ("p50_ms", "p95_ms", "p99_ms") if first.get(k) is not None}
    targets = list(budgets)
    art.timed = {(resolve_threads(t.threads), t.batch): latency for t in targets}
    return [r for r in check_targets(targets, [art]) if r.measured is not None and not r.ok]

"""`edgecnn check`: a run directory against a budgets.yaml, as a CI gate that holds on noisy machines.

Exit codes, never confused: 0 every budget holds; 1 a budget broke; 2 the check itself could not
run (missing or changed artifact, bad budget file, stale report.json, a measuring process that died,
and also any unexpected internal error). Outputs: JUnit XML (one testcase per budget), a Markdown
summary for ``$GITHUB_STEP_SUMMARY``, and JSON with every figure.

Where the figures come from:
- latency (p50/p95/p99_ms), peak memory: measured here, each artifact in its own subprocess
  with the noise-tolerant protocol of ``edgecnn.evaluate.measure_protocol``;
- max_slowdown_vs, p*_ref: ratios from windows interleaved with the baseline's artifact / the
  reference workload, measured in the same job;
- min_accuracy, max_accuracy_drop, min_agreement: the run's report.json (written by
  ``edgecnn run`` / ``edgecnn evaluate``), used only when it matches the artifacts' hashes; otherwise
  the check exits 2 and says to run ``edgecnn evaluate`` first (the test split is not re-run here,
  so the gate needs no TensorFlow);
- max_size_kb: the file on disk, after its sha256 is checked against manifest.json;
- max_arena_kb, max_flash_kb: report.json's ``"mcu"`` figures of the file, measured by the evaluate
  stage in the TFLite Micro interpreter (``edgecnn.runtime.tflm_runner``).

The verdicts come from ``edgecnn.evaluate.budgets.check_targets``, the checker the evaluate stage
uses too, so a budget gives the same verdict here and in a recipe on the same figures. The command
line is ``edgecnn check`` (``edgecnn/cli.py``); this module is its library.

Example:
    >>> from edgecnn.evaluate.check import check
    >>> result = check("export/smoke", "models/smoke.budgets.yaml", junit="check.xml")   # doctest: +SKIP
    >>> result.exit_code, [r.title for r in result.broken]                              # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgecnn._io import write_json, write_text
from edgecnn.budget_schema import BUDGET_KEYS, REPORT_FIGURES, Limit, Target, runtime_of
from edgecnn.errors import EdgecnnError
from edgecnn.evaluate.budget_file import BudgetFile, load_budget_file
from edgecnn.evaluate.budgets import ArtifactFigures, BudgetResult, Figure, check_targets, report_figures
from edgecnn.evaluate.measure_protocol import (
    REFERENCE_VERSION,
    Measurement,
    MeasureOptions,
    Subject,
    measure_group,
    paired_ratio,
    reference_workload,
    spread_pct,
)
from edgecnn.export.manifest import read_manifest, verify_artifact
from edgecnn.runtime.latency import machine_info, resolve_threads

log = logging.getLogger("edgecnn.check")

__all__ = [
    "EXIT_BROKEN",
    "EXIT_ERROR",
    "EXIT_OK",
    "BudgetResult",
    "CheckResult",
    "check",
    "format_text",
    "render_summary",
]

EXIT_OK, EXIT_BROKEN, EXIT_ERROR = 0, 1, 2
_FROM_REPORT = REPORT_FIGURES   # figures read from report.json (accuracy, agreement, arena, a task's auroc/miou...)
_NEEDS = {"accuracy": "the accuracy of {name!r} in report.json",
          "accuracy_drop": "reference_accuracy (model.keras) and the accuracy of {name!r} in report.json",
          "agreement": "the agreement of {name!r} with model.keras in report.json",
          "arena_kb": "the TFLite Micro arena of {name!r} in report.json (an int8 .tflite evaluated with the tflm "
                      "runtime; narrow the target's artifacts to such files)",
          "flash_kb": "the TFLite Micro flash figure of {name!r} in report.json (an int8 .tflite evaluated with the "
                      "tflm runtime; narrow the target's artifacts to such files)",
          "target_agreement": "the target-CPU agreement of {name!r} in report.json (an int8 file evaluated in "
                              "litert-arm64 or onnxruntime-arm64: name that runtime in evaluate.runtimes)"}


@dataclass
class CheckResult:
    """Everything the check found; ``exit_code`` is 0 (all hold), 1 (broken) or 2 (could not run)."""

    run_dir: Path
    budgets_path: Path
    results: list[BudgetResult] = field(default_factory=list)
    measurements: list[dict] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    duration_s: float = 0.0
    budgets_sha256: str = ""
    created: str = ""

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_ERROR
        return EXIT_BROKEN if self.broken else EXIT_OK

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def verdict(self) -> str:
        return {EXIT_OK: "pass", EXIT_BROKEN: "fail", EXIT_ERROR: "error"}[self.exit_code]

    @property
    def broken(self) -> list[BudgetResult]:
        return [r for r in self.results if not r.ok]

    @property
    def source(self) -> str:
        return str(self.budgets_path)

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "error": self.error,
                "run_dir": str(self.run_dir), "budgets": str(self.budgets_path),
                "budgets_sha256": self.budgets_sha256, "created": self.created,
                "duration_s": round(self.duration_s, 3), "machine": self.machine, "measurement": self.options,
                "counts": {"budgets": len(self.results), "broken": len(self.broken),
                           "unstable": sum(r.unstable for r in self.results),
                           "marginal": sum(r.marginal for r in self.results)},
                "results": [r.to_json() for r in self.results], "measurements": self.measurements,
                "warnings": self.warnings}


# ----------------------------------------------------------------------------------------------
# The check
def check(run_dir: str | os.PathLike, budgets_path: str | os.PathLike, *, baseline: str | os.PathLike | None = None,
          junit: str | os.PathLike | None = None, summary: str | os.PathLike | None = None,
          json_out: str | os.PathLike | None = None, measurement: Mapping[str, Any] | None = None) -> CheckResult:
    """Check a run directory's artifacts against a budget file.

    Args:
        run_dir: a run directory with manifest.json (and report.json for accuracy budgets).
        budgets_path: the budgets.yaml (schema in docs/ci.md).
        baseline: run directory for every ``max_slowdown_vs`` (overrides ``baseline:`` in the file).
        junit: write JUnit XML here (one testcase per budget; an ``<error>`` testcase when exit 2).
        summary: write a Markdown summary here (append it to ``$GITHUB_STEP_SUMMARY``).
        json_out: write every figure as JSON here.
        measurement: overrides for the file's ``measurement:`` section, e.g. ``{"max_time_s": 20}``.

    Returns:
        CheckResult; ``result.exit_code`` is 0 (all budgets hold), 1 (a budget broke) or 2 (the
        check could not run: ``result.error`` says why). It never raises for those; the outputs are
        written in every case.
    """
    t0 = time.perf_counter()
    result = CheckResult(Path(run_dir), Path(budgets_path), machine=machine_info(),
                         created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    try:
        _run(result, baseline, measurement)
    except EdgecnnError as e:
        result.error = str(e)
    except Exception as e:  # a bug must not read as "budget broken" (exit 1): it is exit 2
        log.debug("internal error", exc_info=True)
        result.error = (f"internal error in edgecnn check: {type(e).__name__}: {e}\n"
                        + "".join(traceback.format_exception(e)[-3:]).rstrip())
    result.duration_s = time.perf_counter() - t0
    for path, writer in ((junit, _write_junit), (summary, _write_summary), (json_out, _write_json)):
        if path is not None:
            try:
                writer(result, Path(path))
            except OSError as e:
                result.error = result.error or f"cannot write {path}: {e}"
    return result


def _run(result: CheckResult, cli_baseline, overrides: Mapping[str, Any] | None) -> None:
    bf = load_budget_file(result.budgets_path)
    result.budgets_sha256 = bf.sha256
    options = bf.measurement
    if overrides:
        unknown = set(overrides) - set(options.to_json())
        if unknown:
            raise EdgecnnError(f"unknown measurement override(s) {sorted(unknown)}; allowed: "
                               f"{', '.join(options.to_json())}")
        for k in ("tolerance_pct", "max_time_s", "window_s"):
            v = overrides.get(k)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise EdgecnnError(f"measurement override {k} must be a number > 0. Received {k}={v!r}.")
        options = replace(options, **{k: v for k, v in overrides.items() if v is not None})
    result.options = options.to_json()
    run_dir = result.run_dir
    if cli_baseline is not None and not any(limit.key == "max_slowdown_vs" for t in bf.targets for limit in t.limits):
        result.warnings.append(f"--baseline {cli_baseline} was given, but no budget in {bf.source} uses it "
                               "(add max_slowdown_vs to a target).")
    manifest = read_manifest(run_dir)
    plan = _plan(bf, manifest, run_dir, cli_baseline, options)
    for why in plan.unavailable.values():
        result.warnings.append(f"not measured, its runtime is not available here: {why}")
    needs_report = sorted({a for t, arts in plan.items for a in arts
                           if any(limit.figure in _FROM_REPORT for limit in t.limits)})
    report = _report(run_dir, manifest, needs_report) if needs_report else None
    measured = _measure(plan)
    for m in measured.values():
        result.measurements.extend(x.to_json() | {"role": role} for role, x in m.items())
    artifacts = _figures(plan, manifest, report, measured)
    result.results = check_targets([t for t, _ in plan.items],
                                   [a for n, a in artifacts.items() if n not in plan.unavailable])
    for missing in (r for r in result.results if r.measured is None and not r.ok):   # fails: "not measured"
        needs = _NEEDS.get(BUDGET_KEYS[missing.budget].figure, "a figure").format(name=missing.artifact)
        missing.detail = (f"{bf.source}:{missing.line}: {missing.budget} needs {needs}; run `edgecnn evaluate "
                          f"{run_dir}` first, or mark the target optional: true")
    tails = sorted({f"{r.artifact} @{r.threads}t (p{r.budget[1:3]}/p50 = {r.measured / _p50(r, measured):.1f})"
                    for r in result.results if r.budget in ("p95_ms", "p99_ms")
                    and r.measured > TAIL_RATIO_WARN * _p50(r, measured)})
    if tails:
        result.warnings.append(
            f"tail latency far above the median for: {', '.join(tails)}. On a shared machine such a tail is "
            "set by the scheduler (other processes preempting the measurement), not by the model, and it can "
            "change from run to run even when every window agreed: prefer p50_ms or max_slowdown_vs there, "
            "and keep p95/p99 budgets for dedicated runners (docs/ci.md).")
    unstable = sorted({f"{r.artifact} @{r.threads}t" for r in result.results if r.unstable})
    if unstable:
        msg = (f"measurement did not stabilise within max_time_s={options.max_time_s:g} s "
               f"(tolerance {options.tolerance_pct:g} %) for: {', '.join(unstable)}")
        if options.unstable == "error":
            raise EdgecnnError(msg + "; the machine is too noisy for a verdict (measurement.unstable: error). "
                                     "Raise max_time_s or tolerance_pct, or pin cpus.")
        result.warnings.append(msg + "; verdicts are flagged 'unstable'.")


TAIL_RATIO_WARN = 2.0  # p95 (or p99) above this many medians: the tail is the machine's, not the model's


def _p50(r: BudgetResult, measured: dict) -> float:
    return measured[(r.artifact, r.threads, r.batch)]["candidate"].stats["p50_ms"]


@dataclass
class _Plan:
    run_dir: Path
    items: list[tuple[Target, list[str]]]   # every target (max_slowdown_vs baselines resolved) and its artifacts
    options: MeasureOptions
    files: dict[str, tuple[str, str | None]] = field(default_factory=dict)   # artifact -> (file, runtime)
    unavailable: dict[str, str] = field(default_factory=dict)   # artifact -> why its runtime cannot run here


def _runtime_available(runtime: str | None, unavailable: dict[str, str], name: str) -> bool:
    from edgecnn.runtime import get_runtime, runtime_names

    if runtime is None or runtime not in runtime_names():
        return True  # the measuring process reports an unknown runtime itself
    ok, why = get_runtime(runtime).available()
    if not ok:
        unavailable[name] = f"{name}: {runtime} — {why}"
    return ok


def _plan(bf: BudgetFile, manifest: dict, run_dir: Path, cli_baseline, options: MeasureOptions) -> _Plan:
    arts = manifest["artifacts"]
    files = {n: (e.get("file", n), runtime_of(e, e.get("file", n))) for n, e in arts.items()}
    plan = _Plan(run_dir, [], options, files)
    verified: set[str] = set()
    for t in bf.targets:
        names = [n for n in arts if t.matches(*files[n])]
        # A runtime this install lacks (the Keras reference in a serving install, say) cannot be
        # measured here: its files leave the target, said in the result's warnings, never passed.
        runnable = [n for n in names if _runtime_available(files[n][1], plan.unavailable, n)]
        if names and not runnable:
            why = "; ".join(plan.unavailable[n] for n in names)
            raise EdgecnnError(f"{bf.source}:{t.line}: target {t.name!r} matches only artifacts whose runtime cannot "
                               f"run on this machine ({why}). Install it, or point the target at other files.")
        names = runnable
        if not names:
            avail = ", ".join(f"{n} ({files[n][1]})" for n in arts) or "none"
            raise EdgecnnError(f"{bf.source}:{t.line}: target {t.name!r} (artifacts {list(t.artifacts)}, runtime "
                               f"{t.runtime}) matches no artifact in {run_dir / 'manifest.json'}; available: {avail}. "
                               "Fix `artifacts:`/`runtime:` or export the missing format.")
        for n in names:
            if n not in verified:
                verify_artifact(run_dir, n, manifest)
                verified.add(n)
        limits = []
        for lim in t.limits:
            if lim.key == "max_slowdown_vs":
                base = _baseline_dir(bf, lim, cli_baseline)
                base_manifest = read_manifest(base)
                for n in names:
                    if n not in base_manifest["artifacts"]:
                        raise EdgecnnError(f"{bf.source}:{lim.line}: baseline {str(base)!r} has no {n!r} to compare "
                                           f"with; it has: {', '.join(base_manifest['artifacts']) or 'nothing'}.")
                    verify_artifact(base, n, base_manifest)
                lim = replace(lim, baseline=base)
            limits.append(lim)
        plan.items.append((replace(t, limits=tuple(limits)), names))
    return plan


def _baseline_dir(bf: BudgetFile, lim: Limit, cli_baseline) -> Path:
    base = Path(cli_baseline) if cli_baseline is not None else lim.baseline
    if base is None:
        raise EdgecnnError(f"{bf.source}:{lim.line}: max_slowdown_vs has no baseline; add `baseline: DIR` to it or "
                           "pass --baseline DIR (a run directory of the version to compare with).")
    if not base.is_dir():
        raise EdgecnnError(f"{bf.source}:{lim.line}: baseline run directory not found: {str(base)!r}. Build it in "
                           "the same job (e.g. `edgecnn run` on the main branch) or pass --baseline DIR.")
    return base


def _report(run_dir: Path, manifest: dict, names: list[str]) -> dict:
    """report.json, if it describes exactly these artifacts; else exit 2 with the fix."""
    path = run_dir / "report.json"
    fix = f"Run `edgecnn evaluate {run_dir}` first: the check takes accuracy from the evaluation."
    if not path.is_file():
        raise EdgecnnError(f"accuracy budgets need {path}, which does not exist. {fix}")
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EdgecnnError(f"{path} is unreadable ({e}). {fix}") from None
    from edgecnn.store import STATE, RunStore

    store = RunStore(run_dir) if (run_dir / STATE).is_file() else None
    exported = store.item_digests("export") if store else set()
    for name in names:
        art = report.get("artifacts", {}).get(name)
        entry = manifest["artifacts"][name]
        stale = None
        if art is None:
            stale = f"it has no entry for {name!r}"
        elif "sha256" in art and art["sha256"] != entry["sha256"]:
            stale = f"it was measured on another {name!r} (sha256 differs from manifest.json)"
        elif art.get("bytes") != entry["bytes"]:
            stale = (f"it was measured on another {name!r} ({art.get('bytes')} bytes, "
                     f"manifest.json says {entry['bytes']})")
        elif "sha256" not in art and store is not None and (
                not store.has("evaluate") or entry["sha256"] not in exported):
            stale = f"{name!r} was exported again after the evaluation (state.json)"
        if stale:
            raise EdgecnnError(f"{path} does not match the artifacts: {stale}. {fix}")
        if not art.get("metrics"):
            raise EdgecnnError(f"{path}: {name!r} has no metrics. {fix}")
    return report


def _measure(plan: _Plan) -> dict[tuple, dict[str, Measurement]]:
    """One measurement group per (artifact, threads, batch): the candidate, interleaved with every
    baseline and the reference workload when a budget of that group needs them."""
    groups: dict[tuple, dict] = {}
    for t, names in plan.items:
        threads = resolve_threads(t.threads)
        for n in names:
            for lim in t.limits:
                if not lim.spec.timed:
                    continue
                g = groups.setdefault((n, threads, t.batch), {"baselines": {}, "ref": False})
                if lim.key == "max_slowdown_vs":
                    g["baselines"][str(lim.baseline)] = lim.baseline
                if lim.key.endswith("_ref"):
                    g["ref"] = True
    if not groups:
        return {}
    out: dict[tuple, dict[str, Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="edgecnn-check-") as tmp:
        ref_path = reference_workload(tmp) if any(g["ref"] for g in groups.values()) else None
        for i, ((name, threads, batch), g) in enumerate(groups.items(), 1):
            file, runtime = plan.files[name]
            subjects = [("candidate", Subject(name, plan.run_dir / file, threads, batch, runtime))]
            for key, base in g["baselines"].items():
                subjects.append((f"baseline:{key}", Subject(f"baseline {name}", Path(base) / file, threads, batch,
                                                            runtime)))
            if g["ref"]:
                subjects.append(("reference", Subject(f"reference-v{REFERENCE_VERSION}", ref_path, threads, batch)))
            log.info("measuring %d/%d: %s @%d thread(s), batch %d%s", i, len(groups), name, threads, batch,
                     f", interleaved with {', '.join(r for r, _ in subjects[1:])}" if len(subjects) > 1 else "")
            ms = measure_group([s for _, s in subjects], plan.options)
            out[(name, threads, batch)] = {role: m for (role, _), m in zip(subjects, ms)}
            c = ms[0]
            log.info("  p50 %.3f ms, p95 %.3f ms (CI %.3f–%.3f), %d windows, %s, peak RSS %.0f MiB", c.stats["p50_ms"],
                     c.stats["p95_ms"], *c.ci["p95_ms"], len(c.windows), "stable" if c.stable else "UNSTABLE",
                     c.peak_rss_mb)
    return out


def _figures(plan: _Plan, manifest: dict, report: dict | None,
             measured: dict[tuple, dict[str, Measurement]]) -> dict[str, ArtifactFigures]:
    """What the checker judges, per artifact: size (the verified file), accuracy (report.json) and,
    per (threads, batch), what the measuring processes timed."""
    from_report = {a.name: a for a in report_figures(report)} if report else {}
    out: dict[str, ArtifactFigures] = {}
    for name, e in manifest["artifacts"].items():
        file = e.get("file", name)
        figures = ({k: f for k, f in from_report[name].figures.items() if k in _FROM_REPORT}
                   if name in from_report else {})
        figures["size_kb"] = Figure(e["bytes"] / 1024, detail=f"{e['bytes']} bytes (sha256 verified)")
        out[name] = ArtifactFigures(name, file, runtime_of(e, file), figures)
    for (name, threads, batch), group in measured.items():
        out[name].timed[(threads, batch)] = _timed_figures(group, plan.options)
    return out


def _timed_figures(group: dict[str, Measurement], options: MeasureOptions) -> dict[str, Figure]:
    """Latency, peak memory and, when the group has them, ratios to the reference and to each baseline.

    A p50 figure is unstable when the p50s disagreed; tails when either did; a ratio when its last
    per-round ratios did."""
    cand = group["candidate"]
    tol, k = options.tolerance_pct, options.stable_windows
    windows = (f"{len(cand.windows)} windows, last {cand.used_windows} pooled ({int(cand.stats['runs'])} runs); "
               f"window spread p50 {cand.spread_pct['p50']:.1f} %, p95 {cand.spread_pct['p95']:.1f} %")
    figs = {key: Figure(cand.stats[key], cand.ci[key],
                        cand.spread_pct["p50"] > tol if key == "p50_ms" else not cand.stable, windows)
            for key in ("p50_ms", "p95_ms", "p99_ms")}
    figs["peak_memory_mb"] = Figure(cand.peak_rss_mb, detail=f"peak RSS of the measuring process (after load "
                                                             f"{cand.load_rss_mb:.0f} MiB)")
    ref = group.get("reference")
    if ref is not None:
        for q in ("p50", "p95", "p99"):
            pr = paired_ratio(cand, ref, float(q[1:]), 50.0, options.confidence)
            figs[f"{q}_ref"] = Figure(pr["ratio"], pr["ci"], spread_pct(pr["per_round"][-k:]) > tol,
                                      f"{q} {cand.stats[q + '_ms']:.4g} ms / "
                                      f"reference p50 {ref.stats['p50_ms']:.4g} ms "
                                      f"over {pr['rounds']} interleaved rounds")
    for role, base in group.items():
        if not role.startswith("baseline:"):
            continue
        base_dir = role.split(":", 1)[1]
        for q in ("p50", "p95", "p99"):
            pr = paired_ratio(cand, base, float(q[1:]), float(q[1:]), options.confidence)
            figs[f"slowdown_{q}:{base_dir}"] = Figure(
                pr["ratio"], pr["ci"], spread_pct(pr["per_round"][-k:]) > tol,
                f"{q} vs {base_dir}; candidate {cand.stats[q + '_ms']:.4g} ms, baseline "
                f"{base.stats[q + '_ms']:.4g} ms, {pr['rounds']} interleaved rounds")
    return figs

# ----------------------------------------------------------------------------------------------
# Outputs
def render_summary(result: CheckResult) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY`` (or a merge-request comment): verdict, one table per target."""
    head = {"pass": "✅ PASS", "fail": "❌ FAIL", "error": "⚠️ ERROR: the check could not run"}[result.verdict]
    n, broken = len(result.results), len(result.broken)
    lines = [f"## edgecnn check: {head}", ""]
    if result.error is not None:
        lines += ["```", result.error, "```", ""]
    if n:
        lines.append(f"{n - broken} of {n} budgets hold" + (f", **{broken} broken**" if broken else "") + ".")
    m = result.machine
    lines += [f"Run `{result.run_dir}` · budgets `{result.source}` · {m.get('cpu', '?')} ({m.get('cores', '?')} cores, "
              f"affinity {_cpus(m.get('affinity'))}) · {result.duration_s:.0f} s", ""]
    for w in result.warnings:
        lines += [f"> ⚠️ {w}", ""]
    targets: dict[str, list[BudgetResult]] = {}
    for r in result.results:
        targets.setdefault(r.target, []).append(r)
    for target, rs in targets.items():
        lines += [f"### Target `{target}`", "", "| | artifact | budget | measured | limit | note |",
                  "|---|---|---|---|---|---|"]
        for r in rs:
            notes = [x for x, on in (("unstable", r.unstable), ("limit inside CI", r.marginal),
                                     (r.detail, r.measured is None)) if on]
            where = f" @{r.threads}t" + (f" b{r.batch}" if r.batch != 1 else "") if r.timed else ""
            budget = r.budget if r.budget != "max_slowdown_vs" else "slowdown vs baseline"
            lines.append(f"| {'✅' if r.ok else '❌'} | `{r.artifact}`{where} | {budget} | {r.measured_text()} | "
                         f"{r.comparison.replace('<=', '≤').replace('>=', '≥')} {r.allowed_text()} | "
                         f"{', '.join(notes)} |")
        lines.append("")
    if result.measurements:
        o = result.options
        lines += ["<details><summary>Measurements</summary>", "",
                  f"Warm-up ≥ {o['warmup_runs']} calls and {o['warmup_s']:g} s; windows of ≥ {o['window_runs']} calls "
                  f"and {o['window_s']:g} s until the last {o['stable_windows']} agree within {o['tolerance_pct']:g} % "
                  f"(p50 and p95) or {o['max_time_s']:g} s pass; each artifact in its own process.", "",
                  "| role | artifact | threads | batch | p50 ms | p95 ms (95% CI) | p99 ms | windows | "
                  "spread p50/p95 | stable | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in result.measurements:
            s, ci = x["stats"], x["ci"]["p95_ms"]
            lines.append(f"| {x['role'].split(':')[0]} | `{Path(x['path']).name}` | {x['threads']} | {x['batch']} | "
                         f"{s['p50_ms']:.4g} | {s['p95_ms']:.4g} ({ci[0]:.4g}–{ci[1]:.4g}) | {s['p99_ms']:.4g} | "
                         f"{len(x['windows'])} | {x['spread_pct']['p50']:.1f} % / {x['spread_pct']['p95']:.1f} % | "
                         f"{'yes' if x['stable'] else '**no**'} | {x['peak_rss_mb']:.0f} |")
        lines += ["", "</details>", ""]
    return "\n".join(lines) + "\n"


def _cpus(affinity) -> str:
    if not affinity:
        return "?"
    a = sorted(affinity)
    return f"{a[0]}-{a[-1]}" if a == list(range(a[0], a[-1] + 1)) and len(a) > 1 else ",".join(map(str, a))


def format_text(result: CheckResult, github: bool | None = None) -> str:
    """Plain lines for a terminal or a CI log; with ``github`` (default: when $GITHUB_ACTIONS is
    "true") broken budgets also become ``::error file=...,line=...::`` annotations on budgets.yaml."""
    if github is None:
        github = os.environ.get("GITHUB_ACTIONS") == "true"
    lines = []
    for r in result.results:
        lines.append(r.message(result.source))
        if github and not r.ok:
            lines.append(f"::error file={result.source},line={r.line},title=budget broken::"
                         f"{r.title}: measured {r.measured_text()}")
    lines += [f"warning: {w}" for w in result.warnings]
    if result.error is not None:
        lines.append(f"error: {result.error}")
        if github:
            lines.append(f"::error title=edgecnn check could not run::{result.error.splitlines()[0]}")
    n = len(result.results)
    lines.append({"pass": f"check: PASS, {n} budgets hold (exit 0)",
                  "fail": f"check: FAIL, {len(result.broken)} of {n} budgets broken (exit 1)",
                  "error": "check: ERROR, the check could not run (exit 2)"}[result.verdict])
    return "\n".join(lines)


def _write_junit(result: CheckResult, path: Path) -> None:
    from edgecnn.evaluate.junit import write_junit

    write_junit(result, path)


def _write_summary(result: CheckResult, path: Path) -> None:
    if str(path) == os.environ.get("GITHUB_STEP_SUMMARY"):  # GitHub's file is appended to, never replaced
        with open(path, "a", encoding="utf-8") as f:
            f.write(render_summary(result))
    else:
        write_text(path, render_summary(result))


def _write_json(result: CheckResult, path: Path) -> None:
    write_json(path, result.to_json())

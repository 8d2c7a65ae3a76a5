"""The evaluate loop, written once for every task: every artifact x every runtime that runs it x the
configured thread counts.

The task supplies only ``measure(job, runner)``: its metrics of one artifact in one runtime, computed
over its test split a batch at a time. The loop does the rest, the same way for every task: which
runtimes run which file (:func:`evaluation_jobs`: the file's own runtime, then every further registered
runtime that runs it and is evaluated by default or named in ``evaluate.runtimes``), the manifest's
hash check, latency at each thread count, size, a runtime's own figures (``extra_figures``), and the
rules for what is not measured: a further runtime that cannot run on this machine, or refuses this file
(:class:`~edgecnn.errors.RuntimeRefusal`), is ``skipped`` with its reason; any other failure is an
``error`` that fails the run's verdict; a failure of the float reference ends the evaluation.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import artifact_bytes, sha256_file
from edgecnn.errors import EdgecnnError, RuntimeRefusal
from edgecnn.runtime.latency import measure_latency

__all__ = ["Job", "evaluate_all", "evaluation_jobs", "gzip_size"]

log = logging.getLogger("edgecnn")
KERAS_ENTRY = {"format": "keras", "runtime": "keras", "precision": "fp32"}  # model.keras is not in the manifest


@dataclass(frozen=True)
class Job:
    """One artifact in one runtime: ``key`` names its report entry (``file``, or ``file@runtime`` for a
    further runtime, e.g. ``model.int8.onnx@openvino``)."""

    key: str
    file: str
    runtime: str

    @property
    def own(self) -> bool:
        """Whether this is the file in its own runtime (the one its manifest entry names)."""
        return self.key == self.file


def gzip_size(path: Path) -> int:
    """Bytes of the artifact gzip-compressed at level 9 (what a download or an OTA update carries)."""
    import gzip

    from edgecnn._io import artifact_files

    return sum(len(gzip.compress(p.read_bytes(), compresslevel=9)) for p in artifact_files(path))


def evaluation_jobs(run_dir: Path, manifest: dict, reference: str, runtimes: list[str] | None = None) -> list[Job]:
    """The reference first, then every artifact of the manifest; each file in its own runtime, then in every
    further registered runtime that runs it (``runtimes``: those named; None: those evaluated by default)."""
    from edgecnn.runtime import get_runtime, runtimes_for

    jobs: list[Job] = []
    for name in [reference] + [n for n in manifest["artifacts"] if n != reference]:
        candidates = [r.name for r in runtimes_for(run_dir / name)]
        own = manifest["artifacts"][name].get("runtime") if name in manifest["artifacts"] else "keras"
        own = own if own in candidates else (candidates[0] if candidates else own)
        jobs.append(Job(name, name, own))
        jobs += [Job(f"{name}@{r}", name, r) for r in candidates
                 if r != own and (r in runtimes if runtimes is not None else get_runtime(r).evaluated_by_default)]
    return jobs


def _latency(run_dir: Path, job: Job, runner: Any, probe: np.ndarray, threads: list[int], warmup: int,
             runs: int) -> dict[str, dict]:
    """p50/p95/... at each thread count (the runner made at the most threads is reused for that count)."""
    from edgecnn.runtime import load_runner

    if getattr(runner, "measures_latency", True) is False:   # an emulated runtime: its times mean nothing
        return {}
    latency = {}
    for t in threads:
        if runner.backend == "keras" and t != max(threads):
            continue  # TF's intra-op pool is fixed per process; Keras is timed at the process default
        timed = runner if t == max(threads) else load_runner(run_dir / job.file, threads=t, runtime=runner.backend)
        try:
            latency[str(t)] = measure_latency(timed, probe, warmup=warmup, runs=runs)
        finally:
            if timed is not runner:
                timed.close()
    return latency


def evaluate_all(run_dir: Path, manifest: dict, reference: str, cfg: Any,
                 measure: Callable[[Job, Any], dict], probe: np.ndarray, *,
                 describe: Callable[[dict], str] = lambda metrics: "") -> tuple[dict[str, dict], list[dict]]:
    """Measure every job of :func:`evaluation_jobs` with the task's ``measure``.

    Args:
        run_dir: the run directory; ``manifest`` its manifest.json.
        reference: the float model every artifact is compared with (measured first).
        cfg: the recipe's ``evaluate`` section (``threads``, ``warmup``, ``runs``, ``runtimes``).
        measure: ``(job, runner) -> {"metrics": {...}, ...}``: the task's figures of one artifact in one
            runtime over its test split (read a batch at a time); the task keeps what it compares later
            artifacts with (the reference's answers) itself.
        probe: one input image (H, W, C) timed for latency.
        describe: the task's short metrics text for the log line.

    Returns:
        ``(artifacts, errors)``: report.json's ``artifacts`` (one entry per job key) and ``errors``.
    """
    from edgecnn.export.manifest import verify_artifact
    from edgecnn.progress import progress
    from edgecnn.runtime import get_runtime, load_runner
    from edgecnn.runtime.latency import resolve_threads

    threads = sorted({resolve_threads(t) for t in cfg.threads})
    jobs = evaluation_jobs(run_dir, manifest, reference, cfg.runtimes)
    artifacts: dict[str, dict] = {}
    errors: list[dict] = []
    with progress("evaluating", len(jobs)) as update:
        for i, job in enumerate(jobs):
            update(i, job.key)
            entry = manifest["artifacts"].get(job.file, KERAS_ENTRY)
            head = {"file": job.file, "runtime": job.runtime, "format": entry.get("format"),
                    "precision": entry.get("precision")}
            ok, why = get_runtime(job.runtime).available() if not job.own else (True, "")
            if not ok:   # a further runtime that cannot run here is reported, not fatal
                artifacts[job.key] = {**head, "skipped": why}
                log.warning("skipped %s in %s: %s", job.file, job.runtime, why)
                continue
            runner = None
            try:
                if job.file in manifest["artifacts"]:
                    entry = verify_artifact(run_dir, job.file, manifest)
                runner = load_runner(run_dir / job.file, threads=max(threads), runtime=job.runtime)
                fields = measure(job, runner)
                latency = _latency(run_dir, job, runner, probe, threads, cfg.warmup, cfg.runs)
                path = run_dir / job.file
                art = {**head, "runtime": runner.backend, "sha256": entry.get("sha256") or sha256_file(path),
                       "bytes": artifact_bytes(path), "gzip_bytes": gzip_size(path), **fields, "latency": latency}
                extra = getattr(runner, "extra_figures", None)  # e.g. TFLM's {"mcu": {arena, flash}}
                if callable(extra):
                    art.update(extra())
            except Exception as e:  # noqa: BLE001  (whatever a runtime raises is reported, never a skip)
                if job.file == reference or (job.own and not isinstance(e, RuntimeRefusal)
                                             and isinstance(e, EdgecnnError)):
                    raise   # nothing is measured without the reference; a bad artifact of its own runtime: exit 2
                if isinstance(e, RuntimeRefusal):  # cannot run here (TFLite Micro lacks an op, no OpenVINO)
                    artifacts[job.key] = {**head, "skipped": str(e)}
                    log.warning("skipped %s in %s: %s", job.file, job.runtime, e)
                    continue
                what = str(e) if isinstance(e, EdgecnnError) else f"{type(e).__name__}: {e}"
                artifacts[job.key] = {**head, "error": what}
                errors.append({"artifact": job.key, "runtime": job.runtime, "error": what})
                log.error("%s failed in %s: %s", job.file, job.runtime, what)
                continue
            finally:
                if runner is not None:
                    runner.close()
            artifacts[job.key] = art
            lat = next(iter(art["latency"].values()), None)
            log.info("evaluated %-28s %s %s %.0f KB", job.key, describe(art["metrics"]),
                     f"p50={lat['p50_ms']:.2f}ms p95={lat['p95_ms']:.2f}ms" if lat else "no latency",
                     art["bytes"] / 1024)
        update(len(jobs))
    return artifacts, errors

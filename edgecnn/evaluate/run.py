"""The evaluation stage: every artifact of a run on the test split, in its own runtime."""
from __future__ import annotations

import gzip
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import artifact_bytes, artifact_files, sha256_file
from edgecnn.data.decoded_split import Images, predict_in_batches
from edgecnn.errors import EdgecnnError, RuntimeRefusal
from edgecnn.evaluate.latency import machine_info, measure_latency, resolve_threads
from edgecnn.evaluate.metrics import classification_metrics
from edgecnn.export.manifest import read_manifest, verify_artifact
from edgecnn.progress import progress

log = logging.getLogger("edgecnn.evaluate")
REFERENCE = "model.keras"


def gzip_size(path: Path) -> int:
    """Bytes after gzip -9 (what an app download or OTA update costs); a folder artifact's files together."""
    return sum(len(gzip.compress(p.read_bytes(), compresslevel=9)) for p in artifact_files(path))


def evaluate_artifacts(recipe: Any, run_dir: Path, images: Images, labels: np.ndarray,
                       classes: list[str], *, reference: str = REFERENCE) -> dict:
    """Accuracy, agreement with the Keras float model, latency at each thread count, and size of every
    artifact in every runtime that runs it.

    ``images`` is the test split: a :class:`edgecnn.data.decoded_split.DecodedSplit` (the stage's: read
    a batch at a time, so memory does not grow with the split) or an in-memory float32 array.
    ``report["artifacts"]`` holds, per artifact, an entry keyed by its file name, measured in the
    runtime its manifest names, and one entry keyed ``"<file>@<runtime>"`` per further registered
    runtime that runs the file (``evaluate.runtimes``; None = all), e.g. ``"model.int8.onnx@openvino"``.
    Every entry carries ``"file"`` and ``"runtime"``. A further runtime that cannot run on this machine
    gives an entry with ``"skipped": "<reason>"`` and no metrics, instead of failing the run; so does one
    that refuses this file (a :class:`edgecnn.errors.RuntimeRefusal`: TFLite Micro lacking an op, say).
    Any other exception while an artifact runs is a failure: its entry holds ``"error": "<what>"`` (and
    ``report["errors"]`` lists it), which fails the run's verdict. A runner's ``extra_figures()`` (TFLite
    Micro: ``{"mcu": {...}}``) is merged into its entry.
    Every exported artifact's sha256 is checked against manifest.json before it is run.
    ``reference`` is the float model agreement is measured against: ``model.keras``, or for an
    imported ONNX/TFLite model that file itself (a manifest artifact).
    """
    from edgecnn.runtime import get_runtime, list_runtimes, runtimes_for

    manifest = read_manifest(run_dir)
    names = [reference] + [n for n in manifest["artifacts"] if n != reference]
    cfg = recipe.evaluate
    thread_counts = sorted({resolve_threads(t) for t in cfg.threads})
    report: dict = {"name": recipe.name, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "classes": classes, "test_images": int(len(labels)), "reference": reference,
                    "machine": machine_info(), "latency_protocol": {"batch": 1, "warmup": cfg.warmup,
                                                                     "runs": cfg.runs, "threads": thread_counts},
                    "runtimes": {r.name: {"version": r.version(), "available": r.available()[0],
                                          "reason": r.available()[1] or None} for r in list_runtimes()},
                    "artifacts": {}}
    jobs: list[tuple[str, str, str]] = []     # (report key, file, runtime); each file's own runtime first
    for name in names:
        candidates = [r.name for r in runtimes_for(run_dir / name)]
        own = manifest["artifacts"][name].get("runtime") if name in manifest["artifacts"] else "keras"
        own = own if own in candidates else (candidates[0] if candidates else own)
        jobs.append((name, name, own))
        jobs += [(f"{name}@{r}", name, r) for r in candidates
                 if r != own and (r in cfg.runtimes if cfg.runtimes is not None
                                  else get_runtime(r).evaluated_by_default)]
    reference_probs = None
    steps = 1 + len(thread_counts)
    with progress("evaluating", len(jobs) * steps) as update:
        for i, (key, name, runtime) in enumerate(jobs):
            def step(k: int, info: str, _base=i * steps) -> None:
                update(_base + k, info)

            ok, why = get_runtime(runtime).available() if key != name else (True, "")
            if not ok:   # a further runtime that cannot run here is reported, not fatal
                entry = manifest["artifacts"].get(name, {})
                report["artifacts"][key] = {"file": name, "runtime": runtime, "format": entry.get("format"),
                                            "precision": entry.get("precision"), "skipped": why}
                log.warning("skipped %s in %s: %s", name, runtime, why)
                continue
            try:
                art, probs = _evaluate_one(run_dir, name, manifest, images, labels, classes, cfg, thread_counts,
                                           reference_probs, step, runtime=runtime, label=key)
            except Exception as e:  # noqa: BLE001  (whatever a runtime raises is reported, never a skip)
                if name == reference or (key == name and not isinstance(e, RuntimeRefusal)
                                         and isinstance(e, EdgecnnError)):
                    raise   # nothing is measured without the reference; a bad artifact of its own runtime: exit 2
                entry = manifest["artifacts"].get(name, {})
                report["artifacts"][key] = {"file": name, "runtime": runtime, "format": entry.get("format"),
                                            "precision": entry.get("precision")}
                if isinstance(e, RuntimeRefusal):  # cannot run here (TFLite Micro lacks an op, no OpenVINO)
                    report["artifacts"][key]["skipped"] = str(e)
                    log.warning("skipped %s in %s: %s", name, runtime, e)
                    continue
                what = str(e) if isinstance(e, EdgecnnError) else f"{type(e).__name__}: {e}"
                report["artifacts"][key]["error"] = what
                report.setdefault("errors", []).append({"artifact": key, "runtime": runtime, "error": what})
                log.error("%s failed in %s: %s", name, runtime, what)
                continue
            report["artifacts"][key] = art
            if key == reference:
                reference_probs = probs
        update(len(jobs) * steps)
    report["reference_accuracy"] = report["artifacts"][reference]["metrics"]["accuracy"]
    return report


def _evaluate_one(run_dir: Path, name: str, manifest: dict, images: Images, labels: np.ndarray,
                  classes: list[str], cfg, thread_counts: list[int], reference, step, *, runtime: str | None = None,
                  label: str | None = None) -> tuple[dict, np.ndarray]:
    """One artifact in one runtime (None = its default): accuracy on the test split at all threads, then
    latency at each thread count. ``label`` names it in progress and log lines (default: the file name)."""
    from edgecnn.runtime import load_runner

    label = label or name
    path = run_dir / name
    entry = {"format": "keras", "runtime": "keras", "precision": "fp32"}  # model.keras is not in the manifest
    if name in manifest["artifacts"]:
        entry = verify_artifact(run_dir, name, manifest)
    step(0, f"{label} accuracy")
    runner = load_runner(path, threads=max(thread_counts), runtime=runtime)
    probs = predict_in_batches(runner, images)   # one batch of images in memory, N x classes out
    runner.evaluated(images, probs)   # TFLite Micro compares its answers with LiteRT's on this split
    metrics = classification_metrics(probs, labels, classes, cfg.top_k, reference if reference is not None else probs)
    latency = {}
    for j, t in enumerate(thread_counts):
        if runner.backend == "keras" and t != max(thread_counts):
            continue  # TF's intra-op pool is fixed per process; Keras is timed at the process default
        step(1 + j, f"{label} latency @{t} threads")
        r = runner if t == max(thread_counts) else load_runner(path, threads=t, runtime=runner.backend)
        latency[str(t)] = measure_latency(r, images[0], warmup=cfg.warmup, runs=cfg.runs)
    art = {"file": name, "format": entry.get("format"), "runtime": runner.backend,
           "sha256": entry.get("sha256") or sha256_file(path),
           "precision": entry.get("precision"), "bytes": artifact_bytes(path), "gzip_bytes": gzip_size(path),
           "metrics": metrics, "latency": latency}
    extra = getattr(runner, "extra_figures", None)  # a runtime's own figures, e.g. TFLM's {"mcu": {arena, flash}}
    if callable(extra):
        art.update(extra())
    t_log = str(thread_counts[0]) if str(thread_counts[0]) in latency else next(iter(latency))
    lat = latency[t_log]
    log.info("evaluated %-28s acc=%.4f agree=%.4f p50=%.2fms p95=%.2fms (%s thr) %.0f KB", label,
             metrics["accuracy"], metrics["agreement"], lat["p50_ms"], lat["p95_ms"], t_log, art["bytes"] / 1024)
    return art, probs


"""Measure every artifact of a segmentation run on the test pairs, in every runtime that runs it.

Per artifact (report.json's classifier shape, so budgets and ``edgecnn check`` read it):
``metrics`` = pixel accuracy, per-class IoU, mIoU, the pooled defect-pixel IoU, ``miou_drop``
against model.keras and ``pixel_agreement`` with model.keras's masks; ``latency`` per thread count
(batch 1, warm-up then timed runs); ``bytes`` / ``gzip_bytes``. The best and worst test images of
the float model are drawn beside the int8 artifact's masks into ``findings/segment/`` for the report.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import artifact_bytes, sha256_file
from edgecnn.evaluate.latency import machine_info, measure_latency, resolve_threads
from edgecnn.evaluate.run import gzip_size
from edgecnn.export.manifest import read_manifest, verify_artifact
from edgecnn.progress import progress
from edgecnn.segment.data import SegmentData, load_split
from edgecnn.segment.export import predict_masks
from edgecnn.segment.metrics import confusion_matrix, pixel_agreement, segment_metrics

log = logging.getLogger("edgecnn.segment")
REFERENCE = "model.keras"


def _jobs(run_dir: Path, manifest: dict, runtimes: list[str] | None) -> list[tuple[str, str, str]]:
    """(report key, file, runtime): each file in its own runtime, then in the further ones it runs in."""
    from edgecnn.runtime import get_runtime, runtimes_for

    jobs = []
    for name in [REFERENCE] + [n for n in manifest["artifacts"] if n != REFERENCE]:
        candidates = [r.name for r in runtimes_for(run_dir / name)]
        own = manifest["artifacts"].get(name, {}).get("runtime", "keras")
        own = own if own in candidates else (candidates[0] if candidates else own)
        jobs.append((name, name, own))
        jobs += [(f"{name}@{r}", name, r) for r in candidates if r != own and (
            r in runtimes if runtimes is not None else get_runtime(r).evaluated_by_default)]
    return jobs


def evaluate_segmenters(recipe: Any, run_dir: Path, data: SegmentData, size: int) -> dict:
    """report.json's content for a segmentation run (see the module docstring)."""
    from edgecnn.runtime import get_runtime, list_runtimes, load_runner
    from edgecnn.segment.findings import write_examples

    manifest = read_manifest(run_dir)
    images, truth = load_split(data, "test", size)
    cfg = recipe.evaluate
    threads = sorted({resolve_threads(t) for t in cfg.threads})
    k = len(data.classes)
    report: dict[str, Any] = {
        "task": "segment", "name": recipe.name, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "classes": data.classes, "test_images": int(len(images)), "reference": REFERENCE, "machine": machine_info(),
        "latency_protocol": {"batch": 1, "warmup": cfg.warmup, "runs": cfg.runs, "threads": threads},
        "runtimes": {r.name: {"version": r.version(), "available": r.available()[0]} for r in list_runtimes()},
        "artifacts": {}}
    jobs = _jobs(run_dir, manifest, cfg.runtimes)
    masks_of: dict[str, np.ndarray] = {}
    with progress("evaluating", len(jobs)) as update:
        for i, (key, name, runtime) in enumerate(jobs):
            update(i, key)
            ok, why = get_runtime(runtime).available()
            entry = manifest["artifacts"].get(name, {"format": "keras", "precision": "fp32"})
            if not ok or (key != name and runtime == "tflm"):
                report["artifacts"][key] = {"file": name, "runtime": runtime, "format": entry.get("format"),
                                            "precision": entry.get("precision"), "skipped": why or "not evaluated"}
                continue
            if name in manifest["artifacts"]:
                verify_artifact(run_dir, name, manifest)
            runner = load_runner(run_dir / name, threads=max(threads), runtime=runtime)
            masks = predict_masks(runner, images)
            metrics = segment_metrics(confusion_matrix(truth, masks, k), data.classes)
            ref = masks_of.get(REFERENCE, masks)
            metrics["pixel_agreement"] = pixel_agreement(masks, ref)
            ref_miou = report["artifacts"].get(REFERENCE, {"metrics": metrics})["metrics"]["miou"]
            metrics["miou_drop"] = ref_miou - metrics["miou"]
            latency = {}
            for t in threads:
                if runner.backend == "keras" and t != max(threads):
                    continue  # TF's thread pool is fixed per process
                timed = runner if t == max(threads) else load_runner(run_dir / name, threads=t, runtime=runtime)
                latency[str(t)] = measure_latency(timed, images[0], warmup=cfg.warmup, runs=cfg.runs)
            report["artifacts"][key] = {
                "file": name, "format": entry.get("format"), "runtime": runner.backend,
                "sha256": entry.get("sha256") or sha256_file(run_dir / name), "precision": entry.get("precision"),
                "bytes": artifact_bytes(run_dir / name), "gzip_bytes": gzip_size(run_dir / name),
                "metrics": metrics, "latency": latency}
            masks_of.setdefault(name, masks)
            lat = latency.get("1") or next(iter(latency.values()))
            log.info("evaluated %-28s mIoU=%.4f pixel acc=%.4f agree=%.4f p50=%.2fms %.0f KB", key, metrics["miou"],
                     metrics["pixel_accuracy"], metrics["pixel_agreement"], lat["p50_ms"],
                     report["artifacts"][key]["bytes"] / 1024)
        update(len(jobs))
    report["reference_miou"] = report["artifacts"][REFERENCE]["metrics"]["miou"]
    int8 = next((n for n in masks_of if manifest["artifacts"].get(n, {}).get("precision") == "int8"), None)
    report["examples"] = write_examples(run_dir, data, images, truth, masks_of[REFERENCE],
                                        masks_of.get(int8), int8, recipe.segment.examples)
    return report

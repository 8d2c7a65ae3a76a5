"""The evaluation stage: every artifact of a run on the test split, in its own runtime."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.data.decoded_split import Images, predict_in_batches
from edgecnn.evaluate.loop import evaluate_all
from edgecnn.evaluate.metrics import classification_metrics
from edgecnn.export.manifest import read_manifest
from edgecnn.runtime.latency import machine_info, resolve_threads

log = logging.getLogger("edgecnn.evaluate")
REFERENCE = "model.keras"


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
    from edgecnn.runtime import list_runtimes

    manifest = read_manifest(run_dir)
    cfg = recipe.evaluate
    thread_counts = sorted({resolve_threads(t) for t in cfg.threads})
    report: dict = {"name": recipe.name, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "classes": classes, "test_images": int(len(labels)), "reference": reference,
                    "machine": machine_info(), "latency_protocol": {"batch": 1, "warmup": cfg.warmup,
                                                                     "runs": cfg.runs, "threads": thread_counts},
                    "runtimes": {r.name: {"version": r.version(), "available": r.available()[0],
                                          "reason": r.available()[1] or None} for r in list_runtimes()},
                    "artifacts": {}}
    reference_probs: list[np.ndarray] = []

    def measure(job, runner) -> dict:
        probs = predict_in_batches(runner, images)   # one batch of images in memory, N x classes out
        runner.evaluated(images, probs)   # TFLite Micro compares its answers with LiteRT's on this split
        if job.key == reference:
            reference_probs.append(probs)
        ref = reference_probs[0] if reference_probs else probs
        return {"metrics": classification_metrics(probs, labels, classes, cfg.top_k, ref)}

    report["artifacts"], errors = evaluate_all(
        run_dir, manifest, reference, cfg, measure, images[0],
        describe=lambda m: f"acc={m['accuracy']:.4f} agree={m['agreement']:.4f}")
    if errors:
        report["errors"] = errors
    report["reference_accuracy"] = report["artifacts"][reference]["metrics"]["accuracy"]
    return report

"""Measure every artifact of a segmentation run on the test pairs, in every runtime that runs it.

Per artifact (report.json's classifier shape, so budgets and ``edgecnn check`` read it):
``metrics`` = pixel accuracy, per-class IoU, mIoU, the pooled defect-pixel IoU, ``miou_drop``
against model.keras and ``pixel_agreement`` with model.keras's masks; ``latency`` per thread count
(batch 1, warm-up then timed runs); ``bytes`` / ``gzip_bytes`` (the shared loop,
:func:`edgecnn.evaluate.loop.evaluate_all`). The test pairs are decoded ``BATCH`` at a time for each
artifact: memory holds a batch and the predicted class ids, not the split's images. The best and worst test images of
the float model are drawn beside the int8 artifact's masks into ``findings/segment/`` for the report.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.export.manifest import read_manifest
from edgecnn.runtime.latency import machine_info, resolve_threads
from edgecnn.segment.data import SegmentData, load_pair
from edgecnn.segment.metrics import confusion_matrix, pixel_agreement, segment_metrics

log = logging.getLogger("edgecnn.segment")
REFERENCE = "model.keras"
BATCH = 32   # test pairs decoded at a time


class _TestImages:
    """The test split's images, decoded on demand (the report's few examples), never all in memory."""

    def __init__(self, data: SegmentData, size: int):
        self.data, self.size, self.pairs = data, size, data.splits["test"]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> np.ndarray:
        return load_pair(self.pairs[i], self.size, self.data.classes, self.data.palette, self.data.channels)[0]

    def batches(self, batch: int = BATCH):
        """(images, masks) ``batch`` pairs at a time, in split order."""
        for start in range(0, len(self.pairs), batch):
            out = [load_pair(p, self.size, self.data.classes, self.data.palette, self.data.channels)
                   for p in self.pairs[start:start + batch]]
            yield np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def evaluate_segmenters(recipe: Any, run_dir: Path, data: SegmentData, size: int) -> dict:
    """report.json's content for a segmentation run (see the module docstring): the shared evaluate loop with
    segmentation's metrics, the test pairs decoded a batch at a time for each artifact."""
    from edgecnn.evaluate.loop import evaluate_all
    from edgecnn.runtime import list_runtimes
    from edgecnn.segment.findings import write_examples

    manifest = read_manifest(run_dir)
    if not data.splits["test"]:
        raise EdgecnnError(f"the test split of {str(data.root)!r} has no image + mask pairs.")
    test = _TestImages(data, size)
    cfg = recipe.evaluate
    threads = sorted({resolve_threads(t) for t in cfg.threads})
    k = len(data.classes)
    report: dict[str, Any] = {
        "task": "segment", "name": recipe.name, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "classes": data.classes, "test_images": len(test), "reference": REFERENCE, "machine": machine_info(),
        "latency_protocol": {"batch": 1, "warmup": cfg.warmup, "runs": cfg.runs, "threads": threads},
        "runtimes": {r.name: {"version": r.version(), "available": r.available()[0]} for r in list_runtimes()},
        "artifacts": {}}
    masks_of: dict[str, np.ndarray] = {}   # uint8 class ids (N, H, W) per file: agreement and the examples
    truth: list[np.ndarray] = []

    def measure(job, runner) -> dict:
        predicted, cm = [], np.zeros((k, k), np.int64)
        for images, masks in test.batches():
            pred = np.argmax(runner(images), axis=-1).astype(np.uint8)
            cm += confusion_matrix(masks, pred, k)
            predicted.append(pred)
            if not masks_of:
                truth.append(masks)
        masks = np.concatenate(predicted)
        metrics = segment_metrics(cm, data.classes)
        ref = masks_of.get(REFERENCE, masks)
        metrics["pixel_agreement"] = pixel_agreement(masks, ref)
        ref_miou = report["artifacts"].get(REFERENCE, {"metrics": metrics})["metrics"]["miou"]
        metrics["miou_drop"] = ref_miou - metrics["miou"]
        masks_of.setdefault(job.file, masks)
        if job.key == REFERENCE:
            report["artifacts"][REFERENCE] = {"metrics": metrics}   # later artifacts' mIoU drop is from it
        return {"metrics": metrics}

    probe = test[0]
    report["artifacts"], errors = evaluate_all(
        run_dir, manifest, REFERENCE, cfg, measure, probe,
        describe=lambda m: f"mIoU={m['miou']:.4f} pixel acc={m['pixel_accuracy']:.4f} "
                           f"agree={m['pixel_agreement']:.4f}")
    if errors:
        report["errors"] = errors
    report["reference_miou"] = report["artifacts"][REFERENCE]["metrics"]["miou"]
    int8 = next((n for n in masks_of if manifest["artifacts"].get(n, {}).get("precision") == "int8"), None)
    report["examples"] = write_examples(run_dir, data, test, np.concatenate(truth), masks_of[REFERENCE],
                                        masks_of.get(int8), int8, recipe.segment.examples)
    return report

"""``task: segment`` over a run directory: data -> train -> export (+ int8 choice) -> evaluate -> report.

The stages follow the classifier's (:class:`edgecnn.pipeline.Run`): each records a fingerprint of
its inputs and settings in state.json and is skipped while that fingerprint and its outputs are
unchanged; training resumes from its per-epoch checkpoints. Every file is written atomically.
"""
from __future__ import annotations

import json
import logging
import shutil

from edgecnn._io import sha256_file, write_text
from edgecnn.errors import EdgecnnError
from edgecnn.stages.data import refuse_distribute, task_data_path
from edgecnn.stages.result import RunResult
from edgecnn.store import fingerprint as _fp

log = logging.getLogger("edgecnn.segment")


def segment_data(run):
    """The run's image + mask pairs (generating the bundled set where the recipe says so): the task's data
    discovery (``run.dataset()`` calls it once per run)."""
    from edgecnn.segment.data import discover_pairs

    d, s = run.recipe.data, run.recipe.segment
    path = task_data_path(run, "segment")
    data = discover_pairs(path, classes=s.classes, palette=s.palette, val_fraction=d.val_fraction,
                          test_fraction=d.test_fraction, seed=d.split_seed, channels=d.channels,
                          skip_bad_images=d.skip_bad_images)
    # counts: images per split whose mask holds each class, where the folder says so (binary masks; a
    # good image is all background); id and colour masks are counted under none (read only when training)
    counts = {s: {c: sum(1 for p in pairs if (p.fill or 0) == i and (p.mask is None or p.fill is not None))
                  for i, c in enumerate(data.classes)} for s, pairs in data.splits.items()}
    run.store.write_dataset(data.classes, {"root": str(data.root), "layout": data.layout, "classes": data.classes,
                                           "pairs": data.counts(), "counts": counts, "task": "segment",
                                           "fingerprint": data.fingerprint(),
                                           "test_files": [[p.image, None] for p in data.splits["test"]]})
    log.info("segmentation data %s (%s): classes %s; %s", data.root, data.layout, data.classes,
             ", ".join(f"{k} {v}" for k, v in data.counts().items()))
    return data


def train_stage(run, force: bool = False) -> bool:
    """Train unless model.keras is current; returns True when it trained."""
    r = run.recipe
    refuse_distribute(run, "segment")
    data = run.dataset()
    fp = _fp("segment", data.fingerprint(), r.model.model_dump(mode="json"), r.train.model_dump(mode="json"),
             r.data.augment.flip, r.data.batch_size, r.segment.class_weight_power, r.segment.dice_weight,
             run.input_size)
    if not force and run.store.is_current("train", fp, ["model.keras", "history.json"]):
        log.info("train: up to date (model.keras), skipped")
        return False
    # Phase 1 depends on fewer settings than the whole stage: a new fine-tuning schedule keeps it.
    t = r.train
    fp1 = _fp("segment-phase1", data.fingerprint(), r.model.model_dump(mode="json"), t.seed, t.optimizer, t.momentum,
              t.freeze_backbone, t.head.model_dump(mode="json"), t.early_stopping_patience, r.data.augment.flip,
              r.data.batch_size, r.segment.class_weight_power, r.segment.dice_weight, run.input_size)
    ckpt = run.dir / "checkpoints"
    marker, marker1 = ckpt / "fingerprint.txt", ckpt / "phase1.fingerprint.txt"
    if ckpt.exists() and (force or not marker.is_file() or marker.read_text() != fp):
        keep1 = not force and marker1.is_file() and marker1.read_text() == fp1
        for old in ckpt.iterdir():  # checkpoints of another config must not be resumed
            if not (keep1 and old.name.startswith("phase1")):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        if keep1:
            log.info("train: phase 1 of the same settings kept; phase 2 starts again")
    ckpt.mkdir(parents=True, exist_ok=True)
    write_text(marker, fp)
    write_text(marker1, fp1)
    from edgecnn.data.decoded_split import SPLITS_DIR
    from edgecnn.segment.data import split_arrays
    from edgecnn.segment.train import train_segmenter

    size = run.input_size
    # each split in memory while it fits data.cache_memory_mb, else memory-mapped from the run directory
    arrays = {split: split_arrays(data, split, size, run.dir / SPLITS_DIR, r.data.cache_memory_mb)
              for split in ("train", "val")}
    train_segmenter(r, data, size, run.dir, train_arrays=arrays["train"], val_arrays=arrays["val"])
    run.store.record("train", fp, ["model.keras", "history.json"])
    return True


def export_stage(run, force: bool = False, formats: list[str] | None = None) -> list[str]:
    """Export every configured format; int8 formats go through the mIoU-budgeted calibration choice."""
    from edgecnn.segment.export import export_all

    if not (run.dir / "model.keras").is_file():
        raise EdgecnnError(f"no model.keras in {str(run.dir)!r}; run `edgecnn train {run.dir}` first.")
    return export_all(run, run.dataset(), force=force, formats=formats)


def evaluate_stage(run, force: bool = False) -> RunResult:
    """Measure every artifact on the test pairs (unless report.json is current), apply the budgets,
    draw the best/worst masks, render the report."""
    from edgecnn.export.manifest import read_manifest
    from edgecnn.report import render_report
    from edgecnn.segment.evaluate import evaluate_segmenters
    from edgecnn.stages.export import withheld_files
    from edgecnn.stages.verdict import finish_evaluation

    data = run.dataset()
    manifest = read_manifest(run.dir)
    fp = _fp({n: a["sha256"] for n, a in manifest["artifacts"].items()}, sha256_file(run.dir / "model.keras"),
             run.recipe.evaluate.model_dump(mode="json"), data.fingerprint(), run.recipe.segment.examples)
    if not force and run.store.is_current("evaluate", fp, ["report.json"]):
        log.info("evaluate: up to date (report.json), skipped measuring; re-checking budgets")
        report = json.loads(run.store.path("report.json").read_text())
    else:
        report = evaluate_segmenters(run.recipe, run.dir, data, run.input_size)
    if run.store.path("int8.json").is_file():
        report["int8_choice"] = json.loads(run.store.path("int8.json").read_text())
    result = finish_evaluation(run.store, report, run.recipe.budgets, fp, manifest=manifest,
                               withheld=withheld_files(run.store, run.recipe.export.formats))
    render_report(run.dir)
    return result

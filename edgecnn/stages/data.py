"""Data every task's discovery shares: the bundled defect set, generated where a recipe asks for it."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("edgecnn")


def generate_defects(path: str | Path, seed: int) -> None:
    """Write the bundled defect set (``data.generate: defects``) to ``path``, with a progress bar."""
    from edgecnn.data.defects import CLASSES, make_defects
    from edgecnn.progress import progress

    log.info("generating the bundled defect set at %s (seed %d)", path, seed)
    with progress("generating defect images", 450 * len(CLASSES)) as update:
        make_defects(Path(path), seed=seed, progress=lambda done, total: update(done))


def task_data_path(run, task: str) -> Path:
    """The recipe's data folder for a task that trains its own model: an import is refused (it is the classifier's),
    and the bundled set is generated first where ``data.generate`` says so."""
    from edgecnn.errors import EdgecnnError

    if run.recipe.import_ is not None:
        raise EdgecnnError(f"task: {task} trains its own model; `edgecnn import` is for classifiers. "
                           "Remove the import: section or set task: classify.")
    d = run.recipe.data
    path = Path(d.path)
    if not path.exists() and d.generate == "defects":
        generate_defects(path, d.generate_seed)
    return path


def fresh_checkpoints(run_dir: Path, fp: str, force: bool = False) -> Path:
    """``run_dir/checkpoints`` for a train stage with fingerprint ``fp``: checkpoints written under another
    fingerprint (another config) are removed, never resumed; those of this one are kept, so training resumes."""
    import shutil

    from edgecnn._io import write_text

    ckpt = Path(run_dir) / "checkpoints"
    marker = ckpt / "fingerprint.txt"
    if ckpt.exists() and (force or not marker.is_file() or marker.read_text() != fp):
        shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    write_text(marker, fp)
    return ckpt


def refuse_distribute(run, task: str) -> None:
    """A task whose trainer runs on one machine refuses ``train.distribute`` (each worker would train alone and
    write the same directory) with one readable error, rather than pretend."""
    from edgecnn.errors import EdgecnnError

    strategy = run.recipe.train.distribute.strategy
    if strategy != "none":
        raise EdgecnnError(f"train.distribute.strategy is {strategy!r}, but task: {task} trains on one machine only "
                           "(its trainer runs no tf.distribute strategy yet). Set train.distribute.strategy: none, or "
                           "train a classifier (task: classify) distributed.")

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

"""What a run directory holds, read once: the only input of every report section.

The report never computes: the evaluate stage writes ``report.json`` (figures per artifact) and
``findings/`` (misclassified-image gallery, Grad-CAM overlays and their localisation score, the
per-layer table), and this module reads them with the run's other files. A missing optional file
is ``None``, so each section can say what is missing instead of crashing.

This module imports neither TensorFlow nor the data loader (``edgecnn report`` and the service
run without them).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgecnn.errors import EdgecnnError

__all__ = ["RunFiles", "read_run", "latency_p50", "short_name", "FINDINGS_DIR", "FINDINGS_JSON"]

log = logging.getLogger("edgecnn.report")

FINDINGS_DIR = "findings"
"""Folder of the run directory the evaluate stage fills with what the report shows of the model."""
FINDINGS_JSON = f"{FINDINGS_DIR}/findings.json"
"""The findings' index: gallery records, Grad-CAM figure and layer, localisation, layer table, notes."""


@dataclass
class RunFiles:
    """The files of one run directory (missing optional files are None).

    report.json's ``artifacts`` are keyed by file name (measured in the file's own runtime) and by
    ``"<file>@<runtime>"`` for each further runtime; an entry with ``"skipped"`` has no metrics.

    Attributes:
        dir: the run directory.
        report: report.json (required).
        manifest, history, dataset, gradcam, findings: manifest.json, history.json, dataset.json,
            gradcam.json and findings/findings.json.
        recipe: recipe.yaml as a plain dict (the resolved recipe: every default written out).
        recipe_text: recipe.yaml as written.
    """

    dir: Path
    report: dict
    manifest: dict | None = None
    history: dict | None = None
    dataset: dict | None = None
    gradcam: dict | None = None
    findings: dict | None = None
    recipe: dict | None = None
    recipe_text: str = ""

    @property
    def name(self) -> str:
        return self.report.get("name") or self.dir.name

    @property
    def task(self) -> str:
        """The recipe's task (``classify``, ``anomaly``, ``segment``): report.json's, else the recipe's."""
        return str(self.report.get("task") or (self.recipe or {}).get("task") or "classify")

    @property
    def classes(self) -> list[str]:
        return list(self.report.get("classes") or (self.manifest or {}).get("labels") or [])

    @property
    def reference(self) -> str:
        return self.report.get("reference", "model.keras")

    @property
    def description(self) -> str:
        return str((self.recipe or {}).get("description") or "")

    @property
    def localisation(self) -> dict | None:
        """The Grad-CAM localisation score: the findings' copy, else gradcam.json."""
        return (self.findings or {}).get("localisation") or self.gradcam

    def measured(self) -> dict[str, dict]:
        """report.json's entries that were measured (not ``"skipped"``: a runtime unavailable here)."""
        return {n: a for n, a in self.report["artifacts"].items() if "metrics" in a}

    def artifact_names(self) -> list[str]:
        """The reference first, then every artifact of the report and of the manifest."""
        names = [self.reference] + list(self.report.get("artifacts", {}))
        names += list((self.manifest or {}).get("artifacts", {}))
        return list(dict.fromkeys(names))


def read_json_or_none(path: Path) -> dict | None:
    """A JSON file's content, or None when it is missing or unreadable (logged)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        log.warning("%s is unreadable (%s); its section is left out", path, e)
        return None


def read_run(run_dir: str | os.PathLike) -> RunFiles:
    """Read report.json (required) and the run's optional files.

    Args:
        run_dir: an evaluated run directory.

    Returns:
        The run's files; each optional one that is missing or unreadable is None.

    Raises:
        EdgecnnError: ``run_dir`` has no readable report.json.
    """
    run_dir = Path(run_dir)
    report = read_json_or_none(run_dir / "report.json")
    if report is None or "artifacts" not in report:
        raise EdgecnnError(f"no readable report.json in {str(run_dir)!r}; run `edgecnn evaluate {run_dir}` first.")
    run = RunFiles(dir=run_dir, report=report, manifest=read_json_or_none(run_dir / "manifest.json"),
                   history=read_json_or_none(run_dir / "history.json"),
                   dataset=read_json_or_none(run_dir / "dataset.json"),
                   gradcam=read_json_or_none(run_dir / "gradcam.json"),
                   findings=read_json_or_none(run_dir / FINDINGS_JSON))
    if (run_dir / "recipe.yaml").is_file():
        run.recipe_text = (run_dir / "recipe.yaml").read_text()
        try:
            recipe = yaml.safe_load(run.recipe_text)
        except yaml.YAMLError as e:
            log.warning("recipe.yaml of %s is not valid YAML (%s); its details are left out", run_dir, e)
            recipe = None
        run.recipe = recipe if isinstance(recipe, dict) else None
    return run


def latency_p50(art: dict, threads: int = 1) -> tuple[float | None, str]:
    """p50 latency at ``threads`` threads, else at the fewest threads measured; returns (ms, note)."""
    lat = art.get("latency") or {}
    if str(threads) in lat:
        return float(lat[str(threads)]["p50_ms"]), ""
    if not lat:
        return None, ""
    t = min(lat, key=lambda k: int(k) if k.isdigit() else 1 << 30)
    return float(lat[t]["p50_ms"]), f"timed at {t} threads"


def short_name(name: str) -> str:
    """``model.int8.tflite`` -> ``int8.tflite``: artifact labels on plots and in narrow columns."""
    return name[len("model."):] if name.startswith("model.") else name

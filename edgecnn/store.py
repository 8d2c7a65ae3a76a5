"""The run-directory store: the one owner of ``state.json``, stage fingerprints and downstream invalidation.

A run directory holds one run's files (recipe.yaml, model.keras, the artifacts, manifest.json,
report.json, ...). Its ``state.json`` records, per stage, a fingerprint of the stage's inputs and
settings and the digests of what the stage wrote; a stage whose fingerprint is unchanged and whose
outputs are intact is skipped, so a finished recipe re-runs cheaply and a killed one resumes.

Every task runs the same stage graph (:data:`STAGES`): when a stage records a new result, the stages
downstream of it are forgotten, so they run again. Nothing outside this module reads or writes
``state.json``; stages use :class:`RunStore`'s public methods.

    store = RunStore("export/run")
    if not store.is_current("train", fp, ["model.keras"]):
        ...                                   # train
        store.record("train", fp, ["model.keras"])   # and forget compress, export, evaluate

No TensorFlow, no recipe: ``edgecnn check`` and the service read run directories through it too.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from edgecnn._io import sha256_file, write_json

__all__ = ["STAGES", "STATE", "RunStore", "downstream", "fingerprint"]

log = logging.getLogger("edgecnn")
STATE = "state.json"

STAGES: dict[str, tuple[str, ...]] = {
    "train": ("compress", "export"),   # a new float model (trained, fitted or imported) remakes everything after it
    # export keeps a fingerprint per format that includes compress's: a new pick re-exports only its format
    "compress": ("evaluate",),
    "export": ("evaluate",),
    "evaluate": (),
}
"""The stage graph every task runs over: each stage and the stages that consume its outputs directly.
A task may skip a stage (segment and anomaly choose int8 inside export today); none adds one here."""


def downstream(stage: str) -> list[str]:
    """Every stage that depends on ``stage``, directly or not, in graph order."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; the stages: {list(STAGES)}")
    seen: list[str] = []
    todo = list(STAGES[stage])
    while todo:
        s = todo.pop(0)
        if s not in seen:
            seen.append(s)
            todo.extend(STAGES[s])
    return sorted(seen, key=list(STAGES).index)


def fingerprint(*parts: Any) -> str:
    """A short stable digest of JSON-able ``parts`` (settings, input digests): a stage's identity."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunStore:
    """One run directory's stage records (``state.json``) and paths.

    Args:
        run_dir: the run directory (created when missing).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._state = self._read()

    def path(self, name: str) -> Path:
        """The path of a file of the run (``store.path("model.keras")``)."""
        return self.dir / name

    # -- reading -------------------------------------------------------------------------------
    def _read(self) -> dict:
        path = self.dir / STATE
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                log.warning("%s is unreadable; every stage will run again", path)
        return {}

    def _save(self) -> None:
        write_json(self.dir / STATE, self._state)

    def stage_record(self, stage: str) -> dict[str, Any]:
        """A copy of what ``stage`` recorded (``fingerprint``, ``outputs`` and any extra fields); {} when none."""
        return json.loads(json.dumps(self._state.get(stage, {})))

    def fingerprint_of(self, stage: str) -> str | None:
        """The fingerprint ``stage`` last recorded, or None."""
        return self._state.get(stage, {}).get("fingerprint")

    def outputs_of(self, stage: str) -> list[str]:
        """The files ``stage`` last recorded as its outputs."""
        return list(self._state.get(stage, {}).get("outputs", {}))

    def has(self, stage: str) -> bool:
        """Whether ``stage`` has a record (it ran and nothing upstream changed since)."""
        return stage in self._state

    def is_current(self, stage: str, fp: str, outputs: list[str] = ()) -> bool:
        """Whether ``stage`` recorded ``fp`` and its recorded outputs are unchanged (a hashed output with a
        different digest, or any of ``outputs`` missing, is not current)."""
        rec = self._state.get(stage)
        if not rec or rec.get("fingerprint") != fp:
            return False
        for name, digest in rec.get("outputs", {}).items():
            p = self.dir / name
            if not p.exists() or (digest and sha256_file(p) != digest):  # a file or a folder artifact
                return False
        return all((self.dir / o).exists() for o in outputs)

    # -- writing -------------------------------------------------------------------------------
    def record(self, stage: str, fp: str, outputs: list[str] = (), *, hashed: bool = True,
               invalidate: bool = True, **extra: Any) -> None:
        """Record that ``stage`` ran with fingerprint ``fp`` and wrote ``outputs`` (hashed unless ``hashed`` is
        False: files that stages rewrite in place, like report.json), plus JSON-able ``extra`` fields; the
        stages downstream are forgotten unless ``invalidate`` is False."""
        if stage not in STAGES:
            raise KeyError(f"unknown stage {stage!r}; the stages: {list(STAGES)}")
        self._state[stage] = {"fingerprint": fp,
                              "outputs": {o: sha256_file(self.dir / o) if hashed else "" for o in outputs}, **extra}
        if invalidate:
            for s in downstream(stage):
                self._state.pop(s, None)
        self._save()

    def forget(self, stage: str, *, downstream_too: bool = True) -> None:
        """Drop ``stage``'s record (it runs again), and those downstream of it unless told otherwise."""
        for s in [stage, *(downstream(stage) if downstream_too else ())]:
            self._state.pop(s, None)
        self._save()

    def forget_downstream(self, stage: str) -> None:
        """Drop the records of every stage after ``stage`` (it changed its outputs without a new record)."""
        for s in downstream(stage):
            self._state.pop(s, None)
        self._save()

    # -- per-item records (export: one record per format, so one stale format is remade alone) --------
    def item_current(self, stage: str, item: str, fp: str, filename: str) -> bool:
        """Whether ``item`` of ``stage`` (a format of export) recorded ``fp`` and ``filename`` is unchanged, or was
        withheld with ``fp`` (:meth:`record_withheld`) and no file of that name has appeared since."""
        rec = self._state.get(stage, {}).get("items", {}).get(item)
        p = self.dir / filename
        if rec and rec["fingerprint"] == fp and "withheld" in rec:
            return not p.exists()
        return bool(rec and rec["fingerprint"] == fp and p.exists() and sha256_file(p) == rec["sha256"])

    def record_withheld(self, stage: str, item: str, fp: str, reason: str) -> None:
        """Record that ``item`` of ``stage`` was withheld with fingerprint ``fp`` (no route held its budget): it is
        current, and not tried again, until its inputs or settings change."""
        self._state.setdefault(stage, {}).setdefault("items", {})[item] = {"fingerprint": fp, "withheld": reason}
        for s in downstream(stage):
            self._state.pop(s, None)
        self._save()

    def withheld_items(self, stage: str) -> dict[str, str]:
        """``{item: reason}`` of the items of ``stage`` recorded as withheld."""
        return {k: v["withheld"] for k, v in self._state.get(stage, {}).get("items", {}).items()
                if isinstance(v, dict) and "withheld" in v}

    def record_item(self, stage: str, item: str, fp: str, filename: str) -> None:
        """Record ``item`` of ``stage`` as made with ``fp`` (its file's digest too); the stages downstream of
        ``stage`` are forgotten."""
        self._state.setdefault(stage, {}).setdefault("items", {})[item] = {
            "fingerprint": fp, "sha256": sha256_file(self.dir / filename)}
        for s in downstream(stage):
            self._state.pop(s, None)
        self._save()

    def forget_item(self, stage: str, item: str) -> None:
        """Drop ``item``'s record of ``stage`` (its file is being remade or withdrawn)."""
        self._state.get(stage, {}).get("items", {}).pop(item, None)
        self._save()

    def item_digests(self, stage: str) -> set[str]:
        """The file digests ``stage``'s items recorded (what ``edgecnn check`` compares report.json with)."""
        return {v.get("sha256") for v in self._state.get(stage, {}).get("items", {}).values()
                if isinstance(v, dict) and "sha256" in v}

    # -- what every task's data discovery writes -------------------------------------------------
    def write_dataset(self, labels: list[str] | None, info: dict[str, Any]) -> None:
        """dataset.json (what was found: root, layout, classes, counts, fingerprint) and, with ``labels``,
        labels.txt (one class per output, in output order)."""
        from edgecnn._io import write_text

        if labels is not None:
            write_text(self.dir / "labels.txt", "\n".join(labels) + "\n")
        write_json(self.dir / "dataset.json", info)

"""The export stage, written once: every configured format of the task's float model, each remade only
when its fingerprint or its file changed, recorded in manifest.json (hash, tensor specs) and in the
run store; a chooser's pick is copied in instead of converting again.

    exported = export_formats(store, specs, fp_of, load_model=lambda: load_keras(path),
                              context=lambda todo, model: ExportContext(...), pick_of=picks.get)
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecnn._io import copy_artifact, remove_artifact_path
from edgecnn.store import RunStore

__all__ = ["Withheld", "export_current", "export_formats", "export_one", "io_fields", "withdraw", "withheld_files"]

log = logging.getLogger("edgecnn")
STAGE = "export"
MADE_FROM = "made from"   # the reason of a format withheld because its parent file was


@dataclass(frozen=True)
class Withheld:
    """What ``pick_of`` answers for an int8 format no chooser route held: no file is shipped (nor one made from
    it), the format leaves the run directory and the manifest, and ``reason`` is logged; the run's verdict
    fails on it where the task records it (compress.json's or int8.json's ``withheld``)."""

    reason: str


def io_fields(runner: Any) -> dict[str, Any]:
    """The manifest's tensor specs of an artifact as its runner reads them: ``input``, ``output`` (the primary
    one) and ``outputs`` (every output, in the order the runner returns them)."""
    outputs = getattr(runner, "outputs", None) or (runner.output,)
    return {"input": runner.input.to_json(), "output": runner.output.to_json(),
            "outputs": [o.to_json() for o in outputs]}


def export_current(store: RunStore, spec: Any, fp: str) -> bool:
    """Whether ``spec``'s artifact was made with fingerprint ``fp`` and is unchanged on disk."""
    return store.item_current(STAGE, spec.name, fp, spec.filename)


def withdraw(store: RunStore, spec: Any, why: str) -> None:
    """A format leaves the run (an int8 file no chooser route held): its file, manifest entry and record."""
    from edgecnn.export.manifest import MANIFEST, remove_artifact

    log.warning("%s withheld: %s", spec.filename, why)
    if store.path(MANIFEST).is_file():   # a first run has no manifest yet
        remove_artifact(store.dir, spec.filename)
    store.forget_item(STAGE, spec.name)
    remove_artifact_path(store.path(spec.filename))


def export_one(store: RunStore, spec: Any, model: Any, ctx: Any, fp: str, pick: dict | None = None,
               verified: bool | None = None, made: Path | None = None, **fields: Any) -> None:
    """Export one format of ``model`` (or copy the chooser's ``pick`` in), record it in manifest.json with its
    tensor specs and ``fields``, and in the store.

    Args:
        pick: ``{"artifact", "route", "notes"}`` of the chooser's pick for this format (copied, verified).
        verified: for an int8 file made here: whether a chooser held it (None: not an int8 file's question).
        made: this format's file already converted from the same model and settings (copied, not converted).
    """
    from edgecnn.export import export
    from edgecnn.export.manifest import add_artifact, remove_artifact
    from edgecnn.runtime import load_runner

    remove_artifact(store.dir, spec.filename)
    store.forget_item(STAGE, spec.name)
    extra: dict[str, Any] = {}
    if pick is None and made is not None and made.is_file():
        path = copy_artifact(made, store.path(spec.filename))
        log.info("export: %s is the chooser's float twin %s, copied (converted once)", spec.filename,
                 made.relative_to(store.dir) if made.is_relative_to(store.dir) else made)
    elif pick is None:
        path = export(spec.name, model, ctx)
        if spec.precision == "int8" and verified is not None:
            extra = {"verified": verified}
    else:
        path = copy_artifact(store.path(pick["artifact"]), store.path(spec.filename))
        extra = {"route": pick["route"], "chooser_artifact": pick["artifact"], "notes": pick.get("notes", []),
                 "verified": True}
        log.info("export: %s is the int8 chooser's pick, %s (%s)", spec.filename, pick["route"], pick["artifact"])
    runner = load_runner(path, threads=1)
    try:
        io = io_fields(runner)
    finally:
        runner.close()
    calibration = getattr(ctx, "calibration", None)
    precision = (pick or {}).get("precision") or spec.precision   # a float-head pick: "int8+fp32-head"
    add_artifact(store.dir, spec.filename, format=spec.name, precision=precision, runtime=spec.runtime,
                 stage="compress" if pick else "export", parent=spec.parent, **io,
                 calibration_images=len(calibration) if spec.needs_calibration and calibration is not None else None,
                 **{**extra, **fields})
    store.record_item(STAGE, spec.name, fp, spec.filename)


def export_formats(store: RunStore, specs: Sequence[Any], fp_of: Callable[[Any], str], *,
                   load_model: Callable[[], Any], context: Callable[[list, Any], Any],
                   pick_of: Callable[[Any, Any, Any], dict | None] = lambda spec, model, ctx: None,
                   verified_of: Callable[[Any], bool | None] = lambda spec: None,
                   made_of: Callable[[Any], Path | None] = lambda spec: None, force: bool = False) -> list[str]:
    """The one export loop: every format of ``specs`` (parents first) whose artifact is stale or missing.

    Args:
        specs: the export registry's format specs, sorted so a parent comes before the files made from it.
        fp_of: each format's fingerprint (settings and the inputs it is made from).
        load_model: the task's float model, loaded only when something is to be exported.
        context: ``(todo, model) -> ExportContext`` (calibration images only when a format of ``todo`` needs them).
        pick_of: ``(spec, model, ctx) -> pick | Withheld | None``: the int8 chooser's pick for a format (copied
            in), :class:`Withheld` when no route held (nothing shipped), None to export it here.
        verified_of: for an int8 format made here without a pick, whether a chooser held it.
        made_of: a file of the format that an earlier stage already converted from the same model with the same
            settings (the chooser's float twin), copied in instead of converting again; None: convert.
        force: remake every format.

    Returns:
        The names of the formats exported.
    """
    from edgecnn.progress import progress

    withheld_before = store.withheld_items(STAGE)
    files = {s.filename: s.name for s in specs}

    def current(spec) -> bool:
        parent = files.get(spec.parent)
        if (spec.name in withheld_before and withheld_before[spec.name].startswith(MADE_FROM)
                and parent is not None and parent not in withheld_before):
            return False   # withheld for its parent, which ships now: made again
        return export_current(store, spec, fp_of(spec))

    todo = [s for s in specs if force or not current(s)]
    if not todo:
        log.info("export: all %d artifacts up to date, skipped", len(specs))
        return []
    model = load_model()
    ctx = context(todo, model)
    done = []
    held = {s.filename for s in specs if s.name in withheld_before and s not in todo}   # still withheld, current
    with progress("exporting", len(todo)) as update:
        for i, spec in enumerate(todo):
            update(i, spec.name)
            pick = (Withheld(f"{MADE_FROM} {spec.parent}, which was withheld") if spec.parent in held
                    else pick_of(spec, model, ctx))   # tflm-c from a withheld model.int8.tflite is withheld too
            if isinstance(pick, Withheld):
                withdraw(store, spec, pick.reason)
                store.record_withheld(STAGE, spec.name, fp_of(spec), pick.reason)
                held.add(spec.filename)
                continue
            export_one(store, spec, model, ctx, fp_of(spec), pick, verified_of(spec), made=made_of(spec))
            done.append(spec.name)
        update(len(todo))
    return done


def withheld_files(store: RunStore, formats: Sequence[str] | None = None) -> dict[str, dict]:
    """``{file name: {"format", "runtime", "reason"}}`` of the formats the export loop withheld and still holds
    withheld (their settings unchanged), among ``formats`` (the recipe's; None: all): not shipped, and the run's
    verdict fails on them."""
    from edgecnn.export import get_format

    return {get_format(name).filename: {"format": name, "runtime": get_format(name).runtime, "reason": reason}
            for name, reason in store.withheld_items(STAGE).items() if formats is None or name in formats}

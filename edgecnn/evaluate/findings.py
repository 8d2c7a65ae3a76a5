"""What the report shows of the model on images, written by the evaluate stage into ``RUN_DIR/findings/``.

The report only renders files; the work that needs the model and the test images happens here,
once per model and dataset:

* ``misclassified_NN.png``: thumbnails of the reference model's most confident test-split mistakes;
* ``gradcam.png``: Grad-CAM overlays of a few test images of each defect class, with the defect's
  bounding box where the bundled set's ``meta.json`` records one;
* ``findings.json``: the gallery's labels and probabilities, the Grad-CAM layer and grid, the
  localisation score (also written to ``RUN_DIR/gradcam.json``), the per-layer table of
  ``model.keras``, and notes that say why any of these is missing.

The folder is built beside the run directory's and swapped in with two renames, so a reader sees
the old or the new findings; it is left as it is when the model, the dataset and this module's
settings are unchanged (``inputs`` in findings.json).

Example:
    >>> from edgecnn.evaluate.findings import write_findings
    >>> write_findings("export/defects-mobilenetv2")     # doctest: +SKIP
    PosixPath('export/defects-mobilenetv2/findings/findings.json')
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn._io import sha256_file, swap_in_dir, write_json
from edgecnn.errors import EdgecnnError
from edgecnn.report.run_files import FINDINGS_DIR, FINDINGS_JSON, read_json_or_none

__all__ = ["write_findings", "layer_rows", "save_thumbnail", "FINDINGS_VERSION", "MAX_GALLERY",
           "GRADCAM_PER_CLASS"]

log = logging.getLogger("edgecnn.evaluate")
FINDINGS_VERSION = 1
"""Bumped when what is written changes, so older findings are redone."""
MAX_GALLERY = 24
GRADCAM_PER_CLASS = 4
NORMAL_CLASSES = {"good", "ok", "normal", "pass", "nominal", "no_defect", "background", "clean"}


class _Skip(Exception):
    """A finding that cannot be made, with the sentence that says why."""


def write_findings(run_dir: str | os.PathLike, dataset: Any = None, *, force: bool = False) -> Path:
    """Write ``RUN_DIR/findings/`` (gallery, Grad-CAM, layer table) from model.keras and the test split.

    Every failure (no model.keras, the dataset gone, a Grad-CAM error) becomes a sentence in
    findings.json's ``notes``, which the report shows; only a run directory that does not exist
    is an error.

    Args:
        run_dir: a run directory with model.keras (and dataset.json when ``dataset`` is None).
        dataset: the run's :class:`edgecnn.data.folders.Dataset`; default: re-discovered from
            dataset.json's root with recipe.yaml's split settings.
        force: redo the findings even when their inputs are unchanged.

    Returns:
        The path of findings.json.

    Raises:
        EdgecnnError: ``run_dir`` is not a directory.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgecnnError(f"write_findings: {str(run_dir)!r} is not a run directory; run `edgecnn run RECIPE` first.")
    notes: list[str] = []
    findings: dict[str, Any] = {"version": FINDINGS_VERSION, "notes": notes}
    model_path = run_dir / "model.keras"
    ds = None
    try:
        if dataset is None:
            ds, ds_notes = _discover_test(run_dir)
            notes += ds_notes
        else:
            ds = dataset
    except _Skip as e:
        notes.append(f"{e}: the misclassified images and Grad-CAM are left out")
    findings["inputs"] = {
        "version": FINDINGS_VERSION, "max_gallery": MAX_GALLERY, "gradcam_per_class": GRADCAM_PER_CLASS,
        "model_sha256": sha256_file(model_path) if model_path.is_file() else None,
        "dataset_fingerprint": None if ds is None else ds.fingerprint()}
    old = read_json_or_none(run_dir / FINDINGS_JSON)
    if not force and old and old.get("inputs") == findings["inputs"] and _files_present(run_dir, old):
        log.info("findings: up to date (%s), skipped", FINDINGS_JSON)
        return run_dir / FINDINGS_JSON

    tmp = run_dir / f".{FINDINGS_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if not model_path.is_file():
            notes.append("model.keras is missing, so the layer table, misclassified images and Grad-CAM are left out")
        else:
            _model_findings(run_dir, ds, tmp, findings)
        write_json(tmp / Path(FINDINGS_JSON).name, findings)
        swap_in_dir(tmp, run_dir / FINDINGS_DIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("findings: %s", run_dir / FINDINGS_JSON)
    return run_dir / FINDINGS_JSON


def _files_present(run_dir: Path, findings: dict) -> bool:
    srcs = [m["src"] for m in (findings.get("misclassified") or {}).get("images", [])]
    srcs += [g["src"] for g in [findings.get("gradcam") or {}] if g.get("src")]
    return all((run_dir / s).is_file() for s in srcs)


def _model_findings(run_dir: Path, ds, out: Path, findings: dict) -> None:
    """Load model.keras, then the layer table, the gallery and Grad-CAM; each failure is a note."""
    from edgecnn._trust import load_keras

    notes = findings["notes"]
    try:
        model = load_keras(run_dir / "model.keras")
    except Exception as e:  # a corrupt file: Keras raises many types
        notes.append(f"model.keras could not be loaded ({type(e).__name__}: {e}); image sections are left out")
        return
    rows, source = layer_rows(model)
    findings["layers"] = {"rows": rows, "source": source, "total_params": int(model.count_params()),
                          "macs": int(sum(int(r["macs"] or 0) for r in rows))
                          if rows and all("macs" in r for r in rows) else None}
    if ds is None:
        return
    try:
        _gallery_and_gradcam(run_dir, model, ds, out, findings)
    except Exception as e:  # the findings must still be written; the note says what went wrong
        log.warning("findings: the image findings failed: %s: %s", type(e).__name__, e, exc_info=True)
        notes.append(f"the image sections failed ({type(e).__name__}: {e})")


# ----------------------------------------------------------------------------------------------
# The per-layer table


def layer_rows(model) -> tuple[list[dict], str]:
    """(rows, source): the per-layer table from ``edgecnn.arch.inspect.layer_table`` when that module
    exists, else name / type / output shape / params from ``model.layers``."""
    try:
        from edgecnn.arch.inspect import layer_table
    except ImportError:
        layer_table = None
    if layer_table is not None:
        try:
            rows = _as_dicts(layer_table(model))
            if rows:
                return json.loads(json.dumps(rows, default=str)), "edgecnn.arch.inspect.layer_table"
        except Exception as e:  # another module's bug must not cost the whole report
            log.warning("edgecnn.arch.inspect.layer_table failed (%s: %s); using model.layers", type(e).__name__, e)
    rows = []
    for layer in model.layers:
        try:
            shape = layer.output_shape
        except (AttributeError, RuntimeError):
            shape = "?"
        rows.append({"name": layer.name, "type": type(layer).__name__, "output shape": _fmt_shape(shape),
                     "params": int(layer.count_params())})
    return rows, "model.layers"


def _fmt_shape(shape: Any) -> str:
    if isinstance(shape, list):
        return ", ".join(_fmt_shape(s) for s in shape)
    if isinstance(shape, tuple):
        return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
    return str(shape)


def _as_dicts(rows: Any) -> list[dict]:
    """Rows of any reasonable table shape (dicts, dataclasses, namedtuples, a DataFrame-like) as dicts."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a pandas DataFrame
        return rows.to_dict("records")
    if isinstance(rows, dict) and "rows" in rows:
        rows = rows["rows"]
    elif hasattr(rows, "rows") and not callable(rows.rows):
        rows = rows.rows
    out = []
    for r in rows:
        if isinstance(r, dict):
            out.append(dict(r))
        elif dataclasses.is_dataclass(r):
            out.append(dataclasses.asdict(r))
        elif hasattr(r, "_asdict"):
            out.append(dict(r._asdict()))
        else:
            return []
    return out


# ----------------------------------------------------------------------------------------------
# The test split: misclassified gallery and Grad-CAM


def _discover_test(run_dir: Path):
    """The run's dataset, re-discovered from dataset.json's root with recipe.yaml's data settings."""
    import yaml

    from edgecnn.data.config import DataConfig
    from edgecnn.data.folders import discover

    info = read_json_or_none(run_dir / "dataset.json")
    if not info or not info.get("root"):
        raise _Skip("the run has no dataset.json, so its test images are unknown")
    root = Path(info["root"])
    if not root.is_dir():
        raise _Skip(f"the run's dataset {root} (recorded in dataset.json) is no longer on disk")
    d = DataConfig()
    if (run_dir / "recipe.yaml").is_file():
        try:  # only the data section: the evaluate layer does not read the whole recipe
            d = DataConfig(**(yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}).get("data", {}))
        except (yaml.YAMLError, ValueError, TypeError, AttributeError) as e:
            log.warning("recipe.yaml of %s has no valid data section (%s); the split uses default settings", run_dir, e)
    try:
        ds = discover(root, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.split_seed,
                      min_images_per_class=min(d.min_images_per_class, 2), skip_bad_images=True,
                      check_images=d.skip_bad_images)
    except EdgecnnError as e:
        raise _Skip(f"the dataset at {root} can no longer be read as it was ({e})") from None
    classes = info.get("classes") or ds.classes
    if ds.classes != list(classes):
        raise _Skip(f"the dataset at {root} now has classes {ds.classes}, the run has {classes}")
    notes = []
    if info.get("fingerprint") and ds.fingerprint() != info["fingerprint"]:
        notes.append(f"the dataset at {root} changed after this run was evaluated; the images below are "
                     "today's files, so they can differ from the figures in report.json")
    return ds, notes


def _meta_boxes(root: Path) -> dict[str, dict]:
    """meta.json records by relative path (the bundled set only), else {}."""
    meta = read_json_or_none(root / "meta.json")
    if not meta or not isinstance(meta.get("images"), list):
        return {}
    return {m["path"]: m for m in meta["images"] if isinstance(m, dict) and "path" in m}


def _read_rgb(path: str) -> np.ndarray:
    from PIL import Image

    from edgecnn.data.preprocess import rgb_pixels  # upright and RGB exactly as the model saw it

    with Image.open(path) as im:
        return rgb_pixels(im)


def save_thumbnail(image: np.ndarray, path: str | os.PathLike, max_side: int = 160) -> Path:
    """An RGB uint8 (or 0-255 float) image as a PNG no larger than ``max_side`` pixels."""
    from PIL import Image

    im = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    im.thumbnail((max_side, max_side), Image.LANCZOS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG", optimize=True)
    return path


def _gallery_and_gradcam(run_dir: Path, model, ds, out: Path, findings: dict) -> None:
    from edgecnn.data.decoded_split import SPLITS_DIR, decoded_split, predict_in_batches
    from edgecnn.evaluate.gradcam import find_feature_layer, gradcam, gradcam_plot, localisation_score

    size = int(model.input_shape[1])
    # the evaluate stage's decoded test split (decoded here when absent), read a batch at a time
    images = decoded_split(ds, "test", size, run_dir / SPLITS_DIR)
    labels, paths = images.labels, images.paths
    probs = predict_in_batches(lambda x: model.predict(x, batch_size=64, verbose=0), images)
    pred = probs.argmax(1)
    classes = ds.classes
    wrong = np.flatnonzero(pred != labels)
    gallery = {"n_test": int(len(labels)), "n_wrong": int(len(wrong)), "images": []}
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:MAX_GALLERY]
    for k, i in enumerate(wrong):
        name = f"misclassified_{k:02d}.png"
        save_thumbnail(_read_rgb(paths[i]), out / name, max_side=160)
        gallery["images"].append({"src": f"{FINDINGS_DIR}/{name}", "file": os.path.relpath(paths[i], ds.root),
                                  "true": classes[labels[i]], "pred": classes[pred[i]],
                                  "p_pred": float(probs[i, pred[i]]), "p_true": float(probs[i, labels[i]])})
    findings["misclassified"] = gallery

    boxes = _meta_boxes(Path(ds.root))
    with_box = {m["class"] for m in boxes.values() if m.get("bbox")}
    defect_classes = [c for c in classes if c in with_box] if with_box else \
        [c for c in classes if c.lower() not in NORMAL_CLASSES]
    layer = find_feature_layer(model)
    fmap = model.get_layer(layer).output_shape
    rows: dict[str, list[dict]] = {}
    for c in defect_classes:
        idx = np.flatnonzero(labels == classes.index(c))[:GRADCAM_PER_CLASS]
        if not len(idx):
            continue
        maps = gradcam(model, images[idx], class_index=labels[idx], layer=layer)   # reads only these
        rows[c] = []
        for i, m in zip(idx, maps):
            rel = os.path.relpath(paths[i], ds.root).replace(os.sep, "/")
            rows[c].append({"image": _read_rgb(paths[i]), "heatmap": m, "bbox": (boxes.get(rel) or {}).get("bbox"),
                            "title": f"{Path(paths[i]).stem}\npred {classes[pred[i]]} {probs[i, pred[i]]:.2f}"})
    gradcam_info: dict[str, Any] = {"layer": layer, "grid": f"{fmap[1]}×{fmap[2]}"}
    if rows:
        gradcam_plot(rows, out / "gradcam.png")
        gradcam_info["src"] = f"{FINDINGS_DIR}/gradcam.png"
    findings["gradcam"] = gradcam_info
    if not with_box:
        findings["notes"].append("Grad-CAM localisation is measured only on datasets whose meta.json records defect "
                                 "bounding boxes (the bundled set)")
        return
    cached = read_json_or_none(run_dir / "gradcam.json")  # e.g. written by benchmarks/gradcam_localisation.py
    root = Path(ds.root)
    if cached and cached.get("model_sha256") == sha256_file(run_dir / "model.keras") \
            and cached.get("dataset") == str(root) and cached.get("layer") == layer \
            and cached.get("meta_sha256") == sha256_file(root / "meta.json") \
            and cached.get("fraction") is not None and cached.get("limit") is None:
        findings["localisation"] = cached
    else:
        findings["localisation"] = localisation_score(run_dir, model=model)

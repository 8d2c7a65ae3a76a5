"""Class names for an imported model, in its output order: ``--labels``, else the model's own metadata, else
the data folder's class names (:func:`choose_labels`).

Metadata read (never executed: ``json`` and ``ast.literal_eval`` only):

* ONNX ``metadata_props``: ``labels`` or ``classes`` (a JSON list, or one name per line, or comma
  separated), and Ultralytics' ``names`` (a dict literal ``{0: 'a', 1: 'b'}``);
* TFLite metadata: the associated files a TFLite file with metadata carries in a zip appended to the
  flatbuffer; the first ``labels*.txt`` / ``labelmap*.txt`` member, one name per line;
* an artifact of an edgecnn run directory: the ``labels`` of the ``manifest.json`` beside it, when
  the manifest lists the file (edgecnn writes labels there, not into the artifacts).
"""
from __future__ import annotations

import ast
import json
import logging
import re
import zipfile
from pathlib import Path

from edgecnn.errors import EdgecnnError

log = logging.getLogger("edgecnn.importing")
ONNX_LABEL_KEYS = ("labels", "classes", "names")
_LABEL_FILE = re.compile(r"^label(s|map)[^/]*\.txt$", re.IGNORECASE)


def parse_labels(text: str) -> list[str]:
    """Names from a JSON list, a ``{index: name}`` dict literal, or text with one name per line (or commas)."""
    text = text.strip()
    if text[:1] in "[{":
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)  # literals only: no names, calls or attributes are evaluated
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"neither JSON nor a Python literal ({e})") from None
        if isinstance(value, dict):
            try:
                value = [value[k] for k in sorted(value, key=int)]
            except (TypeError, ValueError):
                raise ValueError("a dict whose keys are not class indices") from None
        if not isinstance(value, list):
            raise ValueError(f"a {type(value).__name__}, not a list of names")
        names = [str(v).strip() for v in value]
    else:
        names = [n.strip() for n in (text.splitlines() if "\n" in text else text.split(","))]
    names = [n for n in names if n]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{len(names)} names, {len(names) - len(set(names))} repeated; want unique names")
    return names


def _onnx(path: Path) -> tuple[list[str], str] | None:
    import onnx

    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception:  # noqa: BLE001  (not readable as ONNX: the import stage says so)
        return None
    for key in ONNX_LABEL_KEYS:
        if key in props:
            return parse_labels(props[key]), f"ONNX metadata_props {key!r}"
    return None


def _tflite(path: Path) -> tuple[list[str], str] | None:
    if not zipfile.is_zipfile(path):  # finds the zip's directory at the end, after the flatbuffer
        return None
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if _LABEL_FILE.match(Path(name).name):
                return parse_labels(z.read(name).decode("utf-8")), f"TFLite metadata file {name!r}"
    return None


def _run_dir(path: Path) -> tuple[list[str], str] | None:
    manifest = path.parent / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except ValueError:
        return None
    if path.name in (data.get("artifacts") or {}) and data.get("labels"):
        return [str(n) for n in data["labels"]], "manifest.json beside the model (an edgecnn run directory)"
    return None


def model_labels(path: str | Path) -> tuple[list[str], str] | None:
    """``(names, where they were found)`` from the model's own metadata, or None when it carries none.

    Malformed metadata is logged and ignored (it is not the user's input; the data's names are used)."""
    path = Path(path)
    if not path.is_file():
        return None
    head = path.read_bytes()[:8]
    readers = [_run_dir]
    if head[4:8] == b"TFL3":
        readers.insert(0, _tflite)
    elif path.suffix.lower() == ".onnx":
        readers.insert(0, _onnx)
    for read in readers:
        try:
            found = read(path)
        except (ValueError, UnicodeDecodeError, zipfile.BadZipFile) as e:
            log.warning("%s: labels in its metadata ignored (%s)", path.name, e)
            continue
        if found:
            return found
    return None


def choose_labels(source: str | Path, labels_file: str | Path | None) -> tuple[list[str] | None, str]:
    """The model's class names in output order and where they came from: ``--labels``, else the model's
    metadata, else ``(None, 'the data folder's class names')``."""
    if labels_file:
        try:
            return parse_labels(Path(labels_file).read_text()), f"--labels {Path(labels_file).name}"
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise EdgecnnError(f"--labels {str(labels_file)!r} could not be read as class names ({e}); pass a text "
                               "file with one class name per line, in the model's output order.") from e
    found = model_labels(source)
    if found:
        return found
    return None, "the data folder's class names"


def order_classes(ds, labels: list[str], origin: str):
    """Put the dataset's class indices in the model's output order ``labels`` (their names must be the data's
    class folders)."""
    if sorted(labels) != sorted(ds.classes):
        raise EdgecnnError(f"the labels from {origin} {labels} are not the data's class folders {ds.classes}; "
                           "name one class folder per model output, with the same names, or pass --labels with "
                           "the folder names in the model's output order.")
    index = {c: labels.index(c) for c in ds.classes}
    ds.splits = {s: [(p, index[ds.classes[y]]) for p, y in items] for s, items in ds.splits.items()}
    ds.classes = list(labels)
    return ds

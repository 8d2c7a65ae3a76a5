"""manifest.json: what each artifact of a run is, and the hash that proves it is that file.

Schema (format_version 1)::

    {
      "format_version": 1,
      "name": "defects-mobilenetv2",            # the run
      "model": {"name": "mobilenet_v2", "input_size": 128, "num_classes": 4, ...builder args},
      "labels": ["crack", "good", "scratch", "spot"],
      "preprocessing": {"input_range": [0, 255], "color": "RGB", "layout": "NHWC",
                        "mean": [...], "std": [...], "in_graph": true, "resize": [128, 128]},
      "versions": {"edgecnn": ..., "tensorflow": ..., "onnxruntime": ..., ...},
      "artifacts": {
        "model.onnx": {"format": "onnx", "precision": "fp32", "runtime": "onnxruntime",
                       "sha256": "...", "bytes": 123, "stage": "export", "parent": "model.keras",
                       # a folder artifact (model.openvino/) also has "files": {"model.xml": sha256, ...}
                       "input":  {"name": "image", "shape": [null, 128, 128, 3], "dtype": "float32",
                                  "quantization": null},
                       "output": {"name": "probs", "shape": [null, 4], "dtype": "float32",
                                  "quantization": null},
                       # every output in the artifact's order (Runner.outputs), "output" being the first;
                       # optional: entries written before it have only "output"
                       "outputs": [{"name": "probs", "shape": [null, 4], "dtype": "float32",
                                    "quantization": null}],
                       "created": "2026-11-22T20:00:00Z"},
        ...
      }
    }

An anomaly artifact's ``outputs`` hold its score (N, 1) and its map (N, H, W, 1); a segment artifact's
its per-pixel probabilities (N, H, W, classes). The service's ``/v2/models/{name}`` declares what the
artifact itself holds and agrees with these records.

Paths are relative to the run directory. Runtimes take float32 0-255 and (de)quantise
using ``quantization`` {"scale", "zero_point"} when an artifact's dtype is an integer.
"""
from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgecnn._io import artifact_bytes, artifact_files, sha256_file, write_json
from edgecnn.errors import EdgecnnError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_lock = threading.Lock()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that made or run the artifacts."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("edgecnn", "tensorflow", "tf-keras", "tensorflow-model-optimization", "tf2onnx", "onnx",
                "onnxruntime", "ai-edge-litert", "openvino", "tflite-micro", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``run_dir/manifest.json``; a missing or malformed file is an EdgecnnError."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise EdgecnnError(f"no {MANIFEST} in {str(Path(run_dir))!r}; run `edgecnn export` on it first.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EdgecnnError(f"{path} is not valid JSON ({e}); re-run `edgecnn export` to rewrite it.") from e
    if data.get("format_version") != FORMAT_VERSION or "artifacts" not in data:
        raise EdgecnnError(f"{path}: unsupported manifest (format_version={data.get('format_version')!r}).")
    return data


def init_manifest(run_dir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Create or update the run-level fields of the manifest, keeping existing artifacts."""
    path = Path(run_dir) / MANIFEST
    with _lock:
        data = read_manifest(run_dir) if path.is_file() else {"format_version": FORMAT_VERSION, "artifacts": {}}
        data.update(fields)
        data["versions"] = library_versions()
        write_json(path, data)
    return data


def add_artifact(run_dir: str | os.PathLike, filename: str, **fields: Any) -> dict[str, Any]:
    """Record an artifact that already exists in ``run_dir``: hash and size are measured here."""
    run_dir = Path(run_dir)
    file = run_dir / filename
    entry = {**fields, "sha256": sha256_file(file), "bytes": artifact_bytes(file),
             "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if file.is_dir():  # a folder artifact (OpenVINO IR): every file's hash, so a changed one is named
        entry["files"] = {p.relative_to(file).as_posix(): sha256_file(p) for p in artifact_files(file)}
    with _lock:
        data = read_manifest(run_dir)
        data["artifacts"][filename] = entry
        write_json(run_dir / MANIFEST, data)
    return entry


def remove_artifact(run_dir: str | os.PathLike, filename: str) -> None:
    with _lock:
        data = read_manifest(run_dir)
        if data["artifacts"].pop(filename, None) is not None:
            write_json(Path(run_dir) / MANIFEST, data)


def verify_artifact(run_dir: str | os.PathLike, filename: str, manifest: dict | None = None) -> dict[str, Any]:
    """Return the artifact's manifest entry after checking the file's sha256 against it."""
    manifest = manifest or read_manifest(run_dir)
    entry = manifest["artifacts"].get(filename)
    if entry is None:
        raise EdgecnnError(
            f"{filename!r} is not listed in {Path(run_dir) / MANIFEST}; listed: {', '.join(manifest['artifacts'])}."
        )
    path = Path(run_dir) / filename
    if not path.exists():
        raise EdgecnnError(f"artifact {str(path)!r} is listed in the manifest but missing; re-run `edgecnn export`.")
    actual = sha256_file(path)
    for name, sha in (entry.get("files") or {}).items():  # a folder artifact: name the file that changed
        part = path / name
        if not part.is_file() or sha256_file(part) != sha:
            raise EdgecnnError(f"artifact {str(path)!r}: {name} is missing or changed since export (manifest.json); "
                               "re-run `edgecnn export` or restore the file.")
    if actual != entry["sha256"]:
        raise EdgecnnError(
            f"artifact {str(path)!r} does not match manifest.json: sha256 {actual[:16]}… != {entry['sha256'][:16]}…. "
            "The file changed after export; re-run `edgecnn export` or restore the file."
        )
    return entry

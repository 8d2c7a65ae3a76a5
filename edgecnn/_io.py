"""Atomic file writes: a reader never sees a half-written artifact, an interrupted run leaves none."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temp name keeps the real suffix (``.keras``, ``.onnx``) because some writers dispatch on it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def swap_in_dir(tmp_dir: str | os.PathLike, final: str | os.PathLike) -> None:
    """Replace folder ``final`` by ``tmp_dir`` with two renames, so a reader sees the old or the new folder."""
    import shutil

    tmp_dir, final = Path(tmp_dir), Path(final)
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp_dir, final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    For artifacts made of several files (OpenVINO IR: ``model.xml`` + ``model.bin``).
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        swap_in_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_artifact(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a file or folder artifact to ``dest`` atomically (a reader never sees half of it)."""
    import shutil

    src, dest = Path(src), Path(dest)
    if src.is_dir():
        with atomic_dir(dest) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    else:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    return dest


def remove_artifact_path(path: str | os.PathLike) -> None:
    """Delete a file or folder artifact if it exists."""
    import shutil

    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def artifact_files(path: str | os.PathLike) -> list[Path]:
    """The files an artifact is made of: itself, or every file under a folder artifact, sorted."""
    path = Path(path)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def artifact_bytes(path: str | os.PathLike) -> int:
    """Size of a file artifact, or of every file of a folder artifact together."""
    return sum(p.stat().st_size for p in artifact_files(path))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file; of a folder artifact, the sha256 of its files' relative names and hashes."""
    path = Path(path)
    if path.is_dir():
        lines = "".join(f"{p.relative_to(path).as_posix()}\t{sha256_file(p)}\n" for p in artifact_files(path))
        return hashlib.sha256(lines.encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

"""The Runner protocol and the suffix-keyed registry of backends."""
from __future__ import annotations

import abc
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecnn.errors import EdgecnnError


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None = dynamic), dtype and (scale, zero_point) of an artifact's input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    quantization: tuple[float, int] | None = None

    def to_json(self) -> dict:
        q = None if self.quantization is None else {"scale": self.quantization[0], "zero_point": self.quantization[1]}
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "quantization": q}


class Runner(abc.ABC):
    """Runs one artifact. Subclasses implement ``_predict`` on a float32 batch."""

    backend: str = ""
    input: TensorSpec
    output: TensorSpec

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        self.threads = threads

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        expected = self.input.shape[1:]
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(expected):
            raise EdgecnnError(
                f"{self.path.name}: input must have shape (N, {', '.join(map(str, expected))}). "
                f"Received shape {tuple(images.shape)}; resize the images to the model's input size."
            )
        return self._predict(images)

    @abc.abstractmethod
    def _predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for a float32 NHWC batch already checked against the input shape."""

    @property
    def input_size(self) -> int:
        return int(self.input.shape[1])

    def close(self) -> None:
        """Release the session; most backends free on garbage collection."""


_BACKENDS: dict[str, Callable[..., Runner]] = {}


def register_runner(*suffixes: str):
    def wrap(cls):
        for s in suffixes:
            _BACKENDS[s] = cls
        return cls

    return wrap


def runner_kinds() -> list[str]:
    _load_backends()
    return sorted(_BACKENDS)


def _load_backends() -> None:
    from edgecnn.runtime import keras_runner, litert_runner, ort_runner  # noqa: F401


def load_runner(path: str | os.PathLike, threads: int | None = None, *, server: bool = False) -> Runner:
    """Open an artifact with the backend its suffix names (.keras, .tflite, .onnx).

    Args:
        path: the artifact file.
        threads: intra-op threads (None = the runtime's default, usually all cores).
        server: tune for sharing the CPU with a server (onnxruntime: no spin-waiting).

    Raises:
        EdgecnnError: missing file or unknown suffix.
    """
    _load_backends()
    path = Path(path)
    if not path.is_file():
        raise EdgecnnError(f"artifact not found: {str(path)!r}. Run `edgecnn export` on the run directory first.")
    suffix = path.suffix.lower()
    if suffix not in _BACKENDS:
        raise EdgecnnError(
            f"no runtime for {path.name!r} (suffix {suffix!r}); supported suffixes: {', '.join(sorted(_BACKENDS))}."
        )
    if server and suffix == ".onnx":
        return _BACKENDS[suffix](path, threads, spinning=False)
    return _BACKENDS[suffix](path, threads)


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    scale, zero = spec.quantization  # type: ignore[misc]
    info = np.iinfo(np.dtype(spec.dtype))
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(spec.dtype)


def dequantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.quantization is None:
        return x.astype(np.float32)
    scale, zero = spec.quantization
    return ((x.astype(np.float32) - zero) * scale).astype(np.float32)

"""The Runner contract every runtime implements, and the (de)quantisation helpers they share."""
from __future__ import annotations

import abc
import os
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
    """Runs one artifact. Subclasses implement ``_predict`` on a float32 batch.

    ``backend`` is the runtime's registered name (set by ``register_runtime``).

    Tensor specs, read from the artifact: ``inputs`` and ``outputs`` (tuples of :class:`TensorSpec`,
    ``outputs`` in the order :meth:`predict_outputs` returns its arrays); ``input`` and ``output`` are
    the first of each, the primary (``output`` is what ``__call__`` returns). A runner that sets only
    ``input`` and ``output`` declares one of each.
    """

    backend: str = ""
    input: TensorSpec
    output: TensorSpec

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        self.threads = threads

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._predict(self._check_input(images))

    @abc.abstractmethod
    def _predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for a float32 NHWC batch already checked against the input shape."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Every input of the artifact: an edgecnn artifact takes one image batch, ``(self.input,)``."""
        return (self.input,)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Every output of the artifact, in :meth:`predict_outputs`' order; ``(self.output,)`` unless set."""
        return getattr(self, "_output_specs", None) or (self.output,)

    @outputs.setter
    def outputs(self, specs) -> None:
        self._output_specs = tuple(specs)

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        """Every output of a multi-output artifact (an anomaly model's score and map), float32, in the
        artifact's own output order, the order of :attr:`outputs` (converters may reorder outputs: tell
        them apart by name or shape).

        The default is the one output ``__call__`` returns; runners of multi-output formats override it.
        """
        return [self(images)]

    def evaluated(self, images, outputs: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Told the whole split the evaluator ran (an array or a batch-readable split) and this runner's answers
        to it; a runner whose extra figures compare itself with another runtime keeps them. Default: nothing."""

    def _check_input(self, images: np.ndarray) -> np.ndarray:
        """A float32 NHWC batch (one HWC image gets N = 1), or one readable error naming the expected shape."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        expected = self.input.shape[1:]
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(expected):
            raise EdgecnnError(
                f"{self.path.name}: input must have shape (N, {', '.join(map(str, expected))}). "
                f"Received shape {tuple(images.shape)}; resize the images to the model's input size."
            )
        return images

    @property
    def input_size(self) -> int:
        return int(self.input.shape[1])

    @property
    def input_channels(self) -> int:
        """3 (RGB), or 1 for a grey model (``data.channels: 1``): NHWC, the channels come last."""
        return int(self.input.shape[-1])

    def close(self) -> None:  # noqa: B027 - optional hook; the default deliberately does nothing
        """Release the session; most backends free on garbage collection."""


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    scale, zero = spec.quantization  # type: ignore[misc]
    info = np.iinfo(np.dtype(spec.dtype))
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(spec.dtype)


def dequantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.quantization is None:
        return x.astype(np.float32)
    scale, zero = spec.quantization
    return ((x.astype(np.float32) - zero) * scale).astype(np.float32)

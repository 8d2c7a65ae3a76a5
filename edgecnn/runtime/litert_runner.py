"""LiteRT (ai-edge-litert) interpreter, XNNPACK on CPU; batch 1 invocations."""
from __future__ import annotations

import numpy as np

from edgecnn.runtime.base import Runner, TensorSpec, dequantize, quantize
from edgecnn.runtime.registry import register_runtime


def _spec(detail: dict) -> TensorSpec:
    scale, zero = detail.get("quantization", (0.0, 0))
    q = (float(scale), int(zero)) if scale else None
    shape = tuple(None if s == -1 else int(s) for s in detail.get("shape_signature", detail["shape"]))
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]).name, q)


# An interpreter holds one set of tensors: concurrent invoke() calls corrupt each other (thread_safe=False).
@register_runtime("litert", suffixes=(".tflite",), package="ai-edge-litert", module="ai_edge_litert",
                  platform="litert_tflite", thread_safe=False,
                  description="LiteRT (ai-edge-litert) interpreter, XNNPACK on CPU")
class LiteRTRunner(Runner):
    """A LiteRT interpreter fixed at batch 1; larger batches loop."""

    def __init__(self, path, threads=None):
        super().__init__(path, threads)
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads or None)
        inp = self.interpreter.get_input_details()[0]
        # Fix batch 1 so XNNPACK plans once; larger batches loop (what a device does).
        self.interpreter.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]
        self._outs = self.interpreter.get_output_details()     # the artifact's output order
        self._out = self._outs[0]
        self.input = _spec(self._in)
        self.outputs = tuple(_spec(d) for d in self._outs)
        self.output = self.outputs[0]

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self._run(images, 1)[0]

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        return self._run(self._check_input(images), len(self._outs))

    def _run(self, images: np.ndarray, count: int) -> list[np.ndarray]:
        """The first ``count`` outputs for a checked batch, one invocation per image."""
        pairs = list(zip(self._outs[:count], self.outputs[:count]))
        outs = [np.empty((len(images), *d["shape"][1:]), np.float32) for d, _ in pairs]
        for i, img in enumerate(images):
            x = img[None]
            x = quantize(x, self.input) if self.input.quantization else x.astype(self.input.dtype)
            self.interpreter.set_tensor(self._in["index"], x)
            self.interpreter.invoke()
            for out, (d, spec) in zip(outs, pairs):
                out[i] = dequantize(self.interpreter.get_tensor(d["index"]), spec)[0]
        return outs

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
        self._out = self.interpreter.get_output_details()[0]
        self.input = _spec(self._in)
        self.output = _spec(self._out)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), *self._out["shape"][1:]), np.float32)
        for i, img in enumerate(images):
            x = img[None]
            x = quantize(x, self.input) if self.input.quantization else x.astype(self.input.dtype)
            self.interpreter.set_tensor(self._in["index"], x)
            self.interpreter.invoke()
            out[i] = dequantize(self.interpreter.get_tensor(self._out["index"]), self.output)[0]
        return out

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        self(images[:1])  # the shape check
        details = self.interpreter.get_output_details()
        specs = [_spec(d) for d in details]
        outs: list[list[np.ndarray]] = [[] for _ in details]
        for img in self._check_input(images):
            x = img[None]
            x = quantize(x, self.input) if self.input.quantization else x.astype(self.input.dtype)
            self.interpreter.set_tensor(self._in["index"], x)
            self.interpreter.invoke()
            for k, (d, s) in enumerate(zip(details, specs)):
                outs[k].append(dequantize(self.interpreter.get_tensor(d["index"]), s)[0])
        return [np.stack(o) for o in outs]

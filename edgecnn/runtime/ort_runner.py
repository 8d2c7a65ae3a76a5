"""onnxruntime InferenceSession on the CPU execution provider."""
from __future__ import annotations

import numpy as np

from edgecnn.runtime.base import Runner, TensorSpec
from edgecnn.runtime.registry import register_runtime

_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


def session_options(threads: int | None, spinning: bool = True):
    """CPU session options; ``spinning=False`` stops idle worker threads from busy-waiting, which
    frees cores for a server's HTTP side (~30 % more requests/s on 2 cores, serve_throughput.py)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


@register_runtime("onnxruntime", suffixes=(".onnx",), package="onnxruntime", options={"spinning": True},
                  server_options={"spinning": False}, platform="onnxruntime_onnx",
                  description="onnxruntime InferenceSession, CPU execution provider")
class OrtRunner(Runner):
    """An onnxruntime session; batches of up to 64 per run."""

    def __init__(self, path, threads=None, spinning: bool = True):
        super().__init__(path, threads)
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), session_options(threads, spinning),
                                            providers=["CPUExecutionProvider"])
        i = self.session.get_inputs()[0]
        dyn = lambda shape: tuple(s if isinstance(s, int) else None for s in shape)  # noqa: E731
        self.input = TensorSpec(i.name, dyn(i.shape), _ORT_TYPES.get(i.type, i.type))
        self.outputs = tuple(TensorSpec(o.name, dyn(o.shape), _ORT_TYPES.get(o.type, o.type))
                             for o in self.session.get_outputs())       # the graph's output order
        self.output = self.outputs[0]

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self._run(images, [self.output.name])[0]

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        return self._run(self._check_input(images), [o.name for o in self.outputs])

    def _run(self, images: np.ndarray, names: list[str]) -> list[np.ndarray]:
        parts = [self.session.run(names, {self.input.name: images[i:i + 64]}) for i in range(0, len(images), 64)]
        return [np.concatenate([p[k] for p in parts]).astype(np.float32) for k in range(len(names))]

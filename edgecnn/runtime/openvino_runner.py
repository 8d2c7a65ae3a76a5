"""OpenVINO on CPU: runs ``model.onnx`` and the QDQ ``model.int8.onnx`` as they are, or a saved IR.

What factory PCs (mostly Intel) run. The QDQ int8 ONNX needs no conversion: OpenVINO folds the
Quantize/Dequantize pairs into int8 kernels (VNNI where the CPU has it). Every setting that changes
latency is set explicitly rather than left to the plugin's defaults, so a report says what ran:
``INFERENCE_NUM_THREADS``, ``PERFORMANCE_HINT=LATENCY``, ``NUM_STREAMS`` and
``INFERENCE_PRECISION_HINT=f32`` (the CPU plugin would otherwise pick bf16 on CPUs that have it,
and the fp32 artifact would no longer match the Keras reference).

OpenVINO does not officially support AMD CPUs, so the runtime is gated by a smoke test: a tiny
convolution model compiled and run once per process (``get_runtime("openvino").available()``).

    onnx_to_openvino_ir("export/run/model.onnx", "export/run/model.openvino")  # edgecnn.export.openvino
    runner = load_runner("export/run/model.openvino", threads=1)             # the IR folder, or its .xml
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.runtime.base import Runner, TensorSpec
from edgecnn.runtime.registry import register_runtime

IR_FOLDER_SUFFIX = ".openvino"
IR_FILE = "model.xml"


def _smoke() -> None:
    """Compile and run NHWC -> NCHW -> 3x3 conv -> global mean -> softmax on the CPU; raise if it fails."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 8, 8, 3], np.float32, name="image")
    nchw = ops.transpose(x, ops.constant(np.array([0, 3, 1, 2], np.int64)))
    w = ops.constant(np.linspace(-1, 1, 4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3))
    conv = ops.convolution(nchw, w, [1, 1], [1, 1], [1, 1], [1, 1])
    probs = ops.softmax(ops.reduce_mean(conv, ops.constant(np.array([2, 3], np.int64)), keep_dims=False), 1)
    compiled = ov.Core().compile_model(ov.Model([probs], [x], "smoke"), "CPU")
    out = compiled.create_infer_request().infer([np.full((1, 8, 8, 3), 0.5, np.float32)])[compiled.output(0)]
    if out.shape != (1, 4) or not np.isfinite(out).all() or abs(float(out.sum()) - 1.0) > 1e-4:
        raise RuntimeError(f"the smoke model returned {out!r}, expected 4 probabilities summing to 1")


@register_runtime("openvino", suffixes=(".onnx", ".xml", IR_FOLDER_SUFFIX), default_for=(".xml", IR_FOLDER_SUFFIX),
                  package="openvino", platform="openvino", thread_safe=False, smoke=_smoke,
                  options={"performance_hint": "LATENCY", "num_streams": 1, "precision_hint": "f32"},
                  description="OpenVINO CPU plugin; runs ONNX (fp32 and QDQ int8) and OpenVINO IR")
class OpenVINORunner(Runner):
    """A model compiled for the CPU at batch 1 with one infer request; larger batches loop."""

    def __init__(self, path, threads=None, performance_hint: str = "LATENCY", num_streams: int = 1,
                 precision_hint: str = "f32"):
        path = Path(path)
        if path.is_dir():
            path = path / IR_FILE
            if not path.is_file():
                raise EdgecnnError(f"{str(path.parent)!r} holds no {IR_FILE}; an OpenVINO IR folder holds "
                                   f"{IR_FILE} and model.bin (the 'openvino' export format writes them).")
        super().__init__(path, threads)
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        port = model.input(0)
        shape = port.get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4 or any(d.is_dynamic for d in shape[1:]):
            raise EdgecnnError(f"{path.name}: input shape {shape} is not NHWC with a fixed size; export with a "
                               "fixed input size.")
        hwc = tuple(int(d.get_length()) for d in shape[1:])
        # Batch 1, static: one plan, the latency a device sees; what LiteRT does too.
        model.reshape({port.get_any_name(): [1, *hwc]})
        self.config = {"INFERENCE_NUM_THREADS": int(threads or 0), "PERFORMANCE_HINT": str(performance_hint),
                       "NUM_STREAMS": str(num_streams), "INFERENCE_PRECISION_HINT": str(precision_hint)}
        self.compiled = core.compile_model(model, "CPU", self.config)
        self._request = self.compiled.create_infer_request()
        self._outs = list(self.compiled.outputs)       # the model's output order
        self._out = self._outs[0]
        self.input = TensorSpec(port.get_any_name(), (None, *hwc), "float32")
        self.outputs = tuple(TensorSpec(_port_name(o, k), (None, *(int(d) for d in o.get_shape()[1:])), "float32")
                             for k, o in enumerate(self._outs))
        self.output = self.outputs[0]

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self._run(images, self._outs[:1])[0]

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        return self._run(self._check_input(images), self._outs)

    def _run(self, images: np.ndarray, ports: list) -> list[np.ndarray]:
        outs = [np.empty((len(images), *spec.shape[1:]), np.float32) for spec in self.outputs[:len(ports)]]
        for i, img in enumerate(images):
            result = self._request.infer([img[None]])
            for out, port in zip(outs, ports):
                out[i] = result[port][0]   # copied out: the buffer is reused
        return outs


def _port_name(port, index: int) -> str:
    """An output's tensor name (the ONNX output name); ``output_<index>`` for an unnamed one."""
    try:
        return port.get_any_name()
    except RuntimeError:
        return f"output_{index}"

"""One Runner interface over every runtime (Keras, LiteRT, onnxruntime, OpenVINO), and their registry.

Every runner takes a float32 NHWC batch of RGB pixels 0-255 and returns float32 class
probabilities; quantised inputs and outputs are (de)quantised here, with the parameters the
artifact itself declares, so callers never see int8. A runtime is one ``*_runner.py`` module
registered with :func:`register_runtime`; the list of runtimes is read from the registry, never
written by hand.

    runner = load_runner("export/run/model.int8.tflite", threads=1)            # the default runtime
    runner = load_runner("export/run/model.int8.onnx", runtime="openvino")     # a named one
    probs = runner(images)            # (N, classes) float32
    [r.name for r in runtimes_for("model.onnx")]                               # ['onnxruntime', 'openvino']
"""
from edgecnn.runtime.base import Runner, TensorSpec
from edgecnn.runtime.registry import (
                                      RuntimeSpec,
                                      get_runtime,
                                      list_runtimes,
                                      load_runner,
                                      register_runtime,
                                      runner_kinds,
                                      runtime_names,
                                      runtimes_for,
)

__all__ = ["Runner", "TensorSpec", "RuntimeSpec", "get_runtime", "list_runtimes", "load_runner",
           "register_runtime", "runner_kinds", "runtime_names", "runtimes_for"]


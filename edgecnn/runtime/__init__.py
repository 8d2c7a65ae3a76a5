"""One Runner interface over Keras, LiteRT and onnxruntime.

Every runner takes a float32 NHWC batch of RGB pixels 0-255 and returns float32 class
probabilities; quantised inputs and outputs are (de)quantised here, with the parameters the
artifact itself declares, so callers never see int8.

    runner = load_runner("export/run/model.int8.tflite", threads=1)
    probs = runner(images)            # (N, classes) float32
"""
from edgecnn.runtime.base import Runner, TensorSpec, load_runner, runner_kinds

__all__ = ["Runner", "TensorSpec", "load_runner", "runner_kinds"]

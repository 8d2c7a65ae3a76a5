"""The float reference: the Keras model itself."""
from __future__ import annotations

import numpy as np

from edgecnn.runtime.base import Runner, TensorSpec
from edgecnn.runtime.registry import register_runtime


# Never served (platform None): loading a Keras file can run code, and it is the float reference only.
@register_runtime("keras", suffixes=(".keras", ".h5"), package="tf-keras", module="tf_keras",
                  install="edgecnn[train]",
                  description="the float Keras reference (tf_keras); needs the [train] install")
class KerasRunner(Runner):
    """The Keras model itself, run by TensorFlow."""

    def __init__(self, path, threads=None):
        super().__init__(path, threads)
        from edgecnn._tf import tf

        if threads:
            # Only effective before TF's first op in this process; recorded either way.
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:
                pass
        from edgecnn._trust import load_keras

        self.model = load_keras(path)
        shape = tuple(self.model.input_shape)
        self.input = TensorSpec(self.model.input_names[0], shape, "float32")
        shapes = self.model.output_shape  # a list for a multi-output model, in the model's output order
        shapes = shapes if isinstance(shapes, list) else [shapes]
        self.outputs = tuple(TensorSpec(n, tuple(s), "float32") for n, s in zip(self.model.output_names, shapes))
        self.output = self.outputs[0]
        self._fn = _frozen(self.model)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self._outputs(images)[0]

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        return self._outputs(self._check_input(images))

    def _outputs(self, images: np.ndarray) -> list[np.ndarray]:
        parts = [self._fn(images[i:i + 64]) for i in range(0, len(images), 64)]
        return [np.concatenate([p[k].numpy() for p in parts]).astype(np.float32) for k in range(len(parts[0]))]


def _frozen(model):
    """``model`` in inference mode as one graph with its weights as constants, any batch size; returns a list of
    output tensors. Constant filters are what TensorFlow's oneDNN kernels need to run convolutions for
    inference (with variables they run the training kind: MobileNetV2 128 px, batch 1, 2 cores: 255 ms
    instead of 11 ms); the outputs are the model's own."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from edgecnn._tf import tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)    # one float input, as the runner checks
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(fn)
    return lambda x: frozen(tf.constant(x))

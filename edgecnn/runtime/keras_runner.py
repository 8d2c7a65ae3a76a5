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
        from edgecnn._tf import keras, tf

        if threads:
            # Only effective before TF's first op in this process; recorded either way.
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:
                pass
        self.model = keras.models.load_model(str(path), compile=False)
        shape = tuple(self.model.input_shape)
        self.input = TensorSpec(self.model.input_names[0], shape, "float32")
        out_shape = self.model.output_shape  # a list for a multi-output model: the first is ``output``
        out_shape = out_shape[0] if isinstance(out_shape, list) else out_shape
        self.output = TensorSpec(self.model.output_names[0], tuple(out_shape), "float32")
        self._fn = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), 64):
            y = self._fn(images[i:i + 64])
            out.append((y[0] if isinstance(y, (list, tuple)) else y).numpy())
        return np.concatenate(out).astype(np.float32)

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        self(images[:1])  # the shape check
        images = self._check_input(images)
        parts = [self._fn(images[i:i + 64]) for i in range(0, len(images), 64)]
        parts = [p if isinstance(p, (list, tuple)) else [p] for p in parts]
        return [np.concatenate([p[k].numpy() for p in parts]).astype(np.float32) for k in range(len(parts[0]))]

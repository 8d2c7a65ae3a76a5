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
        self.output = TensorSpec(self.model.output_names[0], tuple(self.model.output_shape), "float32")
        self._fn = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), 64):
            out.append(self._fn(images[i:i + 64]).numpy())
        return np.concatenate(out).astype(np.float32)

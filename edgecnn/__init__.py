"""edgecnn: a folder of labelled images in, small, fast, verified TFLite/ONNX classifiers out.

Importing the package sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported,
because tensorflow-model-optimization only works on tf_keras (Keras 2) models.

Example:
    >>> import edgecnn
    >>> model = edgecnn.create_model("dsconv", num_classes=4, input_size=96, alpha=0.25)
"""
from __future__ import annotations

import os
import platform

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by itself only on x86 CPUs with AVX-512 VNNI/BF16 or AMX; on
# AVX2-only ones (many AMD and older Intel machines) it falls back to Eigen, and training runs at half
# the speed (MobileNetV2 128 px, batch 32, 2 cores: 1,185 -> 580 ms a step). Set it to 0 to opt out.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from edgecnn._version import __version__  # noqa: E402

__all__ = ["create_model", "list_models", "run", "import_model", "EdgecnnError", "__version__"]

from edgecnn.errors import EdgecnnError  # noqa: E402  (after the env var on purpose)


def __getattr__(name: str):
    # Lazy, so `import edgecnn` (and the CLI's --help) does not pay for importing TensorFlow.
    if name in ("create_model", "list_models"):
        from edgecnn import arch

        return getattr(arch, name)
    if name == "run":
        from edgecnn.pipeline import run

        return run
    if name == "import_model":
        from edgecnn.pipeline import import_model

        return import_model
    raise AttributeError(f"module 'edgecnn' has no attribute {name!r}")

"""Bring your own model: import tf_keras, Keras 3, SavedModel, ONNX and TFLite models into a run directory.

    from edgecnn.importing import detect_source, import_source
    detect_source("net.onnx")          # 'onnx'

The pipeline's :func:`edgecnn.import_model` (``edgecnn import``) builds the whole run; this package
holds the import stage itself: loading and checking each source format, the preprocessing
contract (:data:`PRESETS`) and the wrappers that make every artifact take RGB 0-255 NHWC.
"""
from edgecnn.importing._preprocess import PRESETS, Preprocess, get_preprocess
from edgecnn.importing.stage import SOURCE_FORMATS, ImportResult, detect_source, import_source

__all__ = ["PRESETS", "Preprocess", "get_preprocess", "SOURCE_FORMATS", "ImportResult", "detect_source",
           "import_source"]

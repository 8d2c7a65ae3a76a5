"""Datasets: folder and MVTec loaders, splits, augmentation, the bundled defect set, image preprocessing.

``edgecnn.data.preprocess.load_image`` is the one image preprocessing (decode, orientation, RGB,
resize) of training, evaluation, ``edgecnn predict`` and the service. This package's import stays
free of TensorFlow, so the service and ``edgecnn check`` can use it without TF installed; the
tf.data pipelines live in ``edgecnn.data.loader``, imported by name where training needs them.
"""
from edgecnn.data.preprocess import load_image, resize_rgb, rgb_pixels

__all__ = ["load_image", "resize_rgb", "rgb_pixels"]

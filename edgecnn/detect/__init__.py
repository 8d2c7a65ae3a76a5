"""Object detection: boxes, their post-processing and COCO metrics (``task: detect``)."""

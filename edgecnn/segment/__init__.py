"""Semantic segmentation trained on masks (``task: segment``)."""

"""``task: segment``: per-pixel defect classes from image + mask pairs (``edgecnn.segment``)."""
from __future__ import annotations

from edgecnn._strict import Strict
from edgecnn.tasks import TaskSpec, register_task


class SegmentConfig(Strict):
    """The recipe's ``segment:`` section (read when ``task: segment``)."""


register_task(TaskSpec("segment", "semantic segmentation: a class per pixel, trained on masks",
                       "edgecnn.segment.pipeline:run_segment", image_handler="edgecnn.segment.serve:answer_image"))

"""``task: anomaly``: defect detection trained on good images only (``edgecnn.anomaly``)."""
from __future__ import annotations

from edgecnn._strict import Strict
from edgecnn.tasks import TaskSpec, register_task


class AnomalyConfig(Strict):
    """The recipe's ``anomaly:`` section (read when ``task: anomaly``)."""


register_task(TaskSpec("anomaly", "anomaly detection from good images only: an image score and an anomaly map",
                       "edgecnn.anomaly.pipeline:run_anomaly", image_handler="edgecnn.anomaly.serve:answer_image"))

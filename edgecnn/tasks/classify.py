"""``task: classify``: the pipeline's own stages (train -> compress -> export -> evaluate)."""
from edgecnn.tasks import TaskSpec, register_task

register_task(TaskSpec("classify", "image classification (one label per image)", "edgecnn.pipeline:run_classify"))

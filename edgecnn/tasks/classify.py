"""``task: classify``: one label per image (``edgecnn.classify``: import or train -> compress -> export -> evaluate)."""
from edgecnn.tasks import TaskSpec, register_task

_STAGES = "edgecnn.classify.stages"

register_task(TaskSpec("classify", "image classification (one label per image)", f"{_STAGES}:classify_data",
                       stages=(("train", f"{_STAGES}:train"), ("compress", f"{_STAGES}:compress"),
                               ("export", f"{_STAGES}:export"), ("evaluate", f"{_STAGES}:evaluate"))))

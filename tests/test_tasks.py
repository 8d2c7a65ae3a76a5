"""The task registry: the recipe's ``task:`` is validated against it, and each task says what runs it."""
from __future__ import annotations

import pytest

from edgecnn.config import recipe_from_dict
from edgecnn.errors import EdgecnnError
from edgecnn.tasks import get_task, task_names


def test_classify_is_the_default_and_listed_first():
    assert task_names()[0] == "classify"
    assert {"anomaly", "segment"} <= set(task_names())
    assert recipe_from_dict({"name": "x"}).task == "classify"
    assert get_task("classify").runner == "edgecnn.pipeline:run_classify"


def test_unknown_task_names_the_known_ones_and_a_fix():
    with pytest.raises(EdgecnnError) as e:
        recipe_from_dict({"name": "x", "task": "segmnt"})
    msg = str(e.value)
    assert "task" in msg and "segmnt" in msg and "'segment'" in msg and "classify" in msg
    with pytest.raises(EdgecnnError, match="unknown task 'detect'"):
        get_task("detect")

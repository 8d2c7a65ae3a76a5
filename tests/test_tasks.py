"""The task registry: the recipe's ``task:`` is validated against it, and each task says what runs it."""
from __future__ import annotations

import importlib
import inspect

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


@pytest.mark.parametrize("name", task_names())
def test_import_strings_name_functions_with_the_documented_arguments(name):
    """``runner`` and ``image_handler`` are only imported when a run starts or an image arrives: resolve each
    here (a typo in a module or function name fails this fast test, not a slow end-to-end one) and bind the
    arguments :class:`TaskSpec` calls it with (the implementations import TensorFlow lazily: no TF here)."""
    spec = get_task(name)
    calls = {"runner": ((object(),), {"force": False}),
             "image_handler": ((object(), object(), object(), b"", {}), {})}
    assert spec.runner, f"task {name!r} has no runner"
    for field, (args, kwargs) in calls.items():
        ref = getattr(spec, field)
        if not ref:
            assert field == "image_handler" and name == "classify", f"task {name!r}: empty {field}"
            continue
        module, sep, func = ref.partition(":")
        assert sep and module and func, f"task {name!r}: {field} {ref!r} is not 'module:function'"
        fn = getattr(importlib.import_module(module), func, None)
        assert callable(fn), f"task {name!r}: {field} {ref!r}: {module} has no function {func!r}"
        inspect.signature(fn).bind(*args, **kwargs)  # TypeError when the function takes other arguments

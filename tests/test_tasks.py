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
    assert {"anomaly", "segment", "detect"} <= set(task_names())
    assert recipe_from_dict({"name": "x"}).task == "classify"
    assert get_task("classify").stage_names == ("train", "compress", "export", "evaluate")


def test_unknown_task_names_the_known_ones_and_a_fix():
    with pytest.raises(EdgecnnError) as e:
        recipe_from_dict({"name": "x", "task": "segmnt"})
    msg = str(e.value)
    assert "task" in msg and "segmnt" in msg and "'segment'" in msg and "classify" in msg
    with pytest.raises(EdgecnnError, match="unknown task 'detec'.*Did you mean 'detect'"):
        get_task("detec")


@pytest.mark.parametrize("name", task_names())
def test_import_strings_name_functions_with_the_documented_arguments(name):
    """The discovery, the stages and the image handler are only imported when a run starts or an image arrives:
    resolve each here (a typo in a module or function name fails this fast test, not a slow end-to-end one) and
    bind the arguments :class:`TaskSpec` calls them with (the implementations import TensorFlow lazily)."""
    from edgecnn.store import STAGES

    spec = get_task(name)
    assert spec.stage_names and set(spec.stage_names) <= set(STAGES), spec.stages
    assert list(spec.stage_names) == sorted(spec.stage_names, key=list(STAGES).index), "stages out of graph order"
    calls = [(spec.discover, (object(),), {})]
    calls += [(target, (object(),), {"force": False}) for _, target in spec.stages]
    if spec.image_handler:
        calls.append((spec.image_handler, (object(), object(), object(), b"", {}), {}))
    else:
        assert name == "classify", f"task {name!r}: no image handler"
    for ref, args, kwargs in calls:
        module, sep, func = ref.partition(":")
        assert sep and module and func, f"task {name!r}: {ref!r} is not 'module:function'"
        fn = getattr(importlib.import_module(module), func, None)
        assert callable(fn), f"task {name!r}: {ref!r}: {module} has no function {func!r}"
        inspect.signature(fn).bind(*args, **kwargs)  # TypeError when the function takes other arguments
    assert spec.references() == [c[0] for c in calls]


def test_a_stage_the_task_lacks_is_refused_by_name():
    spec = get_task("anomaly")
    with pytest.raises(EdgecnnError, match="task 'anomaly' has no 'compress' stage; its stages: "
                                           r"\['train', 'export', 'evaluate'\]"):
        spec.run_stage(object(), "compress")

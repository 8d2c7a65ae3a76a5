"""The tasks a recipe's ``task:`` may name: ``classify`` (the default), ``anomaly``, ``segment``.

A task is one registered :class:`TaskSpec`: the function that runs a recipe of that task over a run
directory (every stage, resumable), and the recipe section that holds its settings. ``classify`` is
the pipeline's own stages (:class:`edgecnn.pipeline.Run`); another task owns its stages in its own
package (``edgecnn.anomaly``, ``edgecnn.segment``) and reuses the shared parts (export formats,
runtimes, budgets, report sections, the service) through their registries.

A new task is one module in this package that calls :func:`register_task`; nothing else keeps a
list of task names (the recipe validates ``task:`` against :func:`task_names`). The task's recipe
section (``anomaly:``, ``segment:``) is a model in that module, so the recipe can import it without
importing the task's implementation (which imports the pipeline: no cycle).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecnn.errors import EdgecnnError, did_you_mean

__all__ = ["TaskSpec", "get_task", "register_task", "task_names"]

DEFAULT_TASK = "classify"


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    Attributes:
        name: the recipe's ``task:`` value.
        summary: one line for ``edgecnn --help`` and the docs.
        runner: ``"module:function"`` run as ``function(run, force=False) -> RunResult``; imported only
            when a run of this task starts (the implementation may import TensorFlow).
        image_handler: ``"module:function"`` answering the service's image endpoint
            (``POST /v2/models/{name}/classify``) for a run whose manifest.json says ``"task": name``:
            ``function(service, state, loaded, data: bytes, params: dict[str, str]) -> dict | Response``
            (``params`` are the request's query parameters, e.g. ``?map=png``). Empty for classify,
            which the service answers itself.
        headline: ``(label, metric)`` pairs the report's verdict cards and artifact table show, read
            from report.json's ``artifacts[name]["metrics"][metric]``; the first is the headline figure.
        use: the model card's "Intended use" sentence, ``{classes}`` standing for the class names.
        output: the model card's description of what the artifacts answer.
    """

    name: str
    summary: str
    runner: str
    image_handler: str = ""
    headline: tuple[tuple[str, str], ...] = (("top-1", "accuracy"), ("agree", "agreement"),
                                             ("macro F1", "macro_f1"))
    use: str = "Classify one image of a surface into {classes}"
    output: str = "class probabilities (softmax) in the order of `labels.txt`"

    def run(self, run: Any, force: bool = False) -> Any:
        """Run every stage of ``run`` (an :class:`edgecnn.pipeline.Run`); returns its RunResult."""
        module, _, func = self.runner.partition(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), func)
        return fn(run, force=force)

    def serve_image(self, service: Any, state: Any, loaded: Any, data: bytes, params: dict[str, str]) -> Any:
        if not self.image_handler:
            raise EdgecnnError(f"task {self.name!r} has no image endpoint")
        module, _, func = self.image_handler.partition(":")
        return getattr(importlib.import_module(module), func)(service, state, loaded, data, params)


_TASKS: dict[str, TaskSpec] = {}
_loaded = False


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.name in _TASKS and _TASKS[spec.name] != spec:
        raise ValueError(f"task {spec.name!r} is registered twice")
    _TASKS[spec.name] = spec
    return spec


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from edgecnn._plugins import import_submodules

        import_submodules(__name__)


def task_names() -> tuple[str, ...]:
    """Every registered task name, ``classify`` first."""
    _load()
    return tuple(sorted(_TASKS, key=lambda n: (n != DEFAULT_TASK, n)))


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; an unknown name is an :class:`EdgecnnError` listing the known ones."""
    _load()
    if name not in _TASKS:
        known = task_names()
        raise EdgecnnError(f"unknown task {name!r}; known: {list(known)}.{did_you_mean(name, known)}")
    return _TASKS[name]

"""The tasks a recipe's ``task:`` may name: ``classify`` (the default), ``anomaly``, ``segment``.

A task is one registered :class:`TaskSpec`: its data discovery, its stages (each a function of the run,
resumable, named from the one stage graph of :mod:`edgecnn.store`), and the recipe section that holds
its settings. Each task owns its stages in its own package (``edgecnn.classify``, ``edgecnn.anomaly``,
``edgecnn.segment``) and builds them from the stage core (``edgecnn.stages``: export, the budget
verdict; ``edgecnn.compress.chooser``: the int8 choice) and the shared registries (export formats,
runtimes, budgets, report sections, the service); :class:`edgecnn.pipeline.Run` only orchestrates.

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

__all__ = ["TaskSpec", "check_int8_routes", "get_task", "register_task", "task_names"]

DEFAULT_TASK = "classify"


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    Attributes:
        name: the recipe's ``task:`` value.
        summary: one line for ``edgecnn --help`` and the docs.
        discover: ``"module:function"``: ``function(run)`` finds (and where the recipe says so, generates)
            the task's data and writes labels.txt and dataset.json through the run store.
        stages: ``(stage, "module:function")`` pairs in run order, each run as ``function(run, force=False)``
            (the evaluate stage returns the RunResult); stage names come from :data:`edgecnn.store.STAGES`.
            Imported only when a stage runs (the implementation may import TensorFlow).
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
    discover: str
    stages: tuple[tuple[str, str], ...]
    image_handler: str = ""
    headline: tuple[tuple[str, str], ...] = (("top-1", "accuracy"), ("agree", "agreement"),
                                             ("macro F1", "macro_f1"))
    use: str = "Classify one image of a surface into {classes}"
    output: str = "class probabilities (softmax) in the order of `labels.txt`"

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The task's stages in run order."""
        return tuple(name for name, _ in self.stages)

    def run_stage(self, run: Any, stage: str, force: bool = False, **options: Any) -> Any:
        """Run one stage over ``run`` (an :class:`edgecnn.pipeline.Run`); a stage this task lacks is an
        :class:`EdgecnnError` naming those it has."""
        target = dict(self.stages).get(stage)
        if target is None:
            raise EdgecnnError(f"task {self.name!r} has no {stage!r} stage; its stages: {list(self.stage_names)}. "
                               f"Run `edgecnn run` on the recipe, or one of those stages.")
        return _resolve(target)(run, force=force, **options)

    def discover_data(self, run: Any) -> Any:
        """The task's data for ``run``."""
        return _resolve(self.discover)(run)

    def serve_image(self, service: Any, state: Any, loaded: Any, data: bytes, params: dict[str, str]) -> Any:
        if not self.image_handler:
            raise EdgecnnError(f"task {self.name!r} has no image endpoint")
        return _resolve(self.image_handler)(service, state, loaded, data, params)

    def references(self) -> list[str]:
        """Every ``"module:function"`` this task names (the discovery, the stages, the image handler)."""
        return [self.discover, *(t for _, t in self.stages), *([self.image_handler] if self.image_handler else [])]


def _resolve(target: str) -> Callable[..., Any]:
    """The function a ``"module:function"`` string names."""
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


_TASKS: dict[str, TaskSpec] = {}
_loaded = False


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry; its stage names must be stages of :data:`edgecnn.store.STAGES`."""
    from edgecnn.store import STAGES

    bad = [name for name in spec.stage_names if name not in STAGES]
    if bad or not spec.stage_names:
        raise ValueError(f"task {spec.name!r}: stages {list(spec.stage_names)} must be a non-empty list of "
                         f"{list(STAGES)}; received unknown {bad}")
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


def check_int8_routes(section: str, routes: list[str], runtimes: tuple[str, ...]) -> list[str]:
    """A task section's ``int8_routes`` checked against the chooser's route registry (routes of ``runtimes``);
    raises ValueError (the recipe's validation message) naming the routes there are."""
    from edgecnn.compress.chooser import list_routes

    usable = [r.name for r in list_routes() if r.runtime in runtimes]
    bad = [n for n in routes if n not in usable]
    if bad:
        raise ValueError(f"{section}.int8_routes: {bad} are not routes of {list(runtimes)}; the routes: {usable}."
                         f"{did_you_mean(bad[0], usable)}")
    return routes

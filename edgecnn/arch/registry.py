"""Model registry in the manner of timm: adding a model is one decorated function.

    @register_model
    def mobilenet_v2(*, num_classes=1000, input_size=224, alpha=1.0, weights=None): ...

``create_model(name, **overrides)`` checks the overrides against the builder's signature, so a
stray keyword fails here with the list of accepted keys instead of deep inside Keras.
"""
from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgecnn._plugins import import_submodules
from edgecnn.errors import EdgecnnError, did_you_mean

__all__ = ["ModelEntry", "register_model", "create_model", "create_task_model", "list_models", "get_model_entry"]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about a builder without building it."""

    name: str
    fn: Callable[..., Any]
    family: str
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    task: str = "classify"  # what the output means: "classify" (N, K) probabilities, "segment" (N, H, W, K)

    @property
    def default_input_size(self) -> int:
        return int(self.defaults.get("input_size", 224))

    @property
    def accepted(self) -> list[str]:
        return list(self.defaults)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., Any] | None = None, *, name: str | None = None, task: str = "classify"):
    """Register a builder under its function name (or ``name``). Usable bare or with arguments.

    ``task`` says what the model's output is (a name of :mod:`edgecnn.tasks`): ``"classify"`` (one
    probability vector per image) or ``"segment"`` (one per pixel).
    """

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        key = name or f.__name__
        if key in _REGISTRY:
            raise RuntimeError(f"model {key!r} is registered twice")
        params = inspect.signature(f).parameters
        defaults = {k: p.default for k, p in params.items()}
        doc = (inspect.getdoc(f) or "").strip().splitlines()
        family = f.__module__.rsplit(".", 1)[-1]
        _REGISTRY[key] = ModelEntry(key, f, family, doc[0] if doc else "", defaults, task)
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_loaded() -> None:
    # Importing the family modules runs their @register_model decorators; a new family is a new module.
    import_submodules("edgecnn.arch")


def get_model_entry(name: str) -> ModelEntry:
    """Look up a registered builder; unknown names get the list and a 'did you mean'."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise EdgecnnError(
            f"unknown model {name!r}.{did_you_mean(name, _REGISTRY)} "
            f"Registered models: {', '.join(sorted(_REGISTRY))}. Run `edgecnn models` for details."
        )
    return _REGISTRY[name]


def create_model(name: str, **overrides: Any):
    """Build a registered model.

    Args:
        name: registry name, e.g. ``"mobilenet_v2"``.
        **overrides: builder arguments (``num_classes``, ``input_size``, ``alpha``, ``weights``, ...).

    Returns:
        A ``tf_keras.Model`` that takes RGB pixels 0-255 (NHWC float32) and returns class probabilities.

    Raises:
        EdgecnnError: unknown model name.
        TypeError: an override the builder does not accept (the message lists the accepted keys).
    """
    entry = get_model_entry(name)
    unknown = sorted(set(overrides) - set(entry.defaults))
    if unknown:
        raise TypeError(
            f"create_model({name!r}) got unexpected argument(s) {unknown}; "
            f"accepted: {sorted(entry.defaults)}"
        )
    missing = [k for k, v in entry.defaults.items() if v is inspect.Parameter.empty and k not in overrides]
    if missing:
        raise TypeError(f"create_model({name!r}) needs argument(s) {missing}")
    return entry.fn(**overrides)


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered model names matching a shell-style pattern (and, when given, made for ``task``), sorted."""
    _ensure_loaded()
    return sorted(n for n, e in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and task in (None, e.task))


def create_task_model(name: str, task: str, args: dict[str, Any], **fixed: Any):
    """A recipe's model for ``task``: the registered builder ``name`` with the recipe's ``model.args`` and the
    stage's ``fixed`` arguments (classes, input size); a builder of another task, or an argument it does not take,
    is one :class:`EdgecnnError` naming the fix."""
    entry = get_model_entry(name)
    if entry.task != task:
        raise EdgecnnError(f"model.name {name!r} is a {entry.task} model; task: {task} needs one of its builders: "
                           f"{', '.join(list_models(task=task))}.")
    try:
        return create_model(name, **{**args, **fixed})
    except TypeError as e:
        raise EdgecnnError(f"model.args of the recipe: {e}") from None

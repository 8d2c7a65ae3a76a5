"""Whether the Keras model of this run may carry Python code (a ``Lambda`` with a lambda inside).

``edgecnn import --trust-code`` allows it for one run: every stage that loads or rebuilds that run's Keras
model does so inside :func:`trusted_code`, and :func:`load_keras` reads the flag, so the permission never
leaks to another run or to a file the user did not vouch for. TensorFlow-free until code is trusted.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

_TRUSTED: ContextVar[bool] = ContextVar("edgecnn_trusted_code", default=False)


def code_trusted() -> bool:
    """True inside :func:`trusted_code` (True)."""
    return _TRUSTED.get()


@contextlib.contextmanager
def trusted_code(trusted: bool) -> Iterator[None]:
    """Within this block Keras files may deserialise Python lambdas when ``trusted`` (else they never may).

    tf_keras' ``load_model(.keras, safe_mode=...)`` only covers that call: a model rebuilt from its config
    (flattening, tfmot's clone for QAT) or read from ``.h5`` takes the thread's safe-mode scope, which is set
    here for the block, both ways.
    """
    token = _TRUSTED.set(bool(trusted))
    try:
        with _safe_mode_scope(not trusted):
            yield
    finally:
        _TRUSTED.reset(token)


@contextlib.contextmanager
def _safe_mode_scope(safe: bool) -> Iterator[None]:
    import sys

    if "tf_keras" not in sys.modules and safe:  # nothing of Keras loaded yet; load_keras sets it per call
        yield
        return
    # tf_keras exports only a process-wide switch (keras.__internal__.enable_unsafe_deserialization); its scope,
    # which restores the previous value, lives in serialization_lib.
    from edgecnn._tf import keras

    with keras.src.saving.serialization_lib.SafeModeScope(safe):
        yield


def load_keras(path: str | os.PathLike):
    """A tf_keras model file (``.keras`` / ``.h5`` / SavedModel), without its optimizer, refusing Python lambdas
    unless inside :func:`trusted_code` (True)."""
    from edgecnn._tf import keras

    trusted = code_trusted()
    with _safe_mode_scope(not trusted):
        if str(path).endswith(".keras"):
            return keras.models.load_model(str(path), compile=False, safe_mode=not trusted)
        return keras.models.load_model(str(path), compile=False)


__all__ = ["code_trusted", "load_keras", "trusted_code"]

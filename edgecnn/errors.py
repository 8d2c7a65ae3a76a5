"""One exception type for every user-facing failure; the CLI prints its message, never a traceback."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgecnnError(ValueError):
    """A problem the user can fix: the message says what, the value received, what is allowed, the fix."""


class RuntimeRefusal(EdgecnnError):
    """A runtime cannot run this artifact here (its package is missing, the CPU fails its smoke test, it lacks
    an op the file uses): the evaluator reports the pair as ``skipped`` with this message. Anything else that
    goes wrong while running an artifact is a failure, never a skip."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""

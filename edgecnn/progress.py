"""Progress for long steps: a rich bar with ETA on a terminal, plain log lines in CI (not a TTY).

The bar is drawn on the terminal's stderr (:func:`edgecnn.console.rich_stderr`, which edgecnn's log lines share:
they go above the bar), also while the command's other output goes to its run's log file.

    with progress("generating defect set", total=1800) as update:
        for i in ...:
            update(i + 1)
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from edgecnn.console import STDERR, rich_stderr

log = logging.getLogger("edgecnn")


def _interactive() -> bool:
    return STDERR.isatty()


@contextlib.contextmanager
def progress(description: str, total: int, *, log_every_s: float = 10.0) -> Iterator[Callable[..., None]]:
    """Yield ``update(done, info="")``. Logs start/end (and every ``log_every_s``) when not a TTY."""
    t0 = time.perf_counter()
    if _interactive():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                      console=rich_stderr(), transient=True, redirect_stdout=False, redirect_stderr=False) as bar:
            task = bar.add_task(description, total=total, info="")

            def update(done: int, info: str = "") -> None:
                bar.update(task, completed=done, info=info)

            yield update
    else:
        last = [t0]

        def update(done: int, info: str = "") -> None:
            now = time.perf_counter()
            if done >= total or now - last[0] >= log_every_s:
                last[0] = now
                eta = (now - t0) / max(done, 1) * (total - done)
                log.info("%s: %d/%d %s(eta %.0fs)", description, done, total, f"{info} " if info else "", eta)

        yield update
    log.debug("%s: done in %.1fs", description, time.perf_counter() - t0)

"""The terminal and the run's log file: a command shows edgecnn's own lines on the terminal, and everything
else the process prints goes to ``RUN_DIR/edgecnn.log`` (:data:`LOG_NAME`).

Everything else is TensorFlow's and LiteRT's C++ logging (``I0000 ... port.cc:153] oneDNN custom operations
are on``, ``failed call to cuInit``, ``Created TensorFlow Lite XNNPACK delegate``), the TFLite converter's
``printf``, onnxruntime's calibration prints, third-party Python loggers and ``warnings``. C++ writes to file
descriptors 1 and 2, not through ``sys.stdout``, so :func:`capture` works on the descriptors: it keeps
duplicates of fds 1 and 2 for the terminal, where :data:`STDOUT` and :data:`STDERR` write (edgecnn's log
handler, its progress bars, the CLI's messages), and points fds 1 and 2 at the log file. The log file also
gets edgecnn's own lines, dated, and the traceback of an unexpected error instead of the terminal::

    session = Session()
    with session:                    # cli.main: one command, the terminal given back at its end
        capture()                    # a command: other output goes to a buffer from here ...
        capture(run_dir)             # ... and into RUN_DIR/edgecnn.log, with what the buffer holds
    session.log, session.crashed     # where it went; whether a traceback went there

Only a :class:`Session` captures: a command called in-process (a test, a notebook) keeps its streams.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import functools
import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from edgecnn._version import __version__
from edgecnn.errors import EdgecnnError

__all__ = ["LOG_NAME", "STDERR", "STDOUT", "Session", "capture", "rich_stderr"]

LOG_NAME = "edgecnn.log"
"""The run directory's log file: every command's other output, and edgecnn's lines with their date."""

_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_terminal: dict[str, TextIO] = {}   # "stdout", "stderr": the terminal's duplicates while a capture runs
_session: Session | None = None


class _Terminal:
    """The terminal's stdout or stderr as a file: the duplicate kept by :func:`capture` while it runs, else
    ``sys.stdout`` / ``sys.stderr`` (looked up at each write, so pytest's capture and rich's still work)."""

    def __init__(self, name: str):
        self.name = name

    def _stream(self) -> TextIO:
        return _terminal.get(self.name) or getattr(sys, self.name)

    def write(self, text: str) -> int:
        return self._stream().write(text)

    def flush(self) -> None:
        self._stream().flush()

    def isatty(self) -> bool:
        return self._stream().isatty()

    def fileno(self) -> int:
        return self._stream().fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return getattr(self._stream(), "encoding", None) or "utf-8"


STDOUT = _Terminal("stdout")
"""The terminal's stdout, also while a capture points fd 1 at the log file (the CLI's results)."""
STDERR = _Terminal("stderr")
"""The terminal's stderr, also while a capture points fd 2 at the log file (log lines, progress bars)."""


@functools.cache
def rich_stderr():
    """The rich ``Console`` on the terminal's stderr that edgecnn's log lines, messages and progress bars share,
    so a line logged while a bar is drawn goes above the bar."""
    from rich.console import Console

    return Console(file=STDERR, soft_wrap=True)


class Session:
    """One command's console (``cli.main``): :func:`capture` works inside it, and its end gives the terminal back,
    also when the command raises.

    Attributes:
        log: the log file the command's other output went to; None without a capture, or when its buffer was
            dropped (no run directory, no unexpected error).
        crashed: an unexpected exception's traceback went to ``log``, not to the terminal.
    """

    def __init__(self):
        self.log: Path | None = None
        self.crashed = False
        self._capture: _Capture | None = None

    def __enter__(self) -> Session:
        global _session
        _session = self
        return self

    def __exit__(self, kind, error, tb) -> bool:
        global _session
        _session = None
        if self._capture is not None:
            self.log, self.crashed = self._capture.close(error)
            self._capture = None
        return False


def capture(run_dir: str | os.PathLike | None = None) -> Path | None:
    """Send the rest of the command's other output (native logging, third-party prints, loggers and warnings)
    to a buffer, and with ``run_dir`` to ``RUN_DIR/edgecnn.log`` (created; the buffer moves there, and the
    first run directory named keeps the log). Outside a :class:`Session` it does nothing.

    Args:
        run_dir: the command's run directory, once it is known.

    Returns:
        The run directory's log file; None before one is named and outside a session.
    """
    if _session is None:
        return None
    if _session._capture is None:
        _session._capture = _Capture()
    if run_dir is not None:
        _session._capture.attach(Path(run_dir))
    return _session._capture.path


class _Capture:
    """Fds 1 and 2 on a log file (a buffer, then the run directory's), the terminal in duplicates, edgecnn's
    lines in both."""

    def __init__(self):
        _flush()
        for name, fd in (("stdout", 1), ("stderr", 2)):
            stream = getattr(sys, name)
            _terminal[name] = os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None),
                                        errors=getattr(stream, "errors", None))
        handle, buffer = tempfile.mkstemp(prefix="edgecnn-", suffix=".log")
        os.close(handle)
        self.buffer = Path(buffer)
        self.path: Path | None = None   # where the log is kept: the run directory's (or the buffer, if that failed)
        self.file = _point_output_at(self.buffer)
        self.file.write(f"--- {datetime.datetime.now():%Y-%m-%d %H:%M:%S} edgecnn {__version__}: "
                        f"{shlex.join(['edgecnn', *sys.argv[1:]])} (pid {os.getpid()})\n")
        self.handler = logging.StreamHandler(self.file)
        self.handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        logging.getLogger("edgecnn").addHandler(self.handler)

    def attach(self, run_dir: Path) -> None:
        if self.path is not None:   # the first run directory named keeps the log
            return
        target = run_dir / LOG_NAME
        _flush()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(target, "a", encoding="utf-8") as f, open(self.buffer, encoding="utf-8", errors="replace") as b:
                f.write(b.read())
                copied = b.tell()
            new = _point_output_at(target)
        except OSError as e:   # a read-only run directory: the buffer is kept instead
            self.path = self.buffer
            logging.getLogger("edgecnn").warning("cannot write %s (%s); this command's other output is in %s",
                                                 target, e, self.buffer)
            return
        with open(self.buffer, encoding="utf-8", errors="replace") as b:   # what came between the copy and the switch
            b.seek(copied)
            new.write(b.read())
        self.handler.setStream(new)
        self.file.close()
        self.buffer.unlink(missing_ok=True)
        self.file, self.path = new, target

    def close(self, error: BaseException | None) -> tuple[Path | None, bool]:
        """Write how the command ended, give fds 1 and 2 back to the terminal; ``(log file, crashed)``."""
        crashed = isinstance(error, Exception) and not isinstance(error, EdgecnnError)
        exc_info = (type(error), error, error.__traceback__) if crashed else None
        if error is None or isinstance(error, SystemExit):
            level, text = logging.INFO, f"exit code {0 if error is None or error.code is None else error.code}"
        elif isinstance(error, EdgecnnError):
            level, text = logging.ERROR, f"error: {error}"
        else:
            level, text = logging.ERROR, "interrupted" if isinstance(error, KeyboardInterrupt) else "unexpected error"
        self.handler.handle(logging.LogRecord("edgecnn", level, __file__, 0, "%s", (text,), exc_info))
        _flush()
        for name, fd in (("stdout", 1), ("stderr", 2)):
            terminal = _terminal.pop(name)
            os.dup2(terminal.fileno(), fd)
            terminal.close()
        logging.getLogger("edgecnn").removeHandler(self.handler)
        self.file.close()
        if self.path is None and not crashed:   # no run directory: the buffer goes, unless it holds a traceback
            self.buffer.unlink(missing_ok=True)
            return None, False
        return self.path or self.buffer, crashed


def _point_output_at(path: Path) -> TextIO:
    """Open ``path`` for appending and point fds 1 and 2 at it."""
    _flush()
    file = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(file.fileno(), 1)
    os.dup2(file.fileno(), 2)
    return file


def _flush() -> None:
    """Write what Python's and C's stdio hold before a descriptor changes (C's stdout is block-buffered when fd 1
    is a file: the TFLite converter's ``printf`` would otherwise reach the terminal at exit)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        _libc().fflush(None)


@functools.cache
def _libc():
    return ctypes.CDLL(None)

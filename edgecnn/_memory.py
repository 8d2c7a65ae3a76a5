"""What a stage leaves in memory: the process's resident size, and giving freed memory back between stages.

A run is one process (``edgecnn run``), so without this its peak RSS is the sum of what every stage left
behind, not the largest stage's: Keras keeps every model built in its global graph state until
``clear_session``, Python frees cycles (a Keras model is full of them) only when the collector runs, and
glibc's malloc keeps freed pages in its arenas until ``malloc_trim``.
"""
from __future__ import annotations

import ctypes
import gc
import os
import resource
import sys

__all__ = ["peak_rss_mb", "release", "rss_mb"]


def rss_mb() -> float:
    """The resident size of this process now, in MB (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return 0.0


def peak_rss_mb() -> float:
    """The largest resident size this process has had, in MB (``ru_maxrss``: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def release() -> None:
    """Free what the stage that just ended left: Keras's global graph state (when TensorFlow is loaded; the
    models a later stage needs are read from the run directory again), Python's cycles, malloc's free pages."""
    if "tf_keras" in sys.modules:
        sys.modules["tf_keras"].backend.clear_session()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc
        pass

"""Optional dynamic batching: concurrent small requests to one version become one runtime call.

Off by default (``ServeOptions.dynamic_batch`` 0). When on, a request of fewer than
``dynamic_batch`` images joins a queue; one thread per version takes the queue's head, waits at
most ``batch_delay_ms`` for more requests (never past ``dynamic_batch`` images), runs the
session once on the concatenated batch and hands each request its rows. It trades up to
``batch_delay_ms`` of latency for fewer, larger runtime calls: it helps when the runtime's
per-call cost is high relative to the per-image cost and many clients call at once.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np


class _Pending:
    __slots__ = ("images", "done", "result", "error")

    def __init__(self, images: np.ndarray):
        self.images, self.done = images, threading.Event()
        self.result: np.ndarray | list[np.ndarray] | None = None
        self.error: BaseException | None = None


class Batcher:
    """Runs ``predict`` on batches gathered from concurrent :meth:`__call__` callers.

    Args:
        predict: float32 NHWC batch -> one array (N, ...) or a list of them (every output of a version,
            ``LoadedVersion.predict_outputs``); each caller gets its rows of each.
        max_images: most images in one runtime call.
        max_delay_s: longest a request waits for others to join it.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_images: int, max_delay_s: float):
        self.predict, self.max_images, self.max_delay_s = predict, max_images, max_delay_s
        self._queue: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self.batches = 0           # runtime calls made, for tests and metrics
        threading.Thread(target=self._run, name="edgecnn-batcher", daemon=True).start()

    def __call__(self, images: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """``predict``'s answer for ``images``, computed in a batch with whatever else arrives meanwhile."""
        pending = _Pending(images)
        with self._ready:
            self._queue.append(pending)
            self._ready.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _take(self) -> list[_Pending]:
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if self._closed:
                return []
            deadline = time.monotonic() + self.max_delay_s
            taken, images = [self._queue.popleft()], 0
            images = len(taken[0].images)
            while images < self.max_images:
                if not self._queue:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._ready.wait(left) and not self._queue:
                        break
                    continue
                if images + len(self._queue[0].images) > self.max_images:
                    break
                taken.append(self._queue.popleft())
                images += len(taken[-1].images)
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            if not taken:
                return
            try:
                batch = taken[0].images if len(taken) == 1 else np.concatenate([p.images for p in taken])
                answer = self.predict(batch)
                self.batches += 1
                start = 0
                for p in taken:
                    rows = slice(start, start + len(p.images))
                    p.result = answer[rows] if isinstance(answer, np.ndarray) else [a[rows] for a in answer]
                    start += len(p.images)
            except BaseException as e:      # every waiter learns of the failure
                for p in taken:
                    p.error = e
            finally:
                for p in taken:
                    p.done.set()

"""One thread that runs short callbacks at given monotonic times (timers, deadlines).

Callbacks must be quick and non-blocking: they typically `tell` an actor.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
# The longest single wait: a timer years away (a cell may ask for one) must not make
# the wait overflow the platform's time type, which would end this thread.
MAX_WAIT_S = 3600.0
COMPACT_EVERY = 4096  # pushes between sweeps of cancelled callbacks out of the heap


class Scheduled:
    """A scheduled callback; `cancel()` prevents it from running if it has not yet, and
    lets go of it at once (a cancelled deadline may wait in the heap for seconds, and
    its callback holds a closed cell's actor)."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    @property
    def cancelled(self) -> bool:
        return self.callback is None

    def cancel(self) -> None:
        self.callback = None


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Scheduled]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def call_at(self, when: float, callback: Callable[[], None]) -> Scheduled:
        """Run `callback` on the scheduler thread at monotonic time `when`."""
        handle = Scheduled(callback)
        with self._cond:
            order = next(self._order)
            if order % COMPACT_EVERY == COMPACT_EVERY - 1:
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (when, order, handle))
            if self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Scheduled:
        return self.call_at(time.monotonic() + delay_s, callback)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    if self._heap[0][2].cancelled:  # no need to wait for it
                        heapq.heappop(self._heap)
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(min(wait, MAX_WAIT_S))
                if self._closed:
                    return
                callback = heapq.heappop(self._heap)[2].callback
            if callback is not None:  # (None: cancelled)
                try:
                    callback()
                except Exception:  # one failing callback must not stop every timer
                    log.exception("scheduled callback failed")
            del callback  # (a closed cell's timer must not live on while we wait)

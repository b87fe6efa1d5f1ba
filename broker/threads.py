"""Threads started on demand, reused while there is work, ended when idle."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


class OnDemandThreads(Executor):
    """Runs work on daemon threads named `name` that it starts when none is idle and
    that end after `IDLE_S` without work.

    Work that blocks (a harness's callback, a tool's handler) holds its thread alone,
    never others' work as a fixed pool would. Threads are reused (a thread per task cost
    20,000 threads for 20,000 `notify()` calls), and are daemons, so that work that
    never returns does not hold the process at its exit. `closed` is the error raised by
    a submission after `shutdown`."""

    IDLE_S = 30.0

    def __init__(self, name: str, closed: str) -> None:
        self._name = name
        self._closed_text = closed
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one token per thread waiting for work
        self._lock = threading.Lock()
        self._threads = 0
        self._closed = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:  # the caller's to see (deliveries log their own)
                future.set_exception(error)

        with self._lock:
            if self._closed:
                raise RuntimeError(self._closed_text)
            self._work.put(run)
            if not self._idle.acquire(blocking=False):  # nobody waiting: one more thread
                self._threads += 1
                threading.Thread(target=self._serve, name=self._name, daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Idle threads end now; one in a hung callback ends when it returns."""
        del wait, cancel_futures  # deliveries still queued run; nobody waits for them
        with self._lock:
            self._closed = True
            for _ in range(self._threads):
                self._work.put(None)

    def _serve(self) -> None:
        while True:
            try:
                task = self._work.get(timeout=self.IDLE_S)
            except queue.Empty:
                if self._idle.acquire(blocking=False):  # our token: nobody counts on us
                    with self._lock:
                        self._threads -= 1
                    return
                continue  # a submitter took our token: its task is coming
            if task is None:
                return
            task()
            del task  # (what it held, a closed cell's, must not live on in an idle thread)
            self._idle.release()

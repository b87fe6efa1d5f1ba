"""The raw mini-racer driver (`actors/v8.py`)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from actors import v8
from actors.v8 import V8Context


class _BlockingDll:
    """Stands in for mini-racer's library: the first `mr_init_context` blocks until
    released, and records how many calls overlapped it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.overlapped = 0
        self._lock = threading.Lock()

    def mr_init_context(self, _callback: Any) -> int:
        with self._lock:
            self.calls += 1
            first = self.calls == 1
            if not first and not self.release.is_set():
                self.overlapped += 1
        if first:
            self.entered.set()
            assert self.release.wait(10)
        return self.calls


class _WatchedLock:
    """A lock that tells when a second thread starts waiting for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()

    def __exit__(self, *_: object) -> None:
        self._lock.release()


def test_the_first_isolate_is_created_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """V8 aborts the process when two threads create the first isolates at once."""
    lock = _WatchedLock()
    monkeypatch.setattr(v8, "_first_isolate_made", False)
    monkeypatch.setattr(v8, "_first_isolate_lock", lock)
    dll = _BlockingDll()
    first = threading.Thread(target=v8._init_context, args=(dll, None))
    first.start()
    assert dll.entered.wait(10)
    second = threading.Thread(target=v8._init_context, args=(dll, None))
    second.start()
    assert lock.contended.wait(10)  # the second waits for the first to finish
    dll.release.set()
    first.join(10)
    second.join(10)
    assert (dll.calls, dll.overlapped) == (2, 0)
    v8._init_context(dll, None)  # later creations do not wait for one another
    assert dll.calls == 3


def test_contexts_made_in_parallel_all_work() -> None:
    contexts: list[V8Context] = []
    threads = [
        threading.Thread(target=lambda: contexts.append(V8Context(memory_limit_bytes=0)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(contexts) == 4
    try:
        for context in contexts:
            assert context.eval_sync("6 * 7") == 42
    finally:
        for context in contexts:
            context.dispose()

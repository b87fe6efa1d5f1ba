"""The scheduler (`actors/scheduler.py`): one thread for every timer of a host."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from cellfleet.actors import scheduler as scheduler_module
from cellfleet.actors.scheduler import Scheduler


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    running = Scheduler()
    yield running
    running.close()


def test_a_callback_centuries_away_does_not_stop_the_thread(scheduler: Scheduler) -> None:
    """A cell may set a timer for 1e13 ms: waiting that long overflowed the platform's
    time type and ended the thread, and with it every timer of the host."""
    scheduler.call_later(1e10, lambda: None)  # seconds: ~317 years
    for _ in range(2):  # after the first, the far one is next: the thread waits for it
        ran = threading.Event()
        scheduler.call_later(0.01, ran.set)
        assert ran.wait(10)


def test_cancelled_callbacks_do_not_pile_up(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "COMPACT_EVERY", 64)
    for _ in range(1000):
        scheduler.call_at(time.monotonic() + 3600, lambda: None).cancel()
    assert len(scheduler._heap) <= 64

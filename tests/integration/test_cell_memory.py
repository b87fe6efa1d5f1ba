"""A closed cell leaves nothing behind: its actor, its runtime and what they hold are
collected (a worker serves cells for weeks; `cellfleet bench throughput` shows its RSS
after 1,000 and after 10,000 cells)."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from cellfleet.actors.cell.actor import CellActor
from cellfleet.actors.runtime.runtime import CellRuntime
from cellfleet.ops.host import Host

DEADLINE_S = 10.0


class _Tracked:
    """Weak references to every cell actor and runtime created while it is installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.refs: list[weakref.ref[Any]] = []
        for cls in (CellActor, CellRuntime):
            original = cls.__init__

            def init(obj: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
                _original(obj, *args, **kwargs)
                self.refs.append(weakref.ref(obj))

            monkeypatch.setattr(cls, "__init__", init)

    def alive(self) -> list[Any]:
        gc.collect()
        return [obj for ref in self.refs if (obj := ref()) is not None]


@pytest.fixture
def tracked(monkeypatch: pytest.MonkeyPatch) -> _Tracked:
    return _Tracked(monkeypatch)


@pytest.fixture
def host(redis_url: str, tracked: _Tracked) -> Iterator[Host]:
    del tracked  # (installed first: every actor the host starts is tracked)
    host = Host(redis_url, handlers={"echo": lambda value: value})
    yield host
    host.close()


def _alive_after_closing(tracked: _Tracked) -> list[Any]:
    """What is still alive once the closed cells' actor threads have ended."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        alive = tracked.alive()
        if not alive:
            return []
        if time.monotonic() > deadline:
            return alive
        del alive  # (held here, they would stay alive through the next collection)
        # An actor's thread drops its last reference as it ends, after its cell closed.
        for thread in threading.enumerate():
            if thread.name.startswith("CellActor"):
                thread.join(0.05)


def test_closed_cells_are_collected(host: Host, tracked: _Tracked) -> None:
    closed: list[str] = []
    all_closed = threading.Event()
    cells = 0

    def on_closed(cell_id: str) -> None:
        closed.append(cell_id)
        if len(closed) == cells:
            all_closed.set()

    session = host.open_session(on_cell_closed=on_closed)
    sources = [
        'text("plain");',
        'await tools.echo({x: 1}); text("tool");',
        'await new Promise((resolve) => setTimeout(resolve, 1)); text("timer");',
        'store("k", {big: "x".repeat(100000)}); text("stored");',
        'throw new Error("boom");',
        'notify("note"); text("notified");',
    ]
    for index, source in enumerate(sources * 5):
        cells += 1
        session.exec(f"c{index}", source)
    cells += 1
    yielded = session.exec("y", "yield_control(); await new Promise((r) => setTimeout(r, 5));")
    assert "Script running" in yielded.items[0]["text"], yielded
    session.wait('{"cell_id": "31", "yield_time_ms": 10000}')
    assert all_closed.wait(DEADLINE_S), (len(closed), cells)
    session.shutdown()
    assert _alive_after_closing(tracked) == []
    assert sum(isinstance(ref(), CellRuntime) for ref in tracked.refs) == 0
    assert len(tracked.refs) >= 2 * cells  # every cell's actor and runtime was tracked

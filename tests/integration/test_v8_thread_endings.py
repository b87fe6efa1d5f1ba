"""A cell's quiescent point may be handled on its isolate's own thread (the cell actor's
thread is not woken for it). That thread may then write the cell's end to the log and
answer its caller; the cell's context goes back to the pool only afterwards: disposing
of it waits for that thread, and the pool's one reaper must not wait on the log."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cellfleet.broker.journal import RedisJournal
from cellfleet.ops.host import Host

CELLS = 4


@pytest.fixture
def host(redis_server: Any) -> Iterator[Host]:
    host = Host(redis_server.url, pool_size=1)
    yield host
    host.close()


def test_a_cell_ended_on_its_isolate_s_thread_gives_its_context_back_after_the_log(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    ending = threading.Event()  # a cell's end is being written
    go_on = threading.Event()
    seen: list[tuple[bool, int]] = []  # per ending: on a V8 thread, contexts released
    finish = RedisJournal.finish

    def held(journal: RedisJournal, *args: Any, **kwargs: Any) -> Any:
        # (a thread V8 made, not Python's threading: a dummy thread here)
        on_v8 = isinstance(threading.current_thread(), threading._DummyThread)
        seen.append((on_v8, host.pool._disposing))
        ending.set()
        assert go_on.wait(10)
        return finish(journal, *args, **kwargs)

    monkeypatch.setattr(RedisJournal, "finish", held)
    session = host.open_session()
    source = 'await new Promise((resolve) => setTimeout(resolve, 5)); text("done");'
    with ThreadPoolExecutor(1) as executor:
        for index in range(CELLS):
            host.pool.wait_idle()
            ending.clear()
            go_on.clear()
            answer = executor.submit(session.exec, f"c{index}", source)
            assert ending.wait(10)
            go_on.set()
            assert answer.result(10).success
    session.shutdown()
    on_v8 = [released for on_v8_thread, released in seen if on_v8_thread]
    assert on_v8, f"no cell ended on its isolate's thread: {seen}"
    assert on_v8 == [0] * len(on_v8)  # its context was still the cell's meanwhile

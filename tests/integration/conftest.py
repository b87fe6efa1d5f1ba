"""Fixtures of the session-layer tests: one host on the suite's Redis, sessions on it.

The host (context pool, scheduler, tool workers) is shared by the tests of a module,
which is what keeps them fast; each test gets its own `Gates` and its own sessions. (Not
by the whole run: its tool worker would take calls meant for other modules' workers.)
Every session a test opens is shut down afterwards and its event log is checked against
the invariants of `session_support.check_log` (one terminal event per cell, answers
after the events they report, tools ended before the terminal event, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import RedisProcess
from tests.integration.fleet_support import FleetHost
from tests.integration.session_support import (
    TIMEOUT_S,
    TOOLS,
    FactsAudit,
    Gates,
    Harness,
    check_log,
    handlers,
)

OpenSession = Callable[..., Harness]


class _GateBoard(Gates):
    """The shared host's `gate` tool: forwards each call to the running test's gates."""

    def __init__(self) -> None:
        super().__init__()
        self.current: Gates = self

    def handler(self, value: Any) -> Any:
        return self.current.handler(value)


_BOARD = _GateBoard()
_AUDIT = FactsAudit()  # every cell the shared hosts close


@pytest.fixture(scope="module", params=["in-process", "fleet"])
def shared_host(request: pytest.FixtureRequest) -> Iterator[Host]:
    """The module's host: in-process, then a fleet (a worker reached through Redis),
    where the same tests must see the same."""
    url: str | None = request.config.getoption("--redis-url")
    if not url:
        server: RedisProcess = request.getfixturevalue("redis_server")
        url = server.url
    if request.param == "fleet":
        fleet = FleetHost(url, handlers=handlers(_BOARD), audit=_AUDIT.record)
        yield fleet  # type: ignore[misc]
        fleet.close()
        return
    host = Host(url, handlers=handlers(_BOARD), audit=_AUDIT.record)
    yield host
    host.close()


@pytest.fixture
def gates() -> Iterator[Gates]:
    gates = Gates()
    _BOARD.current = gates
    yield gates
    gates.open_all()  # never leave a handler thread blocked behind a failed test
    _BOARD.current = _BOARD


@pytest.fixture
def host(shared_host: Host, gates: Gates) -> Host:
    return shared_host


@pytest.fixture
def open_session(host: Host, gates: Gates) -> Iterator[OpenSession]:
    """Open a session with the echo/fail/sleep/gate tools; checked when the test ends."""
    opened: list[Harness] = []

    def open_(**options: Any) -> Harness:
        harness = Harness(host=host, session=None)  # type: ignore[arg-type]
        options.setdefault("tools", TOOLS)
        options.setdefault("notify", harness.on_notify)
        options.setdefault("on_cell_closed", harness.on_cell_closed)
        harness.session = host.open_session(**options)
        # Library calls (`execute_to_pending`, ...) fail instead of hanging on a bug.
        harness.session._answer_timeout_s = TIMEOUT_S
        opened.append(harness)
        return harness

    yield open_
    gates.open_all()
    for harness in opened:
        harness.session.shutdown()
    for harness in opened:
        events = harness.events()
        check_log(events, shut_down=True)
        _AUDIT.check(harness.id, events)


@pytest.fixture
def harness(open_session: OpenSession) -> Harness:
    return open_session()

"""Local tools (`@tools.function(local=True)`): run by the process that runs the cell,
never through the tool stream, with the model-visible behaviour of any other tool, one
durable write per call (request and outcome together), replayable, and run again by the
owner that recovers a cell whose host died before the outcome was written."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cellfleet.actors.replay import replay
from cellfleet.broker import codec, crash
from cellfleet.broker import events as ev
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.tools import ToolKind
from cellfleet.broker.fleet.client import FleetClient
from cellfleet.broker.keys import Keys
from cellfleet.broker.tools import local
from cellfleet.broker.tools.invocation import ToolInvocation
from cellfleet.broker.tools.registry import (
    RetryableToolError,
    RetryPolicy,
    ToolCallError,
    ToolContext,
    ToolRegistry,
)
from cellfleet.broker.tools.running import run_call
from cellfleet.ops.host import Host
from cellfleet.ops.worker import CellWorker
from tests.integration import recovery_tools
from tests.integration.fleet_support import wait_for_key

THREADS: list[str] = []  # the threads local handlers ran on
KEPT: list[Any] = []  # what `meddle` returned, changed after it returned
STARTED = threading.Event()


def _registry(release: threading.Event) -> ToolRegistry:
    registry = ToolRegistry()

    @registry.function(local=True, input_schema={"type": "object"})
    def near(args: dict[str, Any]) -> Any:
        THREADS.append(threading.current_thread().name)
        return args

    @registry.function(input_schema={"type": "object"})
    def far(args: dict[str, Any]) -> Any:
        return args

    @registry.function(local=True)
    def refuse(reason: str) -> str:
        raise ToolCallError(f"refused: {reason}")

    @registry.function(local=True)
    def broken() -> str:
        raise KeyError("oops")

    @registry.function(local=True)
    def odd() -> Any:
        return {1, 2}

    @registry.function(local=True)
    def slow(ctx: ToolContext) -> str:
        STARTED.set()
        release.wait(30)
        return "cancelled" if ctx.cancelled.is_set() else "done"

    @registry.freeform(local=True)
    def shout(text: str) -> str:
        return text.upper()

    @registry.function(local=True, input_schema={"type": "object"})
    def meddle(args: dict[str, Any]) -> Any:
        args["seen"] = True  # the handler's copy: the log keeps what the cell sent
        KEPT.append(args)
        return args

    @registry.function(local=True)
    def garble_here() -> str:
        raise ToolCallError("half \ud83d pair")  # (a lone surrogate: not UTF-8)

    @registry.function()
    def garble() -> str:
        raise ToolCallError("half \ud83d pair")

    garbled_once: list[bool] = []

    @registry.function(retry=RetryPolicy(attempts=3, initial_backoff_s=0.01))
    def garble_once() -> str:
        if not garbled_once:
            garbled_once.append(True)
            raise RetryableToolError("half \ud83d pair")  # (its attempt is recorded)
        return "tried again"

    @registry.function(local=True)
    def leave() -> str:
        sys.exit(1)

    return registry


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def keys() -> Keys:
    return Keys(f"loc{uuid.uuid4().hex[:8]}")


@pytest.fixture
def host(redis_url: str, keys: Keys, release: threading.Event) -> Iterator[Host]:
    host = Host(redis_url, keys=keys, tools=_registry(release))
    yield host
    host.close()


def _texts(output: Any) -> list[str]:
    return [item.get("text", "") for item in output.items][1:]


def test_a_local_tool_runs_here_and_its_call_is_recorded_once_with_its_outcome(
    host: Host, keys: Keys, redis_url: str
) -> None:
    THREADS.clear()
    session = host.open_session()
    output = session.exec(
        "c",
        "text(JSON.stringify(await tools.near({a: 1})));"
        " text(JSON.stringify(await tools.far({b: 2})));"
        ' text(await tools.shout("hey"));',
    )
    assert _texts(output) == ['{"a":1}', '{"b":2}', "HEY"]
    assert THREADS
    assert all(name == "local-tool" for name in THREADS)
    events = [event for _, event in host.journal.read(session.id)]
    requested = [e.name for e in events if isinstance(e, ev.ToolRequested)]
    completed = [e.call_id for e in events if isinstance(e, ev.ToolCompleted)]
    assert requested == ["near", "far", "shout"]
    assert completed == ["tool-1", "tool-2", "tool-3"]
    # Only the remote call went through a tool stream.
    client = redis.Redis.from_url(redis_url)
    try:
        streams = [key for key in client.scan_iter(f"{keys.prefix}*calls*") if b"{" in key]
        sent = [
            fields[b"name"]
            for stream in streams
            if client.type(stream) == b"stream"
            for _, fields in client.xrange(stream)
            if b"name" in fields
        ]
    finally:
        client.close()
    assert sent.count(b"far") == 1
    assert b"near" not in sent
    assert b"shout" not in sent
    session.shutdown()
    report = replay(host.journal.read(session.id))
    assert report.identical, report.render()


def test_local_and_remote_calls_of_one_batch_each_go_their_way(host: Host) -> None:
    session = host.open_session()
    source = (
        "const all = await Promise.all([tools.near({i: 1}), tools.far({i: 2}),"
        " tools.near({i: 3}), tools.far({i: 4})]);"
        " text(JSON.stringify(all));"
    )
    output = session.exec("c", source)
    assert _texts(output) == ['[{"i":1},{"i":2},{"i":3},{"i":4}]']
    events = [event for _, event in host.journal.read(session.id)]
    ended = {e.call_id for e in events if isinstance(e, ev.ToolCompleted)}
    assert ended == {"tool-1", "tool-2", "tool-3", "tool-4"}
    session.shutdown()
    assert replay(host.journal.read(session.id)).identical


def test_a_handler_changing_its_input_or_result_changes_neither_record(host: Host) -> None:
    session = host.open_session()
    output = session.exec(
        "c",
        "const a = await tools.meddle({n: 1}); const b = await tools.meddle({n: 2});"
        " text(JSON.stringify([a, b]));",
    )
    for kept in KEPT:
        kept["later"] = True  # after the handler returned: nobody sees it
    assert _texts(output) == ['[{"n":1,"seen":true},{"n":2,"seen":true}]']
    events = [event for _, event in host.journal.read(session.id)]
    assert [e.input for e in events if isinstance(e, ev.ToolRequested)] == [{"n": 1}, {"n": 2}]
    session.shutdown()
    assert replay(host.journal.read(session.id)).identical


def test_an_error_text_with_a_lone_surrogate_fails_its_call_with_u_fffd(host: Host) -> None:
    """The outcome is recorded (with U+FFFD, as JavaScript's own lone surrogates are):
    it could not be, and the cell waited for ever."""
    session = host.open_session()
    output = session.exec(
        "c",
        "for (const call of [tools.garble_here, tools.garble, tools.garble_once]) {"
        " try { text(await call({})) } catch (e) { text(String(e)) } }",
    )
    assert _texts(output) == ["half \ufffd pair", "half \ufffd pair", "tried again"]
    session.shutdown()
    assert replay(host.journal.read(session.id)).identical


def test_a_local_handler_that_exits_fails_its_call(host: Host) -> None:
    session = host.open_session()
    output = session.exec("c", "try { await tools.leave({}) } catch (e) { text(String(e)) }")
    assert _texts(output) == [texts.tool_failed("leave", SystemExit(1))]
    session.shutdown()


def test_a_cancelled_local_call_gives_its_place_back(
    host: Host, release: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "MAX_IN_FLIGHT_PER_SESSION", 1)
    STARTED.clear()
    session = host.open_session()
    running = session.exec("c", "yield_control(); await tools.slow({});")
    assert "Script running" in running.items[0]["text"]
    assert STARTED.wait(10)
    session.terminate("1")  # its handler still runs, unheeded
    output = session.exec("d", 'text(await tools.shout("free"));')
    assert _texts(output) == ["FREE"]  # (the session's one place was given back)
    release.set()
    session.shutdown()


def test_a_cancelled_call_is_not_tried_again() -> None:
    attempts = []
    registry = ToolRegistry()

    @registry.function(retry=RetryPolicy(attempts=5, initial_backoff_s=0.01))
    def flaky(ctx: ToolContext) -> str:
        attempts.append(ctx.attempt)
        ctx.cancelled.set()  # (the cell ended meanwhile)
        raise RetryableToolError("again")

    invocation = ToolInvocation(session="s", cell="1", call_id="tool-1", name="flaky",
                                raw_name="flaky", kind=ToolKind.FUNCTION, input={})  # fmt: skip
    context = ToolContext(idempotency_key=invocation.idempotency_key)
    assert run_call(registry, invocation, context) == (None, "again")
    assert attempts == [1]


def test_a_local_tool_fails_as_any_tool_does(host: Host) -> None:
    session = host.open_session()
    source = """
      for (const call of [() => tools.refuse({reason: "no"}), () => tools.broken({}),
                          () => tools.odd({}), () => tools.shout(42)]) {
        try { text(JSON.stringify(await call())); } catch (error) { text(String(error)); }
      }
    """
    output = session.exec("c", source)
    assert _texts(output) == [
        "refused: no",
        texts.tool_failed("broken", KeyError("oops")),
        texts.tool_result_not_json("odd", str(codec.json_problem({1, 2}))),
        texts.tool_expects_string("shout"),
    ]
    session.shutdown()


def test_a_local_call_of_a_terminated_cell_is_cancelled(
    host: Host, release: threading.Event
) -> None:
    STARTED.clear()
    session = host.open_session()
    running = session.exec("c", "yield_control(); text(await tools.slow({}));")
    assert "Script running" in running.items[0]["text"]
    assert STARTED.wait(10)
    session.terminate("1")
    release.set()
    events = [event for _, event in host.journal.read(session.id)]
    assert [type(e).__name__ for e in events if isinstance(e, ev.ToolCancelled)] == [
        "ToolCancelled"
    ]
    assert not [e for e in events if isinstance(e, ev.ToolCompleted)]
    session.shutdown()


def test_a_fleet_worker_runs_the_local_tools_of_its_own_tool_set(
    redis_url: str, keys: Keys, release: threading.Event
) -> None:
    """No tool worker runs anywhere: the session's owner answers the call itself."""
    THREADS.clear()
    registry = _registry(release)
    worker = CellWorker(redis_url, tools=registry, tool_workers=0, keys=keys).start()
    client = FleetClient(redis_url, tools=registry, tool_workers=0, keys=keys)
    try:
        session = client.open_session()
        output = session.exec("c", "text(JSON.stringify(await tools.near({a: 1})));")
        assert _texts(output) == ['{"a":1}']
        assert THREADS == ["local-tool"]
        session.shutdown()
    finally:
        client.close()
        worker.stop()


CRASHING_CHILD = """
import os, sys
from cellfleet.broker.keys import Keys
from cellfleet.ops.host import Host
from tests.integration.recovery_tools import LOCAL
host = Host(sys.argv[1], keys=Keys(sys.argv[2]), pool_size=1, workers=0, tools=LOCAL)
session = host.open_session(session_id=sys.argv[3])
session.exec("c", sys.argv[4])
os._exit(3)  # (the crash point was not reached)
"""
CELL = 'text("a"); text(JSON.stringify(await tools.echo({n: 1}))); text("b"); store("k", 1);'


@pytest.mark.parametrize("point", ["local_tool_ran", "outcome_unwritten"])
def test_a_local_call_cut_short_by_a_crash_runs_again_for_the_recovered_cell(
    point: str, redis_url: str, keys: Keys, tmp_path: pathlib.Path
) -> None:
    """At least once: the handler ran (at `outcome_unwritten`, its outcome was handed to
    JavaScript too), its host died before the outcome was written; the next owner
    replays the cell to the call, which runs again, and the cell ends as it would have.
    (That nothing JavaScript does next is recorded first follows from the actor's
    order, which this kill, coming at once, does not probe.)"""
    session_id, runs = uuid.uuid4().hex, tmp_path / "runs"
    env = {**os.environ, crash.ENV: point, recovery_tools.RUNS_FILE: str(runs)}
    script = [sys.executable, "-c", CRASHING_CHILD, redis_url, keys.prefix, session_id, CELL]
    assert subprocess.run(script, env=env, timeout=60, check=False).returncode == -signal.SIGKILL
    raw = redis.Redis.from_url(redis_url)
    lease = keys.session(session_id).lease
    wait_for_key(raw, lease, lambda: not raw.exists(lease), "the killed host's lease lives")
    raw.close()
    os.environ[recovery_tools.RUNS_FILE] = str(runs)
    runs_before = len(recovery_tools.RUNS)  # (the module's record, which other tests read)
    host = Host(redis_url, keys=keys, pool_size=1, workers=0, tools=recovery_tools.LOCAL)
    try:
        session = host.open_session(session_id=session_id)
        done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
        assert (done.success, _texts(done)) == (True, ["a", '{"n":1}', "b"])
        assert _texts(session.exec("c", 'text(load("k"))')) == ["1"]
        assert runs.read_bytes() == b'{"n":1}\n{"n":1}\n'  # ran in both processes
        session.shutdown()
    finally:
        del os.environ[recovery_tools.RUNS_FILE]
        host.close()
        del recovery_tools.RUNS[runs_before:]

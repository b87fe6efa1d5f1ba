"""Cells left running by a SIGKILLed process are recovered by replay (issue 14).

A child process serves a session, starts cells, says `running` and is killed with
SIGKILL; the test then opens the session in a new `Host` (once the dead owner's lease
expired) and checks that each cell goes on where its log ended: nothing it showed the
model is shown again, nothing it did is lost, no tool call runs twice.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator

import orjson
import pytest
import redis

from cellfleet.actors.replay import recover
from cellfleet.actors.runtime import pool
from cellfleet.broker import codec, crash
from cellfleet.broker import events as ev
from cellfleet.broker.client import Session
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.responses import Pending
from cellfleet.broker.keys import Keys, tool_call_partition
from cellfleet.broker.tools.registry import ToolRegistry
from cellfleet.broker.tools.worker import ToolWorker
from cellfleet.ops.host import Host
from tests.integration import recovery_tools
from tests.integration.fleet_support import wait_for_key

CHILD = """
import json, os, signal, sys, threading
from cellfleet.broker.keys import Keys
from cellfleet.ops.host import Host
from tests.integration.recovery_tools import HANDLERS  # (no tool worker here: calls wait)
host = Host(sys.argv[1], keys=Keys(sys.argv[2]), pool_size=1, workers=0, handlers=HANDLERS)
if os.environ.get("DIE_AFTER_SENDING"):  # (at once, after sending this call to the workers)
    send = type(host.dispatcher).dispatch_batch
    def dying_after(dispatcher, calls, *args, **kwargs):
        handles = send(dispatcher, calls, *args, **kwargs)
        if any(call.call_id == os.environ["DIE_AFTER_SENDING"] for call, _ in calls):
            os.kill(os.getpid(), signal.SIGKILL)
        return handles
    type(host.dispatcher).dispatch_batch = dying_after
if os.environ.get("DIE_AFTER_NOTIFY"):  # (at once, after appending a notification)
    append = type(host.journal).append
    def dying(journal, events):
        append(journal, events)
        if any(type(event).__name__ == "NotificationSent" for event in events):
            os.kill(os.getpid(), signal.SIGKILL)
    type(host.journal).append = dying
arrived = threading.Event()  # (an outcome was handed to its cell: `resume` waits for it)
handing = type(host.dispatcher).dispatch_batch
def noting(dispatcher, calls, *args, **kwargs):
    def noted(on_outcome):
        return lambda outcome: (on_outcome(outcome), arrived.set())
    return handing(dispatcher, [(call, noted(told)) for call, told in calls], *args, **kwargs)
type(host.dispatcher).dispatch_batch = noting
session = host.open_session(session_id=sys.argv[3])
for source in json.loads(sys.argv[4]):
    if source.startswith("pending:"):  # (execute_to_pending: its answer's kind and ids)
        answer = session.execute_to_pending("c", source.removeprefix("pending:"))
        print(json.dumps([type(answer).__name__, answer.pending_tool_call_ids]), flush=True)
    elif source == "shutdown":  # (the crash point `shutdown_begun` ends the process)
        session.shutdown()
    elif source == "resume":  # (wait_to_pending once the paused cell 1 holds an outcome)
        assert arrived.wait(60)
        session.wait_to_pending("1")
    else:
        print(json.dumps(session.exec("c", source).items), flush=True)
print("running", flush=True)
sys.stdin.read()  # (until killed)
"""
FROZEN_CHILD = """
import sys
from cellfleet.broker.keys import Keys
from cellfleet.ops.host import Host
from tests.integration.recovery_tools import HANDLERS  # (no tool worker here: calls wait)
host = Host(sys.argv[1], keys=Keys(sys.argv[2]), pool_size=1, workers=0, handlers=HANDLERS)
release = host.pool.release  # (a cell's context released: its JavaScript stopped)
def releasing(context, **options):
    print("released", flush=True)
    release(context, **options)
host.pool.release = releasing
session = host.open_session(session_id=sys.argv[3])
print(session.exec("c", sys.argv[4]).running_cell_id, flush=True)
if sys.argv[5:] == ["late"]:  # (its renewal never comes first: as if late, or cut off)
    host.leases.stop()
sys.stdin.read()  # (until told to close its host)
host.close()
print("host closed", flush=True)
"""


@pytest.fixture(autouse=True)
def _runs_of_this_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """`recovery_tools.RUNS` counts this test's runs only (tool workers of this process
    run `echo` in several tests)."""
    monkeypatch.setattr(recovery_tools, "RUNS", [])


@pytest.fixture
def keys() -> Keys:
    return Keys(f"rec{uuid.uuid4().hex[:8]}")


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def killed_while_running(
    redis_url: str, keys: Keys, raw: redis.Redis, sources: list[str]
) -> tuple[str, list[list[dict[str, str]]]]:
    """Run `sources` as cells of a new session in a child process, SIGKILL it once they
    all answered, wait for its lease to expire; the session and the answers."""
    session = uuid.uuid4().hex
    script = [sys.executable, "-c", CHILD, redis_url, keys.prefix, session]
    child = subprocess.Popen(
        [*script, orjson.dumps(sources).decode()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    answers = []
    try:
        assert child.stdout is not None
        for _ in sources:
            answers.append(orjson.loads(child.stdout.readline()))
        assert child.stdout.readline() == b"running\n"
    finally:
        child.kill()
        child.wait(30)
    lease_lapsed(raw, keys, session, "the killed host's")
    return session, answers


def lease_lapsed(raw: redis.Redis, keys: Keys, session_id: str, whose: str) -> None:
    """Wait until the lease of `session_id`'s owner (`whose`) expired."""
    lease = keys.session(session_id).lease
    wait_for_key(raw, lease, lambda: not raw.exists(lease), f"{whose} lease lives")


@contextlib.contextmanager
def first_owner(
    redis_url: str, keys: Keys, session_id: str, cell: str, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`FROZEN_CHILD` serving `session_id`, once its `cell` yielded; killed at the end
    if still alive (continued first: it may be stopped)."""
    child = subprocess.Popen(
        [sys.executable, "-c", FROZEN_CHILD, redis_url, keys.prefix, session_id, cell, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline() == b"1\n"  # (yielded)
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.kill()
            child.wait(30)


def close_first_owner(child: subprocess.Popen[bytes]) -> None:
    """Have `FROZEN_CHILD` close its Host; it says so and exits cleanly."""
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.close()
    assert child.stdout.readlines()[-1] == b"host closed\n"  # (its pool's too)
    assert child.wait(30) == 0


def test_a_frozen_owner_resumed_after_a_takeover_leaves_its_calls_to_the_new_owner(
    redis_url: str,
    keys: Keys,
    raw: redis.Redis,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGSTOP, not SIGKILL: the owner is frozen past its lease while its cell waits on a
    tool call and a timer, and a new owner takes the session over and adopts the call.
    Resumed, the old owner learns it was fenced off: it drops the call without cancelling
    it (a cancel would delete the unread call, and the new owner would wait for ever),
    its timer's output is refused, and closing it touches nothing. The call then runs
    once and its outcome reaches the new owner, and the log holds each output once."""
    cell = js("""
        setTimeout(() => text("tick"), 1000);
        yield_control();
        text(JSON.stringify(await tools.echo({n: 1})));
    """)
    runs = tmp_path / "runs"
    monkeypatch.setenv(recovery_tools.RUNS_FILE, str(runs))  # (here and in the child)
    session_id = uuid.uuid4().hex
    host = None
    with first_owner(redis_url, keys, session_id, cell) as child:  # (its call sent)
        try:
            assert child.stdout is not None
            child.send_signal(signal.SIGSTOP)
            lease_lapsed(raw, keys, session_id, "the frozen owner's")
            host = Host(
                redis_url, keys=keys, pool_size=1, workers=0, handlers=recovery_tools.HANDLERS
            )
            session = host.open_session(session_id=session_id)  # (takes it over, adopts the call)
            child.send_signal(signal.SIGCONT)
            # Its timer fires at once: the output's append is refused (or the lease's
            # renewal finds it taken first), and the cell ends there.
            assert child.stdout.readline() == b"released\n"
            close_first_owner(child)
            worker = ToolWorker(host.dispatcher.client, host.registry, keys=keys, name="late")
            worker.start()
            try:
                done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
            finally:
                worker.stop()
            assert (done.success, texts_of(done.items)[1:]) == (True, ["tick", '{"n":1}'])
            assert runs.read_bytes() == b'{"n":1}\n'  # the handler ran once
            events = [e for _, e in host.journal.read(session_id) if e.cell == "1"]
            outputs = [e.item["text"] for e in events if isinstance(e, ev.OutputProduced)]
            assert outputs == ["tick", '{"n":1}']
            assert [type(e).__name__ for e in events if isinstance(e, ev.CellCompleted)] == [
                "CellCompleted"
            ]
            session.shutdown()
        finally:
            if host is not None:
                host.close()


def test_an_owner_that_learns_of_the_takeover_from_its_own_close_leaves_the_call_alone(
    redis_url: str, keys: Keys, raw: redis.Redis
) -> None:
    """The old owner's lease expired and the session was taken over (its call adopted),
    and the old owner hears of it only when it closes: its shutdown is refused, and its
    cell ends without cancelling the call (it cancelled it, unguarded: the new owner's
    cell waited for ever, and the close said nothing)."""
    cell = "yield_control(); text(JSON.stringify(await tools.echo({n: 1})))"
    session_id = uuid.uuid4().hex
    host = None
    with first_owner(redis_url, keys, session_id, cell, "late") as child:
        try:
            lease_lapsed(raw, keys, session_id, "the old owner's")
            host = Host(
                redis_url, keys=keys, pool_size=1, workers=0, handlers=recovery_tools.HANDLERS
            )
            session = host.open_session(session_id=session_id)
            running = session.wait('{"cell_id": "1", "yield_time_ms": 100}')  # (call adopted)
            assert running.running_cell_id == "1"
            close_first_owner(child)
            assert raw.hget(keys.session(session_id).tools, "1/tool-1") is None  # (not cancelled)
            worker = ToolWorker(host.dispatcher.client, host.registry, keys=keys, name="w").start()
            try:
                done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
            finally:
                worker.stop()
            assert (done.success, texts_of(done.items)[1:]) == (True, ['{"n":1}'])
            session.shutdown()
        finally:
            if host is not None:
                host.close()


def test_a_frozen_owner_resumed_after_a_takeover_stops_its_spinning_cell(
    redis_url: str, keys: Keys, raw: redis.Redis
) -> None:
    """As above, with a cell that spins and writes nothing: resumed, the old owner
    learns of the takeover from its lease's renewal, and ends the cell there (its
    context is released). It used to spin in the old owner for ever, nothing it did
    being written, so nothing refused. The new owner's copy can still be terminated."""
    cell = "text('spinning'); yield_control(); while (true) {}"
    session_id = uuid.uuid4().hex
    host = None
    with first_owner(redis_url, keys, session_id, cell) as child:  # (spinning)
        try:
            assert child.stdout is not None
            child.send_signal(signal.SIGSTOP)
            lease_lapsed(raw, keys, session_id, "the frozen owner's")
            host = Host(redis_url, keys=keys, pool_size=1, workers=0)
            session = host.open_session(session_id=session_id)  # (recovers it, spinning)
            child.send_signal(signal.SIGCONT)
            assert child.stdout.readline() == b"released\n"  # (the old owner's copy stopped)
            close_first_owner(child)
            stopped = session.wait('{"cell_id": "1", "terminate": true}')
            assert "Script terminated" in texts_of(stopped.items)[0]
            events = [e for _, e in host.journal.read(session_id) if e.cell == "1"]
            assert [type(e).__name__ for e in events if isinstance(e, ev.CellTerminated)] == [
                "CellTerminated"
            ]
            outputs = [e.item["text"] for e in events if isinstance(e, ev.OutputProduced)]
            assert outputs == ["spinning"]
            session.shutdown()
        finally:
            if host is not None:
                host.close()


def _events(raw: redis.Redis, keys: Keys, session: str) -> list[tuple[str, ev.AnyEvent]]:
    entries = raw.xrange(keys.session(session).events)
    return [(entry_id.decode(), codec.decode(session, fields)) for entry_id, fields in entries]


def texts_of(items: list[dict[str, str]]) -> list[str]:
    return [item.get("text", "") for item in items]


def js(source: str) -> str:
    return textwrap.dedent(source).strip()


def test_a_yielded_cell_waiting_on_a_timer_goes_on_after_its_host_is_killed(
    redis_url: str, keys: Keys, raw: redis.Redis
) -> None:
    cell = js("""
        text("before");
        yield_control();
        text("while waiting");
        await new Promise((resolve) => setTimeout(resolve, 300));
        text("after " + load("k"));
        store("k", "recovered");
    """)
    seed = 'store("k", "stored")'
    session_id, answers = killed_while_running(redis_url, keys, raw, [seed, cell])
    assert texts_of(answers[1])[1:] == ["before"]
    host = Host(redis_url, keys=keys, pool_size=1, workers=0)
    try:
        session = host.open_session(session_id=session_id)
        done = session.wait('{"cell_id": "2", "yield_time_ms": 10000}')
        assert done.success, done.items
        assert texts_of(done.items)[1:] == ["while waiting", "after stored"]
        assert texts_of(session.exec("c", 'text(load("k"))').items)[1:] == ["recovered"]
        events = [e for _, e in host.journal.read(session_id) if e.cell == "2"]
        recovered = [e for e in events if isinstance(e, ev.CellRecovered)]
        assert len(recovered) == 1
        assert recovered[0].problem is None
        outputs = [e.item["text"] for e in events if isinstance(e, ev.OutputProduced)]
        assert outputs == ["before", "while waiting", "after stored"]  # none twice
        session.shutdown()
    finally:
        host.close()


def test_a_tool_call_outstanding_at_the_kill_runs_once_and_reaches_the_new_owner(
    redis_url: str, keys: Keys, raw: redis.Redis
) -> None:
    cell = "yield_control(); text(JSON.stringify(await tools.echo({n: 1})))"
    session_id, _ = killed_while_running(redis_url, keys, raw, [cell])
    host = Host(redis_url, keys=keys, pool_size=1, workers=1, handlers=recovery_tools.HANDLERS)
    try:
        session = host.open_session(session_id=session_id)
        done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
        assert done.success, done.items
        assert texts_of(done.items)[1:] == ['{"n":1}']
        assert recovery_tools.RUNS == [{"n": 1}]
        session.shutdown()
    finally:
        host.close()


def test_a_call_out_on_the_tool_workers_stays_theirs_when_its_tool_became_local(
    redis_url: str,
    keys: Keys,
    raw: redis.Redis,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The call was out on the tool workers' stream when its host died, and the host that
    takes its cell over runs that tool locally (`local=True` since): it waits for the
    workers' outcome instead of running the call itself, or sending it again to the
    workers of its own tools. (It did either, and a worker of the old tools still
    running ran it too: twice.)"""
    runs = tmp_path / "runs"
    monkeypatch.setenv(recovery_tools.RUNS_FILE, str(runs))  # (here and in the child)
    started, go = threading.Event(), threading.Event()
    monkeypatch.setattr(recovery_tools, "GATE", [started, go])  # (this process's runs)
    old_tools = ToolRegistry.from_handlers(recovery_tools.HANDLERS)
    old = ToolWorker(raw, old_tools, keys=keys, name="old").start()
    host = None
    try:
        cell = "yield_control(); text(JSON.stringify(await tools.echo({n: 1})))"
        session_id, _ = killed_while_running(redis_url, keys, raw, [cell])
        calls = keys.tool_calls(old_tools.fingerprint, tool_call_partition(session_id))
        assert started.wait(30)  # (the old tools' worker runs the call, and waits)
        # The taker has a tool worker of its own tools: it must not be sent the call.
        host = Host(redis_url, keys=keys, pool_size=1, workers=1, tools=recovery_tools.LOCAL)
        session = host.open_session(session_id=session_id)
        # Its first answer comes after the cell was recovered and its call adopted.
        running = session.wait('{"cell_id": "1", "yield_time_ms": 100}')
        assert running.running_cell_id == "1"
        go.set()
        done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
        assert (done.success, texts_of(done.items)[1:]) == (True, ['{"n":1}'])

        def settled() -> bool:  # (the old worker read the call and acknowledged it)
            (group,) = raw.xinfo_groups(calls)
            return group["pending"] == 0 and group["entries-read"] == 1

        wait_for_key(raw, calls, settled, "the old tools' worker did not settle the call")
        assert runs.read_bytes() == b'{"n":1}\n'  # the handler ran once, on that worker
        session.shutdown()
    finally:
        go.set()
        old.stop()
        if host is not None:
            host.close()


@pytest.mark.parametrize("runtime", ["same", "other"])
def test_a_cell_whose_replay_diverges_is_said_lost_and_why_is_recorded(
    runtime: str, redis_url: str, keys: Keys, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`other`: the worker that takes the cell over runs another V8 or prelude than the
    one that recorded it (each cell's admission names its own): the reason says so."""
    cell = 'text("a"); yield_control(); await new Promise((r) => setTimeout(r, 60000))'
    session_id, _ = killed_while_running(redis_url, keys, raw, [cell])
    recorded = next(e for _, e in _events(raw, keys, session_id) if e.cell == "1").runtime
    assert recorded == pool.runtime_identity()
    if runtime == "other":
        monkeypatch.setattr(recover, "runtime_identity", lambda: "V8 0.0, prelude 000000000000")
    # The log says cell 1 showed something it does not show when replayed.
    forged = ev.OutputProduced(
        session=session_id, cell="1", seq=1000, item={"type": "input_text", "text": "forged"}
    )
    raw.xadd(keys.session(session_id).events, dict(codec.encode(forged)))
    host = Host(redis_url, keys=keys, pool_size=1, workers=0)
    try:
        session = host.open_session(session_id=session_id)
        lost = session.wait('{"cell_id": "1"}')
        assert (lost.success, texts_of(lost.items)) == (False, [texts.cell_unrecoverable("1")])
        events = [e for _, e in host.journal.read(session_id) if e.cell == "1"]
        recovered = [e for e in events if isinstance(e, ev.CellRecovered)]
        assert len(recovered) == 1
        assert "diverged" in str(recovered[0].problem)
        other = f"recorded under {recorded}; this worker runs V8 0.0, prelude 000000000000"
        assert (other in str(recovered[0].problem)) is (runtime == "other")
        ends = [e for e in events if isinstance(e, ev.CellCompleted)]
        assert [e.error_text for e in ends] == [texts.cell_unrecoverable("1")]
        session.shutdown()
    finally:
        host.close()


def test_recovered_cells_can_be_waited_on_terminated_and_shut_down(
    redis_url: str, keys: Keys, raw: redis.Redis
) -> None:
    """A recovered cell is live as before: waiting yields its output, terminating it
    discards its stored writes, and the shutdown ends the rest (cancelling its tool call,
    which nobody served, so that no worker runs it after the cell's end)."""
    sleeper = js("""
        text("one");
        yield_control();
        store("k", "never");
        text("two");
        await new Promise((resolve) => setTimeout(resolve, 60000));
    """)
    caller = "yield_control(); await tools.echo({})"
    session_id, _ = killed_while_running(redis_url, keys, raw, [sleeper, caller])
    host = Host(redis_url, keys=keys, pool_size=1, workers=0)
    try:
        session = host.open_session(session_id=session_id)
        running = session.wait('{"cell_id": "1", "yield_time_ms": 100}')
        assert (running.running_cell_id, texts_of(running.items)[1:]) == ("1", ["two"])
        stopped = session.wait('{"cell_id": "1", "terminate": true}')
        assert "Script terminated" in texts_of(stopped.items)[0]
        assert texts_of(session.exec("c", 'text(String(load("k")))').items)[1:] == ["undefined"]
        assert raw.hget(keys.session(session_id).tools, "2/tool-1") is None  # still open
        session.shutdown()
        assert raw.hget(keys.session(session_id).tools, "2/tool-1") == b"cancelled"
        ends = {
            e.cell: type(e).__name__
            for _, e in host.journal.read(session_id)
            if isinstance(e, ev.CellCompleted | ev.CellTerminated)
        }
        assert ends == {"1": "CellTerminated", "2": "CellTerminated", "3": "CellCompleted"}
    finally:
        host.close()


CRASHING_CHILD = """
import os, sys
from cellfleet.broker.keys import Keys
from cellfleet.ops.host import Host
from tests.integration.recovery_tools import HANDLERS  # (its tools run in the test)
host = Host(sys.argv[1], keys=Keys(sys.argv[2]), pool_size=1, workers=0, handlers=HANDLERS)
session = host.open_session(session_id=sys.argv[3])
if sys.argv[4] == "wait":
    session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
else:
    session.exec("c", sys.argv[4])
os._exit(3)  # (the crash point was not reached)
"""
CRASH_CELL = js("""
    text("a");
    await new Promise((resolve) => setTimeout(resolve, 50));
    text(JSON.stringify(await tools.echo({n: 1})));
    text("b");
    store("k", 1);
""")


def crash_at(point: str, redis_url: str, keys: Keys, session: str, what: str, runs: str) -> None:
    """Run `what` (a cell's source, or `wait` on cell 1) in a child process that dies
    at the crash point `point`."""
    env = {**os.environ, crash.ENV: point, recovery_tools.RUNS_FILE: runs}
    script = [sys.executable, "-c", CRASHING_CHILD, redis_url, keys.prefix, session, what]
    assert subprocess.run(script, env=env, timeout=60, check=False).returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    "point", ["events_appended", "tool_unsent", "tool_dispatched", "timer_recorded"]
)
def test_a_cell_whose_host_died_at_a_crash_point_completes_as_without_it(
    point: str, redis_url: str, keys: Keys, raw: redis.Redis, tmp_path: pathlib.Path
) -> None:
    """Each window of a crash inside a cell's life, opened on purpose: the next owner
    recovers the cell, which then shows the model exactly what it would have, stores
    what it would have, and has its tool call run once."""
    session_id, runs = uuid.uuid4().hex, tmp_path / "runs"
    crash_at(point, redis_url, keys, session_id, CRASH_CELL, str(runs))
    lease_lapsed(raw, keys, session_id, "the killed host's")
    os.environ[recovery_tools.RUNS_FILE] = str(runs)
    host = Host(redis_url, keys=keys, pool_size=1, workers=1, handlers=recovery_tools.HANDLERS)
    try:
        session = host.open_session(session_id=session_id)
        done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
        assert (done.success, texts_of(done.items)[1:]) == (True, ["a", '{"n":1}', "b"])
        assert texts_of(session.exec("c", 'text(load("k"))').items)[1:] == ["1"]
        assert runs.read_bytes() == b'{"n":1}\n'  # the handler ran once, in either process
        session.shutdown()
    finally:
        del os.environ[recovery_tools.RUNS_FILE]
        host.close()


def test_a_cell_not_admitted_when_its_host_died_never_existed(
    redis_url: str, keys: Keys, raw: redis.Redis, tmp_path: pathlib.Path
) -> None:
    """Killed between a cell's start and its admission: nothing of it is in the log and
    nothing it did was seen, so it never existed (its exec was never answered: the
    harness runs it again)."""
    session_id = uuid.uuid4().hex
    crash_at("cell_started", redis_url, keys, session_id, CRASH_CELL, str(tmp_path / "runs"))
    lease_lapsed(raw, keys, session_id, "the killed host's")
    host = Host(redis_url, keys=keys, pool_size=1, workers=0)
    try:
        session = host.open_session(session_id=session_id)
        missing = session.wait('{"cell_id": "1"}')
        assert texts_of(missing.items)[1:] == ["Script error:\n" + texts.cell_not_found("1")]
        assert [e for _, e in host.journal.read(session_id) if e.cell] == []
        assert not (tmp_path / "runs").exists()
        session.shutdown()
    finally:
        host.close()


def test_a_recovery_cut_short_by_a_crash_is_recovered_again(
    redis_url: str, keys: Keys, raw: redis.Redis, tmp_path: pathlib.Path
) -> None:
    """The owner that recovers a cell dies in the middle of its recovery: the owner
    after it recovers the cell from the same log, and nothing is lost or repeated."""
    session_id, runs = uuid.uuid4().hex, tmp_path / "runs"
    crash_at("tool_dispatched", redis_url, keys, session_id, CRASH_CELL, str(runs))
    lease_lapsed(raw, keys, session_id, "the killed host's")
    crash_at("cell_recovering", redis_url, keys, session_id, "wait", str(runs))
    lease_lapsed(raw, keys, session_id, "the killed host's")
    os.environ[recovery_tools.RUNS_FILE] = str(runs)
    host = Host(redis_url, keys=keys, pool_size=1, workers=1, handlers=recovery_tools.HANDLERS)
    try:
        session = host.open_session(session_id=session_id)
        done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
        assert (done.success, texts_of(done.items)[1:]) == (True, ["a", '{"n":1}', "b"])
        assert runs.read_bytes() == b'{"n":1}\n'
        recoveries = [
            e for _, e in host.journal.read(session_id) if isinstance(e, ev.CellRecovered)
        ]
        assert len(recoveries) == 1  # (the one cut short recorded nothing)
        session.shutdown()
    finally:
        del os.environ[recovery_tools.RUNS_FILE]
        host.close()


def test_a_cell_that_ended_unanswered_gives_its_answer_after_the_kill(
    redis_url: str, keys: Keys, raw: redis.Redis
) -> None:
    """A yielded cell completes while nobody waits (its completion is kept for the next
    wait) and its host is killed: the next owner keeps that answer for the next wait,
    with the output nobody was given, rather than saying the cell is not found."""
    cell = 'text("one"); yield_control(); text("two"); store("k", "kept")'
    session_id, answers = killed_while_running(redis_url, keys, raw, [cell])
    assert texts_of(answers[0])[1:] == ["one"]
    assert raw.hexists(keys.session(session_id).meta, "open:1")  # ended, not closed
    host = Host(redis_url, keys=keys, pool_size=1, workers=0)
    try:
        session = host.open_session(session_id=session_id)
        done = session.wait('{"cell_id": "1"}')
        assert (done.success, texts_of(done.items)[1:]) == (True, ["two"])
        gone = session.wait('{"cell_id": "1"}')
        assert texts_of(gone.items)[1:] == ["Script error:\n" + texts.cell_not_found("1")]
        assert texts_of(session.exec("c", 'text(load("k"))').items)[1:] == ["kept"]

        def closed() -> bool:
            log = host.journal.read(session_id)
            return any(isinstance(e, ev.CellClosed) and e.cell == "1" for _, e in log)

        stream = keys.session(session_id).events
        wait_for_key(raw, stream, closed, "cell 1's close is not recorded")
        assert not raw.hexists(keys.session(session_id).meta, "open:1")  # closed now
        session.shutdown()
    finally:
        host.close()


def test_a_cell_paused_at_a_pending_frontier_stays_paused_after_recovery(
    redis_url: str, keys: Keys, raw: redis.Redis
) -> None:
    """`execute_to_pending` answered at the cell's first frontier, then its host died:
    the recovered cell stands paused at that frontier (its tool's outcome, delivered
    meanwhile, waits), and the next `wait_to_pending` gets the next frontier, not the
    cell's completion (it used to run through to its end)."""
    cell = js("""
        const a = await tools.echo({n: 1});
        text("after " + a.n);
        const b = await tools.echo({n: 2});
        text("after " + b.n);
    """)
    session_id, answers = killed_while_running(redis_url, keys, raw, ["pending:" + cell])
    assert answers == [["Pending", ["tool-1"]]]
    # A tool worker runs the call first, so that its outcome is recorded when the
    # session is opened (and given to the cell at its recovery, before any wait).
    host = Host(redis_url, keys=keys, pool_size=1, workers=1, handlers=recovery_tools.HANDLERS)
    try:

        def recorded() -> bool:
            log = host.journal.read(session_id)
            return any(isinstance(e, ev.ToolCompleted) for _, e in log)

        wait_for_key(raw, keys.session(session_id).events, recorded, "no outcome recorded")
        session = host.open_session(session_id=session_id)
        frontier = session.wait_to_pending("1")
        assert isinstance(frontier, Pending)
        items = [item.get("text") for item in frontier.content_items]
        assert (items, frontier.pending_tool_call_ids) == (["after 1"], ["tool-2"])
        session.shutdown()
    finally:
        host.close()


def killed_after_resuming(redis_url: str, keys: Keys, cell: str, hook: dict[str, str]) -> str:
    """Run `cell` in a child with `execute_to_pending`, then `wait_to_pending` once its
    first call's outcome (a tool worker's, which the test runs) reached it; the child's
    `hook` kills it on the way to the next frontier. The session."""
    session_id = uuid.uuid4().hex
    script = [sys.executable, "-c", CHILD, redis_url, keys.prefix, session_id]
    child = subprocess.Popen(
        [*script, orjson.dumps(["pending:" + cell, "resume"]).decode()],
        stdout=subprocess.PIPE,
        env={**os.environ, **hook},
    )
    try:
        assert child.stdout is not None
        assert orjson.loads(child.stdout.readline()) == ["Pending", ["tool-1"]]
        assert child.wait(60) == -signal.SIGKILL
    finally:
        child.kill()
    return session_id


def recorded(host: Host, session_id: str, call_id: str) -> Callable[[], bool]:
    """Whether a tool worker recorded `call_id`'s outcome."""

    def done() -> bool:
        log = host.journal.read(session_id)
        return any(isinstance(e, ev.ToolCompleted) and e.call_id == call_id for _, e in log)

    return done


def assert_stops_at_the_next_frontier(session: Session) -> None:
    """The cell's next frontier, then (a plain wait goes on) its end."""
    frontier = session.wait_to_pending("1")
    assert isinstance(frontier, Pending), frontier
    items = [item.get("text") for item in frontier.content_items]
    assert (items, frontier.pending_tool_call_ids) == (["after 1"], ["tool-2"])
    done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
    assert (done.success, texts_of(done.items)[1:]) == (True, ["after 2"])


def test_a_cell_a_pending_observer_resumed_stops_at_its_next_frontier_after_recovery(
    redis_url: str, keys: Keys, raw: redis.Redis
) -> None:
    """`wait_to_pending` resumed the cell from its first frontier, and its host died
    before the next one (right after it appended the cell's `notify()`): the recovered
    cell stops at that next frontier as it would have, and the next `wait_to_pending` gets
    it, naming only the call issued since the last frontier (it used to name every call
    the replay made), although that call's outcome came first (it waits); a `wait` then
    continues the cell to its end."""
    cell = js("""
        const a = await tools.echo({n: 1});
        text("after " + a.n);
        notify("going on");
        const b = await tools.echo({n: 2});
        text("after " + b.n);
    """)
    host = Host(redis_url, keys=keys, pool_size=1, workers=0, handlers=recovery_tools.HANDLERS)
    worker = ToolWorker(host.dispatcher.client, host.registry, keys=keys, name="w").start()
    try:
        session_id = killed_after_resuming(redis_url, keys, cell, {"DIE_AFTER_NOTIFY": "1"})
        worker.stop()  # (it ran tool-1; tool-2 was not sent yet, and waits for the next)
        lease_lapsed(raw, keys, session_id, "the killed host's")
        events = [e for _, e in _events(raw, keys, session_id) if e.cell == "1"]
        answers = [i for i, e in enumerate(events) if isinstance(e, ev.ObservationDelivered)]
        assert isinstance(events[-1], ev.NotificationSent)  # (no frontier after it)
        went_on = events[answers[-1] :]
        assert any(isinstance(e, ev.OutputProduced) for e in went_on)  # (after the frontier)
        session = host.open_session(session_id=session_id)
        worker = ToolWorker(host.dispatcher.client, host.registry, keys=keys, name="w2").start()
        outcome = recorded(host, session_id, "tool-2")  # (which waits at the frontier)
        wait_for_key(raw, keys.session(session_id).events, outcome, "no outcome recorded")
        assert_stops_at_the_next_frontier(session)
        session.shutdown()
    finally:
        worker.stop()
        host.close()


def test_a_resumed_cell_stops_at_its_next_frontier_although_its_outcome_came_first(
    redis_url: str, keys: Keys, raw: redis.Redis
) -> None:
    """As above, but the next call went out before the host died (it was busy past it,
    so no frontier was answered), and a worker recorded its outcome before the session
    was taken over: recovery hands that outcome over, and it waits at the frontier too
    (it ran the cell to its end: the model skipped a frontier)."""
    cell = js("""
        const a = await tools.echo({n: 1});
        text("after " + a.n);
        const p = tools.echo({n: 2});
        let x = 0; for (let i = 0; i < 100000000; i++) { x += i; }
        const b = await p;
        text("after " + b.n);
    """)
    host = Host(redis_url, keys=keys, pool_size=1, workers=0, handlers=recovery_tools.HANDLERS)
    worker = ToolWorker(host.dispatcher.client, host.registry, keys=keys, name="w").start()
    try:
        session_id = killed_after_resuming(redis_url, keys, cell, {"DIE_AFTER_SENDING": "tool-2"})
        outcome = recorded(host, session_id, "tool-2")  # (while nobody owns the session)
        wait_for_key(raw, keys.session(session_id).events, outcome, "no outcome recorded")
        lease_lapsed(raw, keys, session_id, "the killed host's")
        session = host.open_session(session_id=session_id)
        assert_stops_at_the_next_frontier(session)
        session.shutdown()
    finally:
        worker.stop()
        host.close()


def test_cells_of_a_session_whose_shutdown_began_are_ended_not_run_again(
    redis_url: str, keys: Keys, raw: redis.Redis
) -> None:
    """The host dies right after it recorded the session's shutdown (crash point
    `shutdown_begun`), before it ended the cells: the next owner ends them as the
    shutdown would have (terminated), cancels their tool calls still out (no tool worker
    runs them after), and finishes the shutdown."""
    calls = 'text("a"); await tools.echo({n: 1}); store("k", "v")'
    sleeps = 'text("x"); yield_control(); await new Promise((r) => setTimeout(r, 60000))'
    session_id = uuid.uuid4().hex
    env = {**os.environ, crash.ENV: "shutdown_begun"}
    script = [sys.executable, "-c", CHILD, redis_url, keys.prefix, session_id]
    sources = orjson.dumps([f'// @exec: {{"yield_time_ms": 100}}\n{calls}', sleeps, "shutdown"])
    child = subprocess.run(
        [*script, sources.decode()], env=env, capture_output=True, timeout=60, check=False
    )
    assert child.returncode == -signal.SIGKILL
    lease_lapsed(raw, keys, session_id, "the killed host's")
    host = Host(redis_url, keys=keys, pool_size=1, workers=0, handlers=recovery_tools.HANDLERS)
    try:
        session = host.open_session(session_id=session_id)
        session.shutdown()
        events = [e for _, e in host.journal.read(session_id)]
        ends = {e.cell: e.reason for e in events if isinstance(e, ev.CellTerminated)}
        assert ends == {"1": ev.TerminationReason.SHUTDOWN, "2": ev.TerminationReason.SHUTDOWN}
        assert not any(isinstance(e, ev.CellCompleted | ev.CellRecovered) for e in events)
        assert raw.hget(keys.session(session_id).tools, "1/tool-1") == b"cancelled"
        assert isinstance(events[-1], ev.ShutdownFinished)
    finally:
        host.close()


def test_a_tool_worker_killed_after_recording_is_answered_for_by_another(
    redis_url: str, keys: Keys, tmp_path: pathlib.Path
) -> None:
    """A tool worker dies after it recorded a call's outcome and before it answered the
    host (crash point `tool_outcome_recorded`): the worker that takes the call over
    finds the outcome recorded and answers with it; the handler ran once."""
    runs = tmp_path / "runs"
    env = {**os.environ, "REDIS_URL": redis_url, crash.ENV: "tool_outcome_recorded"}
    env[recovery_tools.RUNS_FILE] = str(runs)
    tools_file = pathlib.Path(recovery_tools.__file__)
    command = [sys.executable, "-m", "cellfleet.ops.cli", "--key-prefix", keys.prefix]
    dying = subprocess.Popen(
        [*command, "tools", "--tools", str(tools_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = Host(redis_url, keys=keys, pool_size=1, workers=0, handlers=recovery_tools.HANDLERS)
    try:
        session = host.open_session()
        call = "yield_control(); text(JSON.stringify(await tools.echo({n: 1})))"
        assert session.exec("c", call).running_cell_id == "1"
        assert dying.wait(60) == -signal.SIGKILL  # (it ran the call and recorded it)
        taker = ToolWorker(
            host.dispatcher.client, host.registry, lease_s=0.2, keys=keys, name="taker"
        ).start()
        try:
            done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
        finally:
            taker.stop()
        assert (done.success, texts_of(done.items)[1:]) == (True, ['{"n":1}'])
        assert runs.read_bytes() == b'{"n":1}\n'  # the handler ran once
        session.shutdown()
    finally:
        dying.kill()
        host.close()

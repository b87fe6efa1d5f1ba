"""Nested tools through tool-dispatch worker processes (real Redis, real `cellfleet tools`)."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cellfleet.broker import events as ev
from cellfleet.broker import keys
from cellfleet.broker.contract.render import ToolOutput
from cellfleet.broker.tools.registry import ToolRegistry, load_tools_file
from cellfleet.broker.tools.worker import JOIN_WITHIN_S, ToolWorker
from cellfleet.ops.cli import EXIT_SLACK_S
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import start_redis
from cellfleet.ops.tools_worker import start_tools_process

REPO = Path(__file__).parents[2]
TOOLS_FILE = Path(__file__).parent / "fixtures" / "worker_tools.py"


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def env(redis_url: str, prefix: str) -> dict[str, str]:
    # Each test's host and workers have keys of their own: no call reaches another's.
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "TEST_PREFIX": prefix,
        "CELLFLEET_KEY_PREFIX": prefix,
    }


@pytest.fixture
def start_worker(env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(
        *,
        lease_s: float = 5.0,
        max_deliveries: int = 3,
        concurrency: int = 8,
        stop_grace_s: float = 5.0,  # a handler a test left blocked ends the worker soon
    ) -> subprocess.Popen[bytes]:
        process = start_tools_process(
            [
                "--tools",
                str(TOOLS_FILE),
                "--lease-s",
                str(lease_s),
                "--max-deliveries",
                str(max_deliveries),
                "--concurrency",
                str(concurrency),
                "--stop-grace-s",
                str(stop_grace_s),
            ],
            env,
            keys.Keys(env["TEST_PREFIX"]),
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(15)  # its grace, then its handlers handed back
        except subprocess.TimeoutExpired:  # a worker that does not stop fails the test
            process.kill()
            process.wait(10)
            raise


@pytest.fixture
def host(redis_url: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TEST_PREFIX", env["TEST_PREFIX"])
    registry = load_tools_file(TOOLS_FILE)
    host = Host(redis_url, tools=registry, workers=0, keys=keys.Keys(env["TEST_PREFIX"]))
    yield host
    host.close()


@pytest.fixture
def r(redis_client: redis.Redis, prefix: str) -> Callable[..., str]:
    def key(*parts: str) -> str:
        return ":".join((prefix, *parts))

    return key


def texts(output: ToolOutput) -> list[str]:
    return [item["text"] for item in output.items]


def wait_started(client: redis.Redis, key: str, timeout: float = 15) -> int:
    """Block until a gate reports its start; returns the worker pid."""
    item = client.blpop([key], timeout=timeout)
    assert item is not None, f"nothing started on {key}"
    return int(item[1])


def log(host: Host, session: str) -> list[ev.AnyEvent]:
    return [event for _, event in host.journal.read(session)]


def test_round_trip_payloads_and_errors(host, start_worker):
    start_worker()
    session = host.open_session()
    output = session.exec(
        "c",
        """
        text(JSON.stringify(await tools.echo({x: 1})));
        text(await tools.shout("hi"));
        for (const bad of [() => tools.shout({a: 1}), () => tools.echo("s"),
                           () => tools.fail({message: "nope"})]) {
          try { await bad() } catch (e) { text(typeof e + ": " + e) }
        }
    """,
    )
    assert texts(output)[1:] == [
        '{"x":1}',
        "HI",
        "string: tool `shout` expects a string input",
        "string: tool `echo` expects a JSON object for arguments",
        "string: nope",
    ]
    kinds = [type(e).__name__ for e in log(host, session.id)]
    assert kinds.count("ToolRequested") == 5
    assert kinds.count("ToolCompleted") == 2  # the bad payloads failed before any worker


def test_parallel_calls_overlap(host, start_worker, redis_client, r):
    start_worker()
    session = host.open_session()
    backend = session.backend
    _, answer = backend.execute(
        "c",
        'const rs = await Promise.all([tools.gate({name: "a"}),'
        ' tools.gate({name: "b"})]); text(rs.length)',
        30_000,
        None,
    )
    wait_started(redis_client, r("started", "a"))
    wait_started(redis_client, r("started", "b"))  # both run before either may finish
    redis_client.set(r("open", "a"), 1)
    redis_client.set(r("open", "b"), 1)
    result = answer.result(15)
    assert [item["text"] for item in result.content_items] == ["2"]


def test_a_busy_worker_reads_the_next_call_once_a_slot_frees(host, start_worker, redis_client, r):
    start_worker(concurrency=1)
    session = host.open_session()
    _, answer = session.backend.execute(
        "c",
        'const rs = await Promise.all([tools.gate({name: "p"}), tools.gate({name: "q"})]);'
        " text(rs.map((g) => g.gate).join())",
        30_000,
        None,
    )
    wait_started(redis_client, r("started", "p"))
    # Its one slot is taken: q must not start meanwhile (a second to show that it would).
    assert redis_client.blpop([r("started", "q")], timeout=1) is None
    redis_client.set(r("open", "p"), 1)
    wait_started(redis_client, r("started", "q"))
    redis_client.set(r("open", "q"), 1)
    assert [item["text"] for item in answer.result(15).content_items] == ["p,q"]


def test_cancellation_on_completion_tells_the_handler(host, start_worker, redis_client, r):
    start_worker()
    session = host.open_session()
    _, answer = session.backend.execute(
        "c", 'tools.gate({name: "c"}); await tools.gate({name: "c2"}); text("done")', 60_000, None
    )
    wait_started(redis_client, r("started", "c"))  # running when the cell completes
    wait_started(redis_client, r("started", "c2"))
    redis_client.set(r("open", "c2"), 1)
    assert [i["text"] for i in answer.result(15).content_items] == ["done"]
    assert redis_client.blpop([r("cancelled", "c")], timeout=15) is not None
    kinds = [type(e).__name__ for e in log(host, session.id)]
    assert kinds.index("ToolCancelled") < kinds.index("CellCompleted")


def test_call_cancelled_before_it_ran_is_skipped(host, start_worker, redis_client, r):
    session = host.open_session()
    output = session.exec("c", 'tools.gate({name: "never"}); text("done")')
    assert texts(output)[1:] == ["done"]
    start_worker()  # only now: the call waits in the stream, already cancelled
    done = session.exec("d", "text(JSON.stringify(await tools.echo({after: 1})))")
    assert texts(done)[1:] == ['{"after":1}']
    assert redis_client.get(r("runs", "never")) is None


def test_cancellation_on_termination(host, start_worker, redis_client, r):
    start_worker()
    session = host.open_session()
    cell_id, answer = session.backend.execute("c", 'await tools.gate({name: "t"})', 60_000, None)
    wait_started(redis_client, r("started", "t"))
    terminated = session.backend.terminate(cell_id).result(15)
    assert type(terminated).__name__ == "Terminated"
    assert type(answer.result(15)).__name__ == "Terminated"
    assert redis_client.blpop([r("cancelled", "t")], timeout=15) is not None
    kinds = [type(e).__name__ for e in log(host, session.id)]
    assert kinds.index("ToolCancelled") < kinds.index("CellTerminated")


def test_a_cancellation_the_worker_did_not_hear_still_reaches_the_handler(
    host, start_worker, redis_client, r
):
    """A worker that was not listening when a call was cancelled (not yet subscribed,
    or reconnecting) finds the cancellation in the call's record within a lease tick."""
    start_worker(lease_s=0.3)
    session = host.open_session()
    session.backend.execute("c", 'await tools.gate({name: "q"})', 60_000, None)
    wait_started(redis_client, r("started", "q"))
    requested = [e for e in log(host, session.id) if isinstance(e, ev.ToolRequested)]
    field = keys.tool_call_field(requested[0].cell, requested[0].call_id)
    tools = host.journal.keys.session(session.id).tools
    redis_client.hsetnx(tools, field, "cancelled")  # unpublished
    assert redis_client.blpop([r("cancelled", "q")], timeout=15) is not None


def test_kill_9_mid_call_is_taken_over_once(host, start_worker, redis_client, r):
    first = start_worker(lease_s=0.5)
    session = host.open_session()
    _, answer = session.backend.execute(
        "c", 'const g = await tools.gate({name: "k"}); text(g.gate)', 60_000, None
    )
    pid = wait_started(redis_client, r("started", "k"))
    assert pid == first.pid
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = start_worker(lease_s=0.5)
    assert wait_started(redis_client, r("started", "k")) == second.pid  # after the lease
    redis_client.set(r("open", "k"), 1)
    result = answer.result(30)
    assert [item["text"] for item in result.content_items] == ["k"]
    events = log(host, session.id)
    assert sum(isinstance(e, ev.ToolCompleted) for e in events) == 1
    assert sum(isinstance(e, ev.ToolResultDelivered) for e in events) == 1
    assert int(redis_client.get(r("runs", "k"))) == 2


def test_slow_healthy_handler_is_not_stolen(host, start_worker, redis_client, r):
    start_worker(lease_s=0.3)
    start_worker(lease_s=0.3)
    session = host.open_session()
    _, answer = session.backend.execute(
        "c", 'text((await tools.gate({name: "s"})).gate)', 60_000, None
    )
    wait_started(redis_client, r("started", "s"))
    # Hold the call for several leases while the other worker looks for stale entries.
    assert redis_client.blpop([r("never")], timeout=1.5) is None
    redis_client.set(r("open", "s"), 1)
    assert [i["text"] for i in answer.result(15).content_items] == ["s"]
    assert int(redis_client.get(r("runs", "s"))) == 1


def test_retries_are_recorded(host, start_worker):
    start_worker()
    session = host.open_session()
    output = session.exec("c", 'text(await tools.flaky({name: "f"}))')
    assert texts(output)[1:] == ["ok after 3"]
    attempts = [e for e in log(host, session.id) if isinstance(e, ev.ToolAttemptFailed)]
    assert [(a.attempt, a.error) for a in attempts] == [
        (1, "attempt 1 failed"),
        (2, "attempt 2 failed"),
    ]


def test_dead_letter_after_too_many_deliveries(host, start_worker, redis_client, r):
    for _ in range(3):
        start_worker(lease_s=0.3, max_deliveries=2)
    session = host.open_session()
    output = session.exec("c", 'try { await tools.die({name: "d"}) } catch (e) { text(e) }')
    assert texts(output)[1:] == ["nested tool call `die` was abandoned after 2 deliveries"]
    assert redis_client.llen(r("died", "d")) == 2
    dead = redis_client.xrange(host.journal.keys.tool_dead_letters)
    assert any(
        fields[b"call_id"] == b"tool-1" and fields[b"session"] == session.id.encode()
        for _, fields in dead
    )


def test_per_session_in_flight_bound(host, start_worker, redis_client, r):
    start_worker()
    host.dispatcher.max_in_flight_per_session = 2
    session = host.open_session()
    _, answer = session.backend.execute(
        "c",
        """
        const calls = [tools.gate({name: "b1"}), tools.gate({name: "b2"})];
        try { await tools.echo({}) } catch (e) { text(e) }
        exit();
    """,
        30_000,
        None,
    )
    result = answer.result(15)
    assert [i["text"] for i in result.content_items] == [
        "too many nested tool calls in flight in this session (limit 2)"
    ]


def test_worker_runs_no_more_than_its_concurrency(host, start_worker, redis_client, r):
    start_worker(concurrency=1)
    session = host.open_session()
    _, answer = session.backend.execute(
        "c",
        'await Promise.all([tools.gate({name: "w1"}), tools.gate({name: "w2"})]); text("both")',
        60_000,
        None,
    )
    first = redis_client.blpop([r("started", "w1"), r("started", "w2")], timeout=15)
    assert first is not None
    other = r("started", "w2") if first[0].decode() == r("started", "w1") else r("started", "w1")
    assert redis_client.blpop([other], timeout=0.5) is None  # one slot: the other waits
    redis_client.set(r("open", "w1"), 1)
    redis_client.set(r("open", "w2"), 1)
    assert [i["text"] for i in answer.result(15).content_items] == ["both"]


def test_a_worker_without_access_to_the_cancel_channel_still_serves_and_cancels(
    host, start_worker, redis_client, env, r
):
    """An ACL user may not subscribe to channels (Redis 7's default for new users):
    the worker starts at once, serves calls, and learns of cancellations by lease."""
    user = f"nochan{r('x').replace(':', '')}"
    redis_client.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"], reset_channels=True
    )
    try:
        scheme, rest = env["REDIS_URL"].split("://", 1)
        env["REDIS_URL"] = f"{scheme}://{user}:pw@{rest}"
        start_worker(lease_s=0.3)
        session = host.open_session()
        cell_id, _ = session.backend.execute("c", 'await tools.gate({name: "n"})', 60_000, None)
        wait_started(redis_client, r("started", "n"))
        assert type(session.backend.terminate(cell_id).result(15)).__name__ == "Terminated"
        assert redis_client.blpop([r("cancelled", "n")], timeout=15) is not None
    finally:
        redis_client.acl_deluser(user)


class _FailingOnce:
    """A Redis client whose first XREADGROUP fails with an error that is not a
    connection error (redis-py raises DataError for a bad COUNT, for one)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.failed = False

    def __getattr__(self, name: str) -> object:
        if name == "xreadgroup" and not self.failed:
            self.failed = True

            def fail(*args: object, **kwargs: object) -> object:
                raise redis.DataError("refused once")

            return fail
        return getattr(self._client, name)


def test_the_read_loop_outlives_an_error_of_redis(host, redis_url, env):
    from cellfleet.broker.keys import Keys

    client = _FailingOnce(redis.Redis.from_url(redis_url))
    registry = load_tools_file(TOOLS_FILE)
    worker = ToolWorker(client, registry, keys=Keys(env["TEST_PREFIX"])).start()  # type: ignore[arg-type]
    try:
        session = host.open_session()
        output = session.exec("c", "text(JSON.stringify(await tools.echo({x: 1})))")
        assert client.failed
        assert texts(output)[1:] == ['{"x":1}']
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("set", "Type is not JSON serializable: set"),
        ("bytes", "Type is not JSON serializable: bytes"),
        ("object", "Type is not JSON serializable: _Opaque"),
        ("big", "Integer exceeds 53-bit range"),
    ],
)
def test_a_result_that_is_not_json_fails_the_call_once(
    host, start_worker, redis_client, r, kind, problem
):
    start_worker()
    session = host.open_session()
    output = session.exec(
        "c", f'try {{ await tools.unjson({{kind: "{kind}"}}) }} catch (e) {{ text(e) }}'
    )
    assert texts(output)[1:] == [f"tool `unjson` returned a value that is not JSON: {problem}"]
    assert int(redis_client.get(r("unjson", kind))) == 1  # never run again
    failed = [e for e in log(host, session.id) if isinstance(e, ev.ToolFailed)]
    assert len(failed) == 1


def test_a_stopping_worker_finishes_the_calls_it_runs(host, start_worker, redis_client, r):
    """Issue 11, item 1: SIGTERM stops a worker taking calls, not the calls it runs (it
    answered them `cancelled`, or handed them to another worker to run twice)."""
    first = start_worker(concurrency=1)  # busy with `h`: every later call is the second's
    session = host.open_session()
    _, held = session.backend.execute(
        "c", 'text((await tools.gate({name: "h"})).pid)', 60_000, None
    )
    assert wait_started(redis_client, r("started", "h")) == first.pid
    second = start_worker()
    first.send_signal(signal.SIGTERM)
    _, later = session.backend.execute(
        "d", 'text((await tools.gate({name: "g"})).pid)', 60_000, None
    )
    assert wait_started(redis_client, r("started", "g")) == second.pid
    redis_client.set(r("open", "g"), 1)
    assert [item["text"] for item in later.result(15).content_items] == [str(second.pid)]
    redis_client.set(r("open", "h"), 1)
    assert [item["text"] for item in held.result(15).content_items] == [str(first.pid)]
    assert first.wait(15) == 0
    assert redis_client.get(r("runs", "h")) == b"1"


def test_a_call_outliving_the_stop_grace_is_taken_over(host, start_worker, redis_client, r):
    """A handler still running when the grace ends is left behind: the worker exits
    without answering, and another worker runs the call once the lease expired."""
    first = start_worker(stop_grace_s=0.1)
    session = host.open_session()
    _, answer = session.backend.execute(
        "c", 'text((await tools.gate({name: "h"})).pid)', 60_000, None
    )
    assert wait_started(redis_client, r("started", "h")) == first.pid
    second = start_worker(lease_s=0.5)
    first.send_signal(signal.SIGTERM)
    assert first.wait(15) == 0
    assert wait_started(redis_client, r("started", "h")) == second.pid
    redis_client.set(r("open", "h"), 1)
    assert [item["text"] for item in answer.result(15).content_items] == [str(second.pid)]


def test_calls_reach_only_workers_of_the_sessions_own_tools(redis_url, start_worker, env, r):
    """Two hosts on one Redis and key prefix, each with its own `echo`: each session's
    calls are answered by its own tools (a process without them answered `no handler`,
    another one's `echo` answered for it)."""
    mine, theirs = ToolRegistry(), ToolRegistry()

    @mine.function(description="Mine.")
    def echo(value: str) -> str:
        return f"mine: {value}"

    @theirs.function(name="echo", description="Theirs.")
    def other_echo(value: str) -> str:
        return f"theirs: {value}"

    prefix = keys.Keys(env["TEST_PREFIX"])
    hosts = [Host(redis_url, tools=registry, keys=prefix) for registry in (mine, theirs)]
    bare = Host(redis_url, keys=prefix)  # no tools: its worker serves nothing
    try:
        calls = "for (let i = 0; i < 8; i++) text(await tools.echo({value: `x${i}`}));"
        outputs = [host.open_session().exec("c", calls) for host in hosts]
        assert [texts(output)[1:] for output in outputs] == [
            [f"mine: x{i}" for i in range(8)],
            [f"theirs: x{i}" for i in range(8)],
        ]
    finally:
        for host in (*hosts, bare):
            host.close()


def test_workers_serve_again_after_redis_lost_its_data(tmp_path, prefix, caplog):
    """After a FLUSHALL (or a restart without its append-only file, or a failover to an
    empty replica) the workers' consumer group is gone: a worker re-creates it and
    serves the calls made since (they logged NOGROUP for ever, the calls hung)."""
    caplog.set_level(logging.WARNING, logger=ToolWorker.__module__)
    server = start_redis(tmp_path / "redis")  # its own: FLUSHALL wipes every key
    admin = redis.Redis.from_url(server.url)
    registry = ToolRegistry.from_handlers({"echo": lambda value: value})
    host = Host(server.url, tools=registry, keys=keys.Keys(prefix))
    try:
        before = host.open_session().exec("c", "text(JSON.stringify(await tools.echo({x: 1})))")
        assert texts(before)[1:] == ['{"x":1}']
        admin.flushall()
        session = host.open_session()
        after = session.exec("c", "text(JSON.stringify(await tools.echo({x: 2})))")
        assert texts(after)[1:] == ['{"x":2}']
        regrouped = [r.getMessage() for r in caplog.records if "re-created" in r.getMessage()]
        calls = host.dispatcher.calls_of(session.id)
        assert sum(calls in message for message in regrouped) == 1  # once, not per read
        assert len(regrouped) == len(set(regrouped)) <= keys.TOOL_CALL_PARTITIONS
    finally:
        host.close()
        admin.close()
        server.stop()


def test_a_worker_never_answers_a_call_it_gave_up_on_stopping(redis_url, prefix):
    """A handler that outlives the stop grace is left to another worker, which runs
    the call again: the stopped worker's late result is dropped (it was recorded and
    answered first, so the call took effect twice and the answer came from the worker
    that had given it up)."""
    registry = ToolRegistry()
    runs = itertools.count(1)
    started: queue.Queue[int] = queue.Queue()  # each run's number, as it starts
    release = [threading.Event(), threading.Event()]  # each run's end

    @registry.function(description="Hold until the test releases this run.")
    def hold() -> int:
        run = next(runs)
        started.put(run)
        release[run - 1].wait(30)
        return run

    prefix_keys = keys.Keys(prefix)
    host = Host(redis_url, tools=registry, workers=0, keys=prefix_keys)
    workers: list[ToolWorker] = []

    def worker(**options: float) -> ToolWorker:
        client = redis.Redis.from_url(redis_url)
        workers.append(ToolWorker(client, registry, keys=prefix_keys, **options).start())
        return workers[-1]

    try:
        first = worker(stop_grace_s=0.1)
        session = host.open_session()
        _, answer = session.backend.execute("c", "text(await tools.hold({}))", 60_000, None)
        assert started.get(timeout=15) == 1
        first.stop()
        assert first.unfinished == 1  # run 1 outlived the grace
        worker(lease_s=0.3)
        assert started.get(timeout=15) == 2  # taken over once the lease expired
        release[0].set()
        with first._slot_freed:  # run 1 ended and the first worker is done with it
            assert first._slot_freed.wait_for(lambda: not first._running, 15)
        release[1].set()
        assert [item["text"] for item in answer.result(15).content_items] == ["2"]
        completed = [e for e in log(host, session.id) if isinstance(e, ev.ToolCompleted)]
        assert [e.result for e in completed] == [2]
    finally:
        for event in release:
            event.set()
        for each in workers:
            each.stop()
            each.client.close()
        host.close()


class _Stuck:
    """A Redis client whose XREADGROUP and XAUTOCLAIM hang once `stuck` is set, as on
    a connection that stopped answering (the worker's client has no socket timeout)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.stuck = threading.Event()
        self.release = threading.Event()
        self.hanging: set[str] = set()

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self._client, name)
        if name not in ("xreadgroup", "xautoclaim"):
            return attribute

        def call(*args: object, **kwargs: object) -> object:
            if self.stuck.is_set():
                self.hanging.add(name)
                self.release.wait(60)
            return attribute(*args, **kwargs)

        return call


def test_stop_takes_its_grace_and_a_bounded_join_with_loops_stuck_in_redis(redis_url, prefix):
    """Loops stuck in Redis calls are left behind after `JOIN_WITHIN_S` in all (the stop
    waited 5 s for each: with the grace, past the 15 s a worker process is given)."""
    client = _Stuck(redis.Redis.from_url(redis_url))
    registry = ToolRegistry.from_handlers({"echo": lambda value: value})
    worker = ToolWorker(
        client,  # type: ignore[arg-type]
        registry,
        keys=keys.Keys(prefix),
        lease_s=0.3,
        stop_grace_s=0.1,
    ).start()
    try:
        client.stuck.set()
        deadline = time.monotonic() + 15
        while client.hanging != {"xreadgroup", "xautoclaim"}:  # the read and lease loops
            assert time.monotonic() < deadline, f"only {client.hanging} hang"
            client.release.wait(0.01)
        began = time.monotonic()
        worker.stop()
        assert time.monotonic() - began < 0.1 + JOIN_WITHIN_S + 1
    finally:
        client.release.set()
        worker.stop()
        client.close()


def test_a_terminated_worker_ends_even_if_a_thread_holds_its_exit(env, prefix, tmp_path):
    """Whatever holds the interpreter's exit after the stop (here a thread that is not
    a daemon, as a handler the worker lost track of was, or one a tools file started),
    the process is gone `EXIT_SLACK_S` after its stop, with the stop's status (the
    program's exit deadline; `STOP_SLACK_S` bounds a stop that itself hangs)."""
    tools = tmp_path / "lingering_tools.py"
    tools.write_text(
        "import threading\n"
        "from cellfleet.broker.tools.registry import ToolRegistry\n"
        "tools = ToolRegistry.from_handlers({'echo': lambda value: value})\n"
        "threading.Thread(target=threading.Event().wait, name='lingers').start()\n"
    )
    grace = 0.1
    process = start_tools_process(
        ["--tools", str(tools), "--stop-grace-s", str(grace)], env, keys.Keys(prefix)
    )
    try:
        process.terminate()
        assert process.wait(grace + EXIT_SLACK_S + 5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_the_calls_stream_is_trimmed_once_every_worker_is_done(host, redis_url, env, redis_client):
    """XACK does not delete: without trimming the calls stream only grows. A worker's
    upkeep deletes what was acknowledged; an unacknowledged call is kept."""
    from cellfleet.broker.keys import Keys

    keys = Keys(env["TEST_PREFIX"])
    registry = load_tools_file(TOOLS_FILE)
    worker = ToolWorker(redis.Redis.from_url(redis_url), registry, keys=keys, lease_s=0.3).start()
    streams = keys.tool_call_streams(registry.fingerprint)
    try:
        session = host.open_session()
        calls = host.dispatcher.calls_of(session.id)
        source = "for (let i = 0; i < 50; i++) await tools.echo({i}); text('done')"
        assert texts(session.exec("c", source))[1:] == ["done"]
        deadline = time.monotonic() + 15
        while redis_client.xlen(calls) and time.monotonic() < deadline:
            worker._stop.wait(0.05)  # (polling the stream, up to a deadline)
        assert redis_client.xlen(calls) == 0
        assert sum(redis_client.xlen(stream) for stream in streams) == 0
    finally:
        worker.stop()
    # A call taken and not acknowledged stays, and so does one not delivered yet.
    taken = redis_client.xadd(calls, {"taken": "1"})
    redis_client.xreadgroup("workers", "someone-else", {calls: ">"}, count=1)
    unread = redis_client.xadd(calls, {"unread": "1"})
    worker._trim(calls)
    assert [entry for entry, _ in redis_client.xrange(calls)] == [taken, unread]
    redis_client.xack(calls, "workers", taken)
    worker._trim(calls)
    assert [entry for entry, _ in redis_client.xrange(calls)] == [unread]


def test_a_host_s_replies_stream_expires_unless_its_reader_lives(
    redis_url: str, prefix: str, redis_client: redis.Redis
) -> None:
    """A killed host's replies stream does not stay for ever: every reply renews its
    time to live, and so does its reader while it lives."""
    from cellfleet.broker.tools.dispatch import REPLIES_TTL_MS

    host = Host(redis_url, handlers={"echo": lambda value: value}, keys=keys.Keys(prefix))
    try:
        session = host.open_session()
        assert texts(session.exec("c", "text(JSON.stringify(await tools.echo({})))"))[1:] == ["{}"]
        assert 0 < redis_client.pttl(host.dispatcher.replies) <= REPLIES_TTL_MS
    finally:
        host.close()
    assert not redis_client.exists(host.dispatcher.replies)  # (closed: deleted)


def test_lease_upkeep_of_a_worker_over_its_slots_claims_nothing(redis_url):
    """Read loops of several partitions may together hold more calls than slots (each
    reads up to what was free when it asked): the upkeep then takes nothing over, and
    does not ask Redis for a negative count (it did: `XAUTOCLAIM count must be ...`)."""
    from cellfleet.broker.contract.tools import ToolKind
    from cellfleet.broker.keys import Keys
    from cellfleet.broker.tools.invocation import ToolInvocation
    from cellfleet.broker.tools.registry import ToolContext
    from cellfleet.broker.tools.worker import _Running

    client = redis.Redis.from_url(redis_url)
    registry = ToolRegistry.from_handlers({"echo": lambda value: value})
    worker = ToolWorker(client, registry, concurrency=1, keys=Keys(uuid.uuid4().hex))
    for index in range(3):
        invocation = ToolInvocation(session="s", cell="1", call_id=f"tool-{index}", name="echo",
                                    raw_name="echo", kind=ToolKind.FUNCTION, input={})  # fmt: skip
        worker._running[invocation.idempotency_key] = _Running(
            "elsewhere", f"0-{index + 1}", ToolContext(invocation.idempotency_key), invocation,
            "replies", invocation.idempotency_key, 1, look_up=False)  # fmt: skip
    stream = worker.streams[0]
    client.xgroup_create(stream, keys.TOOL_WORKERS_GROUP, id="0", mkstream=True)
    worker._keep_up(stream, 1000)  # (raised DataError)
    assert worker._free_slots() == 0
    client.close()

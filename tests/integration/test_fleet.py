"""Several cell workers share the sessions: placement, capacity, one owner per session,
graceful handover, fencing of a frozen worker, and the command line (`worker`, `fleet`,
`run --fleet`). Workers run in this process (each with its own connections: they share
nothing but Redis) or as `cellfleet worker` processes where a signal is the point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from cellfleet.actors.session.actor import ActorSessionBackend
from cellfleet.broker import crash
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.responses import ObserveMode, Result, Terminated, Yielded
from cellfleet.broker.errors import (
    JournalUnavailableError,
    SessionFencedError,
    SessionOwnedElsewhereError,
)
from cellfleet.broker.events import (
    CellAdmitted,
    CellClosed,
    CellCompleted,
    CellRecovered,
    CellTerminated,
    ObservationDelivered,
    SessionOpened,
    ShutdownFinished,
)
from cellfleet.broker.fleet import FleetClient, NoWorkerError, wire
from cellfleet.broker.fleet.registry import DEFAULT_HEARTBEAT_MS, WorkerInfo, WorkerRegistry
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.keys import Keys
from cellfleet.broker.leases import CLAIM_LEASE_MS, Leases
from cellfleet.broker.redis.connect import connect_redis
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import RedisClusterProcess, RedisProcess
from cellfleet.ops.worker import LEASE_END_MARGIN_MS, CellWorker
from tests.integration.fleet_support import start_worker, wait_for_key
from tests.integration.session_support import TIMEOUT_S, text

ECHO = {"echo": lambda value: value}


@pytest.fixture(params=["server", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """Every fleet test runs on one Redis server and on a 3-master Redis Cluster."""
    explicit: str | None = request.config.getoption("--redis-url")
    if explicit:
        return explicit
    server: RedisProcess | RedisClusterProcess = request.getfixturevalue(f"redis_{request.param}")
    return server.url


@pytest.fixture
def keys() -> Keys:
    return Keys(f"fleet-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def fleet(redis_url: str, keys: Keys) -> Iterator[dict[str, Any]]:
    """Start workers and clients on a prefix of their own; all stopped at the end."""
    made: dict[str, Any] = {"workers": [], "clients": []}

    def worker(**options: Any) -> CellWorker:
        started = CellWorker(redis_url, keys=keys, tool_workers=0, **options).start()
        made["workers"].append(started)
        return started

    def client(**options: Any) -> FleetClient:
        options.setdefault("handlers", ECHO)
        opened = FleetClient(redis_url, keys=keys, **options)
        made["clients"].append(opened)
        return opened

    made["worker"], made["client"] = worker, client
    yield made
    for opened in made["clients"]:
        opened.close()
    for started in made["workers"]:
        started.stop()


def output_texts(output: Any) -> list[str]:
    return [item["text"] for item in output.items]


def test_sessions_spread_evenly_and_a_full_worker_takes_none(fleet: dict[str, Any]) -> None:
    first, second = fleet["worker"](capacity=2), fleet["worker"](capacity=2)
    client = fleet["client"](placement_timeout_s=0.5)
    sessions = [client.open_session() for _ in range(4)]
    assert sorted([len(first.sessions), len(second.sessions)]) == [2, 2]
    with pytest.raises(NoWorkerError, match="start one with `cellfleet worker`"):
        client.open_session()
    for session in sessions:
        assert output_texts(session.exec("c", "text(1)"))[1:] == ["1"]


def test_without_a_live_worker_the_client_says_how_to_start_one(fleet: dict[str, Any]) -> None:
    client = fleet["client"](placement_timeout_s=0.3)
    began = time.monotonic()
    with pytest.raises(NoWorkerError) as refused:
        client.open_session()
    assert time.monotonic() - began >= 0.3
    assert str(refused.value) == (
        "no cellfleet worker with room answered within 0.3 s: start one with "
        "`cellfleet worker` (same REDIS_URL), or more of them"
    )


def test_a_session_is_served_by_one_worker_whoever_opens_it(fleet: dict[str, Any]) -> None:
    workers = [fleet["worker"](), fleet["worker"]()]
    first_client, second_client = fleet["client"](), fleet["client"]()
    session = first_client.open_session()
    session.exec("c1", "store('k', 'v')")
    again = second_client.open_session(session_id=session.id)  # routed to its owner
    assert output_texts(again.exec("c2", "text(load('k'))"))[1:] == ["v"]
    assert sorted(len(worker.sessions) for worker in workers) == [0, 1]
    events = list(workers[0].journal.read(session.id))
    assert [type(e) for _, e in events].count(SessionOpened) == 1
    assert [e.cell for _, e in events if isinstance(e, CellAdmitted)] == ["1", "2"]


def test_a_draining_worker_hands_its_idle_sessions_over(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    draining = fleet["worker"]()
    client = fleet["client"]()
    sessions = [client.open_session() for _ in range(3)]
    for number, session in enumerate(sessions):
        session.exec("c", f"store('n', {number})")
    other = fleet["worker"]()
    # (told through its inbox: it adopts them as it reads it, maybe after the drain)
    adopted, open_here = Tally(), other._open

    def adopting(message: dict[str, Any]) -> None:
        open_here(message)
        adopted.add(message["session"])

    monkeypatch.setattr(other, "_open", adopting)
    draining.drain(timeout_s=TIMEOUT_S)
    adopted.wait_for(lambda: len(adopted) == len(sessions), f"adopted {adopted.items}")
    assert sorted(other.sessions) == sorted(s.id for s in sessions)
    for number, session in enumerate(sessions):  # ids and stored values go on
        out = session.exec("again", "text(load('n'))")
        assert output_texts(out)[1:] == [str(number)]
        assert "cell ID" not in out.items[0]["text"]
    cells = [e.cell for _, e in other.journal.read(sessions[0].id) if isinstance(e, CellAdmitted)]
    assert cells == ["1", "2"]


def test_a_draining_worker_waits_for_a_busy_session(fleet: dict[str, Any]) -> None:
    """A session with a cell still to be observed stays until its answer was taken."""
    draining = fleet["worker"]()
    client = fleet["client"]()
    session = client.open_session()
    out = session.exec(
        "c", "yield_control(); await new Promise(r => setTimeout(r, 100)); text('x')"
    )
    assert out.running_cell_id == "1"
    other = fleet["worker"]()
    drain = threading.Thread(target=draining.drain, args=(TIMEOUT_S,))
    drain.start()
    try:
        assert output_texts(session.wait('{"cell_id": "1"}'))[1:] == ["x"]
    finally:
        drain.join(TIMEOUT_S)
    assert not drain.is_alive()
    assert output_texts(session.exec("c2", "text('on')"))[1:] == ["on"]
    assert other.sessions == [session.id]  # (after an answer: its adoption may take a while)


def test_a_request_for_a_stopped_worker_follows_the_session(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """Its inbox is gone with it: the client finds the session a new owner."""
    first = fleet["worker"](lease_ms=300)
    client = fleet["client"]()
    session = client.open_session()
    session.exec("c", "store('k', 1)")
    first.stop()  # (its lease expires: nobody released it)
    second = fleet["worker"]()
    out = session.exec("c2", "text(load('k'))")
    assert output_texts(out)[1:] == ["1"]
    assert second.sessions == [session.id]


# -- processes ---------------------------------------------------------------------------


class Tally:
    """Things that threads of a test count, and a wait for the count to get somewhere."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    def add(self, item: Any = None) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def __len__(self) -> int:
        return len(self.items)

    def wait_for(self, condition: Any, what: str) -> None:
        with self._changed:
            assert self._changed.wait_for(condition, TIMEOUT_S), what


def read_final_answer(client: redis.Redis, stream: str, after: Any) -> tuple[dict[str, Any], Any]:
    """The first answer on a client's answers stream after `after` that is not
    `started`, and its entry id."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        # (in slices: a read blocked past redis-py's 5 s socket timeout would fail)
        read: Any = client.xread({stream: after}, count=1, block=1000)
        if not read:
            assert time.monotonic() < deadline, "the worker answered nothing"
            continue
        after, fields = read[0][1][0]
        reply: dict[str, Any] = orjson.loads(fields[wire.FIELD])
        if reply["kind"] != "started":
            return reply, after


def test_a_frozen_worker_is_fenced_off_when_another_took_its_session(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """SIGSTOP past its lease; another worker takes the idle session; resumed, the
    frozen one's writes are refused and nothing is doubled."""
    process, frozen = start_worker(redis_url, keys, "--lease-ms", "300")
    try:
        client = fleet["client"]()
        session = client.open_session()
        assert output_texts(session.exec("c1", "text('one')"))[1:] == ["one"]
        process.send_signal(signal.SIGSTOP)
        registry = WorkerRegistry(connect_redis(redis_url), keys)
        info = keys.worker_info(frozen)
        raw = registry.client
        wait_for_key(raw, info, lambda: not raw.exists(info), "the frozen worker still beats")
        other = fleet["worker"]()
        assert output_texts(session.exec("c2", "text('two')"))[1:] == ["two"]
        assert other.sessions == [session.id]
        # A request that reached the frozen worker's inbox before it froze, as a slow
        # client's would: resumed, it tries to serve it.
        stale = {"op": "execute", "id": "stale-1", "client": "probe", "session": session.id}
        stale |= {"call_id": "stale", "source": "text('stale')", "yield_time_ms": 1000}
        probe = keys.client_answers("probe")
        hello = registry.client.xadd(probe, {"hello": "1"})
        registry.client.xadd(keys.worker_inbox(frozen), {wire.FIELD: wire.encode(stale)})
        process.send_signal(signal.SIGCONT)
        final, _ = read_final_answer(registry.client, probe, hello)  # (it may say `started`)
        assert final["kind"] in ("moved", "error"), final
        if final["kind"] == "error":
            assert final["message"].endswith(texts.session_fenced(session.id)), final
        journal = RedisJournal(registry.client, keys)
        events = [e for _, e in journal.read(session.id)]
        calls = [e.call_id for e in events if isinstance(e, CellAdmitted)]
        assert calls == ["c1", "c2"]  # the stale exec left nothing
        assert [type(e) for e in events].count(SessionOpened) == 2  # one per owner
        assert output_texts(session.exec("c3", "text('three')"))[1:] == ["three"]
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait(TIMEOUT_S)


def test_a_frozen_worker_ends_its_cells_of_a_session_another_took(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """SIGSTOP past its lease while its cell spins (writing nothing); another worker
    takes the session over (a client's wait) and recovers the cell. Resumed, the frozen
    worker finds its lease taken and ends the cell there (it spun on for ever)."""
    process, frozen = start_worker(redis_url, keys, "--lease-ms", "300", stderr=subprocess.PIPE)
    try:
        client = fleet["client"]()
        session = client.open_session()
        running = session.exec("c1", "text('spinning'); yield_control(); while (true) {}")
        assert running.running_cell_id == "1"
        process.send_signal(signal.SIGSTOP)
        raw = connect_redis(redis_url)
        info = keys.worker_info(frozen)
        wait_for_key(raw, info, lambda: not raw.exists(info), "the frozen worker still beats")
        other = fleet["worker"]()
        still = session.wait('{"cell_id": "1", "yield_time_ms": 100}')  # (taken over)
        assert (still.running_cell_id, other.sessions) == ("1", [session.id])
        process.send_signal(signal.SIGCONT)
        assert process.stderr is not None
        ended = f"session {session.id}: served by another worker now; its cells here ended"
        for line in process.stderr:
            if ended.encode() in line:
                break
        else:
            raise AssertionError("the resumed worker kept the session's cells")
        stopped = session.wait('{"cell_id": "1", "terminate": true}')
        assert "Script terminated" in output_texts(stopped)[0]
        journal = RedisJournal(raw, keys)
        events = [e for _, e in journal.read(session.id) if e.cell == "1"]
        assert [type(e).__name__ for e in events if isinstance(e, CellTerminated)] == [
            "CellTerminated"
        ]
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait(TIMEOUT_S)


def test_sigterm_drains_a_worker_process(fleet: dict[str, Any], keys: Keys, redis_url: str) -> None:
    process, _ = start_worker(redis_url, keys)
    try:
        client = fleet["client"]()
        session = client.open_session()
        session.exec("c1", "store('k', 'kept')")
        other = fleet["worker"]()
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT_S) == 0
        assert other.sessions == [session.id]  # handed over before it left
        assert output_texts(session.exec("c2", "text(load('k'))"))[1:] == ["kept"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT_S)


def test_the_command_line_runs_on_the_fleet_and_lists_it(
    fleet: dict[str, Any], keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    worker = fleet["worker"]()
    env = {**os.environ, "REDIS_URL": redis_url}
    base = [sys.executable, "-m", "cellfleet.ops.cli", "--key-prefix", keys.prefix]
    options: Any = {"env": env, "capture_output": True, "timeout": 60}
    script = tmp_path / "hello.js"
    script.write_text("text('from the fleet')")
    run = subprocess.run([*base, "run", "--fleet", str(script)], check=False, **options)
    assert run.returncode == 0, run.stderr
    assert b"from the fleet" in run.stdout
    listed = subprocess.run([*base, "fleet", "--json"], check=False, **options)
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [row["worker"] for row in rows] == [worker.id]
    assert rows[0]["capacity"] == worker.capacity
    worker.stop()
    env["CELLFLEET_FLEET"] = "1"
    env["CELLFLEET_PLACEMENT_TIMEOUT_S"] = "0.2"
    transcript = tmp_path / "t.jsonl"
    transcript.write_text(
        '{"type": "custom_tool_call", "call_id": "c", "name": "exec", "input": "text(1)"}\n'
    )
    play = subprocess.run([*base, "play", str(transcript)], check=False, **options)
    assert play.returncode == 1
    assert b"start one with `cellfleet worker`" in play.stderr


def test_malformed_requests_get_clear_answers_and_the_worker_serves_on(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    worker = fleet["worker"]()
    client = fleet["client"]()
    session = client.open_session()
    raw = connect_redis(redis_url)
    probe = keys.client_answers("probe")
    after = raw.xadd(probe, {"hello": "1"})
    inbox = keys.worker_inbox(worker.id)
    base = {"client": "probe", "session": session.id}
    raw.xadd(inbox, {"junk": "1"})  # no message field
    raw.xadd(inbox, {wire.FIELD: b"{not json"})
    raw.xadd(inbox, {wire.FIELD: wire.encode({"op": "execute"})})  # no session, no client
    raw.xadd(inbox, {wire.FIELD: wire.encode({**base, "id": "a", "op": "execute"})})
    raw.xadd(inbox, {wire.FIELD: wire.encode({**base, "id": "b", "op": "teleport"})})
    answers = []
    for _ in range(2):
        answer, after = read_final_answer(raw, probe, after)
        answers.append(answer)
    assert answers[0]["kind"] == "error"
    assert answers[0]["message"].startswith("cellfleet worker refused a request: KeyError(")
    assert answers[1] == {"id": "b", "kind": "error", "message": "unknown request `teleport`"}
    assert output_texts(session.exec("c", "text('still here')"))[1:] == ["still here"]
    raw.close()


def test_streams_lost_by_redis_are_made_anew(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """After Redis lost its data (a restart without its append-only file), the worker's
    inbox and the client's answers stream come back, and the session goes on."""
    worker = fleet["worker"]()
    client = fleet["client"]()
    session = client.open_session()
    raw = connect_redis(redis_url)
    inbox = keys.worker_inbox(worker.id)
    raw.delete(inbox, client.answers)
    wait_for_key(raw, inbox, lambda: raw.exists(inbox), "no new inbox")
    wait_for_key(raw, client.answers, lambda: raw.exists(client.answers), "no new answers")
    out = session.exec("c", "text('again')")
    assert output_texts(out)[1:] == ["again"], out
    raw.close()


def test_a_rolling_restart_under_load_answers_every_request(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """Workers replaced one by one (SIGTERM drains each) while four sessions exec back
    to back: every exec is answered, in order, and no stored value is lost."""
    processes = [start_worker(redis_url, keys)[0] for _ in range(2)]
    client = fleet["client"]()
    sessions = [client.open_session() for _ in range(4)]
    stop, failures, counts = threading.Event(), [], [0] * len(sessions)
    answered = Tally()

    def load(index: int) -> None:
        session = sessions[index]
        while not stop.is_set():
            out = session.exec(
                f"c{counts[index]}", "store('n', (load('n') ?? 0) + 1); text(load('n'))"
            )
            if not out.success or output_texts(out)[1:] != [str(counts[index] + 1)]:
                failures.append(out)
                answered.add()  # (a waiting test sees it at once)
                return
            counts[index] += 1
            answered.add()

    def progress(what: str) -> None:
        before = len(answered)
        answered.wait_for(lambda: len(answered) > before + 20 or failures, what)
        assert failures == []

    threads = [threading.Thread(target=load, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    try:
        for old in list(processes):
            processes.append(start_worker(redis_url, keys)[0])
            progress("no progress")
            old.send_signal(signal.SIGTERM)
            assert old.wait(TIMEOUT_S) == 0
            progress("no progress after the restart")
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT_S)
        assert failures == []
        for session, count in zip(sessions, counts, strict=True):
            last = session.exec("last", "text(load('n'))")
            assert output_texts(last)[1:] == [str(count)], last
    finally:
        stop.set()
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(TIMEOUT_S)


def test_an_idle_session_is_let_go_and_opened_again_where_it_is_next_used(
    fleet: dict[str, Any],
) -> None:
    """A client that vanished holds no capacity for ever: its idle sessions are let go
    (their log stays), and a later request opens the session again."""
    worker = fleet["worker"](idle_release_s=0.0)
    client = fleet["client"]()
    session = client.open_session()
    session.exec("c1", "store('k', 'kept')")
    raw, lease = client.client, client.keys.session(session.id).lease
    wait_for_key(raw, lease, lambda: not raw.exists(lease), "the idle session is still held")
    assert worker.sessions == []  # (let go of before its lease)
    assert output_texts(session.exec("c2", "text(load('k'))"))[1:] == ["kept"]


def test_a_heartbeat_or_a_check_that_meets_a_redis_outage_goes_on(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed heartbeat (or owner check) is tried again: neither the worker's beat
    thread nor the client's reader may die of one, or the worker would drop out of the
    fleet while it holds its leases, and every exec of the client hang."""
    worker = fleet["worker"]()
    beats = Tally()
    original_beat = worker.registry.beat

    def flaky_beat(*args: Any, **kwargs: Any) -> bool:
        beats.add()
        if len(beats) == 1:
            raise JournalUnavailableError("connection failed")
        return original_beat(*args, **kwargs)

    monkeypatch.setattr(worker.registry, "beat", flaky_beat)
    beats.wait_for(lambda: len(beats) >= 3, "the heartbeat stopped after an outage")
    client = fleet["client"]()
    checks: list[int] = []

    def flaky_is_live(worker_id: str) -> bool:
        checks.append(1)
        raise JournalUnavailableError("connection failed")

    session = client.open_session()
    monkeypatch.setattr(client.workers, "is_live", flaky_is_live)
    out = session.exec("c", "await new Promise(r => setTimeout(r, 1200)); text('late')")
    assert checks, "the owner was never checked"
    assert output_texts(out)[1:] == ["late"]


def test_every_client_of_a_shared_session_hears_its_notifications(
    fleet: dict[str, Any],
) -> None:
    fleet["worker"]()
    heard = Tally()
    first = fleet["client"]().open_session(notify=lambda _c, _cell, text: heard.add(("a", text)))
    second = fleet["client"]().open_session(
        session_id=first.id, notify=lambda _c, _cell, text: heard.add(("b", text))
    )
    first.exec("c1", "notify('from a')")
    second.exec("c2", "notify('from b')")
    heard.wait_for(lambda: len(heard) == 4, f"heard {heard.items}")
    for opener in ("a", "b"):
        assert [text for who, text in heard.items if who == opener] == ["from a", "from b"]


def test_a_session_an_in_process_host_serves_is_refused_by_the_fleet(
    fleet: dict[str, Any], redis_url: str, keys: Keys
) -> None:
    fleet["worker"]()
    host = Host(redis_url, pool_size=1, workers=0, keys=keys)
    try:
        served = host.open_session()
        client = fleet["client"](placement_timeout_s=0.3)
        with pytest.raises(SessionOwnedElsewhereError, match="is owned by another process"):
            client.open_session(session_id=served.id)
    finally:
        host.close()


def test_a_slow_open_holds_up_neither_the_worker_s_other_sessions_nor_its_own_requests(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opens run side by side: while one session's open is held up (a long log, say),
    the worker serves its other sessions; a second client's open of that session
    waits for it and is answered by the same worker once it is open."""
    worker, client = fleet["worker"](), fleet["client"]()
    served = client.open_session()
    slow_id, held, release = uuid.uuid4().hex, threading.Event(), threading.Event()
    released: list[bool] = []  # (False: held up until it gave up waiting)

    def open_backend(services: Any, config: Any) -> Any:
        if config.session_id == slow_id:
            held.set()
            released.append(release.wait(TIMEOUT_S))
        return ActorSessionBackend(services, config)

    monkeypatch.setattr("cellfleet.ops.worker.ActorSessionBackend", open_backend)
    with ThreadPoolExecutor(2) as openers:
        slow = [
            openers.submit(c.open_session, session_id=slow_id) for c in (client, fleet["client"]())
        ]
        try:
            assert held.wait(TIMEOUT_S)
            assert output_texts(served.exec("c1", "text('meanwhile')"))[1:] == ["meanwhile"]
        finally:
            release.set()
        sessions = [opening.result(TIMEOUT_S) for opening in slow]
    assert output_texts(sessions[1].exec("c1", "text('open')"))[1:] == ["open"]
    assert sorted(worker.sessions) == sorted([served.id, slow_id])
    assert released == [True]


def test_an_open_waiting_for_a_worker_that_stopped_beating_goes_to_another_at_once(
    fleet: dict[str, Any], keys: Keys
) -> None:
    """A client waiting for a worker to open a session takes it for dead once it
    missed two heartbeats, and asks another, before its heartbeat expires."""
    worker, client = fleet["worker"](), fleet["client"]()
    first = client.open_session()  # (the live worker is busier: the silent one is picked)
    raw, info = client.client, keys.worker_info("silent")
    raw.xadd(keys.worker_inbox("silent"), {"first": "1"})  # (requests reach it, unread)
    silent = WorkerInfo(worker="silent", capacity=64, sessions=0, draining=False)
    WorkerRegistry(raw, keys).beat(silent, [], ttl_ms=10_000)
    raw.pexpire(info, 4_000)  # (its last beat was 6 s ago: it missed a few)
    second = client.open_session()
    assert sorted(worker.sessions) == sorted([first.id, second.id])
    assert raw.exists(info)  # (it still looks alive: taken for dead by its silence)


def test_a_dead_worker_s_lease_that_ended_with_no_worker_left_says_start_one(
    fleet: dict[str, Any], keys: Keys
) -> None:
    """The client waited out a dead worker's lease; no worker is there to open the
    session after it: the error says to start one (nobody else owns the session)."""
    client = fleet["client"](placement_timeout_s=CLAIM_LEASE_MS / 1000 * 2)
    session_id = uuid.uuid4().hex
    Leases(RedisJournal(client.client, keys), "dead-worker").claim(session_id)
    with pytest.raises(NoWorkerError):
        client.open_session(session_id=session_id)


def test_a_worker_that_missed_a_beat_is_asked_again_when_it_beats_not_when_its_lease_ends(
    fleet: dict[str, Any], keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker holding a 30 s lease looks dead for a moment (its heartbeat key expired,
    its beats held up): a client opening its session asks it once it beats again, not
    30 s later."""
    worker, client = fleet["worker"](lease_ms=30_000), fleet["client"]()
    first = client.open_session()
    first.exec("c0", "text(0)")  # (its actor opened it: the lease is a whole one now)
    beating, held_up, beat = threading.Lock(), threading.Event(), worker._beat

    def held_up_beat() -> None:
        with beating:
            if not held_up.is_set():
                beat()

    monkeypatch.setattr(worker, "_beat", held_up_beat)
    with beating:  # (no beat under way)
        held_up.set()
        client.client.delete(keys.worker_info(worker.id))
    other = fleet["client"](placement_timeout_s=60)
    is_live = other.workers.is_live

    def looked_at(name: str) -> bool:  # (the client saw it dead: it beats again)
        live = is_live(name)
        held_up.clear()
        return live

    monkeypatch.setattr(other.workers, "is_live", looked_at)
    with ThreadPoolExecutor(1) as opener:
        again = opener.submit(other.open_session, session_id=first.id).result(TIMEOUT_S)
    assert output_texts(again.exec("c1", "text('here')"))[1:] == ["here"]
    assert worker.sessions == [first.id]


def test_the_heartbeat_of_an_open_counts_the_new_session_once(
    fleet: dict[str, Any], keys: Keys
) -> None:
    """The beat an open sends before its answer (the next placement reads it) counts
    the session it opened once, not as opening and as served both."""
    worker, client = fleet["worker"](), fleet["client"]()
    raw, info = client.client, keys.worker_info(worker.id)
    worker.heartbeat_ms = 10_000_000  # (its regular beats stop after the next one)
    wait_for_key(raw, info, lambda: raw.pttl(info) > 60_000, "no beat of the new period")
    session = client.open_session()  # (kept: a session dropped is shut down)
    assert raw.hget(info, "sessions") == b"1"
    assert worker.sessions == [session.id]


def test_a_heartbeat_s_age_is_read_from_its_time_to_live(fleet: dict[str, Any], keys: Keys) -> None:
    raw = fleet["client"]().client
    registry, info = WorkerRegistry(raw, keys), keys.worker_info("w")
    assert registry.beat_age("w") is None  # (dead)
    raw.hset(info, "capacity", 1)
    assert registry.beat_age("w") == 0.0  # (no time to live yet: cannot say)
    raw.hset(info, "heartbeat_ms", 100_000)
    raw.pexpire(info, 25_000)
    assert 0.75 <= registry.beat_age("w") <= 1  # type: ignore[operator]


def test_a_client_asks_no_worker_while_a_dead_process_holds_the_session_s_lease(
    fleet: dict[str, Any], keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's lease is a claim of a process that is no live worker (one that
    died while taking the session over): every worker would refuse the session until
    that claim ends, so the client waits for its end and then asks once (it used to
    ask a worker every 50 ms meanwhile, each asked in vain)."""
    worker, client = fleet["worker"](), fleet["client"]()
    raw, session_id = client.client, uuid.uuid4().hex
    lease = keys.session(session_id).lease
    Leases(RedisJournal(raw, keys), "dead-worker").claim(session_id)  # (never renewed)
    held_when_asked: list[bool] = []
    open_here = worker._open

    def recording_open(message: dict[str, Any]) -> None:
        held_when_asked.append(bool(raw.exists(lease)))
        open_here(message)

    monkeypatch.setattr(worker, "_open", recording_open)
    session = client.open_session(session_id=session_id)
    assert held_when_asked == [False]
    assert output_texts(session.exec("c1", "text('here')"))[1:] == ["here"]


def test_a_busy_session_whose_clients_are_gone_is_shut_down(fleet: dict[str, Any]) -> None:
    worker = fleet["worker"](idle_release_s=0.0)
    client = fleet["client"]()
    session = client.open_session()
    forever = "yield_control(); while (true) await new Promise(r => setTimeout(r, 50));"
    assert session.exec("c", forever).running_cell_id == "1"
    client._closed.set()  # the harness vanishes: no reader, no refresh of its stream
    client._reader.join(TIMEOUT_S)
    raw, lease = client.client, client.keys.session(session.id).lease
    raw.delete(client.answers)  # (as if it expired)
    wait_for_key(raw, lease, lambda: not raw.exists(lease), "a vanished client's session lives")
    events = [type(e) for _, e in worker.journal.read(session.id)]
    assert events[-1] is ShutdownFinished


def killed_while_cell_1_waits(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> tuple[FleetClient, Any, str]:
    """A session whose worker process was SIGKILLed while its cell 1 waited on a 1 s
    timer: its client, the session, and the dead worker's id."""
    process, killed = start_worker(redis_url, keys, "--lease-ms", "300")
    try:
        client = fleet["client"]()
        session = client.open_session()
        timer = "yield_control(); await new Promise(r => setTimeout(r, 1000)); text('late')"
        assert session.exec("c1", timer).running_cell_id == "1"
    finally:
        process.kill()
        process.wait(TIMEOUT_S)
    return client, session, killed


def test_a_cell_left_running_by_a_killed_worker_is_recovered_by_the_next_owner(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """SIGKILL while cell 1 waits on a timer: the next owner replays the cell from the
    log and it goes on there: its timer fires, and its output reaches the next wait."""
    client, session, killed = killed_while_cell_1_waits(fleet, keys, redis_url)
    raw = client.client
    for key in (keys.worker_inbox(killed), keys.session(session.id).lease):
        wait_for_key(raw, key, lambda key=key: not raw.exists(key), f"{key} outlived its worker")
    fleet["worker"]()
    done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
    assert (done.success, output_texts(done)[1:]) == (True, ["late"])
    assert output_texts(session.exec("c2", "text('two')"))[1:] == ["two"]
    events = [e for _, e in RedisJournal(raw, keys).read(session.id) if e.cell == "1"]
    assert [e.problem for e in events if isinstance(e, CellRecovered)] == [None]
    assert [e.error_text for e in events if isinstance(e, CellCompleted)] == [None]
    assert isinstance(events[-1], CellClosed)


def test_a_killed_worker_s_running_cell_is_taken_over_before_anyone_asks(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """Nobody sends a request after the kill: a live worker finds the session (its
    worker stopped beating, its lease expired, a cell still runs), takes it over and
    recovers the cell, whose timer then fires on time; the client, told where the
    session went, gets the cell's end from there."""
    client, session, _ = killed_while_cell_1_waits(fleet, keys, redis_url)
    fleet["worker"]()
    raw, journal = client.client, RedisJournal(client.client, keys)
    completed = cell_1_completed(journal, session.id)
    wait_for_key(raw, keys.session(session.id).events, completed, "cell 1 was not taken over")
    done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
    assert (done.success, output_texts(done)[1:]) == (True, ["late"])


def cell_1_completed(journal: RedisJournal, session: str) -> Callable[[], bool]:
    def completed() -> bool:
        return any(isinstance(e, CellCompleted) and e.cell == "1" for _, e in journal.read(session))

    return completed


def test_a_worker_killed_between_claiming_a_session_and_opening_it_holds_it_up_briefly(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """The worker that takes a dead worker's session over dies after claiming its lease
    and before opening it (the crash point `lease_claimed`). Its claim lives
    `CLAIM_LEASE_MS`, not its 30 s lease, and the next worker (a 30 s lease too: it
    looks again when the claim ends, not a lease later) takes the session over."""
    client, session, _ = killed_while_cell_1_waits(fleet, keys, redis_url)
    raw, k = client.client, keys.session(session.id)
    crashing = {crash.ENV: "lease_claimed"}
    claimer, _ = start_worker(redis_url, keys, "--lease-ms", "30000", env=crashing)
    try:
        assert claimer.wait(TIMEOUT_S) == -signal.SIGKILL
    finally:
        claimer.kill()
    assert raw.hget(k.meta, "fence") == b"2"  # (the first worker's claim was 1)
    assert raw.pttl(k.lease) <= CLAIM_LEASE_MS
    fleet["worker"](lease_ms=30_000)
    completed = cell_1_completed(RedisJournal(raw, keys), session.id)
    wait_for_key(raw, k.events, completed, "cell 1 was not taken over")
    assert raw.hget(k.meta, "fence") == b"3"


def test_a_session_whose_lease_is_held_is_looked_at_again_when_the_lease_ends(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """A dead worker's session is due for takeover while another process holds its
    lease (for 5 s more): a worker with a 30 s lease looks at it again when that lease
    ends, not 30 s later."""
    client, session, _ = killed_while_cell_1_waits(fleet, keys, redis_url)
    raw, k = client.client, keys.session(session.id)
    wait_for_key(raw, k.lease, lambda: not raw.exists(k.lease), "the dead worker's lease lived")
    other = Leases(RedisJournal(raw, keys), "other", ttl_ms=5_000)
    other.claim(session.id)
    other.opened(session.id)
    due: Any = raw.zscore(keys.fleet_watch, session.id)
    fleet["worker"](lease_ms=30_000)

    def looked_at() -> bool:
        return raw.zscore(keys.fleet_watch, session.id) != due

    wait_for_key(raw, keys.fleet_watch, looked_at, "the session was not looked at")
    lease_end_ms = time.time() * 1000 + 5_000
    assert raw.zscore(keys.fleet_watch, session.id) <= lease_end_ms + LEASE_END_MARGIN_MS
    other.release(session.id)  # (the client's shutdown at the end opens it at once)


def test_a_wait_in_flight_when_its_worker_is_killed_is_answered_by_the_next_owner(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """The wait reaches the dead worker's inbox (it is still there); once the worker
    is known dead the client sends it again to the session's next owner, which has
    recovered the cell and answers it."""
    _, session, _ = killed_while_cell_1_waits(fleet, keys, redis_url)
    fleet["worker"]()
    done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
    assert (done.success, output_texts(done)[1:]) == (True, ["late"])
    assert output_texts(session.exec("c2", "text('two')"))[1:] == ["two"]


def first_worker_crashing_at(
    point: str, fleet: dict[str, Any], keys: Keys, redis_url: str, steps: Callable[[Any], None]
) -> tuple[FleetClient, Any]:
    """A session served by a worker process set to crash at `point`, with an in-process
    worker to take over; `steps(session)` runs while the first one lives (it must make
    it crash). The client and the session."""
    process, _ = start_worker(redis_url, keys, "--lease-ms", "300", env={crash.ENV: point})
    try:
        client = fleet["client"]()
        session = client.open_session()
        fleet["worker"]()  # (the next owner, once the first one is dead)
        steps(session)
        assert process.wait(TIMEOUT_S) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait(TIMEOUT_S)
    return client, session


def deliveries(client: FleetClient, keys: Keys, session: Any, cell: str) -> list[str]:
    journal = RedisJournal(client.client, keys)
    events = journal.read(session.id, cells=[cell])
    return [e.kind.value for _, e in events if isinstance(e, ObservationDelivered)]


def test_a_wait_whose_answer_died_with_its_worker_is_answered_from_the_log(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """The worker records a wait's answer (its second answer) and dies before sending
    it: the next owner answers the wait sent again from the log, with the same outputs,
    and records no answer twice."""

    def steps(session: Any) -> None:
        source = "text('before'); yield_control(); text('after')"
        assert session.exec("c1", source).running_cell_id == "1"
        done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
        assert (done.success, output_texts(done)[1:]) == (True, ["after"])

    client, session = first_worker_crashing_at("answer_recorded:2", fleet, keys, redis_url, steps)
    assert deliveries(client, keys, session, "1") == ["yielded", "completed"]


def test_an_exec_admitted_when_its_worker_died_is_answered_by_its_recovered_cell(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """The worker appends a cell's admission (the cell waits on a timer) and dies (the
    crash point `events_appended`): the exec sent again finds the cell its first try
    created, recovered by the next owner, and is answered by it; it does not run twice."""

    def steps(session: Any) -> None:
        source = "await new Promise(r => setTimeout(r, 200)); text('once')"
        assert output_texts(session.exec("c1", source))[1:] == ["once"]

    client, session = first_worker_crashing_at("events_appended", fleet, keys, redis_url, steps)
    assert deliveries(client, keys, session, "1") == ["completed"]
    assert "cell ID 2" in output_texts(session.exec("c2", "yield_control()"))[0]


def test_a_worker_beats_while_its_lock_is_held(fleet: dict[str, Any], keys: Keys) -> None:
    """A thread that holds the worker's lock (waiting on a busy session actor, say) does
    not hold its heartbeat up: its clients would take it for dead."""
    worker, client = fleet["worker"](), fleet["client"]()
    raw, info = client.client, keys.worker_info(worker.id)
    with worker._lock:
        beats = {raw.hget(info, "beat_ms")}

        def beaten_twice() -> bool:  # (the first may have begun before the lock was taken)
            beats.add(raw.hget(info, "beat_ms"))
            return len(beats) > 2

        wait_for_key(raw, info, beaten_twice, "no heartbeat while the lock was held")


def test_a_worker_s_inbox_outlives_missed_heartbeats(fleet: dict[str, Any], keys: Keys) -> None:
    """A worker that stalls past its heartbeat (taken for dead meanwhile) loses none of
    the messages sent to it: its inbox lives a lease and a heartbeat."""
    worker, client = fleet["worker"](lease_ms=5_000), fleet["client"]()
    assert client.client.pttl(keys.worker_inbox(worker.id)) > DEFAULT_HEARTBEAT_MS


def test_a_request_met_by_a_fence_is_sent_on_not_failed(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that stalled past its lease serves a request from its backlog, and the
    log refuses its write (a newer owner serves the session): the client is told to
    send it on, not handed the refusal as the exec's failure."""
    worker, answers = fleet["worker"](), []
    monkeypatch.setattr(worker, "_answer", lambda _message, reply: answers.append(reply))

    def refused() -> None:
        raise SessionFencedError("s")

    worker._guarded({"id": "r", "session": "s"}, refused)
    assert answers == [{"kind": "moved", "owner": None}]


def test_a_fenced_request_is_sent_on_even_when_redis_cannot_say_where(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, answers = fleet["worker"](), []
    monkeypatch.setattr(worker, "_answer", lambda _message, reply: answers.append(reply))

    def away(_session: str) -> None:
        raise redis.ConnectionError("Redis went away")

    def refused() -> None:
        raise SessionFencedError("s")

    monkeypatch.setattr(worker.leases, "owner_of", away)
    worker._guarded({"id": "r", "session": "s"}, refused)
    assert answers == [{"kind": "moved", "owner": None}]


def test_a_full_worker_leaves_a_dead_worker_s_session_due_for_the_others(
    fleet: dict[str, Any], keys: Keys
) -> None:
    worker, client = fleet["worker"](capacity=1), fleet["client"]()
    # (it is full now; kept: a session dropped by its caller is shut down, making room)
    session = client.open_session()
    client.client.zadd(keys.fleet_watch, {"orphan": 0})
    assert not worker._take_over_one("orphan")
    assert client.client.zscore(keys.fleet_watch, "orphan") == 0  # (not put off 10 s)
    assert worker.sessions == [session.id]


def test_a_session_whose_opening_failed_is_let_go_and_opened_again(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session actor's opening fails after the worker answered the open (its write
    was refused, say): the worker lets the session go at once (it is not left served
    by a dead actor), and an exec sent at once, which met that actor as it ended, is
    not answered `code mode session is shutting down`: it opens the session again."""
    worker, client = fleet["worker"](), fleet["client"]()
    open_session, failures = worker.journal.open_session, [redis.ConnectionError("away")]

    def first_refused(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return open_session(*args, **kwargs)

    monkeypatch.setattr(worker.journal, "open_session", first_refused)
    session = client.open_session()  # (answered `opened`, or `moved` and asked again)
    # A dead actor left served would answer every request `moved` (its session fenced
    # off) until the client gave up.
    assert output_texts(session.exec("c1", "text('open')"))[1:] == ["open"]
    assert failures == []


def test_two_copies_of_a_request_sent_again_are_served_once(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of an exec sent again reach the worker together (its client took it
    for dead twice): while the first is looked up, the second is dropped; the cell
    runs once."""
    worker, client = fleet["worker"](), fleet["client"]()
    session = client.open_session()
    cell_of, looked_up = worker._cell_of, []
    first_looking, go_on = threading.Event(), threading.Event()

    def slow_cell_of(*args: Any) -> Any:
        looked_up.append(args)
        if len(looked_up) == 1:
            first_looking.set()
            assert go_on.wait(TIMEOUT_S)
        return cell_of(*args)

    monkeypatch.setattr(worker, "_cell_of", slow_cell_of)
    message = {
        "op": "execute", "id": f"{client.id}-copy", "client": client.id, "session": session.id,
        "call_id": "c1", "source": "text('once')", "yield_time_ms": 10_000, "again": True,
    }  # fmt: skip
    worker._serve(message)  # (the first copy, on the worker's pool: its lookup waits)
    assert first_looking.wait(TIMEOUT_S)
    worker._serve_again("execute", message, worker._served[session.id])
    assert len(looked_up) == 1
    go_on.set()
    journal = RedisJournal(client.client, worker.keys)
    completed = cell_1_completed(journal, session.id)
    wait_for_key(client.client, worker.keys.session(session.id).events, completed, "no answer")
    admitted = [e.cell for _, e in journal.read(session.id) if isinstance(e, CellAdmitted)]
    assert admitted == ["1"]


def test_a_request_sent_again_to_the_worker_still_serving_it_gets_one_answer(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker misses its heartbeats while an exec runs (a stall): its client takes it
    for dead and sends the exec again once it beats again. The worker, still serving
    the exec, ignores the copy: the exec's answer is its cell's, not `exec cell 1
    already has an active observer`."""
    worker, client = fleet["worker"](), fleet["client"]()
    session = client.open_session()
    beat, stalled = worker.registry.beat, threading.Event()
    monkeypatch.setattr(
        worker.registry, "beat", lambda *a, **k: True if stalled.is_set() else beat(*a, **k)
    )
    dispatch = client._dispatch

    def sent_again(request: Any) -> None:
        if request.message.get("again"):
            stalled.clear()  # (it beats again: the copy goes back to it)
        dispatch(request)

    monkeypatch.setattr(client, "_dispatch", sent_again)
    stalled.set()
    pragma = '// @exec: {"yield_time_ms": 20000}\n'
    answer = session.exec(
        "c1", pragma + "await new Promise(r => setTimeout(r, 3000)); text('once')"
    )
    assert not stalled.is_set()  # (it was sent again)
    assert (answer.success, output_texts(answer)[1:]) == (True, ["once"])


def test_an_exec_whose_answer_died_with_its_worker_is_answered_from_the_log(
    fleet: dict[str, Any], keys: Keys, redis_url: str
) -> None:
    """The worker records the exec's answer and dies before sending it (the crash
    point `answer_recorded`): the client sends the exec again, with the same request
    id, and the next owner answers it from the log; the cell does not run twice."""

    def steps(session: Any) -> None:
        assert output_texts(session.exec("c1", "text('once')"))[1:] == ["once"]

    client, session = first_worker_crashing_at("answer_recorded", fleet, keys, redis_url, steps)
    assert "cell ID 2" in output_texts(session.exec("c2", "yield_control()"))[0]
    journal = RedisJournal(client.client, keys)
    admitted = [e.cell for _, e in journal.read(session.id) if isinstance(e, CellAdmitted)]
    assert admitted == ["1", "2"]


# -- callers that went away (spec §4.9) --------------------------------------------------


class HeldAnswers:
    """Holds the client's reader at the first answer (or other reply `kind`) once
    `armed`: the worker has sent it, the client has not taken it, so a caller can still
    go away (cancel) while it is on its way, as when its drop crosses the answer."""

    def __init__(
        self, client: FleetClient, monkeypatch: pytest.MonkeyPatch, kind: str = "answer"
    ) -> None:
        self.armed = False
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.closed_told = threading.Event()  # the reader handled a `closed` message
        received, told = client._received, client._told

        def holding(fields: dict[bytes, bytes]) -> None:
            message = wire.decode(fields)
            if self.armed and message.get("kind") == kind:
                self.armed = False
                self.arrived.set()
                assert self.release.wait(TIMEOUT_S)
            received(fields)

        def telling(message: dict[str, Any]) -> None:
            told(message)
            if message.get("kind") == "closed":
                self.closed_told.set()

        monkeypatch.setattr(client, "_received", holding)
        monkeypatch.setattr(client, "_told", telling)


def lose_replies(
    worker: CellWorker, monkeypatch: pytest.MonkeyPatch, kind: str, *, once: bool = True
) -> Tally:
    """Make the worker lose its replies of `kind` (the first only, if `once`) as
    `_tell` does when Redis stayed away (it says they went); the lost ones."""
    lost, tell = Tally(), worker._tell

    def losing(to: str, reply: dict[str, Any]) -> bool:
        if reply.get("kind") == kind and not (once and lost):
            lost.add(reply)
            return True
        return tell(to, reply)

    monkeypatch.setattr(worker, "_tell", losing)
    return lost


class WireProbe:
    """Requests written straight into a worker's inbox for `session`, and their
    answers read from a client stream of the probe's own."""

    def __init__(self, redis_url: str, keys: Keys, worker: CellWorker, session: str) -> None:
        self.raw = connect_redis(redis_url)
        self.answers = keys.client_answers("probe")
        self.after = self.raw.xadd(self.answers, {"hello": "1"})
        self.base = {"client": "probe", "session": session}
        self.inbox = keys.worker_inbox(worker.id)

    def send(self, **message: Any) -> None:
        self.raw.xadd(self.inbox, {wire.FIELD: wire.encode({**self.base, **message})})

    def answer(self) -> dict[str, Any]:
        answer, self.after = read_final_answer(self.raw, self.answers, self.after)
        return answer

    def close(self) -> None:
        self.raw.close()


def gated_client(fleet: dict[str, Any]) -> tuple[FleetClient, dict[str, threading.Event]]:
    """A client whose `gate` tool waits for its test to set `gates[name]`."""
    gates: dict[str, threading.Event] = {"1": threading.Event(), "2": threading.Event()}

    def gate(value: Any) -> Any:
        assert gates[str(value["name"])].wait(TIMEOUT_S)
        return value

    return fleet["client"](handlers={"gate": gate}), gates


def texts_of(answer: Any) -> list[str]:
    return [item["text"] for item in answer.content_items]


def test_a_completion_that_crossed_its_caller_s_drop_goes_to_the_next_wait(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait sent meanwhile waits for it: sent at once, it would find the cell gone."""
    fleet["worker"]()
    client, gates = gated_client(fleet)
    held = HeldAnswers(client, monkeypatch)
    session = client.open_session()
    out = session.exec(
        "c", "text('a');\nyield_control();\nawait tools.gate({name: '1'});\ntext('b')"
    )
    assert output_texts(out)[1:] == ["a"]
    dropped = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    held.armed = True
    gates["1"].set()
    assert held.arrived.wait(TIMEOUT_S)  # the completion is on its way to the caller...
    assert dropped.cancel()  # ... who goes away
    following = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    held.release.set()
    answer = following.result(TIMEOUT_S)
    assert isinstance(answer, Result)
    assert not answer.missing
    assert texts_of(answer) == ["b"]
    assert answer.error_text is None
    assert session.backend.observe("1", ObserveMode.YIELD, 1000).result(TIMEOUT_S).missing


def test_a_cell_whose_completion_is_kept_closes_when_it_is_claimed(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet["worker"]()
    client, gates = gated_client(fleet)
    held = HeldAnswers(client, monkeypatch)
    closed = Tally()
    session = client.open_session(on_cell_closed=closed.add)
    session.exec("c", "yield_control();\nawait tools.gate({name: '1'});\ntext('b')")
    dropped = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    held.armed = True
    gates["1"].set()
    assert held.arrived.wait(TIMEOUT_S)
    assert dropped.cancel()
    held.release.set()
    assert held.closed_told.wait(TIMEOUT_S)  # the worker closed the cell
    client._callbacks.wait_for(session.id, TIMEOUT_S)
    assert closed.items == []  # in-process, a cell with a buffered completion is open
    assert texts_of(session.backend.terminate("1").result(TIMEOUT_S)) == ["b"]  # (claims it)
    closed.wait_for(lambda: closed.items == ["1"], "the cell's closed callback")


def test_a_yield_that_crossed_its_caller_s_drop_goes_in_front_of_the_next_answer(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet["worker"]()
    client, gates = gated_client(fleet)
    held = HeldAnswers(client, monkeypatch)
    session = client.open_session()
    source = (
        "yield_control();\nawait tools.gate({name: '1'});\ntext('b');\nyield_control();\n"
        "text('c');\nawait tools.gate({name: '2'});\ntext('d')"
    )
    session.exec("c", source)
    dropped = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    held.armed = True
    gates["1"].set()
    assert held.arrived.wait(TIMEOUT_S)  # the yield with 'b'
    assert dropped.cancel()
    held.release.set()
    following = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    gates["2"].set()
    answer = following.result(TIMEOUT_S)
    assert isinstance(answer, Result)
    assert texts_of(answer) == ["b", "c", "d"]


def test_a_worker_confirms_a_drop_that_overtook_its_request(
    fleet: dict[str, Any], keys: Keys, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drop read while its request still waited to be served (sent again, it was
    being looked up in the log): the request is dropped as it is served, and the cell
    stays free for the next observer."""
    worker = fleet["worker"]()
    client, gates = gated_client(fleet)
    session = client.open_session()
    session.exec("c", "yield_control();\nawait tools.gate({name: '1'});\ntext('b')")
    looking, dropped = threading.Event(), threading.Event()
    cell_of, drop = worker._cell_of, worker._drop

    def slow_cell_of(*args: Any) -> Any:
        looking.set()
        assert dropped.wait(TIMEOUT_S)
        return cell_of(*args)

    def drop_while_looking(message: dict[str, Any]) -> None:
        assert looking.wait(TIMEOUT_S)
        drop(message)
        dropped.set()

    monkeypatch.setattr(worker, "_cell_of", slow_cell_of)
    monkeypatch.setattr(worker, "_drop", drop_while_looking)
    probe = WireProbe(redis_url, keys, worker, session.id)
    observe = {"op": "observe", "cell": "1", "yield_time_ms": 30_000}
    probe.send(**observe, id="w", again=True)
    probe.send(id="d", op="drop", of="w")
    assert probe.answer() == {"id": "w", "kind": "dropped"}
    probe.send(**observe, id="w2", again=True, dropped=True)  # (sent after its drop)
    assert probe.answer() == {"id": "w2", "kind": "dropped"}
    gates["1"].set()
    answer = session.backend.observe("1", ObserveMode.YIELD, 30_000).result(TIMEOUT_S)
    assert answer == Result(cell_id="1", content_items=[text("b")])
    probe.close()


def test_requests_held_for_a_dropped_one_go_in_the_order_they_came(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait then a terminate: the wait is attached first and ends with the cell, as
    in-process (sent side by side, the terminate could win: the wait, "not found").
    The kept output goes to the first of them only (in-process, the terminate's answer
    has it too: see `broker.fleet.kept`)."""
    fleet["worker"]()
    client, gates = gated_client(fleet)
    held = HeldAnswers(client, monkeypatch)
    session = client.open_session()
    source = "yield_control();\nawait tools.gate({name: '1'});\ntext('b');\nyield_control();\n"
    session.exec("c", source + "await tools.gate({name: '2'})")
    dropped = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    held.armed = True
    gates["1"].set()
    assert held.arrived.wait(TIMEOUT_S)  # the yield with 'b'
    assert dropped.cancel()
    following = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    terminated = session.backend.terminate("1")
    held.release.set()
    assert terminated.result(TIMEOUT_S) == Terminated(cell_id="1")
    assert following.result(TIMEOUT_S) == Terminated(cell_id="1", content_items=[text("b")])
    gates["2"].set()  # (its tool call ends with it)


def test_a_yield_asked_of_a_held_wait_reaches_it(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Codex's `operation/yield` for a wait held behind a dropped one goes after it."""
    fleet["worker"]()
    client, gates = gated_client(fleet)
    held = HeldAnswers(client, monkeypatch)
    session = client.open_session()
    source = "yield_control();\nawait tools.gate({name: '1'});\ntext('b');\nyield_control();\n"
    session.exec("c", source + "text('c');\nawait tools.gate({name: '2'})")
    dropped = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    held.armed = True
    gates["1"].set()
    assert held.arrived.wait(TIMEOUT_S)
    assert dropped.cancel()
    following = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    session.backend.yield_now("1")
    held.release.set()
    assert following.result(TIMEOUT_S) == Yielded(cell_id="1", content_items=[text("b"), text("c")])
    gates["2"].set()


def test_a_lost_confirmation_of_a_drop_holds_the_cell_s_next_wait_a_moment_only(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its `dropped` reply lost (to a Redis failover, say), the dropped wait is sent
    again: its worker answers `dropped` from the log, and the next wait goes on."""
    worker = fleet["worker"]()
    client, gates = gated_client(fleet)
    session = client.open_session()
    session.exec("c", "yield_control();\nawait tools.gate({name: '1'});\ntext('b')")
    lost = lose_replies(worker, monkeypatch, "dropped")
    dropped = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    assert dropped.cancel()
    lost.wait_for(lambda: len(lost) == 1, "the drop's confirmation")
    following = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    gates["1"].set()
    assert following.result(TIMEOUT_S) == Result(cell_id="1", content_items=[text("b")])


def test_a_shutdown_goes_after_the_requests_held_before_it(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait held for a dropped one when the session shuts down is attached first and
    ends with the cell, as in-process (it was answered "not found")."""
    fleet["worker"]()
    client, gates = gated_client(fleet)
    held = HeldAnswers(client, monkeypatch, kind="dropped")
    session = client.open_session()
    session.exec("c", "yield_control();\ntext('a');\nawait tools.gate({name: '1'})")
    dropped = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    held.armed = True
    assert dropped.cancel()
    assert held.arrived.wait(TIMEOUT_S)  # the drop's confirmation, on its way
    following = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    shutting = threading.Thread(target=session.shutdown)
    shutting.start()
    assert session.backend._shut.wait(TIMEOUT_S)
    held.release.set()
    assert following.result(TIMEOUT_S) == Terminated(cell_id="1", content_items=[text("a")])
    shutting.join(TIMEOUT_S)
    assert not shutting.is_alive()
    gates["1"].set()


def test_a_dropped_request_unsettled_at_the_shutdown_is_forgotten(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forgotten: asked again after the session's end (its drop's confirmation was
    lost), it would have opened the session anew."""
    worker = fleet["worker"]()
    client, gates = gated_client(fleet)
    session = client.open_session()
    session.exec("c", "yield_control();\nawait tools.gate({name: '1'})")
    lost = lose_replies(worker, monkeypatch, "dropped", once=False)
    dropped = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    (request,) = [r for r in client._pending.values() if r.answer is dropped]
    assert dropped.cancel()
    lost.wait_for(lambda: len(lost) == 1, "the drop's confirmation")
    session.shutdown()
    assert request.message["id"] not in client._pending
    assert worker.sessions == []
    gates["1"].set()


def test_requests_held_when_redis_lost_the_answers_fail_and_are_not_sent(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent after its caller got the failure, a held wait would stay attached: the
    cell's next wait would be refused as busy."""
    fleet["worker"]()
    client, gates = gated_client(fleet)
    held = HeldAnswers(client, monkeypatch, kind="dropped")
    session = client.open_session()
    session.exec("c", "yield_control();\nawait tools.gate({name: '1'});\ntext('b')")
    dropped = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    held.armed = True
    assert dropped.cancel()
    assert held.arrived.wait(TIMEOUT_S)
    orphan = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    client._lost_answers()
    assert orphan.exception(TIMEOUT_S) is not None
    held.release.set()
    following = session.backend.observe("1", ObserveMode.YIELD, 30_000)
    gates["1"].set()
    assert following.result(TIMEOUT_S) == Result(cell_id="1", content_items=[text("b")])


def test_an_answer_that_met_a_closed_connection_is_sent_again(
    fleet: dict[str, Any], keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection Redis closed (a restart, an idle timeout) fails one write: the
    answer it carried is not lost with it (its caller would wait for ever)."""
    worker = fleet["worker"]()
    client = fleet["client"]()
    session = client.open_session()
    answers, failed = keys.client_answers(client.id), Tally()
    run = worker.link.run

    def closed_once(commands: Any, **options: Any) -> Any:
        command = commands[0]
        if command[:2] == ("XADD", answers) and b'"answer"' in command[-1] and not failed:
            failed.add(command)
            raise redis.ConnectionError("Connection closed by server.")
        return run(commands, **options)

    monkeypatch.setattr(worker.link, "run", closed_once)
    _, answer = session.backend.execute("c", "text('here')", 10_000, None)
    assert answer.result(TIMEOUT_S) == Result(cell_id="1", content_items=[text("here")])
    assert len(failed) == 1


def test_an_answer_lost_to_a_long_redis_outage_is_given_again_from_the_log(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written in vain for longer than its retries, an answer is lost; its caller
    asks again once it is overdue, and the worker answers from the log."""
    worker = fleet["worker"]()
    client = fleet["client"](answer_late_s=0.2)
    session = client.open_session()
    lost = lose_replies(worker, monkeypatch, "answer")
    _, answer = session.backend.execute("c", "text('here')", 100, None)
    assert answer.result(TIMEOUT_S) == Result(cell_id="1", content_items=[text("here")])
    assert len(lost) == 1


def test_a_drop_that_crosses_a_copy_asked_again_drops_the_copy_too(
    fleet: dict[str, Any], keys: Keys, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy (its answer was overdue) waits for a thread while the caller's drop
    cancels the first: served as new, it would hold the cell (the next wait: busy)."""
    worker = fleet["worker"]()
    client, gates = gated_client(fleet)
    session = client.open_session()
    session.exec("c", "yield_control();\nawait tools.gate({name: '1'});\ntext('b')")
    waiting, dropped = threading.Event(), threading.Event()
    serve_again, drop = worker._serve_again, worker._drop

    def serve_after_the_drop(*args: Any) -> None:
        waiting.set()
        assert dropped.wait(TIMEOUT_S)
        serve_again(*args)

    def drop_and_tell(message: dict[str, Any]) -> None:
        drop(message)
        dropped.set()

    monkeypatch.setattr(worker, "_serve_again", serve_after_the_drop)
    monkeypatch.setattr(worker, "_drop", drop_and_tell)
    probe = WireProbe(redis_url, keys, worker, session.id)
    observe = {"op": "observe", "cell": "1", "yield_time_ms": 30_000}
    probe.send(**observe, id="w")
    probe.send(**observe, id="w", again=True)
    assert waiting.wait(TIMEOUT_S)
    probe.send(id="d", op="drop", of="w")
    for _ in range(2):  # (the first, then its copy)
        assert probe.answer() == {"id": "w", "kind": "dropped"}
    probe.send(**observe, id="w2")
    gates["1"].set()
    answer = probe.answer()
    assert (answer["id"], answer["kind"]) == ("w2", "answer")
    assert wire.decode_answer(answer["answer"]) == Result(cell_id="1", content_items=[text("b")])
    probe.close()

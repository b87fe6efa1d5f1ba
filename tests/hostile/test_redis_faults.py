"""Hostile probes, family "Redis faults": each fault is either ridden out (nothing lost,
nothing repeated) or a plain error that names no local path; the host lives, the log
stays consistent, and the session serves again once Redis is back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from cellfleet.broker.events import AnyEvent, CellClosed, CellCompleted, ToolCompleted
from cellfleet.broker.keys import Keys
from cellfleet.broker.tools.registry import load_tools_file
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import RedisProcess, start_redis
from cellfleet.ops.tools_worker import start_tools_process
from tests.integration.session_support import (
    TIMEOUT_S,
    TOOLS,
    Gates,
    assert_output,
    check_log,
    handlers,
    hold_journal,
)

UNAVAILABLE = "cellfleet event log is unavailable"


@dataclass
class Fixture:
    server: RedisProcess
    host: Host
    gates: Gates
    data_dir: Path
    admin: redis.Redis

    def restart(self) -> None:
        self.server.stop()
        self.server = start_redis(self.data_dir, port=self.server.port)
        self.admin = redis.Redis.from_url(self.server.url)

    def events(self, session_id: str) -> list[AnyEvent]:
        return [event for _, event in self.host.journal.read(session_id)]


@pytest.fixture
def private(tmp_path: Path) -> Iterator[Fixture]:
    """A Redis of the test's own (it is stopped, paused and filled) and a host on it."""
    data_dir = tmp_path / "redis"
    server = start_redis(data_dir)
    gates = Gates()
    host = Host(server.url, handlers=handlers(gates))
    fixture = Fixture(server, host, gates, data_dir, redis.Redis.from_url(server.url))
    yield fixture
    gates.open_all()
    try:
        fixture.admin.ping()
    except redis.ConnectionError:  # a probe left it down
        fixture.server = start_redis(data_dir, port=fixture.server.port)
    host.close()
    fixture.server.stop()


def assert_plain(text: str, data_dir: Path) -> None:
    """A failure the model may read: no local path, no Python error kind."""
    assert str(data_dir) not in text, text
    for leak in ("/tmp", "Traceback", "Error 2", "Error 111"):
        assert leak not in text, text


def test_connections_killed_mid_cell_are_reconnected(private: Fixture) -> None:
    session = private.host.open_session(TOOLS)
    cell_id, answer = session.backend.execute(
        "c", "text('a'); const r = await tools.gate({}); text(JSON.stringify(r))", 60_000, None
    )
    private.gates.wait_entered()
    killed = private.admin.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    private.gates.open()
    assert_output(
        session.exec("d", f"// wait for {cell_id}\ntext('next')"), "Script completed", ["next"]
    )
    result = answer.result(TIMEOUT_S)
    assert [item["text"] for item in result.content_items] == ["a", '{"opened":"g"}']
    events = private.events(session.id)
    assert sum(isinstance(e, ToolCompleted) for e in events) == 1  # ran once
    session.shutdown()
    check_log(private.events(session.id), shut_down=True)


def test_a_paused_redis_delays_a_cell_and_loses_nothing(private: Fixture) -> None:
    """`CLIENT PAUSE` (a failover's pause, say) holds every write for 300 ms."""
    session = private.host.open_session(TOOLS)
    private.admin.client_pause(300, all=True)
    output = session.exec(
        "c", "for (let i = 0; i < 5; i++) text(JSON.stringify(await tools.echo({ i })))"
    )
    assert_output(output, "Script completed", [f'{{"i":{i}}}' for i in range(5)])
    session.shutdown()
    events = private.events(session.id)
    check_log(events, shut_down=True)
    assert sum(isinstance(e, ToolCompleted) for e in events) == 5


def test_redis_out_of_memory_is_a_plain_error_and_the_session_goes_on(
    private: Fixture,
) -> None:
    session = private.host.open_session(TOOLS)
    assert_output(session.exec("a", "text('before')"), "Script completed", ["before"])
    private.admin.config_set("maxmemory-policy", "noeviction")
    private.admin.config_set("maxmemory", 1)  # every write is refused
    try:
        failed = session.exec("b", "text('refused')")
        assert failed.success is False
        text = "\n".join(item["text"] for item in failed.items)
        assert "out of memory" in text, text
        assert_plain(text, private.data_dir)
    finally:
        private.admin.config_set("maxmemory", 0)
    assert_output(session.exec("c", "text('after')"), "Script completed", ["after"])
    session.shutdown()
    check_log(private.events(session.id), shut_down=True)


def test_redis_down_at_exec_then_back(private: Fixture) -> None:
    session = private.host.open_session(TOOLS)
    assert_output(session.exec("a", "store('k', 1); text('one')"), "Script completed", ["one"])
    private.server.stop()
    failed = session.exec("b", "text('two')")
    assert failed.success is False
    text = "\n".join(item["text"] for item in failed.items)
    assert UNAVAILABLE in text, text
    assert_plain(text, private.data_dir)
    private.server = start_redis(private.data_dir, port=private.server.port)
    assert_output(session.exec("c", "text(load('k'))"), "Script completed", ["1"])
    session.shutdown()
    check_log(private.events(session.id), shut_down=True)


def test_a_commit_that_meets_the_outage_is_all_or_nothing(
    private: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away as a cell's completion and its stored writes are sent: the model
    gets a plain error, and afterwards the log and `load()` agree: every write or none."""
    session = private.host.open_session(TOOLS)
    reached, release = hold_journal(
        monkeypatch, private.host.journal, "finish", lambda terminal: True
    )
    _, answer = session.backend.execute(
        "c", "store('a', 1); store('b', 2); text('done')", 60_000, None
    )
    assert reached.wait(TIMEOUT_S)
    private.server.stop()
    release.set()
    error = answer.exception(TIMEOUT_S)
    told = str(error) if error is not None else repr(answer.result(TIMEOUT_S))
    assert_plain(told, private.data_dir)
    monkeypatch.undo()
    private.server = start_redis(private.data_dir, port=private.server.port)
    loaded = session.exec("d", "text(JSON.stringify([load('a'), load('b')]))")
    committed = any(
        isinstance(e, CellCompleted) and e.cell == "1" for e in private.events(session.id)
    )
    assert_output(loaded, "Script completed", ["[1,2]" if committed else "[null,null]"])
    session.shutdown()
    check_log(private.events(session.id), shut_down=True)


def test_a_tool_call_outstanding_across_a_redis_restart_ends_once(private: Fixture) -> None:
    """The handler finishes while Redis restarts (from its append-only file): the call
    is answered once, from the handler's one run; the host serves on."""
    session = private.host.open_session(TOOLS)
    cell_id, answer = session.backend.execute(
        "c", "text(JSON.stringify(await tools.gate({})))", 60_000, None
    )
    private.gates.wait_entered()
    private.restart()
    private.gates.open()
    ended = answer.result(TIMEOUT_S)
    assert [item["text"] for item in ended.content_items] == ['{"opened":"g"}']
    assert_output(
        session.exec("d", "text(JSON.stringify(await tools.echo({})))"), "Script completed", ["{}"]
    )
    events = private.events(session.id)
    assert sum(isinstance(e, ToolCompleted) and e.cell == cell_id for e in events) == 1
    session.shutdown()
    check_log(private.events(session.id), shut_down=True)


def test_a_tool_outcome_that_meets_the_outage_is_recorded_once_redis_is_back(
    private: Fixture,
) -> None:
    """The handler finishes while Redis is down, so its outcome cannot be recorded: the
    call stays with the workers, is taken over once Redis is back, and the cell goes on
    (its notification delivered once)."""
    delivered: list[str] = []
    session = private.host.open_session(
        TOOLS, notify=lambda call_id, cell_id, text: delivered.append(text)
    )
    _, answer = session.backend.execute(
        "c", "await tools.gate({}); notify('hello'); text('sent')", 60_000, None
    )
    private.gates.wait_entered()
    private.server.stop()
    private.gates.open()
    private.server = start_redis(private.data_dir, port=private.server.port)
    ended = answer.result(TIMEOUT_S * 3)
    assert [item["text"] for item in ended.content_items] == ["sent"]
    assert delivered == ["hello"]
    session.shutdown()
    check_log(private.events(session.id), shut_down=True)


def test_terminating_a_cell_while_redis_is_down_names_no_path(tmp_path: Path) -> None:
    """With a tool call outstanding, the termination's cancellation met the outage, and
    the model read `exec cell 1 failed: Error 2 connecting to /tmp/.../redis.sock`."""
    server = start_redis(tmp_path / "redis")
    gates = Gates()
    host = Host(server.url, handlers=handlers(gates))
    restarted = None
    try:
        session = host.open_session()
        cell_id, _ = session.backend.execute("c", "await tools.gate({})", 60_000, None)
        gates.wait_entered()
        server.stop()
        answer = session.backend.terminate(cell_id)
        error = answer.exception(TIMEOUT_S)
        text = str(error) if error is not None else repr(answer.result(TIMEOUT_S))
        assert str(tmp_path) not in text, text
        assert "Error 2" not in text, text
        restarted = start_redis(tmp_path / "redis", port=server.port)
        output = session.exec("d", "text('back')")
        assert output.items[-1] == {"type": "input_text", "text": "back"}
    finally:
        gates.open_all()
        if restarted is None:
            restarted = start_redis(tmp_path / "redis", port=server.port)
        host.close()
        restarted.stop()


WORKER_TOOLS = Path(__file__).parents[1] / "integration" / "fixtures" / "worker_tools.py"


def test_a_tools_process_lives_through_killed_connections_and_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "redis"
    server = start_redis(data_dir)
    env = {**os.environ, "REDIS_URL": server.url, "TEST_PREFIX": "w"}
    worker_keys = Keys("w")
    worker = start_tools_process(["--tools", str(WORKER_TOOLS)], env, worker_keys)
    monkeypatch.setenv("REDIS_URL", server.url)  # the tools file reads it when loaded
    registry = load_tools_file(WORKER_TOOLS)  # the host routes calls by its tools
    host = Host(server.url, tools=registry, workers=0, keys=worker_keys)
    admin = redis.Redis.from_url(server.url)
    try:
        session = host.open_session()
        for round_ in range(3):
            source = f"text(JSON.stringify(await tools.echo({{ round: {round_} }})))"
            output = session.exec(f"c{round_}", source)
            assert_output(output, "Script completed", [f'{{"round":{round_}}}'])
            admin.client_kill_filter(_type="normal", skipme=True)
        server.stop()
        server = start_redis(data_dir, port=server.port)
        output = session.exec("last", "text(JSON.stringify(await tools.echo({ last: 1 })))")
        assert_output(output, "Script completed", ['{"last":1}'])
        assert worker.poll() is None
    finally:
        host.close()
        worker.terminate()
        worker.wait(10)
        server.stop()


KILLING_TOOLS = """
import os
import redis
from cellfleet.broker.tools.registry import ToolRegistry

tools = ToolRegistry()


@tools.function(input_schema={"type": "object"})
def kill_connections(args):
    with redis.Redis.from_url(os.environ["REDIS_URL"]) as admin:
        return admin.client_kill_filter(_type="normal", skipme=True)
"""


def test_cellfleet_run_lives_through_killed_connections(tmp_path: Path) -> None:
    """`cellfleet` reset SIGPIPE to its default action (for `events | head`), so the
    first write on a connection Redis had closed killed `run` without a word (-13)."""
    (tmp_path / "tools.py").write_text(KILLING_TOOLS)
    (tmp_path / "cell.js").write_text(
        "text('before'); await tools.kill_connections({}); text('after')"
    )
    server = start_redis(tmp_path / "redis")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "cellfleet.ops.cli", "run", "cell.js", "--tools", "tools.py"],
            cwd=tmp_path,
            env={**os.environ, "REDIS_URL": server.url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.stop()
    assert run.returncode == 0, (run.returncode, run.stderr)
    assert run.stdout.splitlines()[-4:-1] == ["", "before", "after"], run.stdout


def test_a_wait_whose_answer_meets_a_redis_refusal_gets_it(private: Fixture) -> None:
    """Recording a yield's answer met Redis's `OOM` refusal: the caller's `wait` hung
    for ever (the refusal was no BrokerError, and the answer's future was lost)."""
    session = private.host.open_session(TOOLS)
    output = session.exec("c", "text('before'); yield_control(); await tools.gate({})")
    assert_output(output, "Script running with cell ID 1", ["before"])
    private.gates.wait_entered()
    private.admin.config_set("maxmemory-policy", "noeviction")
    private.admin.config_set("maxmemory", 1)
    try:
        failed = session.wait('{"cell_id": "1", "yield_time_ms": 200}')
    finally:
        private.admin.config_set("maxmemory", 0)
    assert failed.success is False
    text = "\n".join(item["text"] for item in failed.items)
    assert text == "cellfleet event log is unavailable: Redis is out of memory (maxmemory)"
    private.gates.open()
    done = session.wait('{"cell_id": "1", "yield_time_ms": 10000}')
    assert_output(done, "Script completed", [])  # the cell lived on
    session.shutdown()
    check_log(private.events(session.id), shut_down=True)


def test_a_yielded_cell_that_fails_unobserved_tells_the_next_wait(private: Fixture) -> None:
    """Its timer fired while Redis refused writes: the cell failed with nobody waiting,
    and the next `wait` said `exec cell 1 not found`, never why."""
    closed = threading.Event()
    session = private.host.open_session(TOOLS, on_cell_closed=lambda _: closed.set())
    # (a yield long enough for the start even on a busy machine: the first cell of a new
    # host may wait for its pool's first isolates)
    output = session.exec(
        "c",
        '// @exec: {"yield_time_ms": 200}\n'
        "text('before'); await new Promise((r) => setTimeout(r, 1000)); text('after')",
    )
    assert_output(output, "Script running with cell ID 1", ["before"])
    private.admin.config_set("maxmemory-policy", "noeviction")
    private.admin.config_set("maxmemory", 1)
    try:
        assert closed.wait(TIMEOUT_S)  # it failed, with nobody waiting
        failed = session.wait('{"cell_id": "1"}')
    finally:
        private.admin.config_set("maxmemory", 0)
    assert failed.success is False
    [item] = failed.items
    assert item["text"] == (
        "exec cell 1 failed: cellfleet event log is unavailable: Redis is out of memory (maxmemory)"
    )
    assert_plain(item["text"], private.data_dir)
    again = session.wait('{"cell_id": "1"}')  # told once
    assert again.items[-1]["text"] == "Script error:\nexec cell 1 not found"
    assert_output(session.exec("d", "text('next')"), "Script completed", ["next"])
    session.shutdown()
    events = private.events(session.id)
    check_log(events, shut_down=True)
    # The log has its end too, recorded once Redis took writes again.
    ends = [e for e in events if e.cell == "1" and isinstance(e, CellCompleted)]
    assert [e.error_text for e in ends] == [item["text"]]
    assert isinstance([e for e in events if e.cell == "1"][-1], CellClosed)


def test_tool_replies_flow_again_after_a_failover(private: Fixture) -> None:
    """Redis turned replica for a moment (a failover) and back: its UNBLOCKED refusal
    killed the host's reply reader, and every later tool call waited for ever."""
    session = private.host.open_session(TOOLS)
    echo = "text(JSON.stringify(await tools.echo({ n: 1 })))"
    assert_output(session.exec("a", echo), "Script completed", ['{"n":1}'])
    private.admin.execute_command("REPLICAOF", "127.0.0.1", "1")  # blocked reads: UNBLOCKED
    private.admin.execute_command("REPLICAOF", "NO", "ONE")
    assert_output(session.exec("b", echo), "Script completed", ['{"n":1}'])
    session.shutdown()
    check_log(private.events(session.id), shut_down=True)

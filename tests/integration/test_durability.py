"""What an acknowledged event survives (`CELLFLEET_DURABILITY`): Redis killed with
SIGKILL and restarted loses none; `power` sets the embedded server to fsync every write
and warns about a server of someone else's that does not."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from cellfleet.broker.errors import JournalUnavailableError
from cellfleet.broker.events import CellCompleted
from cellfleet.broker.journal import LeanScript, RedisJournal
from cellfleet.broker.redis.link import ReplicationTimeoutError, link_to
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import start_redis
from tests.integration.cli_support import REPO, run_cellfleet


def test_no_acknowledged_event_is_lost_when_redis_is_killed(tmp_path: Path) -> None:
    """Redis writes its append-only file before it answers: everything a cell was
    answered for is there after a SIGKILL and a restart, and the session goes on."""
    data_dir = tmp_path / "redis"
    server = start_redis(data_dir)
    host = Host(server.url, pool_size=1, workers=0)
    try:
        session = host.open_session()
        for n in range(1, 4):
            out = session.exec(f"c{n}", f"store('n{n}', {n}); text('{n}')")
            assert [item["text"] for item in out.items][1:] == [str(n)]
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(30)
        server = start_redis(data_dir, port=server.port)
        events = [event for _, event in host.journal.read(session.id)]
        assert [e.cell for e in events if isinstance(e, CellCompleted)] == ["1", "2", "3"]
        out = session.exec("c4", "text(String(load('n1') + load('n2') + load('n3')))")
        assert [item["text"] for item in out.items][1:] == ["6"]
    finally:
        with contextlib.suppress(Exception):  # (its lease may have lapsed meanwhile)
            host.close()
        server.stop()


def test_power_durability_is_set_on_the_embedded_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env |= {"XDG_DATA_HOME": str(tmp_path), "CELLFLEET_DURABILITY": "power"}
    env["PYTHONPATH"] = str(REPO)
    script = tmp_path / "cell.js"
    script.write_text("text('ok')")
    run = subprocess.run(
        [sys.executable, "-m", "cellfleet.ops.cli", "run", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    url = (tmp_path / "cellfleet" / "redis.url").read_text().strip()
    client = redis.Redis.from_url(url)
    try:
        assert (run.returncode, run.stderr) == (0, "")
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        client.close()


def test_a_server_that_promises_less_is_named_in_a_warning(tmp_path: Path, redis_url: str) -> None:
    """The suite's server writes its file every second (`appendfsync everysec`)."""
    script = tmp_path / "cell.js"
    script.write_text("text('ok')")
    run = run_cellfleet(
        ["run", str(script)], tmp_path, redis_url, {"CELLFLEET_DURABILITY": "power"}
    )
    assert run.returncode == 0
    assert run.stderr == (
        "cellfleet: warning: Redis does not promise durability power (it has appendfsync "
        "everysec); set appendfsync always on it, or lower $CELLFLEET_DURABILITY\n"
    )
    default = run_cellfleet(["run", str(script)], tmp_path, redis_url)
    assert (default.returncode, default.stderr) == (0, "")


def test_an_unknown_durability_is_a_usage_error(tmp_path: Path, redis_url: str) -> None:
    script = tmp_path / "cell.js"
    script.write_text("text('ok')")
    run = run_cellfleet(["run", str(script)], tmp_path, redis_url, {"CELLFLEET_DURABILITY": "x"})
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (
        "cellfleet: $CELLFLEET_DURABILITY is 'x'; expected one of: process, power, replica\n"
    )


def test_a_session_whose_data_redis_lost_says_so_and_the_host_still_closes(
    tmp_path: Path,
) -> None:
    """After a FLUSHALL (a restart without the append-only file) the session's log and
    lease are gone: its cells fail with the log unavailable (not `served by another
    worker`: nobody took it over), and closing the host stops everything, raising the
    first failure once all stopped."""
    server = start_redis(tmp_path / "redis")
    host = Host(server.url, pool_size=1, workers=0)
    try:
        session = host.open_session()
        assert [i["text"] for i in session.exec("c1", "text('one')").items][1:] == ["one"]
        redis.Redis.from_url(server.url).flushall()
        (item,) = session.exec("c2", "text('two')").items
        assert item["text"] == (
            "exec cell 2 failed: cellfleet event log is unavailable: Redis lost this session's log"
        )
        with pytest.raises(JournalUnavailableError, match="Redis lost this session's log"):
            host.close()
        assert host.dispatcher._reader.is_alive() is False  # (stopped all the same)
    finally:
        server.stop()


def test_replica_durability_acknowledges_only_what_a_replica_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replica`: each batch of writes ends with Redis's WAIT. A cell is answered only
    once its events are on the replica; with the replica gone the cell fails with a
    clear reason (after retries) instead of being acknowledged unreplicated, and so
    does the session's shutdown."""
    primary = start_redis(tmp_path / "primary")
    replica = start_redis(tmp_path / "replica", replica_of=primary.port)
    monkeypatch.setenv("CELLFLEET_DURABILITY", "replica")
    monkeypatch.setenv("CELLFLEET_WAIT_TIMEOUT_MS", "200")
    admin = redis.Redis.from_url(primary.url, socket_timeout=30)  # (WAIT blocks up to 10 s)
    admin.set("synced", 1)
    assert admin.wait(1, 10_000) == 1  # (the replica caught up: a barrier, not a poll)
    host = Host(primary.url, pool_size=1, workers=0)
    closed = False
    try:
        session = host.open_session()
        out = session.exec("c1", "store('k', 1); text('kept')")
        assert [item["text"] for item in out.items][1:] == ["kept"]
        copy = redis.Redis.from_url(replica.url)
        events = host.journal.keys.session(session.id).events
        assert copy.xlen(events) == admin.xlen(events)  # all of it, when answered
        copy.close()
        replica.stop()
        lost = session.exec("c2", "text('unreplicated')")
        assert not lost.success
        text = lost.items[-1]["text"]
        assert text.endswith("Redis replicas did not confirm the write in time"), text
        closed = True
        with pytest.raises(ReplicationTimeoutError):
            host.close()
    finally:
        try:
            if not closed:
                host.close()
        finally:  # (the servers stop even if the close failed)
            admin.close()
            primary.stop()
            replica.stop()


def test_a_script_redis_forgot_is_loaded_again_and_still_waits_for_a_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script the server forgot (NOSCRIPT: restarted without its data, or flushed) is
    loaded again and run again through the link, so that its write still ends with
    `WAIT`: with the replica gone it fails instead of being acknowledged unreplicated
    (it was run once through redis-py, which sends no `WAIT`)."""
    primary = start_redis(tmp_path / "primary")
    replica = start_redis(tmp_path / "replica", replica_of=primary.port)
    monkeypatch.setenv("CELLFLEET_DURABILITY", "replica")
    monkeypatch.setenv("CELLFLEET_WAIT_TIMEOUT_MS", "200")
    client = redis.Redis.from_url(primary.url, socket_timeout=30)  # (WAIT blocks up to 10 s)
    copy = redis.Redis.from_url(replica.url)
    try:
        client.set("synced", 1)
        assert client.wait(1, 10_000) == 1  # (the replica caught up: a barrier, not a poll)
        script = LeanScript(client, link_to(client), "return redis.call('INCR', KEYS[1])")
        assert script(["n"], []) == 1
        client.script_flush()
        assert script(["n"], []) == 2
        assert copy.get("n") == b"2"  # (on the replica when answered)
        replica.stop()
        client.script_flush()
        with pytest.raises(ReplicationTimeoutError):
            script(["n"], [])
    finally:
        client.close()
        copy.close()
        primary.stop()
        replica.stop()


def test_a_wait_for_replicas_longer_than_redis_pys_read_timeout_ends_as_a_replication_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py stops reading after 5 s by default; a journal whose `WAIT` may block
    longer reads that much longer, so that a silent replica is reported as such (not as
    a broken connection, whose batch would be retried: sent again)."""
    primary = start_redis(tmp_path / "primary")
    replica = start_redis(tmp_path / "replica", replica_of=primary.port)
    monkeypatch.setenv("CELLFLEET_DURABILITY", "replica")
    monkeypatch.setenv("CELLFLEET_WAIT_TIMEOUT_MS", "5500")
    journal = RedisJournal.from_url(primary.url)
    try:
        script = LeanScript(journal.client, journal.link, "return redis.call('INCR', KEYS[1])")
        assert script(["n"], []) == 1  # (confirmed by the replica)
        replica.stop()
        with pytest.raises(ReplicationTimeoutError, match="within 5500 ms"):
            script(["n"], [])
    finally:
        journal.close()
        primary.stop()
        replica.stop()

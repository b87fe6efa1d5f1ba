"""cellfleet on a real Redis Cluster: a session whose slot migrates goes on (its
commands follow `ASK` while the slot moves and `MOVED` after), and a node that is gone is
reported as Redis being unreachable, never as a lifecycle text. (The fleet tests run on a
cluster too: tests/integration/test_fleet.py.)"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from cellfleet.broker.errors import JournalUnavailableError
from cellfleet.broker.events import CellAdmitted, CellCompleted
from cellfleet.broker.keys import Keys
from cellfleet.broker.redis.cluster_link import ClusterLink, command_key
from cellfleet.broker.redis.connect import connect_redis, is_cluster
from cellfleet.broker.redis.link import link_to
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import RedisClusterProcess, RedisProcess, start_redis_cluster


def node_of(cluster: RedisClusterProcess, slot: int) -> RedisProcess:
    """The node that serves `slot` now."""
    seed = redis.Redis.from_url(cluster.url)
    try:
        for start, end, (_, port, *_rest), *_replicas in seed.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return next(node for node in cluster.nodes if node.port == port)
    finally:
        seed.close()
    raise AssertionError(f"slot {slot} is served by no node")


class SlotMove:
    """Moving one slot from its node to another, as `redis-cli --cluster reshard`
    does: mark it migrating and importing, move its keys, then give it to the target."""

    def __init__(self, cluster: RedisClusterProcess, slot: int) -> None:
        self.cluster, self.slot = cluster, slot
        self.source = node_of(cluster, slot)
        self.target = next(node for node in cluster.nodes if node is not self.source)
        self._clients = {n.port: redis.Redis.from_url(n.tcp_url) for n in cluster.nodes}

    def _id(self, node: RedisProcess) -> str:
        return str(self._clients[node.port].execute_command("CLUSTER MYID").decode())

    def begin(self) -> None:
        """Mark the slot as moving and move every key it has now: commands sent to
        the source are answered `ASK` (the key is on the target already)."""
        source, target = self._clients[self.source.port], self._clients[self.target.port]
        target.execute_command("CLUSTER SETSLOT", self.slot, "IMPORTING", self._id(self.source))
        source.execute_command("CLUSTER SETSLOT", self.slot, "MIGRATING", self._id(self.target))
        keys = source.execute_command("CLUSTER GETKEYSINSLOT", self.slot, 1000)
        assert keys, "the session has no keys in its slot"
        source.execute_command("MIGRATE", "127.0.0.1", self.target.port, "", 0, 5000, "KEYS", *keys)

    def finish(self) -> None:
        """The slot is the target's: commands sent to the source are answered `MOVED`."""
        for client in self._clients.values():
            client.execute_command("CLUSTER SETSLOT", self.slot, "NODE", self._id(self.target))

    def keys_on(self, node: RedisProcess) -> int:
        count: int = self._clients[node.port].execute_command("CLUSTER COUNTKEYSINSLOT", self.slot)
        return count

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def exec_text(session: Any, call_id: str, source: str) -> list[str]:
    return [item["text"] for item in session.exec(call_id, source).items]


def test_a_url_of_a_cluster_node_gives_a_cluster_client(
    redis_cluster: RedisClusterProcess, redis_server: RedisProcess
) -> None:
    assert is_cluster(connect_redis(redis_cluster.url))
    assert not is_cluster(connect_redis(redis_server.url))
    with pytest.raises(redis.ConnectionError, match="over TCP"):
        connect_redis(f"unix://{redis_cluster.nodes[0].socket_path}")


@pytest.mark.parametrize(
    ("command", "key"),
    [
        (("XADD", "a", "*", "f", "v"), b"a"),
        (("EVALSHA", "0" * 40, 2, "k1", "k2", "arg"), b"k1"),
        (("EVAL", "return 1", 0), None),
        (("XREAD", "COUNT", 1, "BLOCK", 5, "STREAMS", "s", "0-0"), b"s"),
        (("xreadgroup", "GROUP", "g", "c", "STREAMS", b"t", ">"), b"t"),
        (("PING",), None),
    ],
)
def test_a_command_is_sent_to_the_slot_of_its_first_key(command: Any, key: bytes | None) -> None:
    assert command_key(command) == key


def test_commands_follow_their_slot_while_it_moves_and_after(
    redis_cluster: RedisClusterProcess,
) -> None:
    """While a slot moves, a command for a key already moved is answered ASK and sent
    to the target; a multi-key command whose keys are split between the nodes is
    answered TRYAGAIN and sent again once the move ended (MOVED: to the new node)."""
    client = connect_redis(redis_cluster.url)
    link = link_to(client)
    tag = f"{{move-{uuid.uuid4().hex[:8]}}}"
    moved_key, new_key = f"{tag}:moved", f"{tag}:new"
    link.run([("XADD", moved_key, "*", "n", "1")])
    move = SlotMove(redis_cluster, key_slot(moved_key.encode()))
    assert isinstance(link, ClusterLink)
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # the operator ends the move at the first wait
        pauses.append(seconds)
        if len(pauses) == 1:
            move.finish()

    link.pause = pause
    try:
        move.begin()
        assert move.keys_on(move.target) == 1
        added, length = link.run([("XADD", moved_key, "*", "n", "2"), ("XLEN", moved_key)])
        assert length == 2  # (ASK: the stream is on the target)
        assert pauses == []
        touch_both = (
            "redis.call('XADD', KEYS[2], '*', 'n', '3'); return redis.call('XLEN', KEYS[1])"
        )
        (length,) = link.run([("EVAL", touch_both, 2, moved_key, new_key)])
        assert length == 2
        assert len(pauses) == 1  # TRYAGAIN once, then MOVED to the target
        assert move.keys_on(move.target) == 2
        assert move.keys_on(move.source) == 0
        assert bytes(added).decode() in {entry.decode() for entry, _ in client.xrange(moved_key)}
    finally:
        move.close()
        link.close()
        client.close()


def test_a_session_goes_on_while_its_slot_moves_to_another_node(
    redis_cluster: RedisClusterProcess,
) -> None:
    """Cell 1 before the move; cell 2 (with its first tool call: a new key) while the
    slot moves, which an operator ends 0.3 s later; cell 3 after: each is served, and the
    log holds all three, whole."""
    keys = Keys(f"cluster-{uuid.uuid4().hex[:8]}")
    host = Host(redis_cluster.url, keys=keys, handlers={"echo": lambda value: value})
    move: SlotMove | None = None
    try:
        session = host.open_session()
        assert exec_text(session, "c1", "store('n', 1); text('one')")[1:] == ["one"]
        move = SlotMove(redis_cluster, key_slot(keys.session(session.id).events.encode()))
        move.begin()
        ending = threading.Timer(0.3, move.finish)  # (how long the operator's move takes)
        ending.start()
        two = "store('n', load('n') + 1); text(String((await tools.echo({n: load('n')})).n))"
        assert exec_text(session, "c2", two)[1:] == ["2"]
        ending.join()
        assert exec_text(session, "c3", "text(String(load('n') + 1))")[1:] == ["3"]
        assert move.keys_on(move.source) == 0
        assert move.keys_on(move.target) > 0
        events = [event for _, event in host.journal.read(session.id)]
        admitted = [e.cell for e in events if isinstance(e, CellAdmitted)]
        completed = [e.cell for e in events if isinstance(e, CellCompleted)]
        assert admitted == completed == ["1", "2", "3"]
    finally:
        host.close()
        if move is not None:
            move.close()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterProcess]:
    """A cluster of the test's own: one of its nodes is stopped."""
    cluster = start_redis_cluster(tmp_path / "cluster")
    yield cluster
    cluster.stop()


def test_a_node_that_is_gone_is_reported_as_redis_unreachable(
    own_cluster: RedisClusterProcess,
) -> None:
    keys = Keys("gone")
    host = Host(own_cluster.url, keys=keys, pool_size=1)
    try:
        session = host.open_session()
        assert exec_text(session, "c1", "text('one')")[1:] == ["one"]
        slot = key_slot(keys.session(session.id).events.encode())
        node_of(own_cluster, slot).stop()
        output = session.exec("c2", "text('two')")
        (item,) = output.items
        assert item["text"] == "exec cell 2 failed: cellfleet event log is unavailable: " + (
            "connection failed"
        ), item
        with pytest.raises(JournalUnavailableError, match="event log is unavailable: conn"):
            session.shutdown()  # (it cannot be recorded either)
    finally:
        with contextlib.suppress(JournalUnavailableError):
            host.close()

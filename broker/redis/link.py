"""Round trips of whole command batches to Redis, for the hot paths of cells and tools.

redis-py wraps each command in a retry helper and observability hooks, packs its
arguments one by one, and checks a pooled connection for stray data (a `poll` system
call) each time it lends it out. For the dozens of arguments of a short cell's events
that costs several times the round trip itself. A `RedisLink` packs each command with
hiredis in one call and keeps its own idle connections (made by the client's pool, so
with its settings). A connection that failed mid-exchange is closed, never reused, and
a connection error closes the idle ones too (after a server restart they are all dead).

With `CELLFLEET_DURABILITY=replica` every batch that writes ends with Redis's `WAIT`: its
writes are acknowledged only once `CELLFLEET_WAIT_REPLICAS` replicas (1) have them, within
`CELLFLEET_WAIT_TIMEOUT_MS` (1000); else the batch fails (`ReplicationTimeoutError`, a
timeout: retried, then said to the model) although the primary has its writes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import hiredis
import redis

Command = tuple[bytes | str | int, ...]


WAKE_FIELD = b"hello"  # an entry with it is no message: its readers skip it
NO_KEY = -2  # what PTTL says of a key that is not there
# Commands that write nothing: a batch of these alone waits for no replica.
_READS = frozenset(
    {
        "GET", "HGET", "HMGET", "HGETALL", "HEXISTS", "HLEN", "EXISTS", "PTTL", "TTL",
        "TYPE", "ZRANGE", "ZRANGEBYSCORE", "ZSCORE", "ZCARD", "SMEMBERS", "SCARD",
        "XREAD", "XRANGE", "XREVRANGE", "XLEN", "XINFO", "XPENDING", "INFO", "PING",
        "SCAN", "CONFIG", "ASKING", "WAIT",
    }
)  # fmt: skip


class ReplicationTimeoutError(redis.RedisError):
    """Fewer replicas than asked for confirmed a batch's writes within the time. Not
    retried: the primary has the writes, and a batch sent again would repeat them (a
    tool call sent twice could run twice)."""


MAX_WAIT_REPLICAS = 100
MAX_WAIT_TIMEOUT_MS = 600_000  # (Redis's own 0, "for ever", would hang a cell for ever)


def _setting(name: str, default: int, most: int) -> int:
    """A positive whole number from the environment variable `name`, at most `most`."""
    text = os.environ.get(name, "").strip() or str(default)
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise ValueError(f"{name} must be a whole number from 1 to {most}, not {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class ReplicaWait:
    """Acknowledge a batch's writes once `replicas` replicas have them (`WAIT`)."""

    replicas: int
    timeout_ms: int

    @classmethod
    def from_env(cls) -> ReplicaWait | None:
        """The wait `CELLFLEET_DURABILITY=replica` asks for (None: another level)."""
        if os.environ.get("CELLFLEET_DURABILITY") != "replica":
            return None
        return cls(
            _setting("CELLFLEET_WAIT_REPLICAS", 1, MAX_WAIT_REPLICAS),
            _setting("CELLFLEET_WAIT_TIMEOUT_MS", 1000, MAX_WAIT_TIMEOUT_MS),
        )

    @staticmethod
    def socket_timeout_s(base_s: float) -> float:
        """A socket timeout for a client whose batches may end with `WAIT`: `base_s`,
        plus the wait's own timeout when there is one (a read cut short would fail the
        batch as a broken connection, and it would be sent again)."""
        wait = ReplicaWait.from_env()
        return base_s + (wait.timeout_ms / 1000 if wait is not None else 0.0)

    def writes(self, commands: Sequence[Command]) -> bool:
        return any(str(_name(command)).upper() not in _READS for command in commands)

    def check(self, confirmed: Any) -> None:
        if isinstance(confirmed, redis.RedisError):  # (e.g. WAIT sent to a replica)
            raise confirmed
        if int(confirmed) < self.replicas:
            raise ReplicationTimeoutError(
                f"{confirmed} of {self.replicas} replicas confirmed a write"
                f" within {self.timeout_ms} ms"
            )


def _name(command: Command) -> str | int:
    name = command[0]
    return name.decode() if isinstance(name, bytes) else name


def create_stream(link: Link, key: str, ttl_ms: int) -> str:
    """Make `key` an empty stream expiring in `ttl_ms` (an inbox that writers add to
    with NOMKSTREAM: it exists only while its reader keeps it); its first entry's id,
    from which to read."""
    first, _, _ = link.run(
        [
            ("XADD", key, "*", WAKE_FIELD, "1"),  # (readers skip it)
            ("XTRIM", key, "MAXLEN", 0),
            ("PEXPIRE", key, ttl_ms),
        ]
    )
    return bytes(first).decode()


def wake_reader(link: Link, key: str) -> None:
    """Add an entry that is no message to the stream `key`, so that a read blocked on
    it returns now (a stopping reader need not wait for its block to time out)."""
    link.run([("XADD", key, "*", WAKE_FIELD, "1")])


def entry_after(entry_id: str) -> str:
    """The stream id right after `entry_id` (for XTRIM MINID and exclusive ranges)."""
    milliseconds, _, sequence = entry_id.partition("-")
    return f"{milliseconds}-{int(sequence or 0) + 1}"


def read_entries(reply: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """The (id, fields) entries of an XREAD reply read through a `RedisLink`: a map of
    stream to entries (RESP3) or a list of [stream, entries] pairs (RESP2)."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (entries for _, entries in reply)
    return [
        (bytes(entry_id).decode(), entry_fields(fields))
        for entries in streams
        for entry_id, fields in entries
    ]


def entry_fields(fields: Any) -> dict[bytes, bytes]:
    """A stream entry's fields (or a hash) as read through a `RedisLink` (a flat list
    in RESP2, a map in RESP3) or redis-py (a dict), as a dict."""
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True))


class RedisLink:
    """Command batches to the Redis of `client`; thread-safe."""

    def __init__(self, client: redis.Redis, wait: ReplicaWait | None = None) -> None:
        self._pool = client.connection_pool
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self.wait = wait  # (None: acknowledged as the primary answers)

    def run(self, commands: Sequence[Command], *, raise_errors: bool = True) -> list[Any]:
        """Send `commands` in one round trip; their replies, in order.

        An error reply is raised (redis-py's `ResponseError`) once every reply was read,
        so the connection stays in step, unless not `raise_errors`: then it is returned
        in its place. Connection errors are redis-py's.
        """
        packed = [hiredis.pack_command(command) for command in commands]  # type: ignore[arg-type]
        wait = self.wait if self.wait is not None and self.wait.writes(commands) else None
        if wait is not None:
            packed.append(hiredis.pack_command(("WAIT", wait.replicas, wait.timeout_ms)))  # type: ignore[arg-type]
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._pool.make_connection()
        in_step = False
        try:
            connection.send_packed_command(packed, check_health=False)
            replies: list[Any] = []
            failure: redis.ResponseError | None = None
            for _ in packed:
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as error:
                    failure = failure or error
                    replies.append(error)
            in_step = True
            if failure is not None and raise_errors:
                raise failure
            if wait is not None:
                wait.check(replies.pop())
            return replies
        except (redis.ConnectionError, redis.TimeoutError):
            # The server went away (or restarted): the idle connections are as dead as
            # this one, and a retry must not take them one by one.
            self.close()
            raise
        finally:
            if in_step:
                with self._lock:
                    self._idle.append(connection)
            else:
                connection.disconnect()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()


class Link(Protocol):
    """Command batches to Redis: a `RedisLink`, or a `ClusterLink` on a Redis Cluster."""

    def run(self, commands: Sequence[Command], *, raise_errors: bool = True) -> list[Any]: ...

    def close(self) -> None: ...


def link_to(client: redis.Redis) -> Link:
    """A link to the Redis (or Redis Cluster) of `client`."""
    if isinstance(client, redis.RedisCluster):
        from cellfleet.broker.redis.cluster_link import ClusterLink  # noqa: PLC0415 - a cycle

        return ClusterLink(client)
    return RedisLink(client, ReplicaWait.from_env())

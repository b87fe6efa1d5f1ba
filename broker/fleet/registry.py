"""The live cell workers of a fleet: heartbeats, load, and where a new session goes.

Each worker keeps a hash of its own (`cf:worker:{W}:info`: capacity, sessions served,
draining) with a time to live that its heartbeat renews, and a set of the sessions it
serves; `cf:workers` lists every worker that ever beat, and a worker whose hash expired
is dead (it is dropped from the list when met). Liveness is Redis's own expiry: no two
machines' clocks are compared.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from cellfleet.broker.journal import run_retrying
from cellfleet.broker.keys import Keys
from cellfleet.broker.redis.link import NO_KEY, Command, entry_fields, link_to

# A worker that stops beating is dead this much later (it beats four times in it). The
# clients of a worker that died while they waited for it learn it this late: the chaos
# run's double faults (a worker killed while it took a dead one's sessions over) took
# up to 3.8 s with 1 s here, 2.4 s with 0.5 s (the target: the lease plus 1 s).
DEFAULT_HEARTBEAT_MS = 500
BEATS_PER_TTL = 4  # a worker beats this often in its heartbeat's time to live


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker as its last heartbeat described it."""

    worker: str
    capacity: int
    sessions: int
    draining: bool
    host: str = ""
    pid: int = 0
    started_ms: float = 0.0
    beat_ms: float = 0.0  # its own clock, for people (never compared)

    @property
    def free(self) -> int:
        return 0 if self.draining else max(0, self.capacity - self.sessions)

    @property
    def load(self) -> float:
        return self.sessions / self.capacity if self.capacity else 1.0


class WorkerRegistry:
    """Reads and writes the fleet's worker list (thread-safe: redis-py's pool)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._link = link_to(client)

    def beat(
        self,
        info: WorkerInfo,
        sessions: Sequence[str],
        ttl_ms: int = DEFAULT_HEARTBEAT_MS,
        watch_until_ms: int | None = None,
        *,
        inbox_ttl_ms: int | None = None,
    ) -> bool:
        """Say that `info.worker` lives (for `ttl_ms` more), with its load and sessions
        (watched until `watch_until_ms`, if given: another worker takes them over after
        it), and keep its inbox for `inbox_ttl_ms` (`ttl_ms`) more; False if its inbox is
        gone (Redis lost its data: the worker makes a new one)."""
        k, worker = self.keys, info.worker
        fields: dict[str, Any] = {
            "capacity": info.capacity,
            "sessions": info.sessions,
            "draining": int(info.draining),
            "host": info.host,
            "pid": info.pid,
            "started_ms": repr(info.started_ms),
            "beat_ms": repr(time.time() * 1000),
            "heartbeat_ms": ttl_ms,
        }
        commands: list[Command] = [
            ("ZADD", k.workers, "NX", 0, worker),
            ("HSET", k.worker_info(worker), *(part for pair in fields.items() for part in pair)),
            ("PEXPIRE", k.worker_info(worker), ttl_ms),
            ("DEL", k.worker_sessions(worker)),
        ]
        if sessions:
            commands.append(("SADD", k.worker_sessions(worker), *sessions))
            commands.append(("PEXPIRE", k.worker_sessions(worker), ttl_ms))
            if watch_until_ms is not None:
                watched = [part for session in sessions for part in (watch_until_ms, session)]
                commands.append(("ZADD", k.fleet_watch, *watched))
        commands.append(("PEXPIRE", k.worker_inbox(worker), inbox_ttl_ms or ttl_ms))
        replies = run_retrying(lambda: self._link.run(commands))
        return bool(replies[-1])

    def leave(self, worker: str) -> None:
        """`worker` stops: gone from the list at once (its inbox with it)."""
        k = self.keys
        commands: list[Command] = [
            ("ZREM", k.workers, worker),
            *(("DEL", key) for key in (k.worker_info(worker), k.worker_sessions(worker))),
            ("DEL", k.worker_inbox(worker)),
        ]
        run_retrying(lambda: self._link.run(commands))

    def live(self) -> list[WorkerInfo]:
        """Every live worker; dead ones leave the list as they are met."""
        listed: Any = run_retrying(lambda: self.client.zrange(self.keys.workers, 0, -1))
        names = [bytes(name).decode() for name in listed]
        if not names:
            return []
        commands: list[Command] = [("HGETALL", self.keys.worker_info(name)) for name in names]
        infos = [entry_fields(reply) for reply in run_retrying(lambda: self._link.run(commands))]
        alive = [_info(name, fields) for name, fields in zip(names, infos, strict=True) if fields]
        dead = [name for name, fields in zip(names, infos, strict=True) if not fields]
        if dead:
            run_retrying(lambda: self.client.zrem(self.keys.workers, *dead))
        return alive

    def beat_age(self, worker: str) -> float | None:
        """How much of `worker`'s heartbeat's time to live went by since its last beat
        (0 to 1: it beats every `1 / BEATS_PER_TTL` of it), or None if it is dead."""
        key = self.keys.worker_info(worker)
        commands: list[Command] = [("HGET", key, "heartbeat_ms"), ("PTTL", key)]
        ttl_ms, left_ms = run_retrying(lambda: self._link.run(commands))
        if left_ms == NO_KEY:
            return None
        if left_ms < 0 or not ttl_ms or int(ttl_ms) <= 0:  # (not beaten yet: cannot say)
            return 0.0
        return max(0.0, 1 - int(left_ms) / int(ttl_ms))

    def is_live(self, worker: str) -> bool:
        return bool(run_retrying(lambda: self.client.exists(self.keys.worker_info(worker))))

    def sessions_of(self, worker: str) -> list[str]:
        key = self.keys.worker_sessions(worker)
        members: Any = run_retrying(lambda: self.client.smembers(key))
        return sorted(bytes(member).decode() for member in members)

    def pick(self, exclude: Iterable[str] = ()) -> WorkerInfo | None:
        """Where a new session goes: the least loaded live worker with room (ties at
        random, so that clients that open at once spread); None if none has room."""
        excluded = set(exclude)
        candidates = [w for w in self.live() if w.free > 0 and w.worker not in excluded]
        if not candidates:
            return None
        least = min(w.load for w in candidates)
        return random.choice([w for w in candidates if w.load == least])


def _info(name: str, fields: dict[bytes, bytes]) -> WorkerInfo:
    text = {key.decode(): value.decode() for key, value in fields.items()}
    return WorkerInfo(
        worker=name,
        capacity=int(text.get("capacity", 0)),
        sessions=int(text.get("sessions", 0)),
        draining=text.get("draining") == "1",
        host=text.get("host", ""),
        pid=int(text.get("pid", 0)),
        started_ms=float(text.get("started_ms", 0)),
        beat_ms=float(text.get("beat_ms", 0)),
    )

"""Projections' state in Redis: one hash per projection of a session
(`SessionKeys.projection(name)`, fields `position`, `state` and `version`), written by
one HSET so that a state never disagrees with its position."""

from __future__ import annotations

from typing import Any

import redis

from cellfleet.broker.keys import DEFAULT_KEYS, Keys
from cellfleet.projections.ports import StoredProjection


class RedisProjectionStore:
    """A `projections.ports.ProjectionStore` on Redis."""

    def __init__(self, client: redis.Redis, keys: Keys = DEFAULT_KEYS) -> None:
        self.client = client
        self.keys = keys
        # HSET the state, and give the hash the events stream's time to live (a
        # finished session's keys expire together; one script: one slot, one trip).
        self._save = client.register_script(
            "redis.call('HSET', KEYS[1], unpack(ARGV))\n"
            "local ttl = redis.call('PTTL', KEYS[2])\n"
            "if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end\n"
            "return 1"
        )

    def position(self, session: str, name: str) -> str | None:
        raw: Any = self.client.hget(self._key(session, name), "position")
        return None if raw is None else raw.decode()

    def load(self, session: str, name: str) -> StoredProjection | None:
        fields: Any = self.client.hmget(self._key(session, name), ["position", "state", "version"])
        position, state, version = fields
        if position is None or state is None:
            return None
        # A state stored before projections had versions counts as version 0.
        return StoredProjection(position.decode(), state, int(version or 0))

    def save(self, session: str, name: str, stored: StoredProjection) -> None:
        args: list[str | bytes | int] = ["position", stored.position, "state", stored.state]
        args += ["version", stored.version]
        events = self.keys.session(session).events
        self._save(keys=[self._key(session, name), events], args=args)

    def _key(self, session: str, name: str) -> str:
        return self.keys.session(session).projection(name)

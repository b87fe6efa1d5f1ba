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
        mapping = {"position": stored.position, "state": stored.state, "version": stored.version}
        self.client.hset(self._key(session, name), mapping=mapping)  # type: ignore[arg-type]

    def _key(self, session: str, name: str) -> str:
        return self.keys.session(session).projection(name)

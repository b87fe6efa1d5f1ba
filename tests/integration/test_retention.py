"""Retention: a finished session's keys expire together; listings drop expired ones."""

from __future__ import annotations

import time
import uuid

import redis

from cellfleet.broker import events as ev
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.keys import Keys
from cellfleet.broker.projection_store import RedisProjectionStore
from cellfleet.ops.host import Host
from cellfleet.projections.ports import StoredProjection


def test_a_finished_sessions_keys_expire_together_after_the_retention(
    redis_url: str, redis_client: redis.Redis
) -> None:
    keys = Keys(f"r{uuid.uuid4().hex[:8]}")
    host = Host(redis_url, handlers={"echo": lambda value: value}, keys=keys, retention_s=3600)
    try:
        session = host.open_session()
        session.exec("a", "store('k', 1); text(JSON.stringify(await tools.echo({x: 1})))")
        before = redis_client.ttl(keys.session(session.id).events)
        session.shutdown()
    finally:
        host.close()
    assert before == -1  # (no expiry while the session lives)
    session_keys = keys.session(session.id)
    for key in session_keys.retired_together:
        ttl = redis_client.ttl(key)
        assert 3500 < ttl <= 3600, (key, ttl)
    store = RedisProjectionStore(redis_client, keys)
    store.save(session.id, "cells", StoredProjection("1-0", b"{}", 1))
    assert 3500 < redis_client.ttl(session_keys.projection("cells")) <= 3600


def test_listing_sessions_drops_those_whose_keys_expired(redis_url: str) -> None:
    keys = Keys(f"r{uuid.uuid4().hex[:8]}")
    journal = RedisJournal.from_url(redis_url, keys)
    try:
        names = [f"s{index}" for index in range(5)]
        for index, name in enumerate(names):
            opened = ev.SessionOpened(session=name, seq=1, at_ms=time.time() * 1000 + index)
            journal.open_session(opened)
        for gone in ("s4", "s2"):  # (as if their retention ran out)
            journal.client.delete(keys.session(gone).events)
        assert journal.newest_sessions(2) == ["s3", "s1"]
        assert journal.newest_sessions(10) == ["s3", "s1", "s0"]
        assert journal.client.zrange(keys.sessions, 0, -1) == [b"s0", b"s1", b"s3"]
    finally:
        journal.close()


def test_an_imported_trace_is_kept_as_long_as_a_finished_session(
    redis_url: str, redis_client: redis.Redis
) -> None:
    keys = Keys(f"r{uuid.uuid4().hex[:8]}")
    journal = RedisJournal.from_url(redis_url, keys)
    try:
        opened = ev.SessionOpened(session="imported", seq=1, at_ms=1000.0)
        journal.import_events([opened], time.time() * 1000, retention_s=600)
    finally:
        journal.close()
    assert 500 < redis_client.ttl(keys.session("imported").events) <= 600

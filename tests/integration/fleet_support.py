"""A fleet in the test process: one cell worker and one client on the suite's Redis,
with the in-process `Host`'s attributes that the session tests use, so that the same
tests run through both (`shared_host`'s two parameters)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from cellfleet.actors.cell.facts import CellFacts
from cellfleet.broker.client import Session
from cellfleet.broker.contract.tools import JsonValue
from cellfleet.broker.fleet import FleetClient
from cellfleet.broker.keys import Keys
from cellfleet.broker.redis.connect import is_cluster
from cellfleet.broker.tools.dispatch import BrokerDispatcher
from cellfleet.ops.processes import worker_ready
from cellfleet.ops.worker import CellWorker
from tests.integration.session_support import TIMEOUT_S


class FleetHost:
    """Sessions served by a `CellWorker`, reached through a `FleetClient` (Redis only:
    they share nothing else, although they share this process)."""

    def __init__(
        self,
        redis_url: str,
        *,
        handlers: Mapping[str, Callable[[JsonValue], JsonValue]],
        audit: Callable[[str, str, CellFacts], None] | None = None,
    ) -> None:
        # The default keys, as the tests read the log with them; the worker leaves the
        # fleet's list when it stops, so the next module's client never meets it.
        self.worker = CellWorker(redis_url, audit=audit, tool_workers=0).start()
        self.client = FleetClient(redis_url, handlers=handlers)
        self.journal = self.worker.journal
        self.pool = self.worker.pool
        self.registry = self.client.registry

    @property
    def dispatcher(self) -> BrokerDispatcher:
        return self.worker._dispatcher(self.registry.fingerprint)

    def open_session(self, **options: Any) -> Session:
        return self.client.open_session(**options)

    def close(self) -> None:
        self.client.close()
        self.worker.stop()


def start_worker(
    redis_url: str,
    keys: Keys,
    *extra: str,
    env: dict[str, str] | None = None,
    stderr: int = subprocess.DEVNULL,
) -> tuple[subprocess.Popen[bytes], str]:
    """A `cellfleet worker` process on `keys`; it and its worker id."""
    env = {**os.environ, "REDIS_URL": redis_url, **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "cellfleet.ops.cli", "--key-prefix", keys.prefix, "worker", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    return process, worker_ready(process)


def wait_for_key(raw: redis.Redis, key: str, done: Any, what: str) -> None:
    """Wait until `done()` holds for `key`, woken by Redis's keyspace notifications of
    it (a stream, hash or sorted set written, the key deleted or expired): no polling
    of the clock."""
    if is_cluster(raw):  # a node tells only of its own keys
        raw = raw.get_redis_connection(raw.get_node_from_key(key))  # type: ignore[attr-defined]
    raw.config_set("notify-keyspace-events", "Kghxtz")
    db = raw.connection_pool.connection_kwargs.get("db", 0)
    with raw.pubsub() as events:
        events.subscribe(f"__keyspace@{db}__:{key}")
        deadline = time.monotonic() + TIMEOUT_S
        while not done():  # (checked after subscribing: no event is missed)
            remaining = deadline - time.monotonic()
            assert remaining > 0, what
            events.get_message(timeout=remaining)

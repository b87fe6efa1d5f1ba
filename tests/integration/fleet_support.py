"""A fleet in the test process: one cell worker and one client on the suite's Redis,
with the in-process `Host`'s attributes that the session tests use, so that the same
tests run through both (`shared_host`'s two parameters)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cellfleet.actors.cell.facts import CellFacts
from cellfleet.broker.client import Session
from cellfleet.broker.contract.tools import JsonValue
from cellfleet.broker.fleet import FleetClient
from cellfleet.broker.tools.dispatch import BrokerDispatcher
from cellfleet.ops.worker import CellWorker


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

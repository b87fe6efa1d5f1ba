"""Assemble a cellfleet host: one event log, context pool, scheduler and tool dispatch,
shared by the sessions it opens."""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence

from cellfleet.actors.cell.facts import CellFacts
from cellfleet.actors.cell.notifications import DeliveryThreads
from cellfleet.actors.runtime.pool import DEFAULT_MEMORY_LIMIT_BYTES, ContextPool
from cellfleet.actors.scheduler import Scheduler
from cellfleet.actors.session.actor import ActorSessionBackend, SessionConfig, SessionServices
from cellfleet.broker.client import DEFAULT_EXEC_YIELD_TIME_MS, Session
from cellfleet.broker.contract.inventory import build_inventory
from cellfleet.broker.contract.tools import JsonValue, NamespaceInfo, ToolDefinition
from cellfleet.broker.errors import SessionFencedError
from cellfleet.broker.journal import DEFAULT_RETENTION_S, RedisJournal
from cellfleet.broker.keys import DEFAULT_KEYS, Keys
from cellfleet.broker.leases import Leases
from cellfleet.broker.redis.connect import connect_redis
from cellfleet.broker.tools.dispatch import BrokerDispatcher
from cellfleet.broker.tools.invocation import ToolDispatcher
from cellfleet.broker.tools.local import with_local_tools
from cellfleet.broker.tools.registry import ToolRegistry
from cellfleet.broker.tools.worker import ToolWorker

Notify = Callable[[str, str, str], None]

log = logging.getLogger(__name__)


class Host:
    """A process's cellfleet services; `open_session` creates sessions on them.

    Nested tool calls go through the broker (`cf:tools:{R.P}:calls`); `workers` in-process
    tool workers serve `tools` (0: only external `cellfleet tools` processes do).
    `audit` is told every closed cell's final facts (tests check them against the log);
    `keys` are the Redis keys (their prefix lets several installations share a Redis).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        pool_size: int = 2,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
        retention_s: int = DEFAULT_RETENTION_S,
        tools: ToolRegistry | None = None,
        handlers: Mapping[str, Callable[[JsonValue], JsonValue]] | None = None,
        workers: int = 1,
        worker_concurrency: int = 16,
        audit: Callable[[str, str, CellFacts], None] | None = None,
        keys: Keys = DEFAULT_KEYS,
    ) -> None:
        self.journal = RedisJournal.from_url(redis_url, keys)
        self.leases = Leases(self.journal, f"host-{uuid.uuid4().hex[:12]}").start()
        self.registry = tools or ToolRegistry.from_handlers(handlers or {})
        self.pool = ContextPool(pool_size, memory_limit_bytes=memory_limit_bytes)
        self.scheduler = Scheduler()
        self.dispatcher = BrokerDispatcher(
            connect_redis(redis_url), registry=self.registry.fingerprint, keys=keys
        )
        self.workers = [
            ToolWorker(
                connect_redis(redis_url),
                self.registry,
                name=f"{self.dispatcher.host_id}-{index}",
                concurrency=worker_concurrency,
                keys=keys,
            ).start()
            for index in range(workers)
        ]
        self.services = SessionServices(
            journal=self.journal,
            pool=self.pool,
            scheduler=self.scheduler,
            dispatcher=with_local_tools(self.registry, self.dispatcher),
            notifier=DeliveryThreads(),
            retention_s=retention_s,
            leases=self.leases,
            audit=audit,
        )
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()  # dropped ones shut down
        self._lock = threading.Lock()
        self.journal.when_fenced(self._fenced)

    def open_session(
        self,
        tools: Sequence[ToolDefinition] | None = None,
        *,
        namespaces: Mapping[str, NamespaceInfo] | None = None,
        session_id: str | None = None,
        max_yield_time_ms: int | None = None,
        default_exec_yield_time_ms: int = DEFAULT_EXEC_YIELD_TIME_MS,
        notify: Notify | None = None,
        on_cell_closed: Callable[[str], None] | None = None,
        dispatcher: ToolDispatcher | None = None,
        memory_limit_bytes: int | None = None,
        label: str = "",
    ) -> Session:
        """A new session; its nested tools default to the host's registry, served by
        the tool workers (or by `dispatcher`); `memory_limit_bytes` of each cell's heap
        defaults to the pool's."""
        config = SessionConfig(
            session_id=session_id or uuid.uuid4().hex,
            inventory=build_inventory(
                self.registry.definitions if tools is None else tools, namespaces or {}
            ),
            max_yield_time_ms=max_yield_time_ms,
            dispatcher=dispatcher,
            memory_limit_bytes=memory_limit_bytes,
            label=label,
        )
        if notify is not None:
            config.notify = notify
        if on_cell_closed is not None:
            config.on_cell_closed = on_cell_closed
        session = Session(
            ActorSessionBackend(self.services, config),
            default_exec_yield_time_ms=default_exec_yield_time_ms,
            inventory=config.inventory,
        )
        with self._lock:
            self._sessions.add(session)
        if self.journal.fenced_off(config.session_id):  # (taken over while it opened)
            self._fenced(config.session_id)
        return session

    def _fenced(self, session_id: str) -> None:
        """Another process took `session_id` over: its cells here end (on a thread of
        their own: this may be called on one of the session's actors)."""
        with self._lock:
            found = [s for s in self._sessions if s.id == session_id]
        for session in found:
            backend = session.backend
            if isinstance(backend, ActorSessionBackend):
                threading.Thread(
                    target=self._stop_serving, args=(session_id, backend), daemon=True
                ).start()

    @staticmethod
    def _stop_serving(session_id: str, backend: ActorSessionBackend) -> None:
        backend.fenced()
        log.warning("session %s: served by another process now; its cells here ended", session_id)

    def close(self) -> None:
        """Shut every session down, then stop the shared services; the first session
        whose shutdown failed (the log unreachable, say) is raised once all stopped. A
        session another process took over is its new owner's to shut down, not a failure."""
        with self._lock:
            sessions = list(self._sessions)
            self._sessions.clear()
        failure: Exception | None = None
        for session in sessions:
            try:
                session.shutdown()
            except SessionFencedError:
                log.info("session %s: served by another process; not shut down here", session.id)
            except Exception as error:  # the other sessions and the services stop all the same
                log.warning("session %s: its shutdown failed: %s", session.id, error)
                failure = failure or error
        self.leases.stop()
        for worker in self.workers:
            worker.stop()
        self.services.dispatcher.close()  # (and the broker's behind it)
        self.services.notifier.shutdown()
        self.scheduler.close()
        self.pool.close()
        self.journal.close()
        if failure is not None:
            raise failure

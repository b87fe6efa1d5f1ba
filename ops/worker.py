"""A cell worker: a process of the fleet that serves sessions for clients (`cellfleet worker`).

It hosts the session and cell actors of the sessions it owns (each under a lease, see
`broker.leases`), reads their clients' requests from its inbox stream, and answers
through each client's answers stream (`broker.fleet.wire`). It beats in the fleet's
worker list with its load, so that clients place new sessions on the least loaded
worker. `drain` (on SIGTERM) takes no new sessions, hands each session whose cells have
all finished to another worker, waits for the others up to a timeout, then stops.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import redis

from cellfleet.actors.cell.facts import CellFacts
from cellfleet.actors.cell.notifications import DeliveryThreads
from cellfleet.actors.errors import ActorError
from cellfleet.actors.runtime.pool import DEFAULT_MEMORY_LIMIT_BYTES, ContextPool
from cellfleet.actors.scheduler import Scheduler
from cellfleet.actors.session.actor import (
    ActorSessionBackend,
    CellTools,
    SessionConfig,
    SessionServices,
)
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.inventory import build_inventory
from cellfleet.broker.contract.responses import CellAnswer, ObserveMode
from cellfleet.broker.crash import crash_point
from cellfleet.broker.errors import BrokerError, SessionFencedError, SessionOwnedElsewhereError
from cellfleet.broker.events import CellAdmitted
from cellfleet.broker.fleet import wire
from cellfleet.broker.fleet.registry import (
    BEATS_PER_TTL,
    DEFAULT_HEARTBEAT_MS,
    WorkerInfo,
    WorkerRegistry,
)
from cellfleet.broker.journal import DEFAULT_RETENTION_S, RedisJournal, failure_reason
from cellfleet.broker.keys import DEFAULT_KEYS, Keys
from cellfleet.broker.leases import DEFAULT_LEASE_MS, Leases
from cellfleet.broker.redis.connect import connect_redis
from cellfleet.broker.redis.link import (
    NO_KEY,
    WAKE_FIELD,
    Command,
    create_stream,
    entry_after,
    entry_fields,
    link_to,
    read_entries,
    wake_reader,
)
from cellfleet.broker.redis.scripts import script_source
from cellfleet.broker.tools.delegate import DelegateDispatcher
from cellfleet.broker.tools.dispatch import BrokerDispatcher
from cellfleet.broker.tools.invocation import ToolDispatcher, ToolInvocation
from cellfleet.broker.tools.local import with_local_tools
from cellfleet.broker.tools.registry import ToolRegistry
from cellfleet.broker.tools.worker import ToolWorker
from cellfleet.projections.answers import request_trace

log = logging.getLogger(__name__)
TAKEOVER_BACKOFF_MS = 10_000  # a session not taken over is looked at again this late
TAKEOVER_LOOK = 64  # due sessions a look fetches (it takes as many as it has room for)
LEASE_END_MARGIN_MS = 20  # a held session is looked at again this long after its lease ends
ANNOUNCE_AFTER_S = 0.005  # a cell that has not answered by then is announced (`started`)
DEFAULT_CAPACITY = 64  # sessions per worker
DEFAULT_DRAIN_TIMEOUT_S = 30.0
DRAIN_RECHECK_S = 0.25
_ENDING = frozenset({"tombstone", "claimed"})  # cell phases: answered, only closing
DEFAULT_IDLE_RELEASE_S = 600.0  # a session unused this long (cells all ended) is let go
READ_BLOCK_MS = 1_000  # an idle inbox read returns this often (to notice a stop)
READ_COUNT = 64  # requests per read
PRUNE_EVERY_BEATS = 10  # how often (in heartbeats) expired sessions leave the index
BLOCKING_THREADS = 16  # opens, requests sent again, shutdowns, takeovers, tidying
DROPPED_EARLY_KEPT = 4096  # drops that found no observer, remembered for a late request
NOTIFY_ACK_TIMEOUT_S = 10.0  # a client that never confirms a notification holds it no longer


@dataclass(eq=False)
class _Served:
    """A session this worker serves: its backend, and how it was opened (for a handover)."""

    backend: ActorSessionBackend
    open_message: dict[str, Any]  # the `open` request (its config)
    clients: list[str]  # whose answers streams hear its notifications (each opener)
    used_at: float = field(default_factory=time.monotonic)  # its last request
    # Draining: its cells are ending, and requests wait to be sent on to its next owner.
    deferred: list[dict[str, Any]] | None = None
    # Its nested calls, when its client answers them (`client_tools`: Codex's host).
    delegates: DelegateDispatcher | None = None


class CellWorker:
    """Serves sessions of the fleet on `redis_url` until `stop` (or `drain`).

    `tools`: nested tools this process also serves, with `tool_workers` in-process tool
    workers (sessions of other tool sets use the tool workers of theirs).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        tools: ToolRegistry | None = None,
        tool_workers: int = 1,
        pool_size: int = 2,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
        retention_s: int = DEFAULT_RETENTION_S,
        lease_ms: int = DEFAULT_LEASE_MS,
        heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
        keys: Keys = DEFAULT_KEYS,
        worker_id: str | None = None,
        audit: Callable[[str, str, CellFacts], None] | None = None,
        idle_release_s: float = DEFAULT_IDLE_RELEASE_S,
    ) -> None:
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.keys = keys
        self.capacity = capacity
        self.heartbeat_ms = heartbeat_ms
        self.idle_release_s = idle_release_s
        self.redis_url = redis_url
        self.client = connect_redis(redis_url, socket_connect_timeout=2)
        self.link = link_to(self.client)
        self.inbox = keys.worker_inbox(self.id)
        self.registry = WorkerRegistry(self.client, keys)
        self.journal = RedisJournal.from_url(redis_url, keys)
        self.leases = Leases(self.journal, self.id, ttl_ms=lease_ms)
        self.journal.when_fenced(self._fenced)
        self.tools = tools or ToolRegistry.from_handlers({})
        self.pool = ContextPool(pool_size, memory_limit_bytes=memory_limit_bytes)
        self.scheduler = Scheduler()
        self._dispatchers: dict[str, ToolDispatcher] = {}
        self.services = SessionServices(
            journal=self.journal,
            pool=self.pool,
            scheduler=self.scheduler,
            dispatcher=self._dispatcher(self.tools.fingerprint),
            notifier=DeliveryThreads(),
            retention_s=retention_s,
            leases=self.leases,
            audit=audit,
        )
        self.tool_workers = [
            ToolWorker(connect_redis(redis_url), self.tools, name=f"{self.id}-{i}", keys=keys)
            for i in range(tool_workers if self.tools.definitions else 0)
        ]
        self._served: dict[str, _Served] = {}
        # Sessions being opened here (side by side: their backends start without the
        # lock), each with the requests that came for it meanwhile, served in order
        # once it is open.
        self._opening: dict[str, list[dict[str, Any]]] = {}
        self._observers: dict[str, Future[CellAnswer]] = {}  # request id -> its answer
        self._serving_again: set[str] = set()  # ids of requests sent again, being looked up
        self._queued_again: set[str] = set()  # ... and of those waiting for a thread to
        # Drops that came before their request was served (it waited for its session's
        # opening, say): it is dropped as it is served.
        self._dropped_early: OrderedDict[str, None] = OrderedDict()
        self._notifying: dict[str, threading.Event] = {}  # notification -> callback returned
        self._taking_over = threading.Event()  # a look for dead workers' sessions is on
        self._tidying = threading.Event()  # idle sessions and the index are being tidied
        self._pruned_from = 0  # where the next pruning of the sessions index starts
        # The inbox outlives a missed heartbeat: a worker that stalled (taken for dead
        # meanwhile) loses none of the messages sent to it; a dead one's goes soon after
        # its sessions' leases.
        self._inbox_ttl_ms = lease_ms + heartbeat_ms
        # Requests, opens and handovers, one at a time. Never taken on an actor's thread
        # (a request holding it may be asking that actor).
        self._lock = threading.RLock()
        self._changed = threading.Event()  # a cell or session ended (a drain looks again)
        # Mostly waiting (on Redis, on actors): opens of a dead worker's many sessions,
        # and the requests its clients send again, run side by side.
        self._blocking = ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="worker-ops")
        self._stopping = threading.Event()
        self._draining = False
        self._started_ms = time.time() * 1000
        self._threads: list[threading.Thread] = []
        self._ids = itertools.count()
        self._last_read = "0-0"  # the inbox's last entry read
        self._close_inbox_script = self.client.register_script(script_source("close_inbox"))

    # -- life ------------------------------------------------------------------------

    def start(self) -> CellWorker:
        self._last_read = self._create_inbox()  # (requests come after its first entry)
        self._beat()
        self.leases.start()
        for worker in self.tool_workers:
            worker.start()
        for target, name in ((self._read_loop, "worker-inbox"), (self._beat_loop, "worker-beat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("cell worker %s serves up to %d sessions", self.id, self.capacity)
        return self

    def _create_inbox(self) -> str:
        return create_stream(self.link, self.inbox, self._inbox_ttl_ms)

    def drain(self, timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S) -> None:
        """Take no new sessions; hand every idle session to another worker as soon as its
        cells have all finished (waiting up to `timeout_s`), then stop. Sessions still
        busy at the timeout are left to their leases (see the recovery of issue 14)."""
        with self._lock:
            self._draining = True
        self._beat_quietly()
        deadline = time.monotonic() + timeout_s
        while self.sessions and time.monotonic() < deadline:
            self._changed.clear()
            with self._lock:
                for session in list(self._served):
                    if self._served[session].backend.live_cells() == 0:
                        self._hand_over(session)
            if self.sessions:  # (woken by a cell's end or an open's, or at least this often)
                self._changed.wait(min(DRAIN_RECHECK_S, max(0.0, deadline - time.monotonic())))
        with self._lock:
            for session, entry in self._served.items():  # left to their leases
                phases = entry.backend.cell_phases()
                log.warning("drain timed out: session %s has live cells %s", session, phases)
        self.stop()

    def stop(self) -> None:
        """Stop at once: leave the fleet, stop serving (the leases of sessions still
        served expire and other workers may take them), stop the services."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(redis.RedisError):  # (else it wakes within its block)
            wake_reader(self.link, self.inbox)
        for thread in self._threads:
            thread.join(timeout=READ_BLOCK_MS / 1000 + 2)
        with contextlib.suppress(redis.RedisError, BrokerError):
            self._close_inbox()
            self.registry.leave(self.id)
        self.leases.stop()
        with self._lock:
            served, self._served = dict(self._served), {}
        for entry in served.values():
            entry.backend.abandon()
        self._blocking.shutdown(wait=False, cancel_futures=True)
        for worker in self.tool_workers:
            worker.stop()
        for dispatcher in self._dispatchers.values():
            dispatcher.close()
        self.services.notifier.shutdown()
        self.scheduler.close()
        self.pool.close()
        self.journal.close()
        self.link.close()
        self.client.close()

    @property
    def sessions(self) -> list[str]:
        """The sessions served here, those being opened too (one look, under the lock)."""
        with self._lock:
            return [*self._served, *self._opening]

    # -- the inbox ---------------------------------------------------------------------

    def _read_loop(self) -> None:
        last = self._last_read
        while not self._stopping.is_set():
            commands: list[Command] = [("XTRIM", self.inbox, "MINID", entry_after(last))]
            commands.append(
                ("XREAD", "COUNT", READ_COUNT, "BLOCK", READ_BLOCK_MS, "STREAMS", self.inbox, last)
            )
            try:
                replies = self.link.run(commands)
            except redis.RedisError as error:
                log.warning("inbox not read: %s", failure_reason(error) or error)
                self._stopping.wait(0.2)
                continue
            for entry_id, fields in read_entries(replies[-1]):
                last = self._last_read = entry_id
                if WAKE_FIELD not in fields:  # (the inbox's own first entry, or a wake-up)
                    try:
                        self._receive(fields)
                    except Exception:  # the reader lives on: every request needs it
                        log.exception("a request was not handled")

    def _close_inbox(self) -> None:
        """Delete the inbox, sending on what arrived since the last read: its sessions
        are no longer served here (opens are refused: the client tries another)."""
        left = self._close_inbox_script(keys=[self.inbox], args=[self._last_read])
        for _, fields in left:
            try:
                message = wire.decode(entry_fields(fields))
            except wire.WireError:
                continue
            op, session = message.get("op"), message.get("session")
            if op == "open":
                self._answer(message, {"kind": "full"})
            elif op not in ("drop", "notified") and isinstance(session, str):
                self._answer(message, self._moved(session))

    def _receive(self, fields: dict[bytes, bytes]) -> None:
        try:
            message = wire.decode(fields)
        except wire.WireError as error:
            log.error("a request that is not one: %s", error)
            return
        self._guarded(message, self._serve, message)

    def _guarded(self, message: dict[str, Any], serve: Callable[..., None], *args: Any) -> None:
        """Serve `message` with `serve(*args)`; a failure is its answer."""
        try:
            serve(*args)
        except SessionFencedError as error:  # a newer owner serves it (this worker stalled):
            self._answer(message, self._moved(error.session))  # the request goes there
        except (BrokerError, ActorError) as error:  # the session's refusal: for the model,
            session = message.get("session")  # unless its actor ended as it was fenced off
            if isinstance(session, str) and self.journal.fenced_off(session):
                self._answer(message, self._moved(session))  # (here its opening failed)
            else:
                self._answer(message, _error(error))
        except (KeyError, TypeError, ValueError) as error:
            log.error("a malformed request %s: %r", message.get("id"), error)
            reply = {"kind": "error", "message": f"cellfleet worker refused a request: {error!r}"}
            self._answer(message, reply)
        except Exception as error:  # never lose the worker over one request
            log.exception("request %s failed", message.get("id"))
            self._answer(message, {"kind": "error", "message": f"cellfleet worker failed: {error}"})

    def _serve(self, message: dict[str, Any]) -> None:
        op, session = message.get("op"), message.get("session")
        if not isinstance(session, str) or not isinstance(message.get("client"), str):
            log.error("request %s names no session or client", message.get("id"))
            return
        if op == "open":
            self._open_soon(message)
        elif op == "notified":  # a client's notify callback returned
            with self._lock:
                returned = self._notifying.get(str(message.get("of")))
            if returned is not None:
                returned.set()
        elif op == "drop":  # the caller went away: its observer is gone (spec §4.3)
            self._drop(message)
        else:
            with self._lock:  # (held while the session is asked: no handover meanwhile)
                waiting = self._opening.get(session)
                if waiting is not None:  # (served once it is open here)
                    waiting.append(message)
                    return
                served = self._served.get(session)
                if served is not None and self.journal.fenced_off(session):
                    served = None  # (a newer owner serves it; it is let go here soon)
                if served is not None and self._draining and self._moving(served, message):
                    return
                if served is not None:
                    served.used_at = time.monotonic()
                    self._serve_session(op, message, served)
            if served is None:
                self._answer(message, self._moved(session))

    def _drop(self, message: dict[str, Any]) -> None:
        """Cancel the observer of the request a caller left; the client is told it was
        dropped unless its answer went out first (the client keeps that one for the
        cell's next observer, as the cell would have)."""
        of = str(message.get("of"))
        with self._lock:
            dropped = self._observers.pop(of, None)
            # (a copy of it may wait too, sent again: it is dropped as it is served)
            if self._waits_here(str(message.get("session")), of):
                self._dropped_early[of] = None
                while len(self._dropped_early) > DROPPED_EARLY_KEPT:
                    self._dropped_early.popitem(last=False)
        if dropped is not None and dropped.cancel():
            self._tell(str(message.get("client")), {"id": of, "kind": "dropped"})

    def _waits_here(self, session: str, request: str) -> bool:
        """Whether `request` waits here to be served (with the lock held): for its
        session's opening, a handover, or a look in the log (sent again)."""
        served = self._served.get(session)
        waiting = [*self._opening.get(session, ()), *((served and served.deferred) or ())]
        looking = request in self._serving_again or request in self._queued_again
        return looking or any(m.get("id") == request for m in waiting)

    def _moving(self, served: _Served, message: dict[str, Any]) -> bool:
        """Draining (with the lock held): whether `message` goes to the session's next
        owner. A session whose cells have all ended moves now; one whose cells are
        only finishing (answered) takes no more work: its requests wait for the
        handover. (A drain that waited for a quiet moment of a session under load
        could wait for ever.)"""
        if served.deferred is None:
            phases = served.backend.cell_phases()
            if phases and any(phase not in _ENDING for phase in phases.values()):
                return False  # busy: served here until its cells end
            served.deferred = []
        served.deferred.append(message)
        if served.backend.live_cells() == 0:
            self._hand_over(served.backend.session_id)
        return True

    def _serve_session(self, op: Any, message: dict[str, Any], served: _Served) -> None:
        backend = served.backend
        request = str(message.get("id") or "")
        if (message.get("again") or message.get("dropped")) and op in (
            "execute",
            "observe",
            "terminate",
        ):
            with self._lock:
                self._queued_again.add(request)
            self._blocking.submit(self._guarded, message, self._serve_again, op, message, served)
        elif op == "execute":
            cell, future = backend.execute(
                str(message["call_id"]),
                str(message["source"]),
                int(message["yield_time_ms"]),
                message.get("max_output_tokens"),
                ObserveMode(message.get("mode", "yield")),
                tools=None
                if message.get("tools") is None
                else CellTools.from_records(message["tools"]),
                request=request,
            )
            self._announce_later(message, future, cell)
            self._observed(message, future, cell)
        elif op == "observe":
            cell, mode = str(message["cell"]), ObserveMode(message.get("mode", "yield"))
            future = backend.observe(cell, mode, int(message.get("yield_time_ms", 0)), request)
            self._observed(message, future, cell)
        elif op == "terminate":
            cell = str(message["cell"])
            self._observed(message, backend.terminate(cell, request), cell)
        elif op == "yield_now":
            backend.yield_now(str(message["cell"]))
        elif op == "tool_outcome":
            if served.delegates is not None:
                error = message.get("error")
                served.delegates.answer(
                    int(message["delegate"]),
                    message.get("result"),
                    None if error is None else str(error),
                    key=str(message["key"]),
                )
        elif op == "shutdown":
            self._blocking.submit(self._shutdown, message, served)
        else:
            self._answer(message, {"kind": "error", "message": f"unknown request `{op}`"})

    def _serve_again(self, op: str, message: dict[str, Any], served: _Served) -> None:
        """A request sent again because the worker it went to died before answering: if
        that worker recorded its answer, the same answer (it was lost with the worker);
        else, for an exec whose cell it admitted, that cell (recovered here) is observed;
        else it is served as if new."""
        session, request = served.backend.session_id, str(message.get("id") or "")
        with self._lock:  # served here still (a copy, or the first): its one answer comes
            self._queued_again.discard(request)
            live = self._observers.pop(request, None) if message.get("dropped") else None
            if live is None:
                if request and (request in self._observers or request in self._serving_again):
                    return  # (a late heartbeat made its client take this worker for dead)
                self._serving_again.add(request)
        if live is not None:  # its caller went away: dropped now (its drop was not heard)
            if live.cancel():
                self._answer(message, {"kind": "dropped"})
            return
        try:
            cell = self._cell_of(op, message, session, request)
            own = () if cell is None else self.journal.read(session, cells=[cell])
            trace = request_trace((event for _, event in own), request)
            if trace.answer is not None:
                answer = wire.encode_answer(trace.answer)
                self._answer(message, {"kind": "answer", "cell": trace.cell, "answer": answer})
            elif message.get("dropped"):  # its caller went away: nobody is to observe
                self._answer(message, {"kind": "dropped"})
            elif op == "execute" and trace.cell is not None:
                mode = ObserveMode(message.get("mode", "yield"))
                yield_time_ms = int(message["yield_time_ms"])
                future = served.backend.observe(trace.cell, mode, yield_time_ms, request)
                self._observed(message, future, trace.cell)
            else:
                self._serve_session(op, {**message, "again": False}, served)
        finally:  # (its observer, if any, is registered by now)
            with self._lock:
                self._serving_again.discard(request)

    def _cell_of(self, op: str, message: dict[str, Any], session: str, request: str) -> str | None:
        """The cell that a request sent again is about: an observe's or a terminate's own,
        the one an exec created (if it was admitted), or None. Only that cell's events
        are read then, not a long session's whole log: each takeover reads one per
        request its clients send again."""
        if not request:
            return None
        if op != "execute":
            return str(message["cell"])
        admissions = (e for _, e in self.journal.read(session, mentioning=request))
        return next(
            (e.cell for e in admissions if isinstance(e, CellAdmitted) and e.request == request),
            None,
        )

    def _announce_later(
        self, message: dict[str, Any], future: Future[CellAnswer], cell: str
    ) -> None:
        """Tell the client the new cell's id unless its answer comes first (it carries
        the id too): most cells answer within `ANNOUNCE_AFTER_S`, and each saves a
        message and a wake-up of the caller. (A late `started` is ignored.)"""

        def announce() -> None:
            if not future.done():
                self._answer(message, {"kind": "started", "cell": cell})

        def soon() -> None:  # (off the scheduler's thread: a slow Redis delays no timer)
            with contextlib.suppress(RuntimeError):  # (the worker stopped)
                self._blocking.submit(announce)

        if not future.done():
            self.scheduler.call_later(ANNOUNCE_AFTER_S, soon)

    def _observed(self, message: dict[str, Any], future: Future[CellAnswer], cell: str) -> None:
        """Answer the request when `future` settles (a client may drop it first)."""
        request_id = str(message.get("id"))
        with self._lock:
            dropped = request_id in self._dropped_early
            if dropped:
                del self._dropped_early[request_id]
            else:
                self._observers[request_id] = future
        if dropped and future.cancel():  # its drop came first
            self._answer(message, {"kind": "dropped"})
            return

        def settled(done: Future[CellAnswer]) -> None:
            with self._lock:
                self._observers.pop(request_id, None)
            if not done.cancelled():
                self._answer_future(message, done, cell)

        future.add_done_callback(settled)

    def _answer_future(
        self, message: dict[str, Any], future: Future[CellAnswer], cell: str
    ) -> None:
        try:
            answer = future.result()
        except Exception as error:
            if self.journal.fenced_off(str(message.get("session"))):
                # A newer owner serves the session (this worker was slow, not dead): the
                # request goes there, where its cell goes on.
                self._answer(message, {"kind": "moved", "owner": None})
            else:
                self._answer(message, _error(error))
            return
        crash_point("answer_recorded")
        self._answer(
            message, {"kind": "answer", "cell": cell, "answer": wire.encode_answer(answer)}
        )

    def _answer(self, message: dict[str, Any], reply: dict[str, Any]) -> None:
        """Send `reply` to the request's client (its stream is gone if it is)."""
        self._tell(str(message.get("client")), {"id": message.get("id"), **reply})

    def _tell(self, client: str, reply: dict[str, Any]) -> bool:
        """Send `reply` to `client`; False if its answers stream is gone (so is it). An
        answer to a request that met a connection Redis closed is sent once more, on a
        new one (a copy that got through twice is ignored by the client; not a `moved`,
        which sends its request on: nor a timeout, which may hold an actor's thread)."""
        stream = self.keys.client_answers(client)
        command: Command = ("XADD", stream, "NOMKSTREAM", "*", wire.FIELD, wire.encode(reply))
        again = reply.get("id") is not None and reply.get("kind") != "moved"
        try:
            try:
                (entry,) = self.link.run([command])
            except redis.ConnectionError:
                if not again:
                    raise
                (entry,) = self.link.run([command])
        except redis.RedisError as error:  # (a longer outage: the client asks again)
            log.warning("client %s not answered: %s", client, failure_reason(error) or error)
            return True  # (maybe there: Redis is away)
        return entry is not None

    def _tell_all(self, entry: _Served, reply: dict[str, Any]) -> bool:
        """Send `reply` to every client of the session; clients that are gone are
        forgotten. Whether any was there."""
        gone = [client for client in list(entry.clients) if not self._tell(client, reply)]
        for client in gone:
            with contextlib.suppress(ValueError):
                entry.clients.remove(client)
        return bool(entry.clients)

    # -- sessions ----------------------------------------------------------------------

    def _open_soon(self, message: dict[str, Any]) -> None:
        try:
            self._blocking.submit(self._open, message)
        except RuntimeError:  # stopping: another worker opens it
            self._answer(message, {"kind": "full"})

    def _open(self, message: dict[str, Any]) -> None:
        session = str(message["session"])
        opening = self._start_opening(message, session)
        if opening is None:  # (answered, or to be once it is open here)
            return
        entry, config = opening
        refusal: dict[str, Any] | None = None
        try:  # (its lease claimed; its actor opens the log and recovers its cells)
            entry.backend = ActorSessionBackend(self.services, config)
        except SessionOwnedElsewhereError as error:
            refusal = {"kind": "moved", "owner": error.owner}
        except Exception as error:
            refusal = _error(error)
        self._end_opening(message, session, entry, refusal)

    def _start_opening(
        self, message: dict[str, Any], session: str
    ) -> tuple[_Served, SessionConfig] | None:
        """What opening `session` here needs, or None when this open is answered (or
        waits for an open under way)."""
        client = str(message["client"])
        with self._lock:
            waiting = self._opening.get(session)
            if waiting is not None:  # (answered once it is open here)
                waiting.append(message)
                return None
            served = self._served.get(session)
            if served is not None:  # served here already: this client hears it too
                self._open_again(message, session, served)
                return None
            if self._full():
                self._answer(message, {"kind": "full"})
                return None
            try:
                config = self._config(message, session)
            except (wire.WireError, LookupError, TypeError, ValueError, AttributeError) as error:
                self._answer(message, {"kind": "error", "message": f"malformed session: {error!r}"})
                return None
            clients = message.get("clients")  # (a handover: everyone who had opened it)
            if not isinstance(clients, list) or not all(isinstance(c, str) for c in clients):
                clients = [client]
            entry = _Served(backend=None, open_message=message, clients=clients)  # type: ignore[arg-type]
            config.notify_with_id = partial(self._notify, (session, entry))
            if message["config"].get("client_tools"):
                entry.delegates = DelegateDispatcher(
                    self.journal.link,
                    partial(self._ask_client, (session, entry)),
                    partial(self._withdraw_at_client, (session, entry)),
                    itertools.count(1),
                    outcomes_here=False,
                )
                config.dispatcher = entry.delegates
            config.on_cell_closed = partial(self._closed, session, entry)
            self._opening[session] = []
            return entry, config

    def _open_again(self, message: dict[str, Any], session: str, served: _Served) -> None:
        """(With the lock held.) Answer an open of a session served here already; its
        client (and those a takeover or handover names) hear the session from now on."""
        if self.journal.fenced_off(session):  # (a newer owner took it: let go soon)
            self._answer(message, self._moved(session))
            return
        named = message.get("clients")
        openers = [*(named if isinstance(named, list) else []), message["client"]]
        named_here = dict.fromkeys(c for c in openers if isinstance(c, str) and c)
        new = [c for c in named_here if c not in served.clients]
        if new:
            served.clients.extend(new)
            self._blocking.submit(self._remember, session, served)
        self._answer(message, {"kind": "opened", "owner": self.id})

    def _end_opening(
        self,
        message: dict[str, Any],
        session: str,
        entry: _Served,
        refusal: dict[str, Any] | None,
    ) -> None:
        """Answer the opener (the session still opening: requests for it wait), serve
        the session unless its open was refused or the worker stopped meanwhile, then
        the requests that came for it meanwhile, in the order they came and before any
        later one (under the lock)."""
        welcomed = False
        if refusal is not None:
            self._answer(message, refusal)
        elif not self._stopping.is_set():
            try:
                self._welcome(message, session, entry)
                welcomed = True
            except Exception:  # (never left opening: its requests would wait for ever)
                log.exception("session %s: its opener was not answered", session)
        with self._lock:
            stopped = refusal is None and self._stopping.is_set()  # (`stop` let the rest go)
            if refusal is None and not stopped:
                self._served[session] = entry
                if self.journal.fenced_off(session):  # (taken over while it opened)
                    self._fenced(session)
            for waiting in self._opening.pop(session):
                self._guarded(waiting, self._serve, waiting)
        self._changed.set()  # (a drain looks again)
        if stopped:  # let go at once (its lease too): the client asks another worker
            try:
                entry.backend.hand_over()
            except Exception:
                log.exception("session %s: not let go as the worker stopped", session)
            if not welcomed:
                self._answer(message, {"kind": "full"})

    def _welcome(self, message: dict[str, Any], session: str, entry: _Served) -> None:
        """Answer the opener of a session about to be served here."""
        if self.journal.fenced_off(session):  # (taken over while it opened: let go soon)
            self._answer(message, {"kind": "moved", "owner": None})
            return
        self._remember(session, entry)
        self._beat_quietly()  # (before the answer: the client's next placement sees it)
        self._answer(message, {"kind": "opened", "owner": self.id})

    # -- takeover ----------------------------------------------------------------------

    def _full(self) -> bool:
        """(With the lock held.) Whether this worker takes no more sessions."""
        full = len(self._served) + len(self._opening) >= self.capacity
        return full or self._draining or self._stopping.is_set()

    def _remember(self, session: str, entry: _Served) -> None:
        """Keep in Redis what another worker needs to serve the session should this one
        die (its open request and its clients), and watch it (see `_take_over`)."""
        record = {"config": entry.open_message.get("config"), "clients": list(entry.clients)}
        commands: list[Command] = [
            ("HSET", self.keys.session(session).meta, "fleet", wire.encode(record)),
            ("ZADD", self.keys.fleet_watch, self._watch_deadline(), session),
        ]
        try:
            self.link.run(commands)
        except redis.RedisError as error:  # (the next beat watches it; the record waits)
            log.warning("session %s: its takeover record not kept: %s", session, error)

    def _watch_deadline(self) -> int:
        """When this worker's sessions are another's to take if it has not beaten again:
        their leases (renewed since) expire by then at the latest; one still held is
        left alone."""
        return int(time.time() * 1000) + self.leases.ttl_ms

    def _rewatch(self, session: str, after_ms: int) -> None:
        """Look at a watched session again later (not before the others due now)."""
        when = int(time.time() * 1000) + after_ms
        with contextlib.suppress(redis.RedisError):
            self.link.run([("ZADD", self.keys.fleet_watch, "XX", when, session)])

    def _when_free(self, lease_left_ms: int) -> int:
        """When to look again at a session whose lease has `lease_left_ms` (PTTL) to live."""
        return (self.leases.ttl_ms if lease_left_ms < 0 else lease_left_ms) + LEASE_END_MARGIN_MS

    def _unwatch(self, session: str) -> None:
        with contextlib.suppress(redis.RedisError):  # (a stale entry is checked, then dropped)
            self.link.run([("ZREM", self.keys.fleet_watch, session)])

    def _take_over_soon(self) -> None:
        """Look for sessions a dead worker left, off the heartbeat's thread (opening one
        replays its cells, and the lock may be held long: a heartbeat waits for neither)."""
        self._submit_once(self._taking_over, self._take_over)

    def _submit_once(self, running: threading.Event, job: Callable[[], None]) -> None:
        """Run `job` on the pool unless a run of it is under way (`running`, which `job`
        clears when it ends)."""
        if running.is_set():
            return
        running.set()
        try:
            self._blocking.submit(job)
        except RuntimeError:  # stopping
            running.clear()

    def _take_over(self) -> None:
        """Serve the sessions whose worker died with cells still running (or with its
        shutdown begun and not finished), once their leases expired, whether or not a
        client asks for them: their timers fire and their tool outcomes arrive on time.
        Their clients are told where the session went."""
        try:
            with self._lock:
                if self._full():
                    return
            names: Any = self.client.zrangebyscore(
                self.keys.fleet_watch, "-inf", time.time() * 1000, start=0, num=TAKEOVER_LOOK
            )
            due = [bytes(name).decode() for name in names]
            # Workers that look at once take different sessions first: a dead worker's
            # sessions are opened (their logs read, their cells replayed) by all the
            # workers in parallel, not by the first to look, one after another.
            random.shuffle(due)
            for session in due:  # (each stops at once when this worker has no room left)
                self._take_over_one(session)
        except (redis.RedisError, BrokerError) as error:
            log.warning("sessions of dead workers not looked at: %s", error)
        finally:
            self._taking_over.clear()

    def _take_over_one(self, session: str) -> None:
        with self._lock:  # (no room: it stays due, for the other workers)
            if session in self._served or session in self._opening or self._full():
                return
        k = self.keys.session(session)
        state: Any = self.link.run(
            [("HMGET", k.meta, "fleet", "live", "shutdown", "finished"), ("PTTL", k.lease)]
        )
        (record, live, shutdown, finished), lease_left_ms = state
        if lease_left_ms != NO_KEY:  # served (its owner's next beat watches it again),
            self._rewatch(session, self._when_free(lease_left_ms))  # a claim, or a Host's
            return
        if not record or finished == b"1" or (int(live or 0) <= 0 and shutdown != b"1"):
            self._unwatch(session)  # nothing runs: its next request opens it, wherever
            return
        kept = orjson.loads(record)
        message = {
            "op": "open",
            "id": None,
            "client": "",
            "session": session,
            "config": kept.get("config"),
            "adopt": True,
            "clients": kept.get("clients") or [],
        }
        self._open(message)
        with self._lock:
            entry = self._served.get(session)
        if entry is None:  # not opened here: another worker claimed it first (it may die
            # before it opens it: looked at again when its claim ends), or it failed (later)
            (lease_left_ms,) = self.link.run([("PTTL", k.lease)])
            held = lease_left_ms != NO_KEY
            self._rewatch(session, self._when_free(lease_left_ms) if held else TAKEOVER_BACKOFF_MS)
            return
        log.info("session %s taken over from a worker that stopped", session)
        self._tell_all(entry, {"id": None, "kind": "moved", "session": session, "owner": self.id})

    def _config(self, message: dict[str, Any], session: str) -> SessionConfig:
        spec = message["config"]
        tools, namespaces = wire.decode_tools(spec)
        registry = str(spec.get("registry", self.tools.fingerprint))
        return SessionConfig(
            session_id=session,
            inventory=build_inventory(tools, namespaces),
            max_yield_time_ms=spec.get("max_yield_time_ms"),
            # (a client that answers its calls itself: see `_open`)
            dispatcher=None if spec.get("client_tools") else self._dispatcher(registry),
            memory_limit_bytes=spec.get("memory_limit_bytes"),
            label=str(spec.get("label", "")),
        )

    def _dispatcher(self, registry: str) -> ToolDispatcher:
        """The dispatcher to the tool workers of tool set `registry` (one per set); the
        local tools of this worker's own set run here."""
        with contextlib.suppress(KeyError):
            return self._dispatchers[registry]
        dispatcher: ToolDispatcher = BrokerDispatcher(
            connect_redis(self.redis_url), registry=registry, keys=self.keys
        )
        if registry == self.tools.fingerprint:
            dispatcher = with_local_tools(self.tools, dispatcher)
        self._dispatchers[registry] = dispatcher
        return dispatcher

    def _shutdown(self, message: dict[str, Any], served: _Served) -> None:
        session, fenced = served.backend.session_id, False
        try:
            served.backend.shutdown(float(message.get("timeout_s", 30.0)))
        except SessionFencedError:  # a newer owner serves it: the shutdown goes there
            fenced = True
            self._answer(message, self._moved(session))
        except Exception as error:
            self._answer(message, _error(error))
        else:
            self._answer(message, {"kind": "done"})
        finally:
            with self._lock:
                if self._served.get(session) is served:
                    del self._served[session]
            if not fenced:  # (the new owner's watch stays)
                self._unwatch(session)
            self._changed.set()
            self._beat_soon()

    def _hand_over(self, session: str, *, to_anyone: bool = True) -> None:
        """Give an idle session to another worker (with the lock held): release it, have
        the other worker adopt it (unless not `to_anyone`: the worker that next gets a
        request for it opens it), and tell its client where it went."""
        entry = self._served.pop(session)
        entry.backend.hand_over()
        self._unwatch(session)  # (its next owner watches it)
        target = self.registry.pick(exclude=[self.id]) if to_anyone else None
        if target is not None:
            adopt = {**entry.open_message, "id": None, "adopt": True, "clients": entry.clients}
            command: Command = (
                "XADD",
                self.keys.worker_inbox(target.worker),
                "NOMKSTREAM",
                "*",
                wire.FIELD,
                wire.encode(adopt),
            )
            with contextlib.suppress(redis.RedisError):
                self.link.run([command])
        owner = None if target is None else target.worker
        self._tell_all(entry, {"id": None, "kind": "moved", "session": session, "owner": owner})
        for message in entry.deferred or ():
            self._answer(message, {"kind": "moved", "owner": owner})
        log.info("session %s handed over to %s", session, owner or "the next worker to open it")

    def _fenced(self, session: str) -> None:
        """A newer owner took `session`: stop serving it (its writes are refused
        already). Called on whichever thread met the refusal, maybe the session's own
        actor: the rest happens on another thread."""
        with contextlib.suppress(RuntimeError):  # stopping: everything stops anyway
            self._blocking.submit(self._stop_serving, session)

    def _stop_serving(self, session: str) -> None:
        with self._lock:  # (opened here again since the fence: that one is kept)
            fenced = self.journal.fenced_off(session)
            entry = self._served.pop(session, None) if fenced else None
        self._changed.set()
        if entry is not None:
            entry.backend.fenced()
            self._tell_all(entry, {"id": None, "kind": "moved", "session": session, "owner": None})
            log.warning("session %s: served by another worker now; its cells here ended", session)
            self._beat_soon()

    # -- what the sessions tell their clients (on actor threads: no lock) ---------------

    def _notify(
        self, served: tuple[str, _Served], call_id: str, cell: str, text: str, number: int
    ) -> None:
        """Hand a notification to the client and wait until its callback returned, as
        the in-process callback is waited for (the cell's end waits for it a while)."""
        session, entry = served
        notification_id = f"{self.id}-n{next(self._ids)}"
        returned = threading.Event()
        with self._lock:
            self._notifying[notification_id] = returned
        reply: dict[str, Any] = {"id": None, "kind": "notify", "session": session}
        reply["call_id"] = call_id
        reply |= {"cell": cell, "text": text, "notification": notification_id, "number": number}
        try:
            # Every client that opened the session runs its callback; the first to
            # confirm ends the delivery.
            if self._tell_all(entry, reply) and not returned.wait(NOTIFY_ACK_TIMEOUT_S):
                log.warning("no client confirmed a notification of cell %s", cell)
        finally:
            with self._lock:
                self._notifying.pop(notification_id, None)

    def _ask_client(
        self, served: tuple[str, _Served], delegate_id: int, invocation: ToolInvocation
    ) -> None:
        """Send a nested call to the session's client (it answers with `tool_outcome`);
        with no client left, the call fails as the in-process host's do."""
        session, entry = served
        call = wire.encode_invocation(invocation)
        reply = {"id": None, "kind": "tool_call", "session": session, "delegate": delegate_id}
        reply["owner"] = self.id  # (where its outcome goes)
        if not self._tell_all(entry, {**reply, "call": call}) and entry.delegates is not None:
            entry.delegates.answer(delegate_id, None, texts.CLIENT_GONE)

    def _withdraw_at_client(self, served: tuple[str, _Served], delegate_id: int) -> None:
        session, entry = served
        reply = {"id": None, "kind": "tool_withdrawn", "session": session}
        self._tell_all(entry, {**reply, "delegate": delegate_id})

    def _closed(self, session: str, entry: _Served, cell: str) -> None:
        self._tell_all(entry, {"id": None, "kind": "closed", "session": session, "cell": cell})
        self._changed.set()

    def _owner_elsewhere(self, session: str) -> str | None:
        owner = self.leases.owner_of(session)
        return None if owner == self.id else owner

    def _moved(self, session: str) -> dict[str, Any]:
        """The answer that sends a request on to the session's owner (None: the client
        finds it; so when Redis cannot say)."""
        try:
            return {"kind": "moved", "owner": self._owner_elsewhere(session)}
        except (redis.RedisError, BrokerError):
            return {"kind": "moved", "owner": None}

    # -- heartbeat ---------------------------------------------------------------------

    def _beat(self) -> None:
        # Without the lock: a thread that holds it may wait long on a session actor, and
        # a late beat makes clients take this worker for dead. (Copying the keys of a
        # dict is one step under the GIL.)
        # (Opening first: one that moves to the served meanwhile counts twice, not never.)
        opening, sessions, draining = len(self._opening), list(self._served), self._draining
        info = WorkerInfo(
            worker=self.id,
            capacity=self.capacity,
            sessions=len(sessions) + opening,
            draining=draining,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_ms=self._started_ms,
        )
        # Its sessions are watched: another worker takes them if this one stops beating.
        beat = self.registry.beat(
            info,
            sessions,
            self.heartbeat_ms,
            self._watch_deadline(),
            inbox_ttl_ms=self._inbox_ttl_ms,
        )
        if not beat and not self._stopping.is_set():
            log.warning("the inbox was gone (Redis lost its data?): made anew")
            self._create_inbox()

    def _beat_soon(self) -> None:
        """Publish a changed load now (placement reads it), off the caller's thread."""
        with contextlib.suppress(RuntimeError):  # stopping
            self._blocking.submit(self._beat_quietly)

    def _beat_quietly(self) -> None:
        try:
            self._beat()
        except (redis.RedisError, BrokerError) as error:  # (Redis restarting): next beat
            log.warning("heartbeat not sent: %s", failure_reason(error) or error)

    def _beat_loop(self) -> None:
        beats = 0
        while not self._stopping.wait(self.heartbeat_ms / 1000 / BEATS_PER_TTL):
            self._beat_quietly()
            self._take_over_soon()
            beats += 1
            if beats % PRUNE_EVERY_BEATS == 0:  # (on the pool: it waits on actors)
                self._submit_once(self._tidying, self._tidy)

    def _tidy(self) -> None:
        """Let finished sessions leave the index, and idle sessions go."""
        try:
            self._pruned_from = self.journal.prune_index(self._pruned_from)
        except Exception as error:
            log.warning("sessions index not pruned: %s", error)
        try:
            self._release_idle()
        except Exception:
            log.exception("idle sessions not released")
        finally:
            self._tidying.clear()

    def _release_idle(self) -> None:
        """Sessions nobody used for `idle_release_s`: one whose cells all ended is let
        go (it is opened again from its log wherever its next request goes); one whose
        every client is gone is shut down, as a harness's dropped session is. A client
        that vanished holds no capacity for ever."""
        idle_before = time.monotonic() - self.idle_release_s
        with self._lock:
            idle = [(s, e) for s, e in self._served.items() if e.used_at < idle_before]
            for session, entry in idle:
                if entry.backend.live_cells() == 0:
                    self._hand_over(session, to_anyone=False)
                elif not self._clients_alive(entry):
                    log.info("session %s: its clients are gone; shut down", session)
                    entry.used_at = time.monotonic()  # (once)
                    shutdown = {"op": "shutdown", "id": None, "client": "", "session": session}
                    self._blocking.submit(self._shutdown, shutdown, entry)
        self._changed.set()

    def _clients_alive(self, entry: _Served) -> bool:
        streams = [self.keys.client_answers(client) for client in entry.clients]
        if not streams:
            return False
        # One EXISTS per stream: on a Redis Cluster they live in different slots.
        return any(self.link.run([("EXISTS", stream) for stream in streams]))


def _error(error: BaseException) -> dict[str, Any]:
    return {"kind": "error", "error": type(error).__name__, "message": str(error)}


WORKER_READY_LINE = "cellfleet worker "  # the first line on standard output once serving


def run_worker_process(
    url: str,
    registry: ToolRegistry,
    *,
    capacity: int = DEFAULT_CAPACITY,
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    lease_ms: int = DEFAULT_LEASE_MS,
    retention_s: int = DEFAULT_RETENTION_S,
    keys: Keys = DEFAULT_KEYS,
) -> None:
    """Serve sessions until SIGTERM or SIGINT, then drain (a second signal: stop now)."""
    # The handler only notes the signal (a flag, no lock): the main thread acts on it.
    signalled: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: signalled.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: signalled.append(signum))
    worker = CellWorker(
        url,
        capacity=capacity,
        tools=registry,
        lease_ms=lease_ms,
        retention_s=retention_s,
        keys=keys,
    )
    worker.start()
    print(f"{WORKER_READY_LINE}{worker.id} serves up to {capacity} sessions", flush=True)
    while not signalled:
        time.sleep(0.1)  # (a signal is noticed within 0.1 s)
    log.info("cell worker %s drains (up to %.0f s)", worker.id, drain_timeout_s)
    drained = threading.Thread(target=worker.drain, args=(drain_timeout_s,), daemon=True)
    drained.start()
    while drained.is_alive() and len(signalled) < 2:
        drained.join(0.1)
    worker.stop()

"""The fleet's client: sessions whose cells run on `cellfleet worker` processes.

`FleetClient(url).open_session(...)` returns the same `Session` as the in-process
`Host`, with the same model-visible outputs; its requests travel through Redis to the
worker that owns the session (`broker.fleet.wire`) and the answers come back through
this client's own answers stream, read by one thread. A new session goes to the least
loaded live worker (`WorkerRegistry.pick`); a request that meets a worker which no longer
serves the session follows it to its new owner.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cellfleet.broker import codec
from cellfleet.broker.client import DEFAULT_EXEC_YIELD_TIME_MS, Session, missing_cell
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.inventory import build_inventory
from cellfleet.broker.contract.responses import CellAnswer, ContentItem, ObserveMode
from cellfleet.broker.contract.tools import JsonValue, NamespaceInfo, ToolDefinition
from cellfleet.broker.errors import (
    BrokerError,
    SessionOwnedElsewhereError,
    SessionShuttingDownError,
)
from cellfleet.broker.fleet import wire
from cellfleet.broker.fleet.kept import Asks, KeptAnswers, Next, Step, with_front
from cellfleet.broker.fleet.registry import WorkerRegistry
from cellfleet.broker.journal import failure_reason, run_retrying
from cellfleet.broker.keys import DEFAULT_KEYS, Keys
from cellfleet.broker.leases import lease_state
from cellfleet.broker.redis.connect import connect_redis
from cellfleet.broker.redis.link import (
    WAKE_FIELD,
    Command,
    create_stream,
    entry_after,
    link_to,
    read_entries,
    wake_reader,
)
from cellfleet.broker.tools.invocation import ToolInvocation
from cellfleet.broker.tools.registry import ToolRegistry
from cellfleet.broker.tools.worker import ToolWorker

log = logging.getLogger(__name__)
DEFAULT_PLACEMENT_TIMEOUT_S = 10.0  # how long an open waits for a worker with room
ANSWERS_TTL_MS = 300_000  # a vanished client's answers stream expires this much later
READ_BLOCK_MS = 1_000
# Sent again (marked `again`) to the session's next owner when its worker died before
# answering: that owner answers from the log what the dead one answered (the answer was
# lost with it), or goes on with the cell the request created (it was recovered).
REPEATABLE_OPS = frozenset({"execute", "observe", "terminate", "shutdown"})
# How often the owners of requests still unanswered are checked: a dead worker's are
# sent on this long after its heartbeat expired, at most.
LIVENESS_EVERY_S = 0.1
LIVENESS_EVERY_MS = int(LIVENESS_EVERY_S * 1000)
# A dropped request (see `broker.fleet.kept`) still unsettled this long after its drop
# is sent again: the cell's next requests wait for it.
DROP_SETTLED_WITHIN_S = 1.0
# A request about a cell whose live owner has not answered this long after its yield
# time is sent again: an answer lost to a Redis outage is given again from the log.
ASKED_AGAIN_OPS = frozenset({"execute", "observe", "terminate"})
DEFAULT_ANSWER_LATE_S = 5.0
MAX_HOPS = 8  # a request sent on from worker to worker this often gives up
RESEND_THREADS = 64
# A session held by a dead worker is asked for again this long after its lease ends.
LEASE_END_MARGIN_S = 0.005
HELD_LOOK_EVERY_S = 0.25  # meanwhile, how often its holder's liveness is looked at again
# An open looks this often at the heartbeat of the worker it waits for; one that missed
# two beats (half its heartbeat's time to live) is taken for dead and the session asked
# of another, without waiting for its heartbeat to expire (were it alive after all, the
# session's lease says so, and the next look asks it again).
OPEN_LOOK_EVERY_S = 0.05
SUSPECT_AT_BEAT_AGE = 0.5
HEARD_NOTIFICATIONS = 4096  # per session: the newest notifications' ids, for repeats

Notify = Callable[[str, str, str], None]


class ClientTools(Protocol):
    """A client that answers its sessions' nested calls itself (Codex's host protocol):
    told each call (`delegate`: the worker's id of it, for `answer_tool`) and each
    withdrawal, on the thread that reads answers, in order with them."""

    def ask(self, backend: FleetSessionBackend, delegate: int, call: ToolInvocation) -> None: ...

    def withdrawn(self, backend: FleetSessionBackend, delegate: int) -> None: ...


class ToolRecords(Protocol):
    """A cell's own tool set, as the log records it (`CellTools`)."""

    @property
    def records(self) -> Sequence[Mapping[str, str | None]]: ...


class NoWorkerError(BrokerError):
    """No live cell worker had room for a session within the placement timeout."""

    retryable = True

    def __init__(self, waited_s: float) -> None:
        super().__init__(
            f"no cellfleet worker with room answered within {waited_s:g} s: start one with "
            "`cellfleet worker` (same REDIS_URL), or more of them"
        )


def connect(redis_url: str, **options: Any) -> FleetClient:
    """A client of the fleet on `redis_url` (options: as `FleetClient`)."""
    return FleetClient(redis_url, **options)


class FleetAnswerError(BrokerError):
    """A worker's refusal of a request; its text is what the model is told."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind  # the worker's error class, for logs


class WorkerLostError(BrokerError):
    """The worker that owned the session stopped before it answered."""

    def __init__(self) -> None:
        super().__init__(texts.WORKER_LOST)


@dataclass(eq=False)
class _Request:
    """A request still waiting for its answer (or, for `execute`, its cell id first)."""

    message: dict[str, Any]
    backend: FleetSessionBackend
    sent_at: float
    hops: int = 0  # times a worker said the session is elsewhere
    started: Future[str] = field(default_factory=Future)  # the cell id (execute)
    answer: Future[Any] = field(default_factory=Future)
    # An exec's or a wait's whose caller went away: told what became of its answer
    # (None: none came), for the cell's next observer (`broker.fleet.kept`).
    on_gone: Callable[[_Request, CellAnswer | None], None] | None = None
    _left: tuple[CellAnswer | None] | None = None  # what it got before `on_gone` was set
    dropped_at: float | None = None  # when its caller went away
    before: Sequence[ContentItem] = ()  # output a dropped caller left, for its answer
    put_back: Callable[[Sequence[ContentItem]], None] | None = None  # `before`, if it fails

    def fail(self, error: BaseException) -> None:
        with contextlib.suppress(InvalidStateError):  # (settled)
            self.started.set_exception(error)
        try:
            self.answer.set_exception(error)
        except InvalidStateError:  # (settled, or dropped)
            if self.answer.cancelled():
                self._gone(None)
            return
        if self.before and self.put_back is not None:  # (in-process, it stays in the cell)
            self.put_back(self.before)

    def settle(self, future: Future[Any], result: Any) -> None:
        try:
            future.set_result(result)
        except InvalidStateError:  # a caller that went away dropped it
            if future is self.answer:
                self._gone(result)

    def _gone(self, answer: CellAnswer | None) -> None:
        with _GONE_LOCK:
            on_gone, self.on_gone = self.on_gone, None
            if on_gone is None:  # (not told yet where: `when_gone` passes it on)
                self._left = (answer,)
                return
        on_gone(self, answer)

    def when_gone(self, on_gone: Callable[[_Request, CellAnswer | None], None]) -> None:
        """Tell `on_gone` what became of the answer its caller left (now, if known)."""
        with _GONE_LOCK:
            left, self._left = self._left, None
            if left is None:
                self.on_gone = on_gone
                return
        on_gone(self, left[0])

    @property
    def cell(self) -> str | None:
        """The cell it is about (an exec's, once started)."""
        cell = self.message.get("cell")
        if cell is None and self.started.done() and self.started.exception() is None:
            cell = self.started.result()
        return None if cell is None else str(cell)


_GONE_LOCK = threading.Lock()  # (rarely taken: only by requests whose caller left)


class FleetClient:
    """Opens sessions on a fleet of cell workers over Redis alone.

    `tools` (or `handlers`): the nested tools of its sessions; `tool_workers` in-process
    tool workers serve them (0: `cellfleet tools` processes or the workers do).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        tools: ToolRegistry | None = None,
        handlers: Mapping[str, Callable[[JsonValue], JsonValue]] | None = None,
        tool_workers: int = 1,
        placement_timeout_s: float = DEFAULT_PLACEMENT_TIMEOUT_S,
        answer_late_s: float = DEFAULT_ANSWER_LATE_S,
        keys: Keys = DEFAULT_KEYS,
    ) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.keys = keys
        self.placement_timeout_s = placement_timeout_s
        self.answer_late_s = answer_late_s
        self.client = connect_redis(
            redis_url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        self.link = link_to(self.client)
        self.workers = WorkerRegistry(self.client, keys)
        self.answers = keys.client_answers(self.id)
        self.registry = tools or ToolRegistry.from_handlers(handlers or {})
        self.tool_workers = [
            ToolWorker(
                connect_redis(redis_url), self.registry, name=f"{self.id}-{i}", keys=keys
            ).start()
            for i in range(tool_workers if self.registry.definitions else 0)
        ]
        self._pending: dict[str, _Request] = {}
        self._sessions: dict[str, FleetSessionBackend] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        # A session's callbacks run in order, and a callback that never returns holds
        # only its own session's.
        self._callbacks = _InOrderBySession()
        # Each resend may wait for its session's lease to expire: enough threads that the
        # sessions of a dead worker move in parallel, not one after another.
        self._resends = ThreadPoolExecutor(RESEND_THREADS, thread_name_prefix="fleet-resend")
        self._closed = threading.Event()
        self._position = run_retrying(self._create_answers)
        self._reader = threading.Thread(target=self._read_loop, name="fleet-answers", daemon=True)
        self._reader.start()

    def _create_answers(self) -> str:
        return create_stream(self.link, self.answers, ANSWERS_TTL_MS)

    # -- sessions ----------------------------------------------------------------------

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
        memory_limit_bytes: int | None = None,
        label: str = "",
        client_tools: ClientTools | None = None,
    ) -> Session:
        """A session on a live worker with room (as `Host.open_session`); raises
        `NoWorkerError` if none had room within the placement timeout. `client_tools`:
        its nested calls are answered by this client (default: by the tool workers)."""
        definitions = list(self.registry.definitions if tools is None else tools)
        spaces = dict(namespaces or {})
        inventory = build_inventory(definitions, spaces)  # (checks them before any worker)
        config = {
            **wire.encode_tools(definitions, spaces),
            "registry": self.registry.fingerprint,
            "client_tools": client_tools is not None,
            "max_yield_time_ms": max_yield_time_ms,
            "memory_limit_bytes": memory_limit_bytes,
            "label": label,
        }
        backend = FleetSessionBackend(
            self,
            session_id or uuid.uuid4().hex,
            config,
            notify or (lambda *_: None),
            on_cell_closed or (lambda _: None),
            client_tools=client_tools,
        )
        self.place(backend)
        with self._lock:
            self._sessions[backend.session_id] = backend
        return Session(
            backend, default_exec_yield_time_ms=default_exec_yield_time_ms, inventory=inventory
        )

    def place(self, backend: FleetSessionBackend, *, adopt: bool = False) -> str:
        """Have a worker serve the session (the one that owns it, else the least loaded
        with room); its id. Waits up to the placement timeout for one; raises
        `NoWorkerError`, or `SessionOwnedElsewhereError` if all that time a process
        that is not a live worker (an in-process `Host`) held the session."""
        deadline = time.monotonic() + self.placement_timeout_s
        tried: set[str] = set()
        held_by: str | None = None  # who held the lease when last seen held
        while True:
            pause = 0.0
            holder, left_ms = lease_state(self.link, self.keys, backend.session_id)
            held_by = None  # (unless held now)
            if holder is not None and not self.workers.is_live(holder):
                # A dead worker's lease (every worker refuses the session until it ends)
                # or an in-process Host's: wait for its end rather than ask in vain
                # (looking again meanwhile: a worker that missed a beat may beat again).
                held_by = holder
                pause = min(left_ms / 1000 + LEASE_END_MARGIN_S, HELD_LOOK_EVERY_S)
            elif (target := holder or self._pick(tried)) is None or len(tried) > 8:
                tried.clear()
                pause = 0.1  # no worker with room yet: look again shortly
            else:  # (its lease's holder is waited for: no other worker may open it)
                reply = self._open_on(target, backend, adopt, patient=target == holder)
                kind = None if reply is None else reply.get("kind")
                if kind == "opened":
                    backend.owner = target
                    return target
                if kind == "error":
                    raise FleetAnswerError(str(reply.get("message")) if reply else "")
                if kind == "full" or reply is None:
                    tried.add(target)
                    pause = 0.05 if target == holder else 0.0  # (asked again: not at once)
                elif kind == "moved":  # its lease is held (by a worker that may be dead)
                    owner_then = reply.get("owner") if reply else None
                    held_by = owner_then if isinstance(owner_then, str) else None
                    pause = 0.05
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                if held_by is not None:
                    raise SessionOwnedElsewhereError(backend.session_id, owner=held_by)
                raise NoWorkerError(self.placement_timeout_s)
            if pause:
                self._closed.wait(min(pause, left_s))

    def _suspect(self, worker: str) -> bool:
        """Whether `worker` is dead or missed two heartbeats (False if Redis cannot say)."""
        try:
            age = self.workers.beat_age(worker)
        except (redis.RedisError, BrokerError):
            return False
        return age is None or age >= SUSPECT_AT_BEAT_AGE

    def _pick(self, tried: set[str]) -> str | None:
        picked = self.workers.pick(exclude=tried)
        return None if picked is None else picked.worker

    def _open_on(
        self, worker: str, backend: FleetSessionBackend, adopt: bool, *, patient: bool = False
    ) -> dict[str, Any] | None:
        """Ask `worker` to serve the session; its reply (None: it is gone, or silent
        unless `patient`)."""
        message: dict[str, Any] = {"op": "open", "config": backend.config, "adopt": adopt}
        request = self._new_request(backend, message)
        if not self._send_to(worker, request):
            self._forget(request)
            return None
        deadline = time.monotonic() + self.placement_timeout_s
        try:
            while True:
                try:
                    reply: dict[str, Any] = request.answer.result(OPEN_LOOK_EVERY_S)
                    break
                except TimeoutError:
                    silent = not patient and self._suspect(worker)
                    if silent or time.monotonic() >= deadline:
                        self._forget(request)
                        return None
        except FleetAnswerError as error:
            return {"kind": "error", "message": str(error)}
        except WorkerLostError:
            return None
        return reply

    # -- requests ----------------------------------------------------------------------

    def request(self, backend: FleetSessionBackend, message: dict[str, Any]) -> _Request:
        """Send a request of `backend`'s session to its owner. A caller that cancels
        the answer's future went away: its owner is told, as a dropped observer."""
        request = self._new_request(backend, message)
        self._dispatch(request)
        request.answer.add_done_callback(partial(self._dropped, request))
        return request

    def ask_about(
        self, backend: FleetSessionBackend, message: dict[str, Any], asks: Asks
    ) -> _Request:
        """As `request`, for a request about a cell (`message["cell"]`): an answer that
        a caller of the cell left (see `broker.fleet.kept`) answers it, or goes in
        front of its answer; it waits until the cell's dropped requests are settled."""
        request = self._new_request(backend, message)
        if asks is Asks.NOTHING:
            self._forget(request)  # (no answer comes)
        request.answer.add_done_callback(partial(self._dropped, request))
        cell = str(message["cell"])
        if backend.shut:  # (the cell is gone with the session)
            self._forget(request)
            request.settle(request.answer, missing_cell(cell).result())
        else:
            self._go(request, cell, backend.kept.take(cell, request, asks))
        return request

    def _go(self, request: _Request, cell: str, step: Next) -> None:
        """Do `step` for a request about `cell`."""
        backend = request.backend
        if step.step is Step.ANSWER:
            self._forget(request)
            try:
                request.answer.set_result(step.answer)
            except InvalidStateError:  # its caller went away meanwhile: kept again
                left = request.answer.cancelled()
                backend.kept.answered(cell, request, taken=False, left=left)
                return
            backend.kept.answered(cell, request, taken=True, left=False)
            if step.closed:
                self._cell_closed(backend, cell)
        elif step.step is Step.SEND and request.answer.done():  # (failed meanwhile)
            if step.before:
                backend.kept.put_back(cell, step.before)
        elif step.step is Step.SEND:
            if step.before:
                request.before = step.before
                request.put_back = partial(backend.kept.put_back, cell)
            self._dispatch(request)

    def _release(self, backend: FleetSessionBackend, cell: str) -> None:
        """Send the requests held for the cell's dropped ones, in the order they came."""
        while (taken := backend.kept.release_next(cell, _unanswered)) is not None:
            request, step = taken
            try:
                self._go(request, cell, step)
            except Exception:  # (the rest go all the same)
                log.exception("a request held for a dropped one was not sent")

    def _dropped(self, request: _Request, answer: Future[Any]) -> None:
        """A caller cancelled its answer: the owner is told, and an exec's or a wait's
        request waits for what becomes of its answer (for the cell's next observer)."""
        if not answer.cancelled():
            return
        cell = request.cell
        backend = request.backend
        if request.message.get("op") in ("execute", "observe") and cell is not None:
            if not backend.kept.dropped(cell, request):
                self._forget(request)  # (held, never sent)
                return
            request.message["dropped"] = True  # (a copy sent again is dropped there)
            request.dropped_at = time.monotonic()
            request.when_gone(partial(self._answer_gone, cell))
        else:
            self._forget(request)
        self._send_drop(request)

    def _send_drop(self, request: _Request) -> None:
        drop = self._new_request(request.backend, {"op": "drop", "of": request.message["id"]})
        self._forget(drop)  # (no answer comes)
        owner = request.message.get("to")
        if isinstance(owner, str):
            with contextlib.suppress(redis.RedisError, BrokerError):
                self._send_to(owner, drop)

    def kept_ended(self, backend: FleetSessionBackend) -> None:
        """The session shut down: requests held for a dropped one find their cell gone,
        and closed callbacks that waited for a kept completion are due."""
        held, unsettled, closed = backend.kept.close()
        for request in unsettled:  # (its caller is gone: nothing is to be asked again)
            self._forget(request)
        for request in held:
            self._forget(request)
            request.settle(request.answer, missing_cell(str(request.message["cell"])).result())
        for cell in closed:
            self._cell_closed(backend, cell)

    def _cell_closed(self, backend: FleetSessionBackend, cell: str) -> None:
        self._callbacks.submit(backend.session_id, _quietly, backend.on_cell_closed, cell)

    def _answer_gone(self, cell: str, request: _Request, answer: CellAnswer | None) -> None:
        """What a dropped request got, kept for the cell's next observer; the requests
        that waited for it go now (off the reader's thread: a send may wait)."""
        first = request.message.get("op") == "execute"
        backend = request.backend
        settled = backend.kept.settled(cell, request, answer, request.before, first=first)
        if settled.closed:
            self._cell_closed(backend, cell)
        if settled.release:
            self._resends.submit(self._release, backend, cell)

    def _new_request(self, backend: FleetSessionBackend, message: dict[str, Any]) -> _Request:
        request_id = f"{self.id}-{next(self._ids)}"
        message = {**message, "id": request_id, "client": self.id, "session": backend.session_id}
        request = _Request(message, backend, time.monotonic())
        with self._lock:
            self._pending[request_id] = request
        return request

    def _dispatch(self, request: _Request) -> None:
        """Send to the session's owner; one that is gone is replaced first."""
        backend = request.backend
        try:
            for _ in range(3):
                owner = backend.owner
                if owner is not None and self._send_to(owner, request):
                    return
                if backend.shut and (cell := request.cell) is not None:  # (not opened anew)
                    self._forget(request)
                    request.settle(request.answer, missing_cell(cell).result())
                    return
                self.place(backend, adopt=True)
        except Exception as error:  # (on a pool thread too: the request fails, never hangs)
            self._forget(request)
            request.fail(error)
            return
        self._forget(request)
        request.fail(WorkerLostError())

    def _send_to(self, worker: str, request: _Request) -> bool:
        """Put the request in `worker`'s inbox; False if it has none (it is gone)."""
        inbox = self.keys.worker_inbox(worker)
        command: Command = (
            "XADD",
            inbox,
            "NOMKSTREAM",
            "*",
            wire.FIELD,
            wire.encode(request.message),
        )
        request.message.pop("to", None)
        (entry,) = run_retrying(lambda: self.link.run([command]))
        if entry is None:
            return False
        request.sent_at = time.monotonic()
        request.message["to"] = worker  # (for the liveness check; the worker ignores it)
        return True

    def _forget(self, request: _Request) -> None:
        with self._lock:
            self._pending.pop(str(request.message["id"]), None)

    # -- answers -----------------------------------------------------------------------

    def _read_loop(self) -> None:
        last_check = time.monotonic()
        while not self._closed.is_set():
            with self._lock:  # requests wait: wake up in time to check their owners
                block_ms = LIVENESS_EVERY_MS if self._pending else READ_BLOCK_MS
            commands: list[Command] = [
                ("XTRIM", self.answers, "MINID", entry_after(self._position)),
                ("PEXPIRE", self.answers, ANSWERS_TTL_MS),
                (
                    "XREAD",
                    "COUNT",
                    256,
                    "BLOCK",
                    block_ms,
                    "STREAMS",
                    self.answers,
                    self._position,
                ),
            ]
            try:
                replies = self.link.run(commands)
            except redis.RedisError as error:  # (Redis restarting): read again shortly
                log.warning("answers not read: %s", failure_reason(error) or error)
                self._closed.wait(0.2)
                continue
            if not replies[1]:  # the stream is gone: Redis lost its data (or it expired)
                self._lost_answers()
                continue
            for entry_id, fields in read_entries(replies[-1]):
                self._position = entry_id
                if WAKE_FIELD in fields:  # (the stream's own first entry, or a wake-up)
                    continue
                try:
                    self._received(fields)
                except Exception:  # the reader lives on: every answer needs it
                    log.exception("an answer was not handled")
            if time.monotonic() - last_check >= LIVENESS_EVERY_S:
                last_check = time.monotonic()
                try:
                    self._check_owners()
                except Exception:  # the reader lives on: every answer needs it
                    log.exception("owners of waiting requests not checked")

    def _lost_answers(self) -> None:
        """Make the answers stream anew; the answers it held are lost with it, so the
        requests that waited for them fail (clearly) instead of waiting for ever."""
        log.warning("the answers stream was gone (Redis lost its data?): made anew")
        with self._lock:  # (before the stream is back: later requests are answered on it)
            waiting, self._pending = list(self._pending.values()), {}
            sessions = list(self._sessions.values())
        for backend in sessions:  # (held requests fail below, none is sent meanwhile)
            _, _, closed = backend.kept.close()
            for cell in closed:
                self._cell_closed(backend, cell)
        with contextlib.suppress(redis.RedisError):
            self._create_answers()
        for request in waiting:
            request.fail(FleetAnswerError(texts.log_unavailable("Redis lost the fleet's streams")))

    def _received(self, fields: dict[bytes, bytes]) -> None:
        try:
            message = wire.decode(fields)
        except wire.WireError as error:
            log.error("an answer that is not one: %s", error)
            return
        request_id = message.get("id")
        if request_id is None:
            self._told(message)
            return
        with self._lock:
            request = self._pending.get(str(request_id))
        if request is None:
            return  # answered already (a late copy), or given up
        if message.get("kind") == "started":
            request.settle(request.started, str(message["cell"]))
            return
        self._forget(request)
        self._settle(request, message)

    def _settle(self, request: _Request, message: dict[str, Any]) -> None:
        """Settle `request` with its final answer, or send it on to where its session went."""
        kind = message.get("kind")
        if kind == "answer":
            try:
                answer = wire.decode_answer(message.get("answer"))
            except wire.WireError as error:
                request.fail(FleetAnswerError(f"cellfleet worker answered badly: {error}"))
                return
            request.settle(request.started, str(message.get("cell")))
            request.settle(request.answer, with_front(answer, request.before))
        elif kind == "dropped":  # (its caller went away: no answer comes)
            request.fail(FleetAnswerError("dropped"))
        elif kind == "error":
            request.fail(FleetAnswerError(str(message.get("message")), str(message.get("error"))))
        elif kind == "moved":
            owner = message.get("owner")
            request.backend.owner = owner if isinstance(owner, str) else None
            if request.message.get("op") == "open":
                request.settle(request.answer, message)
            elif request.hops >= MAX_HOPS:
                request.fail(WorkerLostError())
            else:
                request.hops += 1
                if request.message.get("op") in REPEATABLE_OPS:  # (it may have been served)
                    request.message["again"] = True
                with self._lock:
                    self._pending[str(message["id"])] = request
                self._resends.submit(self._dispatch, request)
        else:
            request.settle(request.answer, message)

    def _told(self, message: dict[str, Any]) -> None:
        """A message about a session, not an answer: notifications, closed cells, and
        a session handed to another worker."""
        with self._lock:
            backend = self._sessions.get(str(message.get("session")))
        if backend is None:
            return
        kind = message.get("kind")
        if kind == "notify":
            args: tuple[str, ...] = (
                str(message["call_id"]),
                str(message["cell"]),
                str(message["text"]),
            )
            notification, number = message.get("notification"), message.get("number")
            if isinstance(number, int) and not backend.first_hearing(args[1], number):
                args = ()  # a repeat: confirmed, not told again
            self._callbacks.submit(backend.session_id, self._deliver, backend, notification, args)
        elif kind == "closed":
            cell = str(message["cell"])
            if not backend.kept.closing(cell):  # (else once its kept completion is claimed)
                self._cell_closed(backend, cell)
        elif kind == "moved":
            owner = message.get("owner")
            backend.owner = owner if isinstance(owner, str) else None
        elif kind in ("tool_call", "tool_withdrawn") and backend.client_tools is not None:
            owner = message.get("owner")
            if isinstance(owner, str):  # (a worker that took the session over asks again)
                backend.owner = owner
            try:
                delegate = int(message["delegate"])
                call = None
                if kind == "tool_call":
                    call = wire.decode_invocation(backend.session_id, message.get("call"))
            except (KeyError, TypeError, ValueError) as error:  # (a WireError too)
                log.error("a malformed %s: %r", kind, error)
                return
            if call is not None:
                backend.client_tools.ask(backend, delegate, call)
            else:
                backend.client_tools.withdrawn(backend, delegate)

    def _deliver(
        self, backend: FleetSessionBackend, notification: Any, args: tuple[str, ...]
    ) -> None:
        """Run the session's notify callback (unless `args` is empty: a repeat), then
        confirm it to the worker (which holds the notification in delivery until then, as
        the in-process session does)."""
        if args:
            _quietly(backend.notify, *args)
        if notification is not None:
            self.tell_owner(backend, {"op": "notified", "of": notification})

    def tell_owner(self, backend: FleetSessionBackend, message: dict[str, Any]) -> bool:
        """Send a message that gets no answer to the session's owner as known now, never
        waiting for a placement; whether it went (not: no owner known, or it is gone)."""
        owner = backend.owner
        if owner is None:
            return False
        request = self._new_request(backend, message)
        self._forget(request)  # (no answer comes)
        try:
            return self._send_to(owner, request)
        except (redis.RedisError, BrokerError) as error:
            log.warning("session %s: %s not sent: %s", backend.session_id, message["op"], error)
            return False

    def _check_owners(self) -> None:
        """Send again, to the session's next owner, the requests whose worker died
        before answering them (see `REPEATABLE_OPS`); fail the others. Ask a live
        owner again for an answer overdue (see `_lost_after`)."""
        now = time.monotonic()
        with self._lock:
            waiting = [r for r in self._pending.values() if now - r.sent_at > LIVENESS_EVERY_S]
        owners = {str(r.message["to"]) for r in waiting if "to" in r.message}
        if not owners:
            return
        try:
            dead = {owner for owner in owners if not self.workers.is_live(owner)}
        except (redis.RedisError, BrokerError):  # Redis is away: look again next time
            return
        for request in waiting:
            if str(request.message.get("to")) not in dead:
                lost_after = self._lost_after(request)
                if lost_after is not None and now > lost_after:
                    # Its answer (or its drop's confirmation) was lost, say to a Redis
                    # outage: asked again, its owner answers from the log, says it is
                    # still on it (nothing), or serves it (it never got it).
                    request.sent_at = now
                    if request.dropped_at is not None:
                        request.dropped_at = now
                    request.message["again"] = True
                    self._resends.submit(self._ask_again, request)
                continue
            if request.message.get("op") in REPEATABLE_OPS and request.hops < MAX_HOPS:
                request.hops += 1
                request.message["again"] = True
                request.message.pop("to", None)  # (not checked again while it is placed)
                request.backend.owner = None  # placed anew once the dead one's lease ends
                self._resends.submit(self._dispatch, request)
            else:
                self._forget(request)
                request.fail(WorkerLostError())

    def _ask_again(self, request: _Request) -> None:
        """Send a copy of `request` to its live owner; one that cannot go now leaves it
        waiting (its owner may be on it: it is not failed for that)."""
        owner = request.backend.owner
        try:
            if owner is not None:
                self._send_to(owner, request)
        except (redis.RedisError, BrokerError) as error:
            request.message["to"] = owner  # (its owner's liveness is still looked at)
            log.warning("request %s not asked again: %s", request.message["id"], error)

    def _lost_after(self, request: _Request) -> float | None:
        """When a live owner's answer still missing is taken for lost (None: never)."""
        if request.dropped_at is not None:
            return request.dropped_at + DROP_SETTLED_WITHIN_S
        message = request.message
        if message.get("op") not in ASKED_AGAIN_OPS:
            return None
        waits_s = 0.0  # (a pending observer has no yield time: asked this often)
        if message.get("mode", str(ObserveMode.YIELD)) == str(ObserveMode.YIELD):
            waits_s = int(message.get("yield_time_ms") or 0) / 1000
        return request.sent_at + waits_s + self.answer_late_s

    # -- the end -----------------------------------------------------------------------

    def forget_session(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(session, None)

    def close(self) -> None:
        """Shut every session down, then stop reading answers."""
        with self._lock:
            sessions = list(self._sessions.values())
        for backend in sessions:
            backend.shutdown()
        self._closed.set()
        with contextlib.suppress(redis.RedisError):  # (else it wakes within its block)
            wake_reader(self.link, self.answers)
        self._reader.join(timeout=READ_BLOCK_MS / 1000 + 2)
        for worker in self.tool_workers:
            worker.stop()
        self._callbacks.shutdown()
        self._resends.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(redis.RedisError):  # (else it expires)
            self.link.run([("DEL", self.answers)])
        self.link.close()
        self.client.close()


class FleetSessionBackend:
    """A session served by a fleet worker, as `Session` uses it (`SessionBackend`)."""

    def __init__(
        self,
        client: FleetClient,
        session_id: str,
        config: dict[str, Any],
        notify: Notify,
        on_cell_closed: Callable[[str], None],
        *,
        client_tools: ClientTools | None = None,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.config = config
        self.notify = notify
        self.on_cell_closed = on_cell_closed
        self.client_tools = client_tools
        self.owner: str | None = None  # the worker that serves it (None: find it)
        self.kept: KeptAnswers[_Request] = KeptAnswers()
        self._shut = threading.Event()
        self._heard: OrderedDict[tuple[str, int], None] = OrderedDict()  # notifications

    @property
    def shut(self) -> bool:
        return self._shut.is_set()

    def first_hearing(self, cell: str, number: int) -> bool:
        """Whether notification `number` of `cell` is new: a worker that took the
        session over sends again those its dead owner could not know were delivered."""
        key = (cell, number)
        if key in self._heard:
            return False
        self._heard[key] = None
        if len(self._heard) > HEARD_NOTIFICATIONS:
            self._heard.popitem(last=False)
        return True

    def execute(
        self,
        call_id: str,
        source: str,
        yield_time_ms: int,
        max_output_tokens: int | None,
        mode: ObserveMode = ObserveMode.YIELD,
        *,
        tools: ToolRecords | None = None,
    ) -> tuple[str, Future[CellAnswer]]:
        """`tools`: the cell's own nested tools (default: the session's)."""
        if self._shut.is_set():  # as the in-process session's: its actor is gone
            raise SessionShuttingDownError
        message = {
            "op": "execute",
            "call_id": call_id,
            "source": source,
            "yield_time_ms": yield_time_ms,
            "max_output_tokens": max_output_tokens,
            "mode": str(mode),
        }
        if tools is not None:
            message["tools"] = list(tools.records)
        request = self.client.request(self, message)
        return request.started.result(), request.answer

    def observe(self, cell_id: str, mode: ObserveMode, yield_time_ms: int) -> Future[CellAnswer]:
        if self._shut.is_set():
            return missing_cell(cell_id)
        message = {
            "op": "observe",
            "cell": cell_id,
            "mode": str(mode),
            "yield_time_ms": yield_time_ms,
        }
        asks = Asks.PENDING if mode == ObserveMode.PENDING else Asks.YIELD
        return self.client.ask_about(self, message, asks).answer

    def terminate(self, cell_id: str) -> Future[CellAnswer]:
        if self._shut.is_set():
            return missing_cell(cell_id)
        message = {"op": "terminate", "cell": cell_id}
        return self.client.ask_about(self, message, Asks.TERMINATE).answer

    def yield_now(self, cell_id: str) -> None:
        if self._shut.is_set():
            return
        # (after the waits held before it: it is for them)
        self.client.ask_about(self, {"op": "yield_now", "cell": cell_id}, Asks.NOTHING)

    def answer_tool(self, delegate: int, key: str, result: Any, error: str | None) -> None:
        """The outcome of a nested call the worker asked this client (`ClientTools`), to
        the session's owner as known now: if that one is gone, the next owner asks again
        (a client that remembers its answers gives that one at once)."""
        message = {"op": "tool_outcome", "delegate": delegate, "key": key}
        error = None if error is None else codec.well_formed(error)  # (the wire is UTF-8)
        self.client.tell_owner(self, message | {"result": result, "error": error})

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every cell and wait for them; idempotent."""
        if self._shut.is_set():
            return
        self._shut.set()
        # Requests held before it go first, as sent (a dropped one they wait for is
        # asked again after `DROP_SETTLED_WITHIN_S`: a longer hold is a worker's fault).
        self.kept.wait_released(min(timeout, 3 * DROP_SETTLED_WITHIN_S))
        try:
            request = self.client.request(self, {"op": "shutdown", "timeout_s": timeout})
            request.answer.result(timeout + 5)
            self.client.kept_ended(self)
            # The cells' closed callbacks came before the answer: they have run on return,
            # as the in-process session's have.
            self.client._callbacks.wait_for(self.session_id, timeout)
        except Exception as error:  # the worker stopped serving it: nothing left to stop
            log.warning("session %s: shutdown not confirmed: %s", self.session_id, error)
            self.client.kept_ended(self)
        finally:
            self.client.forget_session(self.session_id)


class _InOrderBySession:
    """Runs each session's callbacks one after another, sessions side by side, on
    reused threads."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(64, thread_name_prefix="fleet-callbacks")
        self._queues: dict[str, deque[Callable[[], None]]] = {}  # session -> waiting
        self._lock = threading.Lock()
        self._running = threading.local()  # the session whose callbacks a thread runs

    def submit(self, session: str, callback: Callable[..., Any], *args: Any) -> bool:
        """Queue the callback; False if it never runs (the client closed)."""
        task = partial(callback, *args)
        with self._lock:
            queue = self._queues.get(session)
            if queue is not None:  # a run of this session's is on: it takes this one
                queue.append(task)
                return True
            self._queues[session] = deque()
        try:
            self._pool.submit(self._run, session, task)
        except RuntimeError:  # (shut down)
            with self._lock:
                self._queues.pop(session, None)
            return False
        return True

    def wait_for(self, session: str, timeout: float) -> None:
        """Until the session's callbacks submitted so far have run (at once from one of
        them: it would wait for itself)."""
        if getattr(self._running, "session", None) == session:
            return
        ran = threading.Event()
        if self.submit(session, ran.set):
            ran.wait(timeout)

    def _run(self, session: str, task: Callable[[], None]) -> None:
        self._running.session = session
        while True:
            _quietly(task)
            with self._lock:
                queue = self._queues[session]
                if not queue:
                    del self._queues[session]
                    return
                task = queue.popleft()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _unanswered(request: _Request) -> bool:
    return not request.answer.done()


def _quietly(callback: Callable[..., Any], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("a session callback failed")

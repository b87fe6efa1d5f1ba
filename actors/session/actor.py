"""One session (spec §5): cell admission and ids, routing to cells, shutdown.

Callers reach it through `ActorSessionBackend` (its methods ask the actor and return
futures of the cells' answers; they never wait for a cell inside the actor).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import pykka

from cellfleet.actors.base import HereAskedActor, ask_here, tell_here
from cellfleet.actors.cell.actor import CellActor
from cellfleet.actors.cell.context import CellContext, CellEnd
from cellfleet.actors.cell.deadlines import yield_timeout_ms
from cellfleet.actors.cell.facts import CellFacts
from cellfleet.actors.cell.handle import CellHandle, Observer, missing
from cellfleet.actors.cell.log import FailedEnding
from cellfleet.actors.cell.messages import Abandon, Begin, Recover, YieldDue
from cellfleet.actors.replay.plan import plan
from cellfleet.actors.runtime import v8
from cellfleet.actors.runtime.pool import ContextPool, runtime_identity
from cellfleet.actors.runtime.protocol import CellSpec, RuntimeTool
from cellfleet.actors.scheduler import Scheduler
from cellfleet.actors.session.store import SessionStore
from cellfleet.broker import events as ev
from cellfleet.broker.contract.inventory import ToolInventory
from cellfleet.broker.contract.responses import CellAnswer, ObserveMode
from cellfleet.broker.contract.tools import ToolDefinition, ToolKind
from cellfleet.broker.crash import crash_point
from cellfleet.broker.errors import (
    BrokerError,
    CellIdSpaceExhaustedError,
    CellLostError,
    SessionShuttingDownError,
)
from cellfleet.broker.events import TerminationReason, wall_clock_ms
from cellfleet.broker.journal import DEFAULT_RETENTION_S, MAX_CELL_ID, RedisJournal
from cellfleet.broker.leases import Leases
from cellfleet.broker.tools.invocation import ToolDispatcher

Notify = Callable[[str, str, str], None]  # (exec call id, cell id, text)


log = logging.getLogger(__name__)
MAX_UNTOLD_FAILURES = 256  # failures of unobserved cells kept for their next wait
FENCED_CHECK_S = 0.05  # how often `fenced` looks whether a cell it waits for stopped first


@dataclass(kw_only=True)
class SessionServices:
    """What every session of a process shares."""

    journal: RedisJournal
    pool: ContextPool
    scheduler: Scheduler
    dispatcher: ToolDispatcher
    notifier: Executor  # hands notifications to the sessions' `notify` callbacks
    clock: Callable[[], float] = wall_clock_ms
    retention_s: int = DEFAULT_RETENTION_S  # a finished session's keys expire this later
    leases: Leases | None = None  # one owner per session (None: the log alone, in tests)
    # Told every closed cell's final facts (session, cell, facts); for tests.
    audit: Callable[[str, str, CellFacts], None] | None = None


@dataclass(frozen=True, slots=True)
class CellTools:
    """A cell's nested tools: as the runtime installs them, as the log records them
    (once per session, named by `digest`), and by JS global name (what a call names)."""

    runtime: tuple[RuntimeTool, ...]
    records: tuple[dict[str, str | None], ...]
    definitions: dict[str, ToolDefinition]
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        text = orjson.dumps(self.records, option=orjson.OPT_SORT_KEYS)
        object.__setattr__(self, "digest", hashlib.sha256(text).hexdigest()[:32])

    @classmethod
    def of(cls, inventory: ToolInventory) -> CellTools:
        return cls(
            tuple(
                RuntimeTool(name=e.global_name, description=e.description, kind=e.definition.kind)
                for e in inventory.entries
            ),
            inventory.records(),
            {e.global_name: e.definition for e in inventory.entries},
        )

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> CellTools:
        """The tools a harness names for one cell, as `records` (the log's form: name,
        namespace, global_name, kind, description); what a fleet worker is sent."""
        runtime: list[RuntimeTool] = []
        kept: list[dict[str, str | None]] = []
        definitions: dict[str, ToolDefinition] = {}
        for record in records:
            name, global_name = str(record["name"]), str(record["global_name"])
            namespace = None if record["namespace"] is None else str(record["namespace"])
            kind, description = ToolKind(record["kind"]), str(record["description"])
            runtime.append(RuntimeTool(name=global_name, description=description, kind=kind))
            kept.append({"name": name, "namespace": namespace, "global_name": global_name,
                         "kind": str(kind), "description": description})  # fmt: skip
            definitions[global_name] = ToolDefinition(
                name=name, namespace=namespace, description=description, kind=kind
            )
        return cls(tuple(runtime), tuple(kept), definitions)


@dataclass(kw_only=True)
class SessionConfig:
    session_id: str
    inventory: ToolInventory
    max_yield_time_ms: int | None = None
    notify: Notify = field(default=lambda *_: None)
    # Instead of `notify`, told each notification's id too (1, 2, … in its cell): a
    # harness that may get one twice (sent again by a new owner after a crash) drops
    # the repeat.
    notify_with_id: Callable[[str, str, str, int], None] | None = None
    on_cell_closed: Callable[[str], None] = field(default=lambda _: None)
    # Where its nested tool calls go (default: the services' worker fleet); a harness
    # that runs the tools itself (`cellfleet host`: the client) gives its own.
    dispatcher: ToolDispatcher | None = None
    memory_limit_bytes: int | None = None  # per cell (default: the pool's)
    label: str = ""  # the harness's own name for the session, recorded at its opening


@dataclass(frozen=True, slots=True)
class _Call:
    """A call of one of the session actor's methods, as a plain message: a pykka proxy
    inspects the actor on every use, which costs more than the rest of a short exec."""

    method: Callable[..., Any]
    args: tuple[Any, ...] = ()


# What recovering cells needs of the session's other events: its opening, its tool sets,
# and every cell's admission and end (the stored values each cell started from).
RECOVERY_KINDS = (
    ev.SessionOpened.TYPE,
    ev.ToolSetDefined.TYPE,
    ev.CellAdmitted.TYPE,
    ev.CellCompleted.TYPE,
    ev.CellTerminated.TYPE,
)


class SessionActor(HereAskedActor):
    """Owns a session's cells: `execute`, `observe`, `terminate`, `shutdown`."""

    def __init__(
        self, services: SessionServices, config: SessionConfig, first_seq: int = 0
    ) -> None:
        """`first_seq`: the session-level event numbers of this owner start after it."""
        super().__init__()
        self.services = services
        self.config = config
        self.session_id = config.session_id
        self._cells: dict[str, CellHandle] = {}
        self._untold: dict[str, Exception] = {}  # cell id -> failure nobody observed
        self._unrecorded: dict[str, FailedEnding] = {}  # failed cells' ends, not logged yet
        self._last_cell = 0  # the highest cell id this session created
        self._store: SessionStore | None = None  # set when the log is open
        self._seq = first_seq
        self._shutting_down = False
        self._shutdown_error: BrokerError | None = None  # the log refused shutdown_begun
        self._began_shutdown = False  # the log took this actor's shutdown_begun
        self._all_closed: Future[None] = Future()
        self._tools = CellTools.of(config.inventory)
        self._tool_sets: set[str] = set()  # digests of the tool sets the log holds

    def on_start(self) -> None:
        try:
            self._open_log()
        except Exception:  # the actor stops: another owner (or this process) may open it
            if self.services.leases is not None:
                self.services.leases.release(self.session_id)
                # Not served here any more: this process's writes of it are refused (cells
                # that recovery started stop), and whoever served it through this actor
                # (a worker, a Host) lets it go.
                self.services.leases.journal.fence_off(self.session_id)
            raise

    def _open_log(self) -> None:
        """Record the session's opening, take up its state, and recover the cells an
        earlier owner left running."""
        journal = self.services.journal
        time_zone, locale = v8.environment()
        opened = ev.SessionOpened(
            session=self.session_id,
            seq=self._next_seq(),
            at_ms=self.services.clock(),
            max_yield_time_ms=self.config.max_yield_time_ms,
            time_zone=time_zone,
            locale=locale,
            label=self.config.label,
        )
        # The session's own tool set goes with its opening: its cells name it.
        tool_set = self._tool_set(self._tools)
        dispatcher = self.config.dispatcher or self.services.dispatcher
        state = journal.open_session(
            opened,
            () if tool_set is None else (tool_set,),
            replies=dispatcher.replies,
        )
        # (A claim taken over meanwhile: its writes are refused; no cell is recovered here.)
        taken = self.services.leases is not None and not self.services.leases.opened(
            self.session_id
        )
        if tool_set is not None:
            self._tool_sets.add(tool_set.digest)
        self._last_cell = state.last_cell
        self._shutting_down = state.shutting_down
        # A shutdown that an owner began and did not finish (it stopped): this one ends it.
        self._began_shutdown = state.shutting_down and not state.finished
        self._store = SessionStore(
            state.stored, state.stored_version, lambda: journal.stored_snapshot(self.session_id)
        )
        services = self.services
        self._context = CellContext(
            session_id=self.session_id,
            journal=journal,
            store=self._store,
            pool=services.pool,
            scheduler=services.scheduler,
            dispatcher=dispatcher,
            memory_limit_bytes=self.config.memory_limit_bytes or services.pool.memory_limit_bytes,
            tools=self._tools.definitions,
            notify=self.config.notify_with_id or _without_id(self.config.notify),
            notifier=services.notifier,
            on_closed=self._tell_closed,
            clock=services.clock,
            audit=None if services.audit is None else partial(services.audit, self.session_id),
        )
        if taken or (not state.unended and not state.unclosed):
            return
        left = (*state.unended, *state.unclosed)
        # (Read once; of the other cells only what recovery needs: a long session's log
        # is mostly theirs, and a worker taking many sessions over decodes it all.)
        events = [e for _, e in journal.read(self.session_id, cells=left, kinds=RECOVERY_KINDS)]
        if self._shutting_down:  # its cells are ended, not brought back to run
            self._end_lost_cells(state.unended, events, shutdown=True)
            self._close_cells(state.unclosed)
        else:
            self._recover_cells(left, events)

    def _recover_cells(self, cells: Sequence[str], events: Sequence[ev.AnyEvent]) -> None:
        """Bring back the cells that an earlier owner left running (or ended and not
        closed) when it stopped: each is replayed from the log by a cell actor of its
        own and goes on live there, or gives its answer if it ended (see
        `CellActor._recover`); its observers wait meanwhile (`events`: the session's
        log)."""
        for record in plan(events, cells=set(cells)).cells:
            if not record.events or not isinstance(record.events[0], ev.CellAdmitted):
                continue  # nothing to replay from: ended as lost below
            handle = CellHandle(record.cell, self.config.max_yield_time_ms)
            self._cells[record.cell] = handle
            handle.actor = CellActor.start()  # (a replay may take long: on its own thread)
            handle.actor.tell(Recover(handle, record, self._context))
        self._end_lost_cells([cell for cell in cells if cell not in self._cells], events)

    def _close_cells(self, cells: Sequence[str]) -> None:
        """Record the close of cells that ended and were not closed (the session's
        shutdown began: their answers go to nobody)."""
        clock, session = self.services.clock(), self.session_id
        closes = [
            ev.CellClosed(session=session, cell=cell, seq=self._next_seq(), at_ms=clock)
            for cell in cells
        ]
        if closes:
            self.services.journal.append(closes)

    def _end_lost_cells(
        self, cells: Sequence[str], events: Sequence[ev.AnyEvent], *, shutdown: bool = False
    ) -> None:
        """End the cells that an earlier owner left running and that cannot be replayed
        (their admission is not in the log): each is completed with a plain error in the
        log (and closed), and its next observer is told once. With `shutdown` (the
        session's shutdown began before its owner stopped) each is terminated by it
        instead, as it would have been: nothing of it runs again."""
        clock, session, journal = self.services.clock(), self.session_id, self.services.journal
        open_calls = _open_tool_calls(events, set(cells)) if cells else {}
        for cell in cells:
            calls = open_calls.get(cell, [])
            for call_id in calls:  # first: a tool worker records no outcome after the end
                journal.cancel_tool(session, cell, call_id)
            cancelled = [
                ev.ToolCancelled(
                    session=session, cell=cell, seq=self._next_seq(), at_ms=clock, call_id=c
                )
                for c in calls
            ]
            error = CellLostError(cell)
            envelope: ev.Envelope = {
                "session": session,
                "cell": cell,
                "seq": self._next_seq(),
                "at_ms": clock,
            }
            terminal: ev.CellCompleted | ev.CellTerminated = (
                ev.CellTerminated(**envelope, reason=TerminationReason.SHUTDOWN)
                if shutdown
                else ev.CellCompleted(**envelope, error_text=str(error), by_host=True)
            )
            closed = ev.CellClosed(session=session, cell=cell, seq=self._next_seq(), at_ms=clock)
            journal.finish(terminal, before=cancelled, after=[closed])
            if not shutdown:
                self._untold[cell] = error
        while len(self._untold) > MAX_UNTOLD_FAILURES:  # the oldest are forgotten
            del self._untold[next(iter(self._untold))]

    def on_receive(self, message: Any) -> Any:
        assert isinstance(message, _Call)
        return message.method(self, *message.args)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- called through `_Call` messages ------------------------------------------------

    def execute(
        self,
        call_id: str,
        source: str,
        yield_time_ms: int,
        max_output_tokens: int | None,
        mode: ObserveMode = ObserveMode.YIELD,
        *,
        tools: CellTools | None = None,
        request: str = "",
    ) -> tuple[str, Future[CellAnswer]]:
        """Create a cell and start it; returns its id and its first answer. `tools`: the
        cell's own nested tools (default: the session's); `request`: the fleet request
        that asks (recorded with the admission and the answers).

        The cell's admission is recorded in the log with its first events, before
        anything it does is seen outside (see `CellActor`); the log may still refuse it
        then, and the answer is that refusal.
        """
        if self._shutting_down:
            raise SessionShuttingDownError
        if self._last_cell >= MAX_CELL_ID:
            raise CellIdSpaceExhaustedError
        if self._unrecorded:
            self._record_failed_endings()
        assert self._store is not None
        context = self._context
        if tools is None:
            tools = self._tools
        else:
            context = dataclasses.replace(context, tools=tools.definitions)
        stored, stored_version = self._store.snapshot()  # (may fail: nothing taken yet)
        self._define(tools)
        self._last_cell += 1
        cell_id = str(self._last_cell)
        clock = self.services.clock()
        seed = struct.unpack("<4I", os.urandom(16))
        admitted = ev.CellAdmitted(
            session=self.session_id,
            cell=cell_id,
            seq=0,
            at_ms=clock,
            call_id=call_id,
            source=source,
            yield_time_ms=yield_time_ms,
            max_output_tokens=max_output_tokens,
            tools_digest=tools.digest if tools.records else "",
            seed=seed,
            clock_ms=clock,
            stored_version=stored_version,
            request=request,
            runtime=runtime_identity(),
        )
        handle = CellHandle(cell_id, self.config.max_yield_time_ms)
        observer = Observer(mode, yield_timeout_ms(yield_time_ms, handle.max_yield_time_ms))
        observer.admitted = True  # spec §4.2: attached together with the cell
        observer.request = request
        handle.observer = observer
        spec = CellSpec(
            cell_id=cell_id,
            source=source,
            tools=tools.runtime,
            seed=seed,
            clock_ms=clock,
            stored=stored,
        )
        self._cells[cell_id] = handle
        handle.actor = CellActor.start()  # (no thread of its own yet: `lazy_thread`)
        tell_here(handle.actor, Begin(handle, spec, context, admitted))  # (here, if it may)
        return cell_id, observer.future

    def observe(
        self, cell_id: str, mode: ObserveMode, yield_time_ms: int, request: str = ""
    ) -> Future[CellAnswer]:
        handle = self._cells.get(cell_id)
        if handle is None:
            return self._untold_failure(cell_id) or missing(cell_id)
        return handle.observe(mode, yield_time_ms, request)

    def terminate(self, cell_id: str, request: str = "") -> Future[CellAnswer]:
        handle = self._cells.get(cell_id)
        if handle is None:
            return self._untold_failure(cell_id) or missing(cell_id)
        return handle.terminate(request=request)

    def yield_now(self, cell_id: str) -> None:
        """Answer the cell's current observer now with its output so far (Codex's
        `operation/yield`); nothing if it has none."""
        handle = self._cells.get(cell_id)
        if handle is not None and handle.observer is not None and handle.actor is not None:
            handle.actor.tell(YieldDue(handle.observer))

    def _define(self, tools: CellTools) -> None:
        """Record a tool set the first time a cell of this session gets it (a cell's
        admission names it by digest: 128 tools' records were 10 KB per admission)."""
        defined = self._tool_set(tools)
        if defined is not None:
            self.services.journal.append([defined])
            self._tool_sets.add(defined.digest)

    def _tool_set(self, tools: CellTools) -> ev.ToolSetDefined | None:
        """The event that records `tools`, unless the log has them (or they are none)."""
        if not tools.records or tools.digest in self._tool_sets:
            return None
        return ev.ToolSetDefined(
            session=self.session_id,
            seq=self._next_seq(),
            at_ms=self.services.clock(),
            digest=tools.digest,
            tools=tools.records,
        )

    def _untold_failure(self, cell_id: str) -> Future[CellAnswer] | None:
        """The failure of a cell that ended while nobody observed it, told once."""
        error = self._untold.pop(cell_id, None)
        if error is None:
            return None
        future: Future[CellAnswer] = Future()
        future.set_exception(error)
        return future

    def begin_shutdown(self) -> list[Future[Any]]:
        """Refuse new cells, terminate every cell; the futures settle as they end.

        The cells are stopped even if the log cannot record the shutdown (Redis is
        down); `finish_shutdown` then reports that error.
        """
        self._record_failed_endings()  # (before the shutdown: these cells ended before)
        if not self._shutting_down:
            self._shutting_down = True
            try:
                self._began_shutdown = self.services.journal.begin_shutdown(
                    ev.ShutdownBegun(
                        session=self.session_id, seq=self._next_seq(), at_ms=self.services.clock()
                    )
                )
            except BrokerError as error:
                self._shutdown_error = error
            crash_point("shutdown_begun")
        futures: list[Future[Any]] = [
            h.terminate(TerminationReason.SHUTDOWN) for h in self._cells.values()
        ]
        if not self._cells and not self._all_closed.done():
            self._all_closed.set_result(None)
        return [*futures, self._all_closed]

    def finish_shutdown(self) -> None:
        """Record the end of the shutdown this actor began (another owner of the session
        may have begun it: then that one records its end)."""
        if self._shutdown_error is not None:
            raise self._shutdown_error
        if not self._began_shutdown:
            return
        finished = ev.ShutdownFinished(
            session=self.session_id, seq=self._next_seq(), at_ms=self.services.clock()
        )
        self.services.journal.finish_session(finished, self.services.retention_s)

    def live_cells(self) -> int:
        return len(self._cells)

    def cell_phases(self) -> dict[str, str]:
        """Each live cell's phase (for an operator: what a drain waits for)."""
        return {cell: handle.phase.value for cell, handle in self._cells.items()}

    def abandon_cells(self) -> list[tuple[threading.Event, pykka.ActorRef[Any]]]:
        """Tell every cell to end here, writing nothing (`ActorSessionBackend.fenced`);
        what says each one did, and its actor."""
        ending = []
        for handle in self._cells.values():
            if handle.actor is not None:
                message = Abandon()
                with contextlib.suppress(pykka.ActorDeadError):
                    handle.actor.tell(message)
                    ending.append((message.done, handle.actor))
        self._cells.clear()
        return ending

    def cell_closed(self, cell_id: str, end: CellEnd | None = None) -> None:
        """A cell reached its end and cleaned up: forget it (but a failure nobody was
        told of, for the next observer, and a failed cell's end the log has yet to
        take), then tell the delegate (unless the log refused the cell: then it never
        existed)."""
        end = end or CellEnd(existed=True)
        if self._cells.pop(cell_id, None) is None:
            return
        if end.untold is not None:
            self._untold[cell_id] = end.untold
            while len(self._untold) > MAX_UNTOLD_FAILURES:  # the oldest are forgotten
                del self._untold[next(iter(self._untold))]
        if end.unrecorded is not None:
            self._unrecorded[cell_id] = end.unrecorded
            self._record_failed_endings()
        if end.existed:
            self.config.on_cell_closed(cell_id)
        if self._shutting_down and not self._cells and not self._all_closed.done():
            self._all_closed.set_result(None)

    def _record_failed_endings(self) -> None:
        """Append the ends of failed cells that the log could not take when they failed
        (tried again at each exec and at the shutdown)."""
        for cell_id, ending in list(self._unrecorded.items()):
            try:
                ending.record(self.services.journal)
            except Exception as error:  # the log still refuses: next time
                log.warning("cell %s: its end is not recorded yet: %s", cell_id, error)
                return
            del self._unrecorded[cell_id]

    def _tell_closed(self, cell_id: str, end: CellEnd) -> None:
        """Called by a cell actor; a session already stopped has nothing left to do."""
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(_Call(SessionActor.cell_closed, (cell_id, end)))


def _open_tool_calls(events: Sequence[ev.AnyEvent], cells: set[str]) -> dict[str, list[str]]:
    """The tool calls of `cells` that the log has no outcome for, by cell."""
    open_calls: dict[str, dict[str, None]] = {}
    for event in events:
        if event.cell not in cells:
            continue
        calls = open_calls.setdefault(event.cell, {})
        if isinstance(event, ev.ToolRequested):
            calls[event.call_id] = None
        elif isinstance(event, ev.ToolCompleted | ev.ToolFailed | ev.ToolCancelled):
            calls.pop(event.call_id, None)
    return {cell: list(calls) for cell, calls in open_calls.items()}


def _without_id(notify: Notify) -> Callable[[str, str, str, int], None]:
    return lambda call_id, cell_id, text, _notification_id: notify(call_id, cell_id, text)


class ActorSessionBackend:
    """The client API's view of a session actor (calls return answer futures).

    After shutdown the actor is gone: `execute` then fails with
    `code mode session is shutting down` and every cell is missing (spec §5.2).
    """

    def __init__(self, services: SessionServices, config: SessionConfig) -> None:
        """Serve the session here; raises `SessionOwnedElsewhereError` if another live
        process serves it."""
        self.session_id = config.session_id
        self._leases = services.leases
        first_seq = 0
        if self._leases is not None:
            # Each owner numbers the session's own events in a range of its own (its
            # fencing token's), so that (cell, seq) stays unique across owners.
            first_seq = (self._leases.claim(config.session_id) - 1) << 32
        try:
            self._ref = SessionActor.start(services, config, first_seq)
        except BaseException:  # (no actor, no thread: nobody else lets the claim go)
            if self._leases is not None:
                self._leases.release(config.session_id)
            raise
        self._shutdown_lock = threading.Lock()

    def execute(
        self,
        call_id: str,
        source: str,
        yield_time_ms: int,
        max_output_tokens: int | None,
        mode: ObserveMode = ObserveMode.YIELD,
        *,
        tools: CellTools | None = None,
        request: str = "",
    ) -> tuple[str, Future[CellAnswer]]:
        try:
            result: tuple[str, Future[CellAnswer]] = self._ask(
                partial(SessionActor.execute, tools=tools, request=request),
                call_id,
                source,
                yield_time_ms,
                max_output_tokens,
                mode,
            )
        except pykka.ActorDeadError:
            raise SessionShuttingDownError from None
        return result

    def observe(
        self, cell_id: str, mode: ObserveMode, yield_time_ms: int, request: str = ""
    ) -> Future[CellAnswer]:
        try:
            future: Future[CellAnswer] = self._ask(
                SessionActor.observe, cell_id, mode, yield_time_ms, request
            )
        except pykka.ActorDeadError:
            return missing(cell_id)
        return future

    def terminate(self, cell_id: str, request: str = "") -> Future[CellAnswer]:
        try:
            future: Future[CellAnswer] = self._ask(SessionActor.terminate, cell_id, request)
        except pykka.ActorDeadError:
            return missing(cell_id)
        return future

    def yield_now(self, cell_id: str) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self._ask(SessionActor.yield_now, cell_id)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every cell and wait for them; idempotent, callers may race."""
        with self._shutdown_lock:
            if not self._ref.is_alive():
                return
            try:
                futures: list[Future[Any]] = self._ask(SessionActor.begin_shutdown)
                deadline = time.monotonic() + timeout
                for future in futures:
                    future.exception(max(0.0, deadline - time.monotonic()))
                self._ask(SessionActor.finish_shutdown)
            finally:  # even if the log is unreachable: the session is over
                self._ref.stop()
                if self._leases is not None:
                    self._leases.release(self.session_id)

    def live_cells(self) -> int:
        """How many of its cells have yet to end (0 once it stopped)."""
        try:
            count: int = self._ask(SessionActor.live_cells)
        except pykka.ActorDeadError:
            return 0
        return count

    def cell_phases(self) -> dict[str, str]:
        try:
            phases: dict[str, str] = self._ask(SessionActor.cell_phases)
        except pykka.ActorDeadError:
            return {}
        return phases

    def hand_over(self) -> None:
        """Stop serving the session here, idle, for another process to adopt: nothing
        is written, and its lease is released (the next owner's token is newer)."""
        self.abandon()
        if self._leases is not None:
            self._leases.release(self.session_id)

    def abandon(self) -> None:
        """Stop serving the session here at once, writing nothing (a newer owner took
        it, or this process stops: its lease then expires). Not on the actor's thread."""
        with self._shutdown_lock:
            if self._ref.is_alive():
                self._ref.stop()

    def fenced(self, timeout: float = 10.0) -> None:
        """A newer owner took the session over: its cells here end at once, writing
        nothing (their observers learn why; their tool calls and JavaScript are the new
        owner's now), and the session is no longer served here. Not on its actors'
        threads; returns once the cells ended (or `timeout`)."""
        with self._shutdown_lock:
            if not self._ref.is_alive():
                return
            try:
                ending: list[tuple[threading.Event, pykka.ActorRef[Any]]] = self._ask(
                    SessionActor.abandon_cells
                )
            except pykka.ActorDeadError:
                ending = []
            self._ref.stop()
        deadline = time.monotonic() + timeout
        for done, actor in ending:  # (an actor that stopped first never reads its message)
            while not done.wait(FENCED_CHECK_S) and actor.is_alive():
                if time.monotonic() >= deadline:
                    return

    def _ask(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call `method` on the actor's thread and return its result (or raise)."""
        return ask_here(self._ref, _Call(method, args))

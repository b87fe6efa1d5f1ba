"""One cell's lifecycle (spec §4): the single writer of its events, driving its runtime.

The actor decides, appends, then acts: every event is appended to the session's log
before anything outside the actor can see its effect (an observer's answer, a tool
dispatch, a notification, a timer firing into JavaScript). Events that have no outside
effect yet (output, timers set) are batched and appended with the next one that has.

That holds for the admission too: a cell starts running at once and its `CellAdmitted`
is the first event of its first append. A cell that completes without effects on the
outside before that (the usual short cell) is admitted, completed, answered and closed
by one script: one round trip. If the log refuses the admission (shutdown began, the
session is owned elsewhere), the cell never existed and its caller gets the refusal.
A cell still running or waiting after `ADMIT_WITHIN_S` is admitted anyway, so that the
log shows it meanwhile.

Callers never touch the actor's state: they go through `CellHandle` (cell_handle.py),
which keeps the few facts they must decide on synchronously (phase, current observer,
a buffered completion) behind one lock. The log's first-terminal-wins script is the
final arbiter between completion and termination.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import pykka

from cellfleet.actors.cell.handle import (
    CellHandle,
    Observer,
    ObserveRequest,
    Phase,
    TerminateRequest,
    missing,
)
from cellfleet.actors.cell.notifications import Notifications, Outcome
from cellfleet.actors.runtime.pool import BACKGROUND_DELAY_S, ContextPool
from cellfleet.actors.runtime.protocol import (
    CellSpec,
    Finished,
    NotificationSent,
    OutputItem,
    Pending,
    RuntimeEvent,
    Started,
    Stopped,
    TimerCleared,
    TimerSet,
    ToolCallRequested,
    YieldRequested,
)
from cellfleet.actors.runtime.runtime import CellRuntime
from cellfleet.actors.scheduler import Scheduled, Scheduler
from cellfleet.actors.session.store import SessionStore
from cellfleet.broker import events as ev
from cellfleet.broker.contract.responses import CellAnswer, ContentItem, Result, Terminated, Yielded
from cellfleet.broker.contract.responses import Pending as PendingAnswer
from cellfleet.broker.contract.tools import ToolDefinition
from cellfleet.broker.errors import AdmissionRefusedError, BrokerError
from cellfleet.broker.journal import RedisJournal, appends
from cellfleet.broker.tools.dispatch import BrokerDispatcher
from cellfleet.broker.tools.invocation import CancelHandle, ToolInvocation, ToolOutcome

log = logging.getLogger(__name__)
_T = TypeVar("_T")

POLL_INTERVAL_S = 0.005
MAX_UNSAVED_EVENTS = 256
ADMIT_WITHIN_S = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class CellContext:
    """Everything a cell actor needs from its session (one per session)."""

    session_id: str
    journal: RedisJournal
    store: SessionStore
    pool: ContextPool
    scheduler: Scheduler
    dispatcher: BrokerDispatcher
    tools: Mapping[str, ToolDefinition]  # JS global name -> definition
    notify: Callable[[str, str, str], None]  # (exec call id, cell id, text)
    notifier: Executor  # where notifications are handed to `notify`
    on_closed: Callable[[str, bool], None]  # (cell id, whether the log admitted it)
    clock: Callable[[], float]


# -- messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Begin:
    """The cell an actor started ahead of time is for (its first message)."""

    handle: CellHandle
    spec: CellSpec
    context: CellContext
    admitted: ev.CellAdmitted


@dataclass(frozen=True, slots=True)
class _YieldDue:
    observer: Observer


@dataclass(frozen=True, slots=True)
class _TimerDue:
    timer_id: int
    due_clock_ms: float


@dataclass(frozen=True, slots=True)
class _ToolDone:
    outcome: ToolOutcome


@dataclass(frozen=True, slots=True)
class _Poll:
    pass


@dataclass(frozen=True, slots=True)
class _NotificationsSettled:
    pass


@dataclass(frozen=True, slots=True)
class _AdmitDue:
    """The cell has run for `ADMIT_WITHIN_S`: admit it if nothing did yet."""


@dataclass(frozen=True, slots=True)
class _Release:
    """Hand out held answers even though JavaScript is still running."""


@dataclass(frozen=True, slots=True)
class _CleanUp:
    """The terminal answer went out a moment ago: finish closing the cell."""


_OWN_MESSAGES = (
    ObserveRequest,
    TerminateRequest,
    _YieldDue,
    _TimerDue,
    _ToolDone,
    _Poll,
    _Release,
    _NotificationsSettled,
    _AdmitDue,
    _CleanUp,
)


class _Refused(Exception):  # noqa: N818 - control flow, never seen outside this module
    """The log refused the cell's admission (carries the refusal)."""

    def __init__(self, error: AdmissionRefusedError) -> None:
        super().__init__(str(error))
        self.error = error


class CellActor(pykka.ThreadingActor):
    """Drives one `CellRuntime`; see the module docstring.

    Started ahead of time (see `CellActors`), it learns its cell from its first
    message, `_Begin`.
    """

    use_daemon_thread = True  # an idle actor started ahead must not hold the process

    def __init__(self) -> None:
        super().__init__()
        self.cell_id = ""
        self.runtime: CellRuntime | None = None
        self._began = False

    def _begin(
        self, handle: CellHandle, spec: CellSpec, context: CellContext, admitted: ev.CellAdmitted
    ) -> None:
        self._began = True
        self.handle = handle
        self.spec = spec
        self.ctx = context
        self.cell_id = spec.cell_id
        self.call_id = admitted.call_id  # the exec call that created the cell
        self._seq = 1  # 0 is the admission
        self._unsaved: list[ev.AnyEvent] = [admitted]  # appended first, by the admission
        self._admitted = False
        self._closed_logged = False  # `CellClosed` went with the terminal event
        self._incoming: deque[RuntimeEvent] = deque()
        self._accumulated: list[ContentItem] = []
        self._delivered_outputs = 0
        self._produced_outputs = 0
        self._pending_ids: list[str] = []
        self._pending_ready = False  # a pending answer failed and waits for redelivery
        self._initial_yield: list[ContentItem] | None = None
        self._observed = False  # some observer has been answered
        self._tools: dict[str, CancelHandle] = {}
        self._to_dispatch: list[ToolInvocation] = []  # requested, sent at the batch's end
        self._timers: dict[int, Scheduled] = {}
        self._next_notification = 1
        self._notifications = Notifications(
            context.notifier,
            context.notify,
            self.call_id,
            spec.cell_id,
            on_settled=lambda: self._tell(_NotificationsSettled()),
        )
        self._polling = False
        self._completion: Result | None = None
        self._terminal_reason = "terminate"
        self._closed = False  # the terminal answer went out; only the runtime's end remains
        self._outbox: list[tuple[Future[CellAnswer], CellAnswer]] = []
        self._release_due = False
        self._failing: list[Any] | None = None  # on_failure collects our messages here
        self._start_runtime()

    # -- pykka ----------------------------------------------------------------------

    def _start_runtime(self) -> None:
        prepared = self.ctx.pool.acquire(self.spec.tools)
        self.runtime = CellRuntime(
            self.spec,
            prepared,
            listener=self._incoming.append,
            sink=self._tell,
            release=self.ctx.pool.release,
            memory_limit_bytes=self.ctx.pool.memory_limit_bytes,
        )
        self.runtime.start()
        observer = self.handle.observer
        if observer is not None and observer.mode == "pending":
            self.runtime.set_frontier_mode(True)  # spec §4.7: `execute_to_pending`
        self._process_incoming()
        self._schedule_poll()
        if not self._admitted:  # whatever it waits for (JavaScript, a timer, a tool)
            self.ctx.scheduler.call_later(ADMIT_WITHIN_S, partial(self._tell, _AdmitDue()))

    def on_failure(self, _type: Any, exception_value: Any, _traceback: Any) -> None:
        """A failure (e.g. the event log became unreachable) ends the cell with an error."""
        if not self._began:
            return
        self._fail(BrokerError(f"exec cell {self.cell_id} failed: {exception_value}"))

    def _fail(self, error: Exception) -> None:
        """End the cell with `error` outside its lifecycle (a failure or a refusal).

        Everyone waiting gets the error (no traceback: that went to the log), the cell's
        callbacks are cancelled, its runtime is stopped and its context released, and
        the session forgets it.
        """
        with self.handle.lock:
            waiting = [*self.handle.terminators]
            self.handle.terminators.clear()
            if self.handle.observer is not None:
                waiting.append(self.handle.observer.future)
                self.handle.observer = None
            self.handle.phase = Phase.TOMBSTONE
        self._closed = True
        self._release_answers(now=True)  # recorded before the failure: still valid
        for future in waiting:  # a claimed future is running already
            if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
                future.set_exception(error)
        self._notifications.cancel()
        for cancel in self._tools.values():
            cancel.cancel()
        self._tools.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._stop_runtime_after_failure()
        self.ctx.on_closed(self.cell_id, self._admitted)

    def _stop_runtime_after_failure(self) -> None:
        """Stop the runtime without the (stopped) actor loop: handle its messages here."""
        runtime = self.runtime
        if runtime is None or runtime.done:
            return
        queued: list[Any] = []
        with contextlib.suppress(queue.Empty):
            while True:
                queued.append(self.actor_inbox.get_nowait().message)  # type: ignore[attr-defined]
        self._failing = queued
        runtime.terminate()  # reports through `_tell`, i.e. into `queued`
        for message in queued:
            if runtime.done:
                break
            if not isinstance(message, _OWN_MESSAGES):
                runtime.handle(message)  # ends with releasing (disposing) the context
        self._incoming.clear()

    def on_receive(self, message: Any) -> None:
        try:
            if isinstance(message, _Begin):
                self._begin(message.handle, message.spec, message.context, message.admitted)
            else:
                self._receive(message)
        except _Refused as refused:
            self._fail(refused.error)
            self.stop()

    def _receive(self, message: Any) -> None:
        runtime = self.runtime
        assert runtime is not None
        if self._closed:
            self._after_close(message)
            return
        if isinstance(message, ObserveRequest):
            self._on_observe(message.observer)
        elif isinstance(message, TerminateRequest):
            self._on_terminate(message.reason)
        elif isinstance(message, _YieldDue):
            self._on_yield_due(message.observer)
        elif isinstance(message, _TimerDue):
            self._on_timer_due(message.timer_id, message.due_clock_ms)
        elif isinstance(message, _ToolDone):
            self._on_tool_done(message.outcome)
        elif isinstance(message, _Poll):
            self._polling = False
            runtime.poll()
        elif isinstance(message, _AdmitDue):
            if not self._admitted:
                self._flush()
        elif isinstance(message, _Release):
            self._release_answers(now=True)
        elif isinstance(message, _NotificationsSettled):
            self._record_notifications(self._notifications.take_settled())
        else:  # a message from the V8 thread
            self._preempt_with_due_yield()
            runtime.handle(message)
        self._process_incoming()
        self._release_answers()
        self._schedule_poll()

    def _release_answers(self, *, now: bool = False) -> None:
        """Hand out the answers decided so far (they are recorded in the log already).

        A yield's content is fixed when it is decided, but while the input that yielded
        is still running its answer is held until that input is quiescent, at most
        `POLL_INTERVAL_S`: what the cell does synchronously after `yield_control()`
        (finish, and commit its completion) is then in place before the caller can
        react, as with Codex's host (corpus cases `life_terminate_completed_buffered`,
        `yield_twice_unobserved`).
        """
        if not self._outbox:
            return
        runtime = self.runtime
        if not now and runtime is not None and runtime.busy:
            if not self._release_due:
                self._release_due = True
                self.ctx.scheduler.call_later(POLL_INTERVAL_S, partial(self._tell, _Release()))
            return
        self._release_due = False
        outbox, self._outbox = self._outbox, []
        for future, answer in outbox:
            future.set_result(answer)

    def _schedule_poll(self) -> None:
        """While JavaScript runs, collect what it reports every few milliseconds."""
        runtime = self.runtime
        if runtime is not None and runtime.busy and not self._polling and not self._closed:
            self._polling = True
            self.ctx.scheduler.call_later(POLL_INTERVAL_S, partial(self._tell, _Poll()))

    def _after_close(self, message: Any) -> None:
        """A closed cell: only its runtime's end is processed; a stray observation (one
        registered before the cell closed) is answered as for a missing cell."""
        runtime = self.runtime
        assert runtime is not None
        if isinstance(message, _CleanUp):
            self._clean_up()
        elif isinstance(message, ObserveRequest):
            future = message.observer.future
            if not future.done() and future.set_running_or_notify_cancel():
                future.set_result(missing(self.cell_id).result())
        elif not isinstance(message, _OWN_MESSAGES):
            runtime.handle(message)  # e.g. the `Stopped` that releases the context
            self._incoming.clear()

    def _tell(self, message: Any) -> None:
        """Send this actor a message from another thread; a finished cell drops it."""
        failing = self._failing
        if failing is not None:
            failing.append(message)
            return
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(message)

    # -- events -----------------------------------------------------------------------

    def _make_event(self, cls: type[Any], **fields: Any) -> Any:
        """A new event of this cell with the next sequence number (not yet queued)."""
        event = cls(
            session=self.ctx.session_id,
            cell=self.cell_id,
            seq=self._seq,
            at_ms=self.ctx.clock(),
            **fields,
        )
        self._seq += 1
        return event

    def _event(self, cls: type[Any], **fields: Any) -> Any:
        """Queue an event for the next append."""
        event = self._make_event(cls, **fields)
        self._unsaved.append(event)
        if len(self._unsaved) >= MAX_UNSAVED_EVENTS:
            self._flush()
        return event

    def _flush(self) -> None:
        """Append the batched events; on failure they stay batched (nothing is lost)."""
        if not self._unsaved:
            return
        if self._admitted:
            self.ctx.journal.append(self._unsaved)
        else:
            self._logging(lambda: self.ctx.journal.admit(self._unsaved))
        self._unsaved = []

    def _logging(self, append: Callable[[], _T]) -> _T:
        """Run an append that may carry the admission (first in the batch)."""
        try:
            result = append()
        except AdmissionRefusedError as error:
            raise _Refused(error) from None
        self._admitted = True
        return result

    def _process_incoming(self) -> None:
        while self._incoming:
            event = self._incoming.popleft()
            self._apply(event)
        self._dispatch_pending()

    def _apply(self, event: RuntimeEvent) -> None:
        if isinstance(event, Started):
            self._event(ev.CellStarted)
            observer = self.handle.observer
            if observer is not None:
                self._arm(observer)
        elif isinstance(event, OutputItem):
            self._event(ev.OutputProduced, item=event.item)
            self._accumulated.append(event.item)
            self._produced_outputs += 1
        elif isinstance(event, YieldRequested):
            self._event(ev.YieldRequested)
            self._on_yield_requested()
        elif isinstance(event, ToolCallRequested):
            self._dispatch_tool(event)
        elif isinstance(event, NotificationSent):
            self._send_notification(event.text)
        elif isinstance(event, TimerSet):
            self._event(
                ev.TimerSet,
                timer_id=event.timer_id,
                delay_ms=event.delay_ms,
                due_clock_ms=event.due_clock_ms,
            )
            due = _TimerDue(event.timer_id, event.due_clock_ms)
            self._timers[event.timer_id] = self.ctx.scheduler.call_later(
                event.delay_ms / 1000, partial(self._tell, due)
            )
        elif isinstance(event, TimerCleared):
            self._event(ev.TimerCleared, timer_id=event.timer_id)
            timer = self._timers.pop(event.timer_id, None)
            if timer is not None:
                timer.cancel()
        elif isinstance(event, Pending):
            self._on_pending(list(event.tool_call_ids))
        elif isinstance(event, Finished):
            self._on_finished(event)
        elif isinstance(event, Stopped):
            self._on_stopped()

    # -- observers --------------------------------------------------------------------

    def _arm(self, observer: Observer) -> None:
        if observer.mode != "yield" or observer.deadline is not None:
            return
        observer.deadline = time.monotonic() + observer.yield_ms / 1000
        observer.timer = self.ctx.scheduler.call_at(
            observer.deadline, partial(self._tell, _YieldDue(observer))
        )

    def _current(self) -> Observer | None:
        """The live observer, forgetting one whose caller has gone."""
        with self.handle.lock:
            observer = self.handle.observer
            if observer is not None and observer.gone:
                self.handle.observer = observer = None
            return observer

    def _on_observe(self, observer: Observer) -> None:
        if observer.gone or self.handle.observer is not observer:
            return  # the caller left before we got to it (or was answered): consumes nothing
        observer.admitted = True
        runtime = self.runtime
        assert runtime is not None
        if self._completion is not None:
            self._deliver_completion(observer)
            return
        if observer.mode == "pending":
            if self._pending_ready:
                self._deliver_pending(observer)
            elif runtime.paused:
                runtime.resume()
            else:
                runtime.set_frontier_mode(True)
            return
        # Spec §4.7: a YieldAfter observation continues a paused runtime and forgets the
        # pending frontier (its undelivered items are still in front of the output).
        runtime.set_frontier_mode(False)
        self._pending_ids.clear()
        self._pending_ready = False
        if self._initial_yield is not None and self._observed is False:
            items, self._initial_yield = self._initial_yield, None
            self._deliver(observer, Yielded(cell_id=self.cell_id, content_items=items), items)
            return
        self._arm(observer)

    def _preempt_with_due_yield(self) -> None:
        """Spec §4.2(4): a passed deadline is answered before more runtime output."""
        observer = self.handle.observer
        if (
            observer is not None
            and observer.deadline is not None
            and time.monotonic() >= observer.deadline
        ):
            self._on_yield_due(observer)

    def _on_yield_due(self, observer: Observer) -> None:
        """The deadline passed: answer with the output consumed so far (spec §4.2).

        Output the runtime reported but this actor has not consumed yet is not waited
        for: it belongs to the next answer (spec test
        `yield_timer_preempts_buffered_runtime_output`). A cell being terminated answers
        its observer with the termination instead.
        """
        if self._current() is not observer or self._completion is not None:
            return
        with self.handle.lock:
            if self.handle.phase is Phase.TERMINATING:
                return
        self._yield_to(observer)

    def _on_yield_requested(self) -> None:
        observer = self._current()
        if observer is not None and not observer.admitted:
            observer = None  # a wait still on its way: the yield happened before it
        if observer is not None and observer.mode == "yield":
            self._yield_to(observer)
        elif observer is None and not self._observed and self._initial_yield is None:
            # Spec §4.9: the first yield before anyone observed is kept for them.
            self._initial_yield, self._accumulated = self._accumulated, []

    def _yield_to(self, observer: Observer) -> None:
        items, self._accumulated = self._accumulated, []
        self._deliver(observer, Yielded(cell_id=self.cell_id, content_items=items), items)

    def _on_pending(self, tool_call_ids: list[str]) -> None:
        self._pending_ids.extend(tool_call_ids)
        observer = self.handle.observer
        if observer is not None and observer.mode == "pending":
            # A vanished caller is still tried: its answer is kept for redelivery (§4.9).
            self._deliver_pending(observer)
        else:
            # Spec §4.7: no frontier observer -> forget the ids and continue.
            self._pending_ids.clear()
            runtime = self.runtime
            assert runtime is not None
            runtime.set_frontier_mode(False)

    def _deliver_pending(self, observer: Observer) -> None:
        items, self._accumulated = self._accumulated, []
        ids, self._pending_ids = self._pending_ids, []
        answer = PendingAnswer(cell_id=self.cell_id, content_items=items, pending_tool_call_ids=ids)
        self._pending_ready = False
        if not self._deliver(observer, answer, items, kind="pending", ids=tuple(ids)):
            self._pending_ids = ids + self._pending_ids
            self._pending_ready = True

    def _deliver(
        self,
        observer: Observer,
        answer: CellAnswer,
        items: list[ContentItem],
        *,
        kind: str | None = None,
        ids: tuple[str, ...] = (),
        put_back: bool = True,
    ) -> bool:
        """Answer `observer` with `answer`, which carries the outputs `items`; on a
        vanished caller, put the items back in front (if `put_back`)."""
        with self.handle.lock:
            if self.handle.observer is observer:
                self.handle.observer = None
        if observer.timer is not None:
            observer.timer.cancel()
        if not observer.future.set_running_or_notify_cancel():
            if put_back:
                self._accumulated[0:0] = items
            return False
        kind = kind or type(answer).__name__.lower()
        self._delivered_outputs += len(items)
        delivered = self._event(
            ev.ObservationDelivered,
            kind=kind,
            outputs=self._delivered_outputs,
            pending_tool_call_ids=ids,
        )
        try:
            self._flush()
        except BrokerError as error:  # e.g. the log is unreachable: the answer is an error
            self._unsaved.remove(delivered)
            observer.future.set_exception(error)
            if put_back:
                self._accumulated[0:0] = items
            self._delivered_outputs -= len(items)
            return False
        except _Refused as refused:  # the cell never existed: this caller learns why
            observer.future.set_exception(refused.error)
            raise
        self._observed = True
        self._outbox.append((observer.future, answer))
        return True

    # -- tools, timers, notifications -------------------------------------------------

    def _dispatch_tool(self, call: ToolCallRequested) -> None:
        definition = self.ctx.tools.get(call.name)
        invocation = ToolInvocation(
            session=self.ctx.session_id,
            cell=self.cell_id,
            call_id=call.call_id,
            name=call.name,
            raw_name=definition.name if definition else call.name,
            kind=call.kind,
            input=call.input,
        )
        self._event(
            ev.ToolRequested,
            call_id=call.call_id,
            name=call.name,
            kind=str(call.kind),
            input=call.input,
            idempotency_key=invocation.idempotency_key,
        )
        # Sent at the end of this batch of runtime events, with the batched events.
        self._to_dispatch.append(invocation)

    def _dispatch_pending(self) -> None:
        """Send the batch's tool calls with the batched events (their `tool_requested`
        among them) queued first on the same pipeline: one round trip."""
        calls, self._to_dispatch = self._to_dispatch, []
        if not calls:
            return
        if not self._admitted:  # a cell is admitted before it reaches out
            try:
                self._flush()
            except BrokerError:
                self._to_dispatch[0:0] = calls
                raise
        on_outcome = lambda outcome: self._tell(_ToolDone(outcome))  # noqa: E731
        events, self._unsaved = self._unsaved, []
        try:
            handles = self.ctx.dispatcher.dispatch_batch(
                [(call, on_outcome) for call in calls],
                before=appends(events),
            )
        except BrokerError:
            self._unsaved[0:0] = events  # kept: nothing is lost
            raise
        for call, handle in zip(calls, handles, strict=True):
            self._tools[call.call_id] = handle

    def _on_tool_done(self, outcome: ToolOutcome) -> None:
        if self._tools.pop(outcome.call_id, None) is None or self.runtime is None:
            return  # cancelled, or the cell already finished: dropped (spec §3.3)
        if outcome.recorded and outcome.clock_ms is not None:
            # A worker already appended the outcome; record only when (in input order)
            # and with which clock JavaScript saw it. Nothing outside sees its effect
            # before the next flush, so it rides along with the next batch.
            clock = outcome.clock_ms
            self._event(ev.ToolResultDelivered, call_id=outcome.call_id, clock_ms=clock)
        else:
            clock = self.ctx.clock()
            if outcome.error is None:
                self._event(
                    ev.ToolCompleted, call_id=outcome.call_id, result=outcome.result, clock_ms=clock
                )
            else:
                self._event(
                    ev.ToolFailed, call_id=outcome.call_id, error=outcome.error, clock_ms=clock
                )
            self._flush()
        if outcome.error is None:
            self.runtime.deliver_tool_result(outcome.call_id, outcome.result, clock)
        else:
            self.runtime.deliver_tool_error(outcome.call_id, outcome.error, clock)

    def _on_timer_due(self, timer_id: int, due_clock_ms: float) -> None:
        if self._timers.pop(timer_id, None) is None or self.runtime is None:
            return
        clock = max(self.ctx.clock(), due_clock_ms)
        self._event(ev.TimerFired, timer_id=timer_id, clock_ms=clock)
        self._flush()
        self.runtime.deliver_timer(timer_id, clock)

    def _send_notification(self, text: str) -> None:
        notification_id = self._next_notification
        self._next_notification += 1
        self._event(
            ev.NotificationSent,
            notification_id=notification_id,
            call_id=self.call_id,
            text=text,
        )
        self._flush()
        self._notifications.send(notification_id, text)

    def _record_notifications(self, settled: list[tuple[int, Outcome]]) -> None:
        """Record what became of notifications (a failed one is only logged)."""
        for notification_id, outcome in settled:
            if outcome is Outcome.DELIVERED:
                self._event(ev.NotificationDelivered, notification_id=notification_id)
            elif outcome is Outcome.CANCELLED:
                self._event(ev.NotificationCancelled, notification_id=notification_id)

    def _cancel_outstanding(self) -> None:
        """Spec §4.5: outstanding tool calls are cancelled before the terminal answer."""
        for call_id, cancel in self._tools.items():
            cancel.cancel()
            self._event(ev.ToolCancelled, call_id=call_id)
        self._tools.clear()
        for call in self._to_dispatch:  # requested in this batch, never sent
            self._event(ev.ToolCancelled, call_id=call.call_id)
        self._to_dispatch.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # -- endings ----------------------------------------------------------------------

    def _on_finished(self, finished: Finished) -> None:
        with self.handle.lock:
            requested = self.handle.phase is Phase.TERMINATING
        if requested:  # spec §4.4: a result still queued here does not beat termination
            self._finish_terminated(log=True)
            return
        self._record_notifications(self._notifications.drain())  # spec §4.5(1)
        self._cancel_outstanding()
        terminal = ev.CellCompleted(
            session=self.ctx.session_id,
            cell=self.cell_id,
            seq=self._seq,
            at_ms=self.ctx.clock(),
            error_text=finished.error_text,
            stored_writes=dict(finished.stored_writes),
        )
        self._seq += 1
        before, self._unsaved = self._unsaved, []
        # The usual case: an observer is waiting for exactly this completion. Claim it
        # now, so that its delivery is recorded by the same script that commits.
        claimed = self._claim_for_completion()
        after = []
        if claimed is not None:  # and then the cell closes at once: nothing is left
            outputs = self._delivered_outputs + len(self._accumulated)
            after.append(
                self._make_event(ev.ObservationDelivered, kind="completed", outputs=outputs)
            )
            after.append(self._make_event(ev.CellClosed))
        try:
            won = self.ctx.store.commit(
                finished.stored_writes,
                lambda: self._logging(lambda: self.ctx.journal.finish(terminal, before, after)),
            )
        except BaseException:
            self._unsaved[0:0] = before  # nothing is lost (the cell fails next)
            raise
        self._closed_logged = won == "completed" and bool(after)
        if won != "completed":  # the session's shutdown began first: termination wins
            if won == "shutdown":
                self._terminal_reason = "shutdown"
            self._finish_terminated(log=won == "shutdown", claimed=claimed)
            return
        items, self._accumulated = self._accumulated, []
        self._completion = Result(
            cell_id=self.cell_id, content_items=items, error_text=finished.error_text
        )
        with self.handle.lock:
            if self.handle.phase is Phase.RUNNING:
                self.handle.phase = Phase.COMPLETED
            # A termination that arrived while the commit was in flight finds it
            # committed (the log says so): it returns the completion.
            terminators = bool(self.handle.terminators)
            observer = self.handle.observer
        if claimed is not None:
            self._end_with(self._merged_completion(), "completed", claimed, logged=True)
        elif terminators:
            self._end_with(self._merged_completion(), "completed")
        elif observer is not None:
            self._deliver_completion(observer)

    def _claim_for_completion(self) -> Future[CellAnswer] | None:
        """The observer's future, set running, if the completion will go to it alone."""
        with self.handle.lock:
            observer = self.handle.observer
            if (
                observer is None
                or self.handle.terminators
                or observer.future.running()
                or observer.future.done()
                or (self._initial_yield is not None and observer.mode == "yield")
            ):
                return None  # answered already (held), gone, or not simply ours to end
        if observer.timer is not None:
            observer.timer.cancel()
        if observer.future.set_running_or_notify_cancel():
            return observer.future
        with self.handle.lock:  # the caller left just now: forget it, as `_current` does
            if self.handle.observer is observer:
                self.handle.observer = None
        return None

    def _deliver_completion(self, observer: Observer) -> None:
        """Answer `observer` with the buffered completion, or first with a kept yield."""
        initial = self._initial_yield
        if initial is not None and observer.mode == "yield":
            self._initial_yield = None
            answer = Yielded(cell_id=self.cell_id, content_items=initial)
            if not self._deliver(observer, answer, initial, put_back=False):
                self._initial_yield = initial  # still kept for the next observer
            return
        if observer.timer is not None:
            observer.timer.cancel()
        if not observer.future.set_running_or_notify_cancel():
            with self.handle.lock:
                if self.handle.observer is observer:
                    self.handle.observer = None
            return  # the caller left: the completion stays buffered (spec §4.9)
        self._end_with(self._merged_completion(), "completed", observer.future)

    def _merged_completion(self) -> Result:
        completion = self._completion
        assert completion is not None
        initial, self._initial_yield = self._initial_yield or [], None
        return Result(
            cell_id=self.cell_id,
            content_items=[*initial, *completion.content_items],
            error_text=completion.error_text,
        )

    def _end_with(
        self,
        answer: CellAnswer,
        kind: str,
        claimed: Future[CellAnswer] | None = None,
        *,
        logged: bool = False,
    ) -> None:
        """Give the terminal answer to everyone waiting for it, then close the cell.

        `claimed` is an observer future already set running. The phase becomes
        TOMBSTONE before anyone sees the answer, so whoever reacts to it finds the cell
        gone (spec §4.4: a second terminate after the first returned -> not found).
        """
        with self.handle.lock:
            self.handle.phase = Phase.TOMBSTONE
            observer, self.handle.observer = self.handle.observer, None
            waiting = list(self.handle.terminators)
            self.handle.terminators.clear()
        if observer is not None:
            if observer.timer is not None:
                observer.timer.cancel()
            if observer.future is not claimed:
                waiting.append(observer.future)
        recipients = [f for f in waiting if f.set_running_or_notify_cancel()]
        if claimed is not None:
            recipients.append(claimed)
        if recipients:
            self._delivered_outputs += len(answer.content_items)
            if not logged:  # else the terminal script already recorded it
                self._event(ev.ObservationDelivered, kind=kind, outputs=self._delivered_outputs)
        try:
            self._flush()
        except BrokerError as error:
            for future in recipients:
                future.set_exception(error)
            raise
        self._observed = True
        self._release_answers(now=True)
        for future in recipients:
            future.set_result(answer)
        self._close()

    def _on_terminate(self, reason: str) -> None:
        self._terminal_reason = reason
        if self._completion is not None:  # spec §4.4: a committed completion wins
            self._end_with(self._merged_completion(), "completed")
            return
        runtime = self.runtime
        assert runtime is not None
        if not runtime.done:
            runtime.terminate()  # its remaining output arrives, then Stopped

    def _on_stopped(self) -> None:
        self._finish_terminated(log=True)

    def _finish_terminated(self, *, log: bool, claimed: Future[CellAnswer] | None = None) -> None:
        self._record_notifications(self._notifications.drain(cancel=True))  # spec §4.8
        self._cancel_outstanding()
        if log:
            terminal = ev.CellTerminated(
                session=self.ctx.session_id,
                cell=self.cell_id,
                seq=self._seq,
                at_ms=self.ctx.clock(),
                reason=self._terminal_reason,
            )
            self._seq += 1
            before, self._unsaved = self._unsaved, []
            self._logging(lambda: self.ctx.journal.finish(terminal, before))
        items, self._accumulated = self._accumulated, []
        items = [*(self._initial_yield or []), *items]
        self._initial_yield = None
        self._end_with(Terminated(cell_id=self.cell_id, content_items=items), "terminated", claimed)

    def _close(self) -> None:
        """Spec §4.5(4): clean up, record, then let the session forget us (the phase is
        already TOMBSTONE: the terminal answer went out).

        Only what must precede anything else happens at once; the rest (recording the
        close, telling the session, ending the actor's thread) waits
        `BACKGROUND_DELAY_S`: done right away, it competes with the caller that was just
        answered for the GIL and the cores.
        """
        self._closed = True
        self._cancel_outstanding()
        if self.runtime is not None and not self.runtime.done:
            self.runtime.terminate()
        self.ctx.scheduler.call_later(BACKGROUND_DELAY_S, partial(self._tell, _CleanUp()))

    def _clean_up(self) -> None:
        if not self._closed_logged:
            self._event(ev.CellClosed)
            self._flush()
        self.ctx.on_closed(self.cell_id, True)
        self.stop()


class CellActors:
    """Starts cell actors, keeping one started ahead of time: starting an actor's thread
    costs about as much as running a short cell. The next spare is started in the
    background a moment later, so that it does not compete with the cell just begun."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._spare: pykka.ActorRef[Any] | None = None
        self._refilling = False
        self._closed = False

    def start(
        self, handle: CellHandle, spec: CellSpec, context: CellContext, admitted: ev.CellAdmitted
    ) -> pykka.ActorRef[Any]:
        """An actor running the cell `spec` (it starts at once)."""
        with self._lock:
            ref, self._spare = self._spare, None
            refill = not self._refilling and not self._closed
            self._refilling |= refill
        if refill:  # first: scheduling may wake the scheduler's thread
            self._scheduler.call_later(BACKGROUND_DELAY_S, self._refill)
        if ref is None:
            ref = CellActor.start()
        ref.tell(_Begin(handle, spec, context, admitted))
        return ref

    def close(self) -> None:
        """Stop the spare; actors already handed out end with their cells."""
        with self._lock:
            self._closed = True
            ref, self._spare = self._spare, None
        if ref is not None:
            ref.stop()

    def _refill(self) -> None:
        ref: pykka.ActorRef[Any] | None = CellActor.start()
        with self._lock:
            self._refilling = False
            if self._spare is None and not self._closed:
                self._spare, ref = ref, None
        if ref is not None:
            ref.stop()

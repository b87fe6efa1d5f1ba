"""What a cell does outside itself: nested tool calls, timers, notifications.

Each effect is recorded before anything outside sees it: a tool call sent to the tool
workers has its `ToolRequested` in the same round trip as the call (ahead of it); one
run here or by the harness has it written with its outcome; a timer's firing and a
worker's outcome are recorded before JavaScript gets them; an outcome recorded here is
written while JavaScript goes on with it, and whatever the cell does next is handled
only after that write returned (`tool_done`); a notification is recorded before it is
handed to the harness. Outcomes come back to the actor as messages
(`ToolDone`, `TimerDue`, `NotificationsSettled`) through `tell`. Runs in the cell
actor's turn (see actor.py for the threads that may have it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from cellfleet.actors.cell.context import CellContext
from cellfleet.actors.cell.facts import CellFacts
from cellfleet.actors.cell.log import CellLog, Refused
from cellfleet.actors.cell.messages import NotificationsSettled, TimerDue, ToolDone
from cellfleet.actors.cell.notifications import Notifications, Outcome
from cellfleet.actors.runtime.protocol import TimerCleared, TimerSet, ToolCallRequested
from cellfleet.actors.runtime.runtime import CellRuntime
from cellfleet.actors.scheduler import Scheduled
from cellfleet.broker import codec
from cellfleet.broker import events as ev
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.tools import ToolKind
from cellfleet.broker.crash import crash_point
from cellfleet.broker.errors import BrokerError, SessionFencedError
from cellfleet.broker.tools.invocation import (
    CancelHandle,
    ToolInvocation,
    ToolOutcome,
    idempotency_key,
)


class Effects:
    """One cell's tool calls, timers and notifications in flight."""

    def __init__(
        self,
        ctx: CellContext,
        log: CellLog,
        tell: Callable[[Any], None],
        *,
        tell_here: Callable[[Any], None],
        cell_id: str,
        call_id: str,
    ) -> None:
        self._ctx = ctx
        self._log = log
        self._tell = tell
        self._tell_here = tell_here  # (for outcomes: see `send_requested_tools`)
        self._cell_id = cell_id
        self._call_id = call_id  # the exec call: notifications belong to it
        self._tools: dict[str, CancelHandle] = {}  # sent, outcome not yet delivered
        self._to_send: list[ToolInvocation] = []  # requested, sent at the batch's end
        self._timers: dict[int, Scheduled] = {}
        self._notifications = Notifications(
            ctx.notifier,
            ctx.notify,
            call_id,
            cell_id,
            on_settled=lambda: tell(NotificationsSettled()),
        )

    # -- nested tools -----------------------------------------------------------------

    def request_tool(self, call: ToolCallRequested, runtime: CellRuntime) -> None:
        """Record a tool call; it is sent with the batch (`send_requested_tools`). One
        whose input cannot be stored as JSON fails at once (its promise rejects)."""
        problem = call.problem or codec.json_problem(call.input)
        if problem is not None:
            self._refuse_tool(call, texts.tool_input_not_json(call.name, problem), runtime)
            return
        requested = ev.ToolRequested(
            **self._log.stamp(),
            call_id=call.call_id,
            name=call.name,
            kind=str(call.kind),
            input=call.input,
            idempotency_key=idempotency_key(self._ctx.session_id, self._cell_id, call.call_id),
        )
        invocation = self._invocation(requested)
        sent_to = self._ctx.dispatcher.sends_to(invocation)
        self._log.add(dataclasses.replace(requested, sent_to=sent_to) if sent_to else requested)
        self._to_send.append(invocation)

    def _refuse_tool(self, call: ToolCallRequested, error: str, runtime: CellRuntime) -> None:
        log, clock = self._log, self._ctx.clock()
        log.add(
            ev.ToolRequested(
                **log.stamp(), call_id=call.call_id, name=call.name, kind=str(call.kind)
            )
        )
        log.add(ev.ToolFailed(**log.stamp(), call_id=call.call_id, error=error, clock_ms=clock))
        log.flush()
        runtime.deliver_tool_error(call.call_id, error, clock)

    def send_requested_tools(self) -> None:
        """Send the batch's tool calls with the batched events (their `ToolRequested`
        among them) queued first on the same pipeline: one round trip."""
        calls, self._to_send = self._to_send, []
        if not calls:
            return
        if not self._log.admitted:  # admitted first, on its own: a call is never sent
            try:  # for a cell whose admission the log refuses (its id may be reused)
                self._log.flush()
            except (BrokerError, Refused):  # kept: cancelled and recorded at the end
                self._to_send[0:0] = calls
                raise
        dispatcher = self._ctx.dispatcher
        # An outcome is handled on the thread that received it when the cell is idle
        # (and the dispatcher allows it): the cell's thread is not woken for it.
        tell = self._tell_here if dispatcher.outcomes_here else self._tell
        on_outcome = lambda outcome: tell(ToolDone(outcome))  # noqa: E731
        recorded_first: list[ToolInvocation] = []
        run_here: list[ToolInvocation] = []
        for call in calls:
            (recorded_first if dispatcher.sends_to(call) else run_here).append(call)
        if recorded_first:
            # The batch (the calls' `tool_requested` among it) and the calls: one round trip.
            events, commands = self._log.take_commands()
            try:
                handles = dispatcher.dispatch_batch(
                    [(call, on_outcome) for call in recorded_first],
                    before=commands,
                    check_before=self._log.check_commands,
                )
            except BrokerError:  # kept: cancelled and recorded at the end
                self._log.put_back(events)
                self._to_send[0:0] = calls
                raise
            self._tools.update(zip((call.call_id for call in recorded_first), handles, strict=True))
            crash_point("tool_dispatched")
        # The rest run in this process or its harness: a call's `ToolRequested` goes with
        # a later append (its outcome's, at the latest): one durable write per call.
        if run_here:
            handles = dispatcher.dispatch_batch([(call, on_outcome) for call in run_here])
            self._tools.update(zip((call.call_id for call in run_here), handles, strict=True))

    def tool_done(self, outcome: ToolOutcome, runtime: CellRuntime) -> None:
        """Record a call's outcome (unless a worker did) and hand it to JavaScript.

        An outcome this process records is written while JavaScript goes on with it:
        whatever the cell does next reaches this actor, hence the log and anyone else,
        only after the write returned; a crash in between leaves a log in which the call
        never returned (its cell, recovered, makes it again)."""
        if self._tools.pop(outcome.call_id, None) is None:
            return  # cancelled, or the cell already finished: dropped (spec §3.3)
        log = self._log
        recorded_at = outcome.clock_ms if outcome.recorded else None
        if recorded_at is not None:
            # A worker already appended the outcome; record only when (in input order)
            # and with which clock JavaScript saw it. Nothing outside sees its effect
            # before the next flush, so it rides along with the next batch.
            clock = recorded_at
            log.add(ev.ToolResultDelivered(**log.stamp(), call_id=outcome.call_id, clock_ms=clock))
        else:
            clock = self._ctx.clock()
            if outcome.error is None:
                log.add(
                    ev.ToolCompleted(
                        **log.stamp(),
                        call_id=outcome.call_id,
                        result=outcome.result,
                        clock_ms=clock,
                    )
                )
            else:
                log.add(
                    ev.ToolFailed(
                        **log.stamp(), call_id=outcome.call_id, error=outcome.error, clock_ms=clock
                    )
                )
        if outcome.error is None:
            runtime.deliver_tool_result(outcome.call_id, outcome.result, clock)
        else:
            runtime.deliver_tool_error(outcome.call_id, outcome.error, clock)
        if recorded_at is None:
            crash_point("outcome_unwritten")
            log.flush()

    def _invocation(self, call: ev.ToolRequested) -> ToolInvocation:
        definition = self._ctx.tools.get(call.name)
        return ToolInvocation(
            session=self._ctx.session_id,
            cell=self._cell_id,
            call_id=call.call_id,
            name=call.name,
            raw_name=definition.name if definition else call.name,
            namespace=definition.namespace if definition else None,
            kind=ToolKind(call.kind),
            input=call.input,
            sent_to=call.sent_to,
        )

    # -- a recovered cell -----------------------------------------------------------

    def resume(self, events: Sequence[ev.AnyEvent], facts: CellFacts, runtime: CellRuntime) -> None:
        """Take on what a recovered cell's previous owner left in flight (`events`: the
        cell's own, as its log holds them; `facts`: what they say is open): its tool
        calls (their outcomes now come here; none is sent again), its timers (for the
        time they had left) and the notifications not known to be delivered."""
        requested: dict[str, ev.ToolRequested] = {}
        timers: dict[int, ev.TimerSet] = {}
        notes: dict[int, str] = {}
        for event in events:
            if isinstance(event, ev.ToolRequested):
                requested[event.call_id] = event
            elif isinstance(event, ev.TimerSet):
                timers[event.timer_id] = event
            elif isinstance(event, ev.NotificationSent):
                notes[event.notification_id] = event.text
            elif isinstance(event, ev.NotificationDelivered | ev.NotificationCancelled):
                notes.pop(event.notification_id, None)
        calls = [
            self._invocation(requested[call_id])
            for call_id in sorted(facts.tools, key=_call_number)
            if call_id in requested
        ]
        # Outcomes recorded already are reported during `adopt`: given to JavaScript
        # now, before any caller's request (in input order); later ones come as messages.
        recorded: list[ToolOutcome] = []
        adopting = [True]  # (read and switched under the lock: no outcome slips between)
        lock = threading.Lock()

        def on_outcome(outcome: ToolOutcome) -> None:
            with lock:
                if adopting[0]:
                    recorded.append(outcome)
                    return
            self._tell(ToolDone(outcome))

        handles = self._ctx.dispatcher.adopt([(call, on_outcome) for call in calls])
        self._tools.update(zip((call.call_id for call in calls), handles, strict=True))
        with lock:
            adopting[0] = False
        for outcome in recorded:
            self.tool_done(outcome, runtime)
        for timer_id in sorted(facts.timers):
            set_at = timers.get(timer_id)
            if set_at is not None:
                self._arm(timer_id, set_at.due_clock_ms, set_at.due_clock_ms - self._ctx.clock())
        for notification_id, text in sorted(notes.items()):
            self._notifications.send(notification_id, text)

    # -- timers -----------------------------------------------------------------------

    def set_timer(self, event: TimerSet) -> None:
        self._log.add(
            ev.TimerSet(
                **self._log.stamp(),
                timer_id=event.timer_id,
                delay_ms=event.delay_ms,
                due_clock_ms=event.due_clock_ms,
            )
        )
        self._arm(event.timer_id, event.due_clock_ms, event.delay_ms)

    def _arm(self, timer_id: int, due_clock_ms: float, delay_ms: float) -> None:
        due = TimerDue(timer_id, due_clock_ms)
        self._timers[timer_id] = self._ctx.scheduler.call_later(
            max(0.0, delay_ms) / 1000, partial(self._tell, due)
        )

    def clear_timer(self, event: TimerCleared) -> None:
        self._log.add(ev.TimerCleared(**self._log.stamp(), timer_id=event.timer_id))
        timer = self._timers.pop(event.timer_id, None)
        if timer is not None:
            timer.cancel()

    def timer_due(self, due: TimerDue, runtime: CellRuntime) -> None:
        """Record a timer's firing, then fire it in JavaScript."""
        if self._timers.pop(due.timer_id, None) is None:
            return
        clock = max(self._ctx.clock(), due.due_clock_ms)
        self._log.add(ev.TimerFired(**self._log.stamp(), timer_id=due.timer_id, clock_ms=clock))
        self._log.flush()
        crash_point("timer_recorded")
        runtime.deliver_timer(due.timer_id, clock)

    # -- notifications ----------------------------------------------------------------

    def notify(self, text: str) -> None:
        """Record a notification, then hand it to the harness (spec §4.8)."""
        notification_id = self._log.facts.notifications + 1
        self._log.add(
            ev.NotificationSent(
                **self._log.stamp(),
                notification_id=notification_id,
                call_id=self._call_id,
                text=text,
            )
        )
        self._log.flush()
        self._notifications.send(notification_id, text)

    @property
    def notifying(self) -> bool:
        """Notifications are queued or on their way to the harness."""
        return self._notifications.pending

    def start_notifications(self) -> None:
        """Hand the notifications recorded so far to the harness."""
        self._notifications.start()

    def record_settled_notifications(self) -> None:
        self._record(self._notifications.take_settled())

    def drain_notifications(self, *, cancel: bool) -> None:
        """Wait for the notifications on their way (dropping those not started, if
        `cancel`) and record what became of them: before a terminal answer."""
        self._record(self._notifications.drain(cancel=cancel))

    def _record(self, settled: list[tuple[int, Outcome]]) -> None:
        """Record what became of notifications (a failed one is only logged)."""
        log = self._log
        for notification_id, outcome in settled:
            if outcome is Outcome.DELIVERED:
                log.add(ev.NotificationDelivered(**log.stamp(), notification_id=notification_id))
            elif outcome is Outcome.CANCELLED:
                log.add(ev.NotificationCancelled(**log.stamp(), notification_id=notification_id))

    # -- the end ----------------------------------------------------------------------

    def cancel_outstanding(self) -> None:
        """Spec §4.5: outstanding tool calls are cancelled before the terminal answer;
        timers never fire after it.

        The cancellations are recorded before anyone is told (the log refuses a process
        a newer owner fenced off, one that has not heard of it yet among them): a fenced
        process drops its calls instead, for the new owner adopted them."""
        log = self._log
        if self._to_send and self._ctx.dispatcher.sends_every_call:
            with contextlib.suppress(BrokerError, Refused):  # (kept: cancelled below)
                self.send_requested_tools()
        sent = list(self._tools.values())
        for call_id in self._tools:
            log.add(ev.ToolCancelled(**log.stamp(), call_id=call_id))
        self._tools.clear()
        for call in self._to_send:  # requested in this batch, never sent
            log.add(ev.ToolCancelled(**log.stamp(), call_id=call.call_id))
        self._to_send.clear()
        self._drop_timers()
        if not sent:
            return
        fenced = self._ctx.journal.fenced_off(self._ctx.session_id)
        if not fenced:
            try:
                log.flush()
            except SessionFencedError:
                fenced = True
            except BrokerError:  # (Redis unreachable: kept batched; the workers are told)
                pass
        _end_calls(sent, fenced=fenced)

    def open_tool_calls(self) -> list[str]:
        """The calls requested and not ended (sent or still to send)."""
        return [*self._tools, *(call.call_id for call in self._to_send)]

    def abandon(self, *, fenced: bool = False) -> None:
        """Stop every effect without recording anything (the cell failed). A `fenced`
        process tells nobody its tool calls are cancelled: the session's new owner may
        have adopted them."""
        self._notifications.cancel()
        _end_calls(self._tools.values(), fenced=fenced)
        self._tools.clear()
        self._drop_timers()

    def _drop_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def _end_calls(calls: Iterable[CancelHandle], *, fenced: bool) -> None:
    """Cancel `calls`; a `fenced` process drops them, telling nobody (a newer owner of
    the session may have adopted them)."""
    for call in calls:
        if fenced:
            call.drop()
        else:
            call.cancel()


def _call_number(call_id: str) -> int:
    return int(call_id.removeprefix("tool-"))

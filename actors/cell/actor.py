"""One cell's lifecycle (spec §4): the single writer of its events, driving its runtime.

The actor decides, appends, then acts: every event is appended to the session's log
before anything outside the actor can see its effect (an observer's answer, a tool
dispatch, a notification, a timer firing into JavaScript). Its parts, each with one
job, run in the actor's turn, one message at a time: on the actor's thread, but for
the first message, `Begin`, which the session's thread handles when it can (the cell
starts without waking another thread), for a harness's tool outcome, which the
thread that received it handles when it can, with what the V8 thread reports while
that thread waits on the log (the next call goes out without a thread switch), and for
the quiescent point of an input, which the V8 thread handles when the actor is idle
(`_tell_from_v8`). A cell's ending that waits for notifications runs on the actor's own
thread (`Continue`):

* `CellLog` (log.py) numbers, batches and appends the cell's events; the cell's
  admission rides on its first append, so a short cell is admitted, completed,
  answered and closed by one script: one round trip. A cell still running or waiting
  after `ADMIT_WITHIN_S` is admitted anyway, so that the log shows it meanwhile.
* `Answers` (observers.py) keeps the output until an observer takes it and hands out
  every answer, the terminal one included.
* `Effects` (effects.py) runs the cell's tool calls, timers and notifications.
* This module receives the messages, feeds the runtime and ends the cell.

Callers never touch the actor's state: they go through `CellHandle` (handle.py), which
keeps the few facts they must decide on synchronously (phase, current observer,
terminators) behind one lock. The log's first-terminal-wins script is the final
arbiter between completion and termination.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections import deque
from concurrent.futures import Future
from functools import partial
from typing import Any

import pykka

from cellfleet.actors.base import HereAskedActor, tell_here
from cellfleet.actors.cell import log as cell_log
from cellfleet.actors.cell.context import CellContext, CellEnd
from cellfleet.actors.cell.effects import Effects
from cellfleet.actors.cell.handle import (
    CellHandle,
    ObserveRequest,
    Phase,
    TerminateRequest,
    missing,
)
from cellfleet.actors.cell.log import CellLog, Refused
from cellfleet.actors.cell.messages import (
    OWN_MESSAGES,
    Abandon,
    AdmitDue,
    Begin,
    CleanUp,
    Continue,
    NotificationsSettled,
    Poll,
    Recover,
    Release,
    TimerDue,
    ToolDone,
    YieldDue,
)
from cellfleet.actors.cell.observers import Answers
from cellfleet.actors.replay.plan import CellRecord
from cellfleet.actors.replay.recover import Unrecovered
from cellfleet.actors.replay.recover import recover as recover_cell
from cellfleet.actors.runtime.pool import BACKGROUND_DELAY_S
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
from cellfleet.actors.runtime.runtime import POLL_INTERVAL_S, CellRuntime, RuntimeMessage
from cellfleet.actors.runtime.v8 import V8Context
from cellfleet.actors.scheduler import Scheduled
from cellfleet.actors.session import store as store_module
from cellfleet.broker import events as ev
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.responses import CellAnswer, ObserveMode, Result, Terminated
from cellfleet.broker.crash import crash_point
from cellfleet.broker.errors import (
    BrokerError,
    CellLostError,
    SessionFencedError,
    SessionShuttingDownError,
)
from cellfleet.broker.journal import FinishOutcome, failure_reason

log = logging.getLogger(__name__)
ADMIT_WITHIN_S = 0.05
_TERMINAL_KINDS = (ev.ObservationKind.COMPLETED, ev.ObservationKind.TERMINATED)


def _told(error: BaseException) -> str:
    """What the model is told of a failure: cellfleet's own errors say what happened;
    anything else (a Redis client error names a socket path or a host) only its kind,
    its details being in the log."""
    if isinstance(error, BrokerError):
        return str(error)
    reason = failure_reason(error)
    if reason is not None:
        log.warning("a cell failed on Redis: %s", error)
        return texts.log_unavailable(reason)
    return f"internal error ({type(error).__name__})"


class CellActor(HereAskedActor):
    """Drives one `CellRuntime`; see the module docstring.

    It learns its cell from its first message, `Begin`, handled on the thread that
    started it (the session's `execute`) when it may.
    """

    lazy_thread = True  # (a short cell's messages are all handled by their senders)

    def __init__(self) -> None:
        super().__init__()
        self.cell_id = ""
        self.runtime: CellRuntime | None = None
        self._began = False

    def _begin(self, begin: Begin) -> None:
        log = CellLog(begin.context.journal, begin.context.clock, begin.admitted)
        self._set_up(begin.handle, begin.spec, begin.context, log, begin.admitted.call_id)
        self._start_runtime()

    def _set_up(
        self, handle: CellHandle, spec: CellSpec, ctx: CellContext, log: CellLog, call_id: str
    ) -> None:
        self._began = True
        self.handle: CellHandle = handle
        self.spec: CellSpec = spec
        self.ctx: CellContext = ctx
        self.cell_id = spec.cell_id
        self.log = log
        self.answers = Answers(
            self.handle, self.log, self.ctx.scheduler, self._tell, on_ended=self._close
        )
        self.effects = Effects(
            self.ctx,
            self.log,
            self._tell,
            tell_here=partial(self._tell, here=True),
            cell_id=self.cell_id,
            call_id=call_id,
        )
        self._incoming: deque[RuntimeEvent] = deque()
        self._continuing = False  # its ending waits in `_incoming` for `Continue`
        self._v8_handler: int | None = None  # the V8 thread handling a message here
        self._released_later: V8Context | None = None  # (`_release_context`)
        self._polling = False
        self._terminal_reason = ev.TerminationReason.TERMINATE
        self._closed = False  # the terminal answer went out; only the runtime's end remains
        self._failing: list[Any] | None = None  # on_failure collects our messages here
        # A recovered cell that had ended unanswered: its answer, for its next caller.
        self._settled: tuple[CellAnswer, ev.ObservationKind] | None = None
        # The admission's timer and the last poll's: cancelled when the cell is done.
        self._timers: list[Scheduled | None] = [None, None]

    def _start_runtime(self) -> None:
        prepared = self.ctx.pool.acquire(self.spec.tools, source=self.spec.source)
        limit = self.ctx.memory_limit_bytes
        if limit != self.ctx.pool.memory_limit_bytes:  # the session's own limit
            prepared.context.set_memory_limit(limit)
        self.runtime = self.answers.runtime = CellRuntime(
            self.spec,
            prepared,
            listener=self._incoming.append,
            sink=self._tell,
            release=self._release_context,
            memory_limit_bytes=limit,
            quiescent_sink=self._tell_from_v8,
        )
        self.runtime.start()
        crash_point("cell_started")
        observer = self.handle.observer
        if observer is not None and observer.mode == ObserveMode.PENDING:
            self.runtime.set_frontier_mode(True)  # spec §4.7: `execute_to_pending`
        self._process_incoming()
        self._start_notifications()
        self._schedule_poll()
        if not self.log.admitted:  # whatever it waits for (JavaScript, a timer, a tool)
            admit_due = partial(self._tell, AdmitDue())
            self._timers[0] = self.ctx.scheduler.call_later(ADMIT_WITHIN_S, admit_due)

    def _recover(self, recover: Recover) -> None:
        """Bring back a cell its session's previous owner left running (see
        `actors.replay.recover`), then go on with it live."""
        record, ctx = recover.record, recover.context
        admitted = record.events[0]
        assert isinstance(admitted, ev.CellAdmitted)
        log = CellLog.resumed(ctx.journal, ctx.clock, record.events)
        self._set_up(recover.handle, record.spec, ctx, log, admitted.call_id)
        ended = next(
            (e for e in record.events if isinstance(e, ev.CellCompleted | ev.CellTerminated)), None
        )
        if ended is not None:
            self._settle(record, ended)
            return
        outcome = recover_cell(
            record,
            ctx.pool,
            listener=self._incoming.append,
            sink=self._tell,
            release=ctx.pool.release,
            memory_limit_bytes=ctx.memory_limit_bytes,
        )
        recovered = ev.CellRecovered(
            **log.stamp(),
            replayed=outcome.replayed,
            elapsed_ms=round(outcome.elapsed_s * 1000, 3),
            problem=outcome.problem if isinstance(outcome, Unrecovered) else None,
        )
        log.add(recovered)
        if isinstance(outcome, Unrecovered):
            self._unrecoverable(outcome.problem)
            return
        self.runtime = self.answers.runtime = outcome.runtime
        crash_point("cell_recovering")
        log.flush()  # (the log shows it back before it does anything more)
        outputs = [dict(e.item) for e in record.events if isinstance(e, ev.OutputProduced)]
        self.answers.restore(outputs[log.facts.delivered :])
        self._incoming.extend(outcome.beyond)
        if outcome.resumed_from is not None:  # (its observer went with the old owner)
            # Before any outcome is handed over (`resume`): one recorded meanwhile waits
            # at the next frontier too.
            self.answers.keep_next_frontier()
            outcome.runtime.follow_frontiers(outcome.resumed_from)
        self.effects.resume(record.events, log.facts, outcome.runtime)
        self._process_incoming()
        self._start_notifications()
        self._schedule_poll()

    def _settle(self, record: CellRecord, ended: ev.CellCompleted | ev.CellTerminated) -> None:
        """A cell that ended and was not closed when its owner stopped: closed now if its
        end was answered, else its answer (the outputs nobody was given, and its end) is
        kept for whoever observes or terminates it next (a request a fleet client sent
        again, say)."""
        answered = any(
            isinstance(e, ev.ObservationDelivered) and e.kind in _TERMINAL_KINDS
            for e in record.events
        )
        if answered:
            with self.handle.lock:
                self.handle.phase = Phase.TOMBSTONE
            self._closed = True
            self._clean_up()
            return
        outputs = [dict(e.item) for e in record.events if isinstance(e, ev.OutputProduced)]
        items = outputs[self.log.facts.delivered :]
        if isinstance(ended, ev.CellCompleted):
            answer: CellAnswer = Result(
                cell_id=self.cell_id, content_items=items, error_text=ended.error_text
            )
            self._settled = (answer, ev.ObservationKind.COMPLETED)
        else:
            answer = Terminated(cell_id=self.cell_id, content_items=items)
            self._settled = (answer, ev.ObservationKind.TERMINATED)
        with self.handle.lock:
            self.handle.phase = Phase.COMPLETED

    def _unrecoverable(self, problem: str) -> None:
        """End a cell its replay could not bring back: its open tool calls are
        cancelled, and it fails as lost (why is in its `cell_recovered` event)."""
        log.warning("cell %s of session %s is lost: %s", self.cell_id, self.ctx.session_id, problem)
        open_calls = sorted(self.log.facts.tools)
        for call_id in open_calls:  # first: a tool worker records no outcome after the end
            self.ctx.journal.cancel_tool(self.ctx.session_id, self.cell_id, call_id)
        error = CellLostError(self.cell_id, unrecoverable=True)
        ending = self.log.ending_after_failure(str(error), open_calls)
        if ending is not None:
            try:  # before anyone is told: whoever learns of it finds it in the log
                ending.record(self.ctx.journal)
                ending = None
            except Exception as failure:  # the session records it once the log takes it
                log.warning("cell %s: its end is not recorded yet: %s", self.cell_id, failure)
        self._closed = True
        told = self.answers.fail(error)
        self.ctx.on_closed(self.cell_id, CellEnd(True, None if told else error, ending))
        self.stop()

    # -- pykka ------------------------------------------------------------------------

    def on_receive(self, message: Any) -> None:
        try:
            if isinstance(message, Begin):
                self._begin(message)
            elif isinstance(message, Recover):
                self._recover(message)
            elif isinstance(message, Abandon):
                self._abandon(message)
            elif self._settled is not None and not self._closed:
                # Nothing runs: its answer waits for its next caller (not one that left).
                if isinstance(message, TerminateRequest) or (
                    isinstance(message, ObserveRequest)
                    and self.answers.current() is message.observer
                ):
                    self.answers.end_with(*self._settled)
            else:
                self._receive(message)
        except Refused as refused:
            if isinstance(refused.error, SessionShuttingDownError):
                self._end_by_shutdown()  # it ran: the shutdown ends it, as it ends the rest
            else:
                self._fail(refused.error)
                self.stop()

    def on_failure(self, _type: Any, exception_value: Any, _traceback: Any) -> None:
        """A failure (e.g. the event log became unreachable) ends the cell with an error."""
        if not self._began:
            return
        self._fail(BrokerError(texts.cell_failed(self.cell_id, _told(exception_value))))

    def _tell(self, message: Any, *, here: bool = False) -> None:
        """Send this actor a message from another thread; a finished cell drops it
        (`here`: handled on the sending thread when the actor is idle, `tell_here`)."""
        failing = self._failing
        if failing is not None:
            failing.append(message)
            return
        with contextlib.suppress(pykka.ActorDeadError):
            if here:
                tell_here(self.actor_ref, message, drain=True)
            else:
                self.tell_self(message)

    def _tell_from_v8(self, message: Any) -> None:
        """`_tell` from the V8 thread, JavaScript idle (the quiescent point of an input):
        handled on that thread if the actor is idle (its thread is not woken for it,
        the cell's next call or its answer goes out at once), else as `_tell`."""
        failing = self._failing
        if failing is not None:
            failing.append(message)
            return
        self._v8_handler = threading.get_ident()
        try:
            with contextlib.suppress(pykka.ActorDeadError):
                if not self._handle_told_here(message):
                    self.tell_self(message)
        finally:
            self._v8_handler = None
            released, self._released_later = self._released_later, None
            if released is not None:  # (its JavaScript is done with it: disposed of at once)
                self.ctx.pool.release(released, at_once=True)

    def _tell_from_timer(self, message: Poll | CleanUp) -> None:
        """`_tell` from the scheduler's thread: handled there if the actor is idle (a
        short cell's actor then needs no thread of its own: `lazy_thread`), as far as
        that is quick; what would wait on the log is left to the actor's thread."""
        failing = self._failing
        if failing is not None:
            failing.append(message)
            return
        with contextlib.suppress(pykka.ActorDeadError):
            if not self._handle_told_here(message):
                self.tell_self(message)

    def _release_context(self, context: V8Context) -> None:
        """Give the cell's context back to the pool. Handling a message on the context's
        own thread, that comes once the handling ended: disposing of it waits for that
        thread, and the pool's one reaper would wait meanwhile for what the handling
        does (the cell's end written to the log, its answer sent). Its JavaScript
        stops now all the same."""
        if threading.get_ident() == self._v8_handler:
            if not context.done_cleanly:  # (a hub's next realm may be made in it)
                context.stop_javascript()
            self._released_later = context
        else:
            self.ctx.pool.release(context)

    def _drains(self, message: Any) -> bool:
        """What the V8 thread reported while a sender handled its message here (a tool's
        outcome, whose write JavaScript does not wait for) is handled by that sender
        too: the cell's next call goes out without waking this actor's thread (not
        once it left its ending to this thread: nothing goes before that)."""
        return isinstance(message, RuntimeMessage) and not self._continuing

    def _receive(self, message: Any) -> None:
        if self._continuing and not self.borrowed and not self._closed:
            self._continuing = False  # the ending left to this thread: before anything
            self._go_on()
        if self._closed:
            self._after_close(message)
        else:
            self._receive_running(message)

    def _receive_running(self, message: Any) -> None:
        runtime = self.runtime
        assert runtime is not None
        answers = self.answers
        if isinstance(message, ObserveRequest):
            answers.on_observe(message.observer)
        elif isinstance(message, TerminateRequest):
            self._on_terminate(message.reason)
        elif isinstance(message, YieldDue):
            answers.on_yield_due(message.observer)
        elif isinstance(message, TimerDue):
            self.effects.timer_due(message, runtime)
        elif isinstance(message, ToolDone):
            self.effects.tool_done(message.outcome, runtime)
        elif isinstance(message, Poll):
            self._polling = False
            runtime.poll()
            if self.borrowed and self._incoming:  # (what it found may write to the log)
                self.tell_self(Continue())
                return
        elif isinstance(message, AdmitDue):
            if not self.log.admitted:
                self.log.flush()
        elif isinstance(message, Release):
            answers.release(now=True)
        elif isinstance(message, NotificationsSettled):
            self.effects.record_settled_notifications()
        elif not isinstance(message, Continue):  # (`Continue`: handled above)
            # a message from the V8 thread
            answers.preempt_with_due_yield()
            runtime.handle(message)
        self._go_on()

    def _go_on(self) -> None:
        """After a message: what the runtime reported, then the answers, notifications
        and polls that allows (unless the cell's ending was left to its own thread)."""
        if self._process_incoming():
            self.answers.release()
            self._start_notifications()
            self._schedule_poll()

    def _start_notifications(self) -> None:
        """Notifications go to the harness once the answers decided before them went
        out (a yield before a `notify()` is answered first, as Codex's host does)."""
        if not self.answers.holding:
            self.effects.start_notifications()

    def _schedule_poll(self) -> None:
        """While JavaScript runs, collect what it reports every few milliseconds."""
        runtime = self.runtime
        if runtime is not None and runtime.busy and not self._polling and not self._closed:
            self._polling = True
            poll = partial(self._tell_from_timer, Poll())
            self._timers[1] = self.ctx.scheduler.call_later(POLL_INTERVAL_S, poll)

    def _after_close(self, message: Any) -> None:
        """A closed cell: only its runtime's end is processed; a stray observation (one
        registered before the cell closed) is answered as for a missing cell."""
        runtime = self.runtime
        if isinstance(message, CleanUp):
            if self.borrowed and not self.log.facts.closed:  # (a write: not on a timer)
                self.tell_self(message)
            else:
                self._clean_up()
        elif isinstance(message, ObserveRequest):
            future = message.observer.future
            if not future.done() and future.set_running_or_notify_cancel():
                future.set_result(missing(self.cell_id).result())
        elif runtime is not None and not isinstance(message, OWN_MESSAGES):
            runtime.handle(message)  # e.g. the `Stopped` that releases the context
            self._incoming.clear()

    # -- what the runtime reports -------------------------------------------------------

    def _process_incoming(self) -> bool:
        """Apply what the runtime reported; False if the cell's ending was left to the
        actor's own thread: on another thread, an ending that waits for notifications
        may wait for answers that only that thread reads (the harness's, in `cellfleet
        host`). It is then applied before any message sent after it (`_receive`)."""
        while self._incoming:
            ending = isinstance(self._incoming[0], Finished | Stopped)
            if ending and self.borrowed and self.effects.notifying:
                self._continuing = True
                self._tell(Continue())
                return False
            self._apply(self._incoming.popleft())
            runtime = self.runtime
            if self.log.over_budget and runtime is not None and not runtime.done:
                self._incoming.clear()  # what it did beyond its budget is not recorded
                runtime.fail(texts.log_budget_exceeded(cell_log.MAX_CELL_EVENTS))
        self.effects.send_requested_tools()
        return True

    def _apply(self, event: RuntimeEvent) -> None:
        log = self.log
        if isinstance(event, Started):
            log.add(ev.CellStarted(**log.stamp(), warmed=event.warmed))
            observer = self.handle.observer
            if observer is not None:
                self.answers.arm(observer)
        elif isinstance(event, OutputItem):
            log.add(ev.OutputProduced(**log.stamp(), item=event.item))
            self.answers.produced(event.item)
        elif isinstance(event, YieldRequested):
            log.add(ev.YieldRequested(**log.stamp()))
            self.answers.on_yield_requested()
        elif isinstance(event, ToolCallRequested):
            assert self.runtime is not None
            self.effects.request_tool(event, self.runtime)
        elif isinstance(event, NotificationSent):
            self.effects.notify(event.text)
        elif isinstance(event, TimerSet):
            self.effects.set_timer(event)
        elif isinstance(event, TimerCleared):
            self.effects.clear_timer(event)
        elif isinstance(event, Pending):
            self.answers.on_pending(list(event.tool_call_ids))
        elif isinstance(event, Finished):
            self._on_finished(event)
        elif isinstance(event, Stopped):
            self._finish_terminated(log=True)

    # -- endings ----------------------------------------------------------------------

    def _on_finished(self, finished: Finished) -> None:
        with self.handle.lock:
            requested = self.handle.phase is Phase.TERMINATING
        if requested:  # spec §4.4: a result still queued here does not beat termination
            self._finish_terminated(log=True)
            return
        self.effects.drain_notifications(cancel=False)  # spec §4.5(1)
        self.effects.cancel_outstanding()
        log = self.log
        terminal = ev.CellCompleted(
            **log.stamp(),
            error_text=finished.error_text,
            stored_writes=dict(finished.stored_writes),
            by_host=finished.by_host,
        )
        # The usual case: an observer is waiting for exactly this completion. Claim it
        # now, so that its delivery is recorded by the same script that commits.
        claimed = self.answers.claim_for_completion()
        after: list[ev.AnyEvent] = []
        if claimed is not None:  # and then the cell closes at once: nothing is left
            outputs = log.facts.delivered + self.answers.unanswered_outputs()
            observer = self.handle.observer
            request = observer.request if observer is not None else ""
            after.append(
                ev.ObservationDelivered(
                    **log.stamp(),
                    kind=ev.ObservationKind.COMPLETED,
                    outputs=outputs,
                    requests=(request,) if request else (),
                )
            )
            after.append(ev.CellClosed(**log.stamp()))
        try:
            won = log.finish(self.ctx.store, terminal, after, finished.stored_writes)
        except store_module.OverBudget:  # it fails instead, and commits nothing
            budget = texts.stored_budget_exceeded(store_module.MAX_STORED_BYTES >> 20)
            finished = Finished(budget, {}, finished.exited)
            terminal = dataclasses.replace(
                terminal, error_text=budget, stored_writes={}, by_host=True
            )
            won = log.finish(self.ctx.store, terminal, after, {})
        if won is not FinishOutcome.COMPLETED:  # the session's shutdown began first
            if won is FinishOutcome.SHUTDOWN:
                self._terminal_reason = ev.TerminationReason.SHUTDOWN
            self._finish_terminated(log=won is FinishOutcome.SHUTDOWN, claimed=claimed)
            return
        self.answers.completed(finished.error_text, claimed)

    def _on_terminate(self, reason: ev.TerminationReason) -> None:
        self._terminal_reason = reason
        if self.answers.completion is not None:  # spec §4.4: a committed completion wins
            self.answers.end_with(self.answers.merged_completion(), ev.ObservationKind.COMPLETED)
            return
        runtime = self.runtime
        assert runtime is not None
        if not runtime.done:
            runtime.terminate()  # its remaining output arrives, then Stopped

    def _end_by_shutdown(self) -> None:
        """The log refused the cell's admission because the session's shutdown began
        (it had not needed to append until now): it is terminated as by the shutdown,
        and its termination admits it."""
        self._terminal_reason = ev.TerminationReason.SHUTDOWN
        runtime = self.runtime
        if runtime is not None and not runtime.done:
            runtime.terminate()  # its remaining output arrives, then Stopped
        else:
            self._finish_terminated(log=True)

    def _finish_terminated(self, *, log: bool, claimed: Future[CellAnswer] | None = None) -> None:
        self.effects.drain_notifications(cancel=True)  # spec §4.8
        self.effects.cancel_outstanding()
        if log:
            terminal = ev.CellTerminated(**self.log.stamp(), reason=self._terminal_reason)
            self.log.finish(self.ctx.store, terminal)
        self.answers.terminated(claimed)

    def _close(self) -> None:
        """Spec §4.5(4): clean up, record, then let the session forget us (the phase is
        already TOMBSTONE: the terminal answer went out).

        Only what must precede anything else happens at once; the rest (recording the
        close, telling the session, ending the actor's thread) waits
        `BACKGROUND_DELAY_S`: done right away, it competes with the caller that was just
        answered for the GIL and the cores.
        """
        self._closed = True
        self.effects.cancel_outstanding()
        if self.runtime is not None and not self.runtime.done:
            self.runtime.terminate()
        self.ctx.scheduler.call_later(BACKGROUND_DELAY_S, partial(self._tell_from_timer, CleanUp()))

    def _clean_up(self) -> None:
        log = self.log
        if not log.facts.closed:
            log.add(ev.CellClosed(**log.stamp()))
            log.flush()
        if self.ctx.audit is not None:
            self.ctx.audit(self.cell_id, log.facts)
        self.ctx.on_closed(self.cell_id, CellEnd(existed=True))
        for timer in self._timers:  # (firing into a stopped actor cost its scheduler CPU)
            if timer is not None:
                timer.cancel()
        self.stop()

    # -- failures ---------------------------------------------------------------------

    def _fail(self, error: Exception) -> None:
        """End the cell with `error` outside its lifecycle (a failure or a refusal).

        Everyone waiting gets the error (no traceback: that went to the log), the cell's
        effects are stopped, its runtime is stopped and its context released, and the
        session forgets it.
        """
        self._closed = True
        told = self.answers.fail(error)
        ending = self.log.ending_after_failure(str(error), self.effects.open_tool_calls())
        self.effects.abandon(fenced=self.ctx.journal.fenced_off(self.ctx.session_id))
        self._stop_runtime_after_failure()
        # A cell failing while nobody observes it (yielded, say): the next wait learns why;
        # its end goes to the log when the log takes it (the session retries).
        self.ctx.on_closed(
            self.cell_id, CellEnd(self.log.admitted, None if told else error, ending)
        )

    def _abandon(self, message: Abandon) -> None:
        """A newer owner serves the session (and this cell, recovered there): end it
        here at once, writing nothing. Its observers learn why; its tool calls are left
        to the new owner (dropped, not cancelled); its JavaScript stops (a spinning cell
        would spin here for ever: nothing it does is written, so nothing is refused)."""
        if self._closed:  # closing already: its runtime's end releases its context
            message.done.set()
            return
        self._closed = True
        self.answers.fail(SessionFencedError(self.ctx.session_id))
        self.effects.abandon(fenced=True)
        self._stop_runtime_after_failure()
        message.done.set()
        self.stop()

    def _stop_runtime_after_failure(self) -> None:
        """Stop the runtime without the (stopped) actor loop: handle its messages here."""
        runtime = self.runtime
        if runtime is None or runtime.done:
            return
        queued = self._take_unhandled()
        self._failing = queued
        runtime.terminate()  # reports through `_tell`, i.e. into `queued`
        for message in queued:
            if isinstance(message, Abandon):  # (ending already: its sender need not wait)
                message.done.set()
            if runtime.done:
                continue
            if not isinstance(message, OWN_MESSAGES):
                runtime.handle(message)  # ends with releasing (disposing) the context
        self._incoming.clear()

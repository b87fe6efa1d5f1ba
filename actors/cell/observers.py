"""A cell's answers to its observers (spec §4.2, §4.4, §4.7, §4.9).

The output a cell produces waits here until an observer takes it: at a yield (its own
`yield_control()` or the observer's deadline), at a pending frontier, or with the
terminal answer. Every answer is recorded (`ObservationDelivered`) before it is handed
out; an answer decided while JavaScript still runs the input that led to it is held a
moment (`release`). Runs on the cell actor's thread; callers' facts (phase, current
observer, terminators) are read and written under the handle's lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from cellfleet.actors.cell.handle import CellHandle, Observer, Phase
from cellfleet.actors.cell.log import CellLog, Refused
from cellfleet.actors.cell.messages import Release, YieldDue
from cellfleet.actors.runtime.runtime import POLL_INTERVAL_S, CellRuntime
from cellfleet.actors.scheduler import Scheduler
from cellfleet.broker import events as ev
from cellfleet.broker.contract.responses import (
    CellAnswer,
    ContentItem,
    ObserveMode,
    Result,
    Terminated,
    Yielded,
)
from cellfleet.broker.contract.responses import Pending as PendingAnswer
from cellfleet.broker.errors import BrokerError, SessionShuttingDownError


class Answers:
    """What one cell owes its observers, and the handing out of it."""

    def __init__(
        self,
        handle: CellHandle,
        log: CellLog,
        scheduler: Scheduler,
        tell: Callable[[Any], None],
        on_ended: Callable[[], None],
    ) -> None:
        self._handle = handle
        self._log = log
        self._scheduler = scheduler
        self._tell = tell
        self._on_ended = on_ended  # the terminal answer went out: close the cell
        self._cell_id = handle.cell_id
        self.runtime: CellRuntime | None = None  # set once the runtime exists
        self._accumulated: list[ContentItem] = []  # produced, not yet answered with
        self._pending_ids: list[str] = []
        self._pending_ready = False  # a pending answer failed and waits for redelivery
        self._keep_frontier = False  # the next frontier waits for an observer (recovery)
        self._initial_yield: list[ContentItem] | None = None
        self.completion: Result | None = None  # committed, not yet handed out
        self._outbox: list[tuple[Future[CellAnswer], CellAnswer]] = []
        self._release_due = False
        # An answer the log refused because the shutdown began: its caller gets the
        # cell's termination instead (the future is set running already).
        self._held_for_termination: Future[CellAnswer] | None = None
        # An answer whose recording failed unexpectedly: its caller gets the cell's failure.
        self._held_for_failure: Future[CellAnswer] | None = None

    def produced(self, item: ContentItem) -> None:
        self._accumulated.append(item)

    def restore(self, items: list[ContentItem]) -> None:
        """A recovered cell's outputs that no observer was given before its previous
        owner stopped: the next answer starts with them."""
        self._accumulated[0:0] = items

    def take_output(self) -> list[ContentItem]:
        """Everything produced and not yet answered with, the kept first yield first."""
        items, self._accumulated = self._accumulated, []
        initial, self._initial_yield = self._initial_yield or [], None
        return [*initial, *items]

    def unanswered_outputs(self) -> int:
        return len(self._accumulated)

    # -- observers ----------------------------------------------------------------------

    def arm(self, observer: Observer) -> None:
        """Start `observer`'s yield deadline (once)."""
        if observer.mode != ObserveMode.YIELD or observer.deadline is not None:
            return
        observer.deadline = time.monotonic() + observer.yield_ms / 1000
        observer.timer = self._scheduler.call_at(
            observer.deadline, partial(self._tell, YieldDue(observer))
        )

    def current(self) -> Observer | None:
        """The live observer, forgetting one whose caller has gone."""
        with self._handle.lock:
            observer = self._handle.observer
            if observer is not None and observer.gone:
                self._handle.observer = observer = None
            return observer

    def on_observe(self, observer: Observer) -> None:
        if observer.gone or self._handle.observer is not observer:
            return  # the caller left before we got to it (or was answered): consumes nothing
        observer.admitted = True
        self._keep_frontier = False
        runtime = self.runtime
        assert runtime is not None
        if self.completion is not None:
            self.deliver_completion(observer)
            return
        if observer.mode == ObserveMode.PENDING:
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
        if self._initial_yield is not None and not self._log.facts.observed:
            items, self._initial_yield = self._initial_yield, None
            self._deliver(observer, Yielded(cell_id=self._cell_id, content_items=items), items)
            return
        self.arm(observer)

    def preempt_with_due_yield(self) -> None:
        """Spec §4.2(4): a passed deadline is answered before more runtime output."""
        observer = self._handle.observer
        if (
            observer is not None
            and observer.deadline is not None
            and time.monotonic() >= observer.deadline
        ):
            self.on_yield_due(observer)

    def on_yield_due(self, observer: Observer) -> None:
        """The deadline passed: answer with the output consumed so far (spec §4.2).

        Output the runtime reported but the actor has not consumed yet is not waited
        for: it belongs to the next answer (spec test
        `yield_timer_preempts_buffered_runtime_output`). A cell being terminated answers
        its observer with the termination instead.
        """
        if self.current() is not observer or self.completion is not None:
            return
        with self._handle.lock:
            if self._handle.phase is Phase.TERMINATING:
                return
        self._yield_to(observer)

    def on_yield_requested(self) -> None:
        observer = self.current()
        if observer is not None and not observer.admitted:
            observer = None  # a wait still on its way: the yield happened before it
        if observer is not None and observer.mode == ObserveMode.YIELD:
            self._yield_to(observer)
        elif observer is None and not self._log.facts.observed and self._initial_yield is None:
            # Spec §4.9: the first yield before anyone observed is kept for them.
            self._initial_yield, self._accumulated = self._accumulated, []

    def _yield_to(self, observer: Observer) -> None:
        items, self._accumulated = self._accumulated, []
        self._deliver(observer, Yielded(cell_id=self._cell_id, content_items=items), items)

    def keep_next_frontier(self) -> None:
        """A recovered cell that a pending observer had resumed: that observer went
        with the previous owner, so its next frontier is kept, paused, for the next
        observer (the same request sent again, say), as for a vanished caller (§4.9)."""
        self._keep_frontier = True

    def on_pending(self, tool_call_ids: list[str]) -> None:
        self._pending_ids.extend(tool_call_ids)
        observer = self._handle.observer
        if observer is not None and observer.mode == ObserveMode.PENDING:
            # A vanished caller is still tried: its answer is kept for redelivery (§4.9).
            self._deliver_pending(observer)
        elif observer is None and self._keep_frontier:
            self._keep_frontier = False
            self._pending_ready = True
        else:
            # Spec §4.7: no frontier observer -> forget the ids and continue.
            self._pending_ids.clear()
            runtime = self.runtime
            assert runtime is not None
            runtime.set_frontier_mode(False)

    def _deliver_pending(self, observer: Observer) -> None:
        items, self._accumulated = self._accumulated, []
        ids, self._pending_ids = self._pending_ids, []
        answer = PendingAnswer(
            cell_id=self._cell_id, content_items=items, pending_tool_call_ids=ids
        )
        self._pending_ready = False
        if not self._deliver(
            observer, answer, items, kind=ev.ObservationKind.PENDING, ids=tuple(ids)
        ):
            self._pending_ids = ids + self._pending_ids
            self._pending_ready = True

    def _deliver(
        self,
        observer: Observer,
        answer: CellAnswer,
        items: list[ContentItem],
        *,
        kind: ev.ObservationKind = ev.ObservationKind.YIELDED,
        ids: tuple[str, ...] = (),
        put_back: bool = True,
    ) -> bool:
        """Answer `observer` with `answer`, which carries the outputs `items`; on a
        vanished caller, put the items back in front (if `put_back`)."""
        with self._handle.lock:
            if self._handle.observer is observer:
                self._handle.observer = None
        if observer.timer is not None:
            observer.timer.cancel()
        if not observer.future.set_running_or_notify_cancel():
            if put_back:
                self._accumulated[0:0] = items
            return False
        log = self._log
        before = log.facts.copy()
        delivered = ev.ObservationDelivered(
            **log.stamp(),
            kind=kind,
            outputs=before.delivered + len(items),
            pending_tool_call_ids=ids,
            requests=(observer.request,) if observer.request else (),
        )
        try:
            log.add(delivered)
            log.flush()
        except BrokerError as error:  # e.g. the log is unreachable: the answer is an error
            log.withdraw(delivered, before)
            observer.future.set_exception(error)
            if put_back:
                self._accumulated[0:0] = items
            return False
        except Refused as refused:
            if isinstance(refused.error, SessionShuttingDownError):
                # It ran, and the shutdown ends it: this caller gets its termination.
                log.withdraw(delivered, before)
                if put_back:
                    self._accumulated[0:0] = items
                self._held_for_termination = observer.future
            else:  # the cell never existed: this caller learns why
                observer.future.set_exception(refused.error)
            raise
        except Exception:  # the actor fails next: this caller gets that failure
            log.withdraw(delivered, before)
            if put_back:
                self._accumulated[0:0] = items
            self._held_for_failure = observer.future
            raise
        self._outbox.append((observer.future, answer))
        return True

    @property
    def holding(self) -> bool:
        """Answers are decided and not handed out yet (see `release`)."""
        return bool(self._outbox)

    def release(self, *, now: bool = False) -> None:
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
                self._scheduler.call_later(POLL_INTERVAL_S, partial(self._tell, Release()))
            return
        self._release_due = False
        outbox, self._outbox = self._outbox, []
        for future, answer in outbox:
            future.set_result(answer)

    # -- the terminal answer ----------------------------------------------------------

    def claim_for_completion(self) -> Future[CellAnswer] | None:
        """The observer's future, set running, if the completion will go to it alone."""
        with self._handle.lock:
            observer = self._handle.observer
            if (
                observer is None
                or self._handle.terminators
                or observer.future.running()
                or observer.future.done()
                or (self._initial_yield is not None and observer.mode == ObserveMode.YIELD)
            ):
                return None  # answered already (held), gone, or not simply ours to end
        if observer.timer is not None:
            observer.timer.cancel()
        if observer.future.set_running_or_notify_cancel():
            return observer.future
        with self._handle.lock:  # the caller left just now: forget it, as `current` does
            if self._handle.observer is observer:
                self._handle.observer = None
        return None

    def completed(self, error_text: str | None, claimed: Future[CellAnswer] | None) -> None:
        """The completion is committed: give it to whoever waits, or keep it."""
        items, self._accumulated = self._accumulated, []
        self.completion = Result(cell_id=self._cell_id, content_items=items, error_text=error_text)
        with self._handle.lock:
            if self._handle.phase is Phase.RUNNING:
                self._handle.phase = Phase.COMPLETED
            # A termination that arrived while the commit was in flight finds it
            # committed (the log says so): it returns the completion.
            terminators = bool(self._handle.terminators)
            observer = self._handle.observer
        if claimed is not None:
            self.end_with(
                self.merged_completion(), ev.ObservationKind.COMPLETED, claimed, logged=True
            )
        elif terminators:
            self.end_with(self.merged_completion(), ev.ObservationKind.COMPLETED)
        elif observer is not None:
            self.deliver_completion(observer)

    def deliver_completion(self, observer: Observer) -> None:
        """Answer `observer` with the buffered completion, or first with a kept yield."""
        initial = self._initial_yield
        if initial is not None and observer.mode == ObserveMode.YIELD:
            self._initial_yield = None
            answer = Yielded(cell_id=self._cell_id, content_items=initial)
            if not self._deliver(observer, answer, initial, put_back=False):
                self._initial_yield = initial  # still kept for the next observer
            return
        if observer.timer is not None:
            observer.timer.cancel()
        if not observer.future.set_running_or_notify_cancel():
            with self._handle.lock:
                if self._handle.observer is observer:
                    self._handle.observer = None
            return  # the caller left: the completion stays buffered (spec §4.9)
        self.end_with(self.merged_completion(), ev.ObservationKind.COMPLETED, observer.future)

    def merged_completion(self) -> Result:
        completion = self.completion
        assert completion is not None
        initial, self._initial_yield = self._initial_yield or [], None
        return Result(
            cell_id=self._cell_id,
            content_items=[*initial, *completion.content_items],
            error_text=completion.error_text,
        )

    def terminated(self, claimed: Future[CellAnswer] | None) -> None:
        """The cell was terminated: everyone waiting gets what it produced meanwhile."""
        answer = Terminated(cell_id=self._cell_id, content_items=self.take_output())
        claimed = claimed or self._held_for_termination
        self.end_with(answer, ev.ObservationKind.TERMINATED, claimed)

    def end_with(
        self,
        answer: CellAnswer,
        kind: ev.ObservationKind,
        claimed: Future[CellAnswer] | None = None,
        *,
        logged: bool = False,
    ) -> None:
        """Give the terminal answer to everyone waiting for it, then close the cell.

        `claimed` is an observer future already set running. The phase becomes
        TOMBSTONE before anyone sees the answer, so whoever reacts to it finds the cell
        gone (spec §4.4: a second terminate after the first returned -> not found).
        """
        with self._handle.lock:
            self._handle.phase = Phase.TOMBSTONE
            observer, self._handle.observer = self._handle.observer, None
            waiting = list(self._handle.terminators)
            self._handle.terminators.clear()
            requests = dict(self._handle.requests)
            self._handle.requests.clear()
        if observer is not None and observer.request:
            requests[observer.future] = observer.request
        if observer is not None:
            if observer.timer is not None:
                observer.timer.cancel()
            if observer.future is not claimed:
                waiting.append(observer.future)
        recipients = [f for f in waiting if f.set_running_or_notify_cancel()]
        if claimed is not None:
            recipients.append(claimed)
        log = self._log
        try:
            if recipients and not logged:  # else the terminal script already recorded it
                outputs = log.facts.delivered + len(answer.content_items)
                answered = tuple(requests[f] for f in recipients if f in requests)
                log.add(
                    ev.ObservationDelivered(
                        **log.stamp(), kind=kind, outputs=outputs, requests=answered
                    )
                )
            log.flush()
        except BrokerError as error:
            for future in recipients:
                future.set_exception(error)
            raise
        self.release(now=True)
        for future in recipients:
            future.set_result(answer)
        self._on_ended()

    def fail(self, error: Exception) -> bool:
        """Everyone waiting gets `error` (the cell failed outside its lifecycle); answers
        recorded before the failure still go out. Whether anyone was waiting."""
        with self._handle.lock:
            waiting = [*self._handle.terminators]
            self._handle.terminators.clear()
            for held in (self._held_for_termination, self._held_for_failure):
                if held is not None:
                    waiting.append(held)
            if self._handle.observer is not None:
                waiting.append(self._handle.observer.future)
                self._handle.observer = None
            self._handle.phase = Phase.TOMBSTONE
        self.release(now=True)
        told = False
        for future in waiting:  # a claimed future is running already
            if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
                future.set_exception(error)
                told = True
        return told

"""Re-execute one recorded cell in a fresh context and compare it with its record.

The replayer owns the cell's `CellRuntime` on the calling thread, as the cell actor
does live, and walks the cell's steps (`plan.py`): each event the runtime reports is
compared with the next expected one; an input is fed once everything recorded before it
was produced again (live, it was recorded after those events and before anything it
caused); the termination is applied at the same point. Nothing reaches a tool, a timer,
a notification or the log.

The first mismatch stops the cell: a `Divergence`. So does a runtime that has nothing
more to do while the record expects more, and one that has not got there within the
time limit.
"""

from __future__ import annotations

import queue
import re
import time
from collections import deque
from dataclasses import dataclass, field

from cellfleet.actors.replay import report as rep
from cellfleet.actors.replay.plan import CellRecord, Step, StepKind, View, produced_view
from cellfleet.actors.runtime import protocol as rt
from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.actors.runtime.runtime import POLL_INTERVAL_S, CellRuntime, RuntimeMessage

# A cell's time limit: this much, plus twice the time it took live.
BASE_TIME_LIMIT_S = 10.0
_IDLE_WAIT_S = 0.05  # between checks while JavaScript is idle (nothing should come)
_ERROR_SITE = re.compile(r"exec_main\.mjs:(\d+):(\d+)")

NOTES = {
    "WeakRef": "uses WeakRef, whose deref() depends on the garbage collector",
    "FinalizationRegistry": (
        "uses FinalizationRegistry, whose callbacks depend on the garbage collector"
    ),
}


@dataclass
class _Produced:
    view: View
    site: tuple[int, int] | None


@dataclass
class _State:
    cursor: int = 0  # the next step
    matched: int = 0  # events produced again and found equal
    dropped: int = 0  # outputs made after the recorded termination point
    ending: StepKind | None = None  # TERMINATE or HOST_END, once applied
    host_ending: str = ""  # the error text the host ended the cell with
    last_site: tuple[int, int] | None = None
    divergence: rep.Divergence | None = None
    notes: list[str] = field(default_factory=list)


class CellReplayer:
    """Replays one `CellRecord`; `run()` returns its `CellReport`."""

    def __init__(
        self, record: CellRecord, pool: ContextPool, *, time_limit_s: float | None = None
    ) -> None:
        self.record = record
        self._pool = pool
        self._limit_s = (
            time_limit_s
            if time_limit_s is not None
            else BASE_TIME_LIMIT_S + 2 * record.span_ms / 1000
        )
        self._inbox: queue.SimpleQueue[RuntimeMessage] = queue.SimpleQueue()
        self._produced: deque[_Produced] = deque()
        self._state = _State()
        self._runtime: CellRuntime | None = None

    def run(self) -> rep.CellReport:
        record = self.record
        began = time.monotonic()
        if record.problem is not None:
            return rep.CellReport(record.cell, rep.Status.UNREPLAYABLE, 0, problem=record.problem)
        runtime = self._runtime = CellRuntime(
            record.spec,
            self._pool.acquire(record.spec.tools),
            listener=self._on_event,
            sink=self._inbox.put,
            release=self._pool.release,
            memory_limit_bytes=self._pool.memory_limit_bytes,
        )
        self._advance()
        if self._state.ending is None:  # (else the record stopped it before it ran)
            runtime.start()
            self._drive(runtime, began + self._limit_s)
        self._stop(runtime)
        return self._report(runtime, time.monotonic() - began)

    # -- driving ---------------------------------------------------------------------

    def _drive(self, runtime: CellRuntime, deadline: float) -> None:
        state = self._state
        while True:
            self._match()
            if state.divergence is not None or runtime.done:
                break
            if state.cursor >= len(self.record.steps) and state.ending is None:
                break  # the record ends here (the cell was live): replayed up to it
            if state.ending is None and not runtime.busy and self._inbox.empty():
                self._diverge(self._expected(), None, "the replay produced nothing more")
                break
            if time.monotonic() >= deadline:
                self._diverge(
                    self._expected(),
                    None,
                    f"the replay did not get there within {self._limit_s:g} s",
                )
                break
            try:
                message = self._inbox.get(timeout=POLL_INTERVAL_S if runtime.busy else _IDLE_WAIT_S)
            except queue.Empty:
                runtime.poll()
                continue
            runtime.handle(message)

    def _advance(self) -> None:
        """Apply the steps up to the next expected event: feed inputs, and stop the
        runtime where the record terminated the cell or the host ended it."""
        state, steps, runtime = self._state, self.record.steps, self._runtime
        assert runtime is not None
        while state.cursor < len(steps) and state.ending is None:
            step = steps[state.cursor]
            if step.kind is StepKind.EXPECT:
                return
            state.cursor += 1
            if step.kind is StepKind.INPUT:
                assert step.input is not None
                step.input.deliver(runtime)
                continue
            state.ending = step.kind
            if step.kind is StepKind.TERMINATE:
                state.matched += 1  # its counterpart is the stop itself
            else:
                state.host_ending = str(getattr(step.event, "error_text", "") or "")
            runtime.terminate()

    def _on_event(self, event: rt.RuntimeEvent) -> None:
        view = produced_view(event)
        if view is not None:
            runtime = self._runtime
            self._produced.append(_Produced(view, runtime.site if runtime else None))

    def _match(self) -> None:
        state, steps = self._state, self.record.steps
        while self._produced and state.divergence is None:
            produced = self._produced.popleft()
            if state.ending is not None:  # past the recorded end: not compared
                if produced.view["event"] == "output_produced":
                    state.dropped += 1
                continue
            if state.cursor >= len(steps):
                self._diverge(None, produced, "the replay produced more than the record holds")
                return
            step = steps[state.cursor]
            if produced.view != step.view:
                self._diverge(step, produced, "the replay produced a different event")
                return
            state.matched += 1
            state.cursor += 1
            state.last_site = produced.site or state.last_site
            self._advance()

    def _expected(self) -> Step | None:
        state, steps = self._state, self.record.steps
        return steps[state.cursor] if state.cursor < len(steps) else None

    def _diverge(self, step: Step | None, produced: _Produced | None, reason: str) -> None:
        site = produced.site if produced is not None else None
        if site is None and produced is not None:
            site = _error_site(produced.view)
        self._state.divergence = rep.Divergence(
            position=step.position if step is not None else len(self.record.events),
            recorded=step.view if step is not None else None,
            produced=produced.view if produced is not None else None,
            reason=reason,
            site=site,
            after_site=None if site is not None else self._state.last_site,
        )

    def _stop(self, runtime: CellRuntime) -> None:
        """Stop the runtime (if it still runs) and let it release its context."""
        if not runtime.done:
            runtime.terminate()
        while not runtime.done:
            runtime.handle(self._inbox.get())

    def _report(self, runtime: CellRuntime, elapsed_s: float) -> rep.CellReport:
        state, record = self._state, self.record
        notes = [NOTES.get(feature, f"uses {feature}") for feature in sorted(runtime.notes)]
        if state.ending is StepKind.HOST_END:
            notes.append(f"ended by the host, as recorded: {state.host_ending}")
        if state.dropped:
            notes.append(f"{state.dropped} outputs made after the recorded termination ignored")
        if not record.ended and state.divergence is None:
            notes.append("still running in the record: replayed up to its last event")
        status = rep.Status.IDENTICAL if state.divergence is None else rep.Status.DIVERGED
        return rep.CellReport(
            record.cell,
            status,
            state.matched,
            divergence=state.divergence,
            notes=tuple(notes),
            source=record.spec.source,
            elapsed_s=elapsed_s,
        )


def _error_site(view: View) -> tuple[int, int] | None:
    """Where an uncaught error was thrown, from its stack (the cell's own frames)."""
    found = _ERROR_SITE.search(str(view.get("error_text") or ""))
    return (int(found[1]), int(found[2])) if found else None

"""Re-execute one recorded cell in a fresh context and compare it with its record.

The replayer owns the cell's `CellRuntime` on the calling thread, as the cell actor
does live, and walks the cell's steps (`plan.py`): each event the runtime reports is
compared with the next expected one; an input is fed once everything recorded before it
was produced again (live, it was recorded after those events and before anything it
caused); the termination is applied at the same point. Nothing reaches a tool, a timer,
a notification or the log.

The first mismatch stops the cell: a `Divergence`. So does an input the cell cannot
have had (an outcome of a call it never made, a timer it never set, either twice), a
runtime that has nothing more to do while the record expects more, one that has not got
there within the time limit, and a record that goes on after the cell's end.

A cell is replayed exactly as it ran live first. Only if it diverges is it replayed a
second time with call sites noted (`CellSpec.record_sites`), to say which line of the
source made the event: noting them takes stack and time, which a cell that recurses
until the stack overflows could tell apart (it must not decide the verdict).

Each replayed context is disposed before the next cell starts: a replay of many cells
stopped mid-allocation must not pile their heaps up.
"""

from __future__ import annotations

import dataclasses
import queue
import re
import time
from collections import deque
from dataclasses import dataclass, field

from cellfleet.actors.replay import report as rep
from cellfleet.actors.replay.plan import CellRecord, Step, StepKind, View, produced_view
from cellfleet.actors.runtime import protocol as rt
from cellfleet.actors.runtime.pool import ContextPool, runtime_identity
from cellfleet.actors.runtime.runtime import POLL_INTERVAL_S, CellRuntime, RuntimeMessage
from cellfleet.actors.runtime.v8 import V8Context

# A cell's default time limit: this much plus twice the time it took live, at most MAX.
BASE_TIME_LIMIT_S = 10.0
MAX_DEFAULT_TIME_LIMIT_S = 300.0
_IDLE_WAIT_S = 0.05  # between checks while JavaScript is idle (nothing should come)
_ERROR_SITE = re.compile(r"exec_main\.mjs:(\d+):(\d+)")
# Features whose behaviour depends on the garbage collector, named in the source.
_GC_FEATURES = {
    "WeakRef": "its source names WeakRef, whose deref() depends on the garbage collector",
    "FinalizationRegistry": (
        "its source names FinalizationRegistry, whose callbacks depend on the garbage collector"
    ),
}


@dataclass
class _Produced:
    view: View
    site: tuple[int, int] | None
    event: rt.RuntimeEvent


@dataclass
class _State:
    cursor: int = 0  # the next step
    matched: int = 0  # events produced again and found equal
    dropped: int = 0  # outputs made after the recorded termination point
    ending: StepKind | None = None  # TERMINATE or HOST_END, once applied
    host_ending: str = ""  # the error text the host ended the cell with
    last_site: tuple[int, int] | None = None
    divergence: rep.Divergence | None = None
    calls: set[str] = field(default_factory=set)  # requested, outcome not delivered yet
    timers: set[int] = field(default_factory=set)  # set, not fired yet (cleared ones too)


def replay_cell(
    record: CellRecord, pool: ContextPool, *, time_limit_s: float | None = None
) -> rep.CellReport:
    """Replay one cell; where it diverges, once more to locate the divergence."""
    report = CellReplayer(record, pool, time_limit_s=time_limit_s).run()
    first = report.divergence
    if first is None or first.site is not None:
        return report
    located = dataclasses.replace(record, spec=dataclasses.replace(record.spec, record_sites=True))
    again = CellReplayer(located, pool, time_limit_s=time_limit_s).run()
    second = again.divergence
    if second is None or (second.position, second.produced) != (first.position, first.produced):
        return report  # (noting sites changed what it did: the first verdict stands)
    elapsed = report.elapsed_s + again.elapsed_s
    return dataclasses.replace(report, divergence=second, elapsed_s=elapsed)


class CellReplayer:
    """Replays one `CellRecord` once; `run()` returns its `CellReport`."""

    # Recovery (`recover.py`) leaves the runtime running at the record's end, with what
    # it made past that point unmatched, for the live owner to take on.
    hands_over = False

    def __init__(
        self, record: CellRecord, pool: ContextPool, *, time_limit_s: float | None = None
    ) -> None:
        self.record = record
        self._pool = pool
        default = min(BASE_TIME_LIMIT_S + 2 * record.span_ms / 1000, MAX_DEFAULT_TIME_LIMIT_S)
        self._limit_s = time_limit_s if time_limit_s is not None else default
        self._inbox: queue.SimpleQueue[RuntimeMessage] = queue.SimpleQueue()
        self._produced: deque[_Produced] = deque()
        self._state = _State()
        self._runtime: CellRuntime | None = None

    def run(self) -> rep.CellReport:
        record = self.record
        began = time.monotonic()
        if record.problem is not None:
            return rep.CellReport(record.cell, rep.Status.UNREPLAYABLE, 0, problem=record.problem)
        runtime = self._runtime = self._new_runtime()
        self._advance()
        if self._state.ending is None:  # (else the record stopped it before it ran)
            runtime.start()
            self._drive(runtime, began + self._limit_s)
        if self.hands_over and self._state.divergence is None and self._state.ending is None:
            return self._report(time.monotonic() - began)
        self._stop(runtime)
        if self._state.divergence is None:
            self._check_rest()
        return self._report(time.monotonic() - began)

    def _new_runtime(self) -> CellRuntime:
        return CellRuntime(
            self.record.spec,
            self._pool.acquire(
                self.record.spec.tools,
                warmed=self.record.warmed,
                source=self.record.spec.source,
            ),
            listener=self._on_event,
            sink=self._inbox.put,
            release=V8Context.dispose,  # now, on this thread: see the module docstring
            memory_limit_bytes=self._pool.memory_limit_bytes,
        )

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
                reason = f"the replay did not get there within {self._limit_s:g} s"
                self._diverge(self._expected(), None, reason)
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
        while state.cursor < len(steps) and state.ending is None and state.divergence is None:
            step = steps[state.cursor]
            if step.kind is StepKind.EXPECT:
                return
            state.cursor += 1
            if step.kind is StepKind.INPUT:
                self._feed(step, runtime)
                continue
            state.ending = step.kind
            if step.kind is StepKind.TERMINATE:
                state.matched += 1  # its counterpart is the stop itself
            else:
                self._host_ending(step)
            runtime.terminate()

    def _feed(self, step: Step, runtime: CellRuntime) -> None:
        """Deliver an input, if the cell can have had it."""
        fed, state = step.input, self._state
        assert fed is not None
        if fed.kind == "timer":
            expected, what = int(fed.target) in state.timers, f"timer {fed.target}"
            state.timers.discard(int(fed.target))
        else:
            expected, what = fed.target in state.calls, f"the outcome of {fed.target}"
            state.calls.discard(fed.target)
        if not expected:
            reason = f"the record delivers {what}, which the cell does not wait for"
            self._diverge(step, None, reason)
            return
        fed.deliver(runtime)

    def _host_ending(self, step: Step) -> None:
        """An ending the host imposed commits nothing and says why."""
        event = step.event
        text = getattr(event, "error_text", None)
        self._state.host_ending = str(text or "")
        if not text or getattr(event, "stored_writes", None):
            reason = "the record has the host end the cell, but with stored writes or no reason"
            self._diverge(step, None, reason)

    def _on_event(self, event: rt.RuntimeEvent) -> None:
        view = produced_view(event)
        if view is None:
            return
        runtime = self._runtime
        site = runtime.site if runtime is not None else None
        if isinstance(event, rt.Finished) and runtime is not None:
            site = _ending_site(view, runtime, self.record)
        self._produced.append(_Produced(view, site, event))

    def _match(self) -> None:
        state, steps = self._state, self.record.steps
        while self._produced and state.divergence is None:
            produced = self._produced.popleft()
            if state.ending is not None:  # past the recorded end: not compared
                if produced.view["event"] == "output_produced":
                    state.dropped += 1
                continue
            if state.cursor >= len(steps):
                if self.hands_over:  # the live owner's from here on
                    self._produced.appendleft(produced)
                    return
                self._diverge(None, produced, "the replay produced more than the record holds")
                return
            step = steps[state.cursor]
            if produced.view != step.view:
                self._diverge(step, produced, "the replay produced a different event")
                return
            self._note(produced.view)
            state.matched += 1
            state.cursor += 1
            state.last_site = produced.site or state.last_site
            self._advance()

    def _note(self, view: View) -> None:
        """What the cell now waits for: the inputs it may be given."""
        kind = view["event"]
        if kind == "tool_requested":
            self._state.calls.add(view["call_id"])
        elif kind == "timer_set":
            self._state.timers.add(view["timer_id"])

    def _check_rest(self) -> None:
        """Nothing but inputs the cell no longer took may follow its end in the record."""
        state, steps = self._state, self.record.steps
        ended = state.ending is not None or any(
            step.kind is StepKind.EXPECT and step.view and step.view["event"] == "cell_completed"
            for step in steps[: state.cursor]
        )
        if not ended:
            return
        for step in steps[state.cursor :]:
            if step.kind is not StepKind.INPUT:
                self._diverge(step, None, "the record goes on after the cell's end")
                return

    def _expected(self) -> Step | None:
        state, steps = self._state, self.record.steps
        return steps[state.cursor] if state.cursor < len(steps) else None

    def _diverge(self, step: Step | None, produced: _Produced | None, reason: str) -> None:
        site = produced.site if produced is not None else None
        self._state.divergence = rep.Divergence(
            position=step.position if step is not None else len(self.record.events),
            recorded=step.view if step is not None and step.view is not None else _event(step),
            produced=produced.view if produced is not None else None,
            reason=reason,
            site=site,
            after_site=None if site is not None else self._state.last_site,
        )

    def _stop(self, runtime: CellRuntime) -> None:
        """Stop the runtime (if it still runs); its context is disposed as it ends."""
        if not runtime.done:
            runtime.terminate()
        while not runtime.done:
            runtime.handle(self._inbox.get())

    def _report(self, elapsed_s: float) -> rep.CellReport:
        state, record = self._state, self.record
        source = record.spec.source
        notes = [note for name, note in _GC_FEATURES.items() if re.search(rf"\b{name}\b", source)]
        if state.ending is StepKind.HOST_END and state.divergence is None:
            notes.append(f"ended by the host, as recorded: {state.host_ending}")
        if state.dropped:
            notes.append(f"{state.dropped} outputs made after the recorded termination ignored")
        if not record.ended and state.divergence is None:
            notes.append("still running in the record: replayed up to its last event")
        if record.runtime and record.runtime != runtime_identity():
            notes.append(f"recorded under {record.runtime}, replayed under {runtime_identity()}")
        status = rep.Status.IDENTICAL if state.divergence is None else rep.Status.DIVERGED
        return rep.CellReport(
            record.cell,
            status,
            state.matched,
            divergence=state.divergence,
            notes=tuple(notes),
            source=source,
            elapsed_s=elapsed_s,
        )


def _event(step: Step | None) -> View | None:
    """How a step that is not an expected event shows in a report."""
    return None if step is None else {"event": step.event.TYPE}


def _ending_site(view: View, runtime: CellRuntime, record: CellRecord) -> tuple[int, int] | None:
    """Where a cell's ending comes from: its uncaught error's innermost frame, or the
    `store()` of the first stored write that differs from the record."""
    found = _ERROR_SITE.search(str(view.get("error_text") or ""))
    if found:
        return int(found[1]), int(found[2])
    recorded = next(
        (s.view for s in record.steps if s.view and s.view["event"] == "cell_completed"), None
    )
    writes, expected = view.get("stored_writes") or {}, (recorded or {}).get("stored_writes", {})
    for key in [*writes, *expected]:
        if writes.get(key) != expected.get(key):
            return runtime.store_sites.get(key)
    return None

"""Bring back a cell that its previous owner left running, up to where its log ends.

A fresh context gets the cell's source, seed, clock and stored snapshot and its
recorded inputs in order (the replay engine, `engine.CellReplayer`): every event it
makes again is checked against the log, and none is recorded or acted on again. At the
log's end the runtime is handed, still running, to the live owner (the cell actor),
with what it made past that point: those events never reached the log, so nothing
outside saw them, and the live owner records and acts on them as it would have.

The V8 thread reports through a `Relay`: first into the replay's queue, then (switched
under its lock, the queue's rest forwarded first) to the live owner, so that no message
is lost or reordered at the handover. The replay runs on the live owner's thread, the
runtime's one owner throughout.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cellfleet.actors.replay import report as rep
from cellfleet.actors.replay.engine import BASE_TIME_LIMIT_S, CellReplayer
from cellfleet.actors.replay.plan import CellRecord, StepKind
from cellfleet.actors.runtime import protocol as rt
from cellfleet.actors.runtime.pool import ContextPool, runtime_identity
from cellfleet.actors.runtime.runtime import POLL_INTERVAL_S, CellRuntime, RuntimeMessage
from cellfleet.actors.runtime.v8 import V8Context
from cellfleet.broker import events as ev


@dataclass(frozen=True, slots=True)
class Recovered:
    runtime: CellRuntime  # running, reporting to the live owner
    beyond: list[rt.RuntimeEvent]  # made past the log's end: the live owner applies them
    replayed: int  # events made again and found equal
    elapsed_s: float
    at_frontier: bool = False  # paused at the pending frontier of its last answer
    # A pending observer had resumed it from the frontier of its last answer, which
    # named these calls or earlier ones: it goes on to its next frontier (`None`: not so).
    resumed_from: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Unrecovered:
    problem: str  # why (recorded in the log)
    replayed: int
    elapsed_s: float


class Relay:
    """Where the V8 thread's messages go: switched once, in order, without a loss."""

    def __init__(self, first: Callable[[RuntimeMessage], None]) -> None:
        self._lock = threading.Lock()
        self._to = first

    def __call__(self, message: RuntimeMessage) -> None:
        with self._lock:
            self._to(message)

    def switch(
        self, queued: queue.SimpleQueue[RuntimeMessage], to: Callable[[RuntimeMessage], None]
    ) -> None:
        """Forward what `queued` still holds to `to`, then send everything there."""
        with self._lock:
            while True:
                try:
                    to(queued.get_nowait())
                except queue.Empty:
                    break
            self._to = to


class _Recoverer(CellReplayer):
    hands_over = True

    def __init__(
        self,
        record: CellRecord,
        pool: ContextPool,
        *,
        release: Callable[[V8Context], None],
        memory_limit_bytes: int,
        time_limit_s: float | None,
    ) -> None:
        super().__init__(record, pool, time_limit_s=time_limit_s)
        self.relay = Relay(self._inbox.put)
        self._release = release
        self._memory_limit_bytes = memory_limit_bytes

    def _new_runtime(self) -> CellRuntime:
        spec = self.record.spec
        prepared = self._pool.acquire(spec.tools, warmed=self.record.warmed, source=spec.source)
        if self._memory_limit_bytes != self._pool.memory_limit_bytes:  # the session's own
            prepared.context.set_memory_limit(self._memory_limit_bytes)
        return CellRuntime(
            spec,
            prepared,
            listener=self._on_event,
            sink=self.relay,
            release=self._release,
            memory_limit_bytes=self._memory_limit_bytes,
        )

    def hand_over(
        self,
        listener: Callable[[rt.RuntimeEvent], None],
        sink: Callable[[RuntimeMessage], None],
    ) -> tuple[CellRuntime, list[rt.RuntimeEvent]]:
        runtime = self._runtime
        assert runtime is not None
        beyond = [produced.event for produced in self._produced]
        self._produced.clear()
        runtime.listen(listener)
        self.relay.switch(self._inbox, sink)
        return runtime, beyond

    def stop(self) -> None:
        if self._runtime is not None:
            self._stop(self._runtime)

    def quiesce(self, deadline: float) -> None:
        """Let the input being run finish (and its promise reactions)."""
        runtime = self._runtime
        assert runtime is not None
        while runtime.busy and time.monotonic() < deadline:
            try:
                message = self._inbox.get(timeout=POLL_INTERVAL_S)
            except queue.Empty:
                runtime.poll()
                continue
            runtime.handle(message)


def last_frontier(record: CellRecord) -> tuple[int, bool] | None:
    """The position of the cell's last answer if that was a pending frontier (spec
    §4.7), and whether the cell still stands paused there: only inputs follow it in the
    log (delivered while it stood paused, they have not run). Else a pending observer
    resumed it (only one resumes a paused cell without a later answer in the log; a
    `wait` that did, the one case the log cannot tell, continues it all the same when
    sent again)."""
    last = None
    for position, event in enumerate(record.events):
        if isinstance(event, ev.ObservationDelivered):
            last = position if event.kind is ev.ObservationKind.PENDING else None
    if last is None:
        return None
    after = [step for step in record.steps if step.position > last]
    return last, all(step.kind is StepKind.INPUT for step in after)


def recover(
    record: CellRecord,
    pool: ContextPool,
    *,
    listener: Callable[[rt.RuntimeEvent], None],
    sink: Callable[[RuntimeMessage], None],
    release: Callable[[V8Context], None],
    memory_limit_bytes: int,
    time_limit_s: float | None = None,
) -> Recovered | Unrecovered:
    """Replay `record` (a cell without its end) and hand its runtime to `listener` and
    `sink`; or say why it cannot be (its runtime is then stopped)."""
    began = time.monotonic()
    last = last_frontier(record)
    frontier = last[0] if last is not None and last[1] else None  # where it stands paused
    held = []  # inputs delivered while it stood paused: delivered again, paused
    if frontier is not None:
        held = [s.input for s in record.steps if s.position > frontier and s.input is not None]
        kept = [step for step in record.steps if step.position <= frontier]
        record = dataclasses.replace(record, steps=kept)
    recoverer = _Recoverer(
        record,
        pool,
        release=release,
        memory_limit_bytes=memory_limit_bytes,
        time_limit_s=time_limit_s,
    )
    report = recoverer.run()
    elapsed = time.monotonic() - began
    problem = _problem(report)
    if problem is not None and (other := _other_runtime(record)) is not None:
        problem += f" ({other})"
    if problem is None and record.ended:
        problem = "its record holds its end already"
    if problem is not None:
        recoverer.stop()
        return Unrecovered(problem, report.events, elapsed)
    if frontier is not None:
        recoverer.quiesce(began + (time_limit_s or BASE_TIME_LIMIT_S))
    runtime, beyond = recoverer.hand_over(listener, sink)
    if frontier is not None:
        runtime.pause_at_frontier()
        for fed in held:
            fed.deliver(runtime)
    resumed_from = None
    if last is not None and frontier is None:
        before = record.events[: last[0]]
        resumed_from = frozenset(e.call_id for e in before if isinstance(e, ev.ToolRequested))
    return Recovered(
        runtime,
        beyond,
        report.events,
        elapsed,
        at_frontier=frontier is not None,
        resumed_from=resumed_from,
    )


def _other_runtime(record: CellRecord) -> str | None:
    """How the runtime that recorded the cell differs from this one's, if it does."""
    here = runtime_identity()
    if not record.runtime or record.runtime == here:
        return None
    return f"recorded under {record.runtime}; this worker runs {here}"


def _problem(report: rep.CellReport) -> str | None:
    if report.status is rep.Status.UNREPLAYABLE:
        return f"it cannot be replayed: {report.problem}"
    divergence = report.divergence
    if divergence is None:
        return None
    return f"its replay diverged at event {divergence.position}: {divergence.reason}"

"""What a recorded session says each cell must do again: its start and its steps.

A cell's events (repeats of a retried append dropped) become a list of steps in log
order: an event the runtime must produce again (`EXPECT`), an input to feed it
(`INPUT`: a tool's outcome or a timer's firing, with the clock it carried), the
termination (`TERMINATE`) or an ending the host imposed (`HOST_END`: a memory limit,
the log's budget, the stored-value budget, a failure outside the cell). Events of the
harness's side (observations, notification deliveries, cancellations, the close) are
not steps: the runtime does not make them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from cellfleet.actors.runtime import protocol as rt
from cellfleet.actors.runtime.local import RecordedInput
from cellfleet.broker import codec
from cellfleet.broker import events as ev
from cellfleet.broker.contract.tools import ToolKind
from cellfleet.projections import stored

View = dict[str, Any]  # an event as replay compares it: {"event": type, ...fields}


class StepKind(Enum):
    EXPECT = "expect"
    INPUT = "input"
    TERMINATE = "terminate"
    HOST_END = "host_end"


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    position: int  # the event's index among the cell's events (0: its admission)
    event: ev.AnyEvent
    view: View | None = None  # EXPECT: what the runtime must produce
    input: RecordedInput | None = None  # INPUT: what to feed it


@dataclass(frozen=True, slots=True)
class CellRecord:
    """One recorded cell: how it starts, and its steps."""

    cell: str
    spec: rt.CellSpec
    events: Sequence[ev.AnyEvent]  # its events, repeats dropped; `Step.position` indexes them
    steps: Sequence[Step]
    ended: bool  # the record holds its terminal event
    span_ms: float  # from its admission to its last event
    problem: str | None = None  # why it cannot be replayed at all
    runtime: str = ""  # the V8 and prelude that recorded it ("": the record does not say)
    warmed: bool = True  # its context was warmed when it started (`ev.CellStarted`)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session: str
    time_zone: str  # "" where the record does not say
    locale: str
    cells: Sequence[CellRecord]


_WORKER_OUTCOMES = (ev.ToolCompleted, ev.ToolFailed, ev.ToolAttemptFailed)


def _tool_view(call_id: str, name: str, kind: str, value: Any) -> View:
    return {
        "event": "tool_requested",
        "call_id": call_id,
        "name": name,
        "kind": kind,
        "input": value,
    }


def _timer_view(timer: int, delay: int, due: float) -> View:
    return {"event": "timer_set", "timer_id": timer, "delay_ms": delay, "due_clock_ms": due}


def _ending_view(error: str | None, writes: Mapping[str, str]) -> View:
    return {"event": "cell_completed", "error_text": error, "stored_writes": dict(writes)}


# Each kind of event the runtime makes, as the log records it and as the runtime reports
# it, in the same shape.
_RECORDED: Mapping[type[Any], Callable[[Any], View]] = {
    ev.CellStarted: lambda _: {"event": "cell_started"},
    ev.OutputProduced: lambda e: {"event": "output_produced", "item": dict(e.item)},
    ev.YieldRequested: lambda _: {"event": "yield_requested"},
    ev.ToolRequested: lambda e: _tool_view(e.call_id, e.name, e.kind, e.input),
    ev.NotificationSent: lambda e: {"event": "notification_sent", "text": e.text},
    ev.TimerSet: lambda e: _timer_view(e.timer_id, e.delay_ms, e.due_clock_ms),
    ev.TimerCleared: lambda e: {"event": "timer_cleared", "timer_id": e.timer_id},
    ev.CellCompleted: lambda e: _ending_view(e.error_text, e.stored_writes),
    ev.CellTerminated: lambda _: {"event": "cell_terminated"},
}
_PRODUCED: Mapping[type[Any], Callable[[Any], View]] = {
    rt.Started: lambda _: {"event": "cell_started"},
    rt.OutputItem: lambda e: {"event": "output_produced", "item": dict(e.item)},
    rt.YieldRequested: lambda _: {"event": "yield_requested"},
    # An input that cannot be stored is not recorded (the call fails at once).
    rt.ToolCallRequested: lambda e: _tool_view(
        e.call_id,
        e.name,
        str(e.kind),
        None if e.problem is not None or codec.json_problem(e.input) is not None else e.input,
    ),
    rt.NotificationSent: lambda e: {"event": "notification_sent", "text": e.text},
    rt.TimerSet: lambda e: _timer_view(e.timer_id, e.delay_ms, e.due_clock_ms),
    rt.TimerCleared: lambda e: {"event": "timer_cleared", "timer_id": e.timer_id},
    rt.Finished: lambda e: _ending_view(e.error_text, e.stored_writes),
    rt.Stopped: lambda _: {"event": "cell_terminated"},
}


def recorded_view(event: ev.AnyEvent) -> View | None:
    """`event` as the runtime's counterpart is compared with it, or None if the runtime
    does not make events of its kind."""
    view = _RECORDED.get(type(event))
    return None if view is None else view(event)


def produced_view(event: rt.RuntimeEvent) -> View | None:
    """What the runtime reported, as the cell actor would have recorded it."""
    view = _PRODUCED.get(type(event))
    return None if view is None else view(event)


def plan(events: Iterable[ev.AnyEvent], cells: Collection[str] | None = None) -> SessionRecord:
    """The cells of a session's events (all, or those in `cells`), ready to replay."""
    listed = list(events)
    session = listed[0].session if listed else ""
    opened = next((e for e in listed if isinstance(e, ev.SessionOpened)), None)
    by_cell: dict[str, list[ev.AnyEvent]] = {}
    for event in listed:
        if event.cell and (cells is None or event.cell in cells):
            by_cell.setdefault(event.cell, []).append(event)
    versions = {
        e.stored_version for own in by_cell.values() for e in own if isinstance(e, ev.CellAdmitted)
    }
    snapshots = stored.values_at_versions(listed, versions)
    tool_sets: dict[str, tuple[Mapping[str, Any], ...]] = {}
    for event in listed:
        if isinstance(event, ev.ToolSetDefined):
            tool_sets.setdefault(event.digest, event.tools)
    records = [
        _cell(cell, cell_events, snapshots, tool_sets) for cell, cell_events in by_cell.items()
    ]
    return SessionRecord(
        session=session,
        time_zone=opened.time_zone if opened else "",
        locale=opened.locale if opened else "",
        cells=records,
    )


def _deduplicated(events: Sequence[ev.AnyEvent]) -> tuple[list[ev.AnyEvent], dict[str, Any]]:
    """The cell's own events, each once, and the outcomes tool workers recorded (by call).

    A worker's outcome carries no cell sequence (`seq` 0); the cell's events are
    identified by `seq`, and an append that was retried may have left a repeat.
    """
    own: list[ev.AnyEvent] = []
    seen: set[int] = set()
    outcomes: dict[str, Any] = {}
    for event in events:
        if isinstance(event, _WORKER_OUTCOMES) and event.seq == 0:
            if not isinstance(event, ev.ToolAttemptFailed):
                outcomes.setdefault(event.call_id, event)
        elif event.seq not in seen:
            seen.add(event.seq)
            own.append(event)
    return own, outcomes


def _cell(
    cell: str,
    events: Sequence[ev.AnyEvent],
    snapshots: Mapping[int, Mapping[str, str]],
    tool_sets: Mapping[str, tuple[Mapping[str, Any], ...]],
) -> CellRecord:
    own, outcomes = _deduplicated(events)
    admitted = own[0] if own else None
    if not isinstance(admitted, ev.CellAdmitted):
        return _unreplayable(cell, own, "the record does not start with its admission")
    values = snapshots.get(admitted.stored_version)
    if values is None:
        return _unreplayable(
            cell, own, f"the stored values of version {admitted.stored_version} are not recorded"
        )
    steps: list[Step] = []
    ended = False
    for position, event in enumerate(own[1:], start=1):
        step = _step(position, event, outcomes)
        if isinstance(step, str):
            return _unreplayable(cell, own, step)
        if step is not None:
            steps.append(step)
        ended = ended or isinstance(event, ev.CellCompleted | ev.CellTerminated)
    listed = ev.admitted_tools(admitted, tool_sets)
    if listed is None:
        return _unreplayable(cell, own, f"its tool set {admitted.tools_digest} is not recorded")
    try:
        tools = tuple(_tool(record) for record in listed)
    except ValueError as error:  # a kind of tool this version does not know
        return _unreplayable(cell, own, f"its admission names a tool it cannot run: {error}")
    spec = rt.CellSpec(
        cell_id=cell,
        source=admitted.source,
        tools=tools,
        seed=admitted.seed,
        clock_ms=admitted.clock_ms,
        stored=values,
    )
    span = own[-1].at_ms - admitted.at_ms
    span_ms = max(0.0, span)
    warmed = next((e.warmed for e in own if isinstance(e, ev.CellStarted)), True)
    return CellRecord(
        cell, spec, own, steps, ended, span_ms, runtime=admitted.runtime, warmed=warmed
    )


def _step(position: int, event: ev.AnyEvent, outcomes: Mapping[str, Any]) -> Step | str | None:
    """The step an event of the cell is (None: none), or why the cell cannot replay."""
    if isinstance(event, ev.CellCompleted) and event.by_host:
        return Step(StepKind.HOST_END, position, event)
    if isinstance(event, ev.CellTerminated):
        return Step(StepKind.TERMINATE, position, event)
    fed = _input(event, outcomes)
    if isinstance(fed, str):
        return f"the outcome of {fed} delivered at event {position} is not recorded"
    if fed is not None:
        return Step(StepKind.INPUT, position, event, input=fed)
    view = recorded_view(event)
    return None if view is None else Step(StepKind.EXPECT, position, event, view=view)


def _input(event: ev.AnyEvent, outcomes: Mapping[str, Any]) -> RecordedInput | str | None:
    """The input `event` records (None: it is none; a call id: its outcome is missing)."""
    if isinstance(event, ev.TimerFired):
        return RecordedInput("timer", str(event.timer_id), event.clock_ms)
    if isinstance(event, ev.ToolCompleted | ev.ToolFailed):  # the cell recorded it itself
        return _outcome(event, event.clock_ms)
    if isinstance(event, ev.ToolResultDelivered):  # a tool worker recorded it
        outcome = outcomes.get(event.call_id)
        return event.call_id if outcome is None else _outcome(outcome, event.clock_ms)
    return None


def _outcome(event: ev.ToolCompleted | ev.ToolFailed, clock_ms: float) -> RecordedInput:
    if isinstance(event, ev.ToolCompleted):
        return RecordedInput("tool_result", event.call_id, clock_ms, value=event.result)
    return RecordedInput("tool_error", event.call_id, clock_ms, error=event.error)


def _tool(record: Mapping[str, Any]) -> rt.RuntimeTool:
    return rt.RuntimeTool(
        name=str(record.get("global_name") or record.get("name") or ""),
        description=str(record.get("description") or ""),
        kind=ToolKind(record.get("kind") or ToolKind.FUNCTION),
    )


def _unreplayable(cell: str, events: Sequence[ev.AnyEvent], problem: str) -> CellRecord:
    return CellRecord(cell, rt.CellSpec(cell_id=cell, source=""), events, (), False, 0.0, problem)

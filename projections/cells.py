"""Each cell's lifecycle state: a frozen state type and a pure fold over session events.

Rules the fold encodes:
* a cell exists from its `CellAdmitted`; an event for any other cell id (and every
  session-level event) is ignored;
* an event whose (`cell`, `seq`) was already applied is a no-op (a retried append);
  tool results are the exception: a tool-dispatch worker, not the cell actor, writes
  them, so they are matched by call id instead (a result for a call that is not
  outstanding is a no-op);
* the first terminal event (`CellCompleted` or `CellTerminated`) wins; a later one
  changes nothing, and `CellClosed` only closes a cell that has ended;
* a terminal event discards the cell's pending timers (spec §2.1: timers never keep a
  cell alive and no event records their end); outstanding tool calls stay outstanding
  until their cancellation is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from cellfleet.broker.events import (
    AnyEvent,
    CellAdmitted,
    CellClosed,
    CellCompleted,
    CellStarted,
    CellTerminated,
    NotificationCancelled,
    NotificationDelivered,
    NotificationSent,
    ObservationDelivered,
    OutputProduced,
    TimerCleared,
    TimerFired,
    TimerSet,
    ToolCancelled,
    ToolCompleted,
    ToolFailed,
    ToolRequested,
    YieldRequested,
)
from cellfleet.projections.ports import Projection
from cellfleet.projections.seqset import SeqSet


class Phase(StrEnum):
    """Where a cell is in its lifecycle."""

    ADMITTED = "admitted"
    RUNNING = "running"
    COMPLETED = "completed"
    TERMINATED = "terminated"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class CellState:
    """One cell as its events describe it.

    `outcome` is the kind of the winning terminal event ("completed" / "terminated")
    and survives closing; `error_text` is set for a failed completion and
    `terminated_reason` for a termination. `applied` holds the seqs already folded.
    """

    cell: str
    call_id: str
    phase: Phase = Phase.ADMITTED
    outcome: str | None = None
    error_text: str | None = None
    terminated_reason: str | None = None
    outputs: int = 0
    delivered: int = 0
    yields: int = 0
    tool_calls: int = 0
    tools_pending: tuple[str, ...] = ()
    timers_pending: tuple[int, ...] = ()
    notifications_sent: int = 0
    notifications_delivered: int = 0
    notifications_cancelled: int = 0
    applied: SeqSet = field(default_factory=SeqSet)


@dataclass(frozen=True, slots=True)
class CellsState:
    """Every admitted cell of a session by id, in admission order (a read-only mapping)."""

    cells: Mapping[str, CellState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.cells, MappingProxyType):
            object.__setattr__(self, "cells", MappingProxyType(dict(self.cells)))


INITIAL = CellsState()


# -- one small function per event type ----------------------------------------------


def _started(cell: CellState, _event: CellStarted) -> CellState:
    return replace(cell, phase=Phase.RUNNING) if cell.phase is Phase.ADMITTED else cell


def _output(cell: CellState, _event: OutputProduced) -> CellState:
    return replace(cell, outputs=cell.outputs + 1)


def _yield(cell: CellState, _event: YieldRequested) -> CellState:
    return replace(cell, yields=cell.yields + 1)


def _observed(cell: CellState, event: ObservationDelivered) -> CellState:
    # `outputs` counts everything observers had seen so far, so it only grows.
    return replace(cell, delivered=max(cell.delivered, event.outputs))


def _completed(cell: CellState, event: CellCompleted) -> CellState:
    if cell.outcome is not None:
        return cell
    return replace(
        cell,
        phase=Phase.COMPLETED,
        outcome="completed",
        error_text=event.error_text,
        timers_pending=(),
    )


def _terminated(cell: CellState, event: CellTerminated) -> CellState:
    if cell.outcome is not None:
        return cell
    return replace(
        cell,
        phase=Phase.TERMINATED,
        outcome="terminated",
        terminated_reason=event.reason,
        timers_pending=(),
    )


def _closed(cell: CellState, _event: CellClosed) -> CellState:
    return replace(cell, phase=Phase.CLOSED) if cell.outcome is not None else cell


def _tool_requested(cell: CellState, event: ToolRequested) -> CellState:
    if event.call_id in cell.tools_pending:
        return cell
    return replace(
        cell, tool_calls=cell.tool_calls + 1, tools_pending=(*cell.tools_pending, event.call_id)
    )


def _tool_ended(cell: CellState, event: ToolCompleted | ToolFailed | ToolCancelled) -> CellState:
    if event.call_id not in cell.tools_pending:
        return cell
    return replace(cell, tools_pending=tuple(c for c in cell.tools_pending if c != event.call_id))


def _timer_set(cell: CellState, event: TimerSet) -> CellState:
    if cell.outcome is not None or event.timer_id in cell.timers_pending:
        return cell
    return replace(cell, timers_pending=(*cell.timers_pending, event.timer_id))


def _timer_ended(cell: CellState, event: TimerFired | TimerCleared) -> CellState:
    return replace(
        cell, timers_pending=tuple(t for t in cell.timers_pending if t != event.timer_id)
    )


def _notification_sent(cell: CellState, _event: NotificationSent) -> CellState:
    return replace(cell, notifications_sent=cell.notifications_sent + 1)


def _notification_delivered(cell: CellState, _event: NotificationDelivered) -> CellState:
    return replace(cell, notifications_delivered=cell.notifications_delivered + 1)


def _notification_cancelled(cell: CellState, _event: NotificationCancelled) -> CellState:
    return replace(cell, notifications_cancelled=cell.notifications_cancelled + 1)


_Handler = Callable[[CellState, Any], CellState]

_HANDLERS: Mapping[type[AnyEvent], _Handler] = {
    CellStarted: _started,
    OutputProduced: _output,
    YieldRequested: _yield,
    ObservationDelivered: _observed,
    CellCompleted: _completed,
    CellTerminated: _terminated,
    CellClosed: _closed,
    ToolRequested: _tool_requested,
    ToolCancelled: _tool_ended,
    TimerSet: _timer_set,
    TimerFired: _timer_ended,
    TimerCleared: _timer_ended,
    NotificationSent: _notification_sent,
    NotificationDelivered: _notification_delivered,
    NotificationCancelled: _notification_cancelled,
}

# Written by tool-dispatch workers; idempotent by call id, so not deduplicated by seq.
_MATCHED_BY_CALL_ID: Mapping[type[AnyEvent], _Handler] = {
    ToolCompleted: _tool_ended,
    ToolFailed: _tool_ended,
}


# -- the fold -----------------------------------------------------------------------


def _apply_into(cells: dict[str, CellState], event: AnyEvent) -> bool:
    """Fold `event` into `cells` (cell id -> its state), in place; whether it changed."""
    if isinstance(event, CellAdmitted):
        if not event.cell or event.cell in cells:
            return False
        cells[event.cell] = CellState(
            cell=event.cell, call_id=event.call_id, applied=SeqSet.of(event.seq)
        )
        return True
    cell = cells.get(event.cell)
    if cell is None:
        return False
    by_call_id = _MATCHED_BY_CALL_ID.get(type(event))
    if by_call_id is not None:
        updated = by_call_id(cell, event)
    elif event.seq in cell.applied:
        return False
    else:
        handler = _HANDLERS.get(type(event))
        changed = cell if handler is None else handler(cell, event)
        updated = replace(changed, applied=cell.applied.add(event.seq))
    if updated is cell:
        return False
    cells[event.cell] = updated
    return True


def apply(state: CellsState, event: AnyEvent) -> CellsState:
    """The state after `event` (`state` itself if it changes nothing)."""
    cells = dict(state.cells)
    return CellsState(cells) if _apply_into(cells, event) else state


def fold(events: Iterable[AnyEvent], state: CellsState = INITIAL) -> CellsState:
    """The state after applying `events` in order to `state`. The cells' map is built in
    place and frozen once: a frozen copy per event made a session's fold quadratic."""
    cells, changed = dict(state.cells), False
    for event in events:
        changed = _apply_into(cells, event) or changed
    return CellsState(cells) if changed else state


# -- JSON, for the projector's hash and the golden expectations ---------------------


def to_data(state: CellsState) -> dict[str, Any]:
    """`state` as plain JSON data: cell id -> fields."""
    return {
        cell_id: {
            "call_id": cell.call_id,
            "phase": cell.phase.value,
            "outcome": cell.outcome,
            "error_text": cell.error_text,
            "terminated_reason": cell.terminated_reason,
            "outputs": cell.outputs,
            "delivered": cell.delivered,
            "yields": cell.yields,
            "tool_calls": cell.tool_calls,
            "tools_pending": list(cell.tools_pending),
            "timers_pending": list(cell.timers_pending),
            "notifications_sent": cell.notifications_sent,
            "notifications_delivered": cell.notifications_delivered,
            "notifications_cancelled": cell.notifications_cancelled,
            "applied": [list(span) for span in cell.applied.ranges],
        }
        for cell_id, cell in state.cells.items()
    }


def _cell_from_data(cell_id: str, data: Mapping[str, Any]) -> CellState:
    return CellState(
        **{
            **data,
            "cell": cell_id,
            "phase": Phase(data["phase"]),
            "tools_pending": tuple(data["tools_pending"]),
            "timers_pending": tuple(data["timers_pending"]),
            "applied": SeqSet(tuple((low, high) for low, high in data["applied"])),
        }
    )


def to_json(state: CellsState) -> str:
    """`state` as JSON text."""
    return json.dumps(to_data(state), separators=(",", ":"))


def from_json(text: str | bytes) -> CellsState:
    """The state `to_json` wrote."""
    data: dict[str, Any] = json.loads(text)
    return CellsState({k: _cell_from_data(k, v) for k, v in data.items()})


PROJECTION: Projection[CellsState] = Projection(
    name="cells",
    version=1,
    initial=INITIAL,
    fold=fold,
    to_json=to_json,
    from_json=from_json,
)

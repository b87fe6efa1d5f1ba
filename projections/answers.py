"""What a fleet request was answered, as a session's log records it.

A worker records each answer (`observation_delivered`, with the ids of the requests it
answered) before it sends it; a worker that dies in between leaves the answer in the
log only. The client then sends the request again, with the same id, to the session's
next owner, which answers it from here: the same cell, kind and outputs (the outputs
between the cell's previous answer and this one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cellfleet.broker import events as ev
from cellfleet.broker.contract.responses import (
    CellAnswer,
    ContentItem,
    Pending,
    Result,
    Terminated,
    Yielded,
)


@dataclass
class _Cell:
    outputs: list[ContentItem] = field(default_factory=list)
    delivered: int = 0  # outputs answered with before the delivery being read
    error_text: str | None = None
    seqs: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class RequestTrace:
    """What the log says of one request: the cell it created (an exec), and its answer."""

    cell: str | None = None
    answer: CellAnswer | None = None


def request_trace(events: Iterable[ev.AnyEvent], request: str) -> RequestTrace:
    """The cell the request `request` created and the answer recorded for it, if any."""
    cells: dict[str, _Cell] = {}
    created: str | None = None
    for event in events:
        if not event.cell:
            continue
        cell = cells.setdefault(event.cell, _Cell())
        if event.seq in cell.seqs:  # a repeat of a retried append
            continue
        cell.seqs.add(event.seq)
        if isinstance(event, ev.CellAdmitted) and request and event.request == request:
            created = event.cell
        elif isinstance(event, ev.OutputProduced):
            cell.outputs.append(dict(event.item))
        elif isinstance(event, ev.CellCompleted):
            cell.error_text = event.error_text
        elif isinstance(event, ev.ObservationDelivered):
            items = cell.outputs[cell.delivered : event.outputs]
            cell.delivered = event.outputs
            if request in event.requests:
                return RequestTrace(event.cell, _answer(event, items, cell.error_text))
    return RequestTrace(created)


def _answer(
    delivered: ev.ObservationDelivered, items: list[ContentItem], error_text: str | None
) -> CellAnswer:
    cell, kind = delivered.cell, delivered.kind
    if kind is ev.ObservationKind.COMPLETED:
        return Result(cell_id=cell, content_items=items, error_text=error_text)
    if kind is ev.ObservationKind.TERMINATED:
        return Terminated(cell_id=cell, content_items=items)
    if kind is ev.ObservationKind.PENDING:
        ids = list(delivered.pending_tool_call_ids)
        return Pending(cell_id=cell, content_items=items, pending_tool_call_ids=ids)
    return Yielded(cell_id=cell, content_items=items)

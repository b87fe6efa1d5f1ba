"""A cell actor's own account of its cell, as the events it writes state it.

The actor advances its `CellFacts` with every event it writes (`CellLog`), through
`advance`, the one function that knows what an event means for them; `fold` runs the
same function over a list of events. So the actor's facts can be checked against the
cell's events in the log (the integration tests do, for every cell they run), and a
new owner can rebuild them from the log.

`advance` updates the facts in place: folding a frozen record per event costs about
50 µs per short cell on the development machine, a few percent of an exec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cellfleet.broker import events as ev


@dataclass(slots=True)
class CellFacts:
    """What a cell's events say about it so far."""

    next_seq: int = 0  # the writer's next sequence number
    delivered: int = 0  # outputs its observers were given, in all
    observed: bool = False  # some observer was answered
    tools: set[str] = field(default_factory=set)  # tool calls requested, not ended
    timers: set[int] = field(default_factory=set)  # timers set, not fired or cleared
    notifications: int = 0  # notifications sent (ids are 1, 2, …)
    outcome: ev.ObservationKind | None = None  # `COMPLETED` or `TERMINATED` once ended
    closed: bool = False

    def copy(self) -> CellFacts:
        return CellFacts(
            next_seq=self.next_seq,
            delivered=self.delivered,
            observed=self.observed,
            tools=set(self.tools),
            timers=set(self.timers),
            notifications=self.notifications,
            outcome=self.outcome,
            closed=self.closed,
        )


def advance(facts: CellFacts, event: ev.AnyEvent) -> None:
    """Bring `facts` up to date with `event`, the next event of the cell."""
    if event.seq >= facts.next_seq:
        facts.next_seq = event.seq + 1
    change = _CHANGES.get(type(event))
    if change is not None:
        change(facts, event)


def _observed(facts: CellFacts, event: Any) -> None:
    facts.delivered = event.outputs
    facts.observed = True


def _tool_requested(facts: CellFacts, event: Any) -> None:
    facts.tools.add(event.call_id)


def _tool_ended(facts: CellFacts, event: Any) -> None:
    facts.tools.discard(event.call_id)


def _timer_set(facts: CellFacts, event: Any) -> None:
    facts.timers.add(event.timer_id)


def _timer_ended(facts: CellFacts, event: Any) -> None:
    facts.timers.discard(event.timer_id)


def _notification_sent(facts: CellFacts, event: Any) -> None:
    facts.notifications = max(facts.notifications, event.notification_id)


def _completed(facts: CellFacts, _event: Any) -> None:
    _ended(facts, ev.ObservationKind.COMPLETED)


def _terminated(facts: CellFacts, _event: Any) -> None:
    _ended(facts, ev.ObservationKind.TERMINATED)


def _ended(facts: CellFacts, outcome: ev.ObservationKind) -> None:
    if facts.outcome is None:  # the first terminal event wins
        facts.outcome = outcome
    facts.timers.clear()  # an ended cell's timers never fire (spec §2.1)


def _closed(facts: CellFacts, _event: Any) -> None:
    facts.closed = True


# What each kind of event changes (a table: the actor applies one per event it writes).
_CHANGES: dict[type[ev.AnyEvent], Callable[[CellFacts, Any], None]] = {
    ev.ObservationDelivered: _observed,
    ev.ToolRequested: _tool_requested,
    ev.ToolCompleted: _tool_ended,
    ev.ToolFailed: _tool_ended,
    ev.ToolResultDelivered: _tool_ended,
    ev.ToolCancelled: _tool_ended,
    ev.TimerSet: _timer_set,
    ev.TimerFired: _timer_ended,
    ev.TimerCleared: _timer_ended,
    ev.NotificationSent: _notification_sent,
    ev.CellCompleted: _completed,
    ev.CellTerminated: _terminated,
    ev.CellClosed: _closed,
}


def fold(events: Iterable[ev.AnyEvent]) -> CellFacts:
    """The facts after `events`, the events of one cell in log order."""
    facts = CellFacts()
    for event in events:
        advance(facts, event)
    return facts

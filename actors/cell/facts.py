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

from collections.abc import Iterable
from dataclasses import dataclass, field

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
    facts.next_seq = max(facts.next_seq, event.seq + 1)
    if isinstance(event, ev.ObservationDelivered):
        facts.delivered = event.outputs
        facts.observed = True
    elif isinstance(event, ev.ToolRequested):
        facts.tools.add(event.call_id)
    elif isinstance(
        event, ev.ToolCompleted | ev.ToolFailed | ev.ToolResultDelivered | ev.ToolCancelled
    ):
        facts.tools.discard(event.call_id)
    elif isinstance(event, ev.TimerSet):
        facts.timers.add(event.timer_id)
    elif isinstance(event, ev.TimerFired | ev.TimerCleared):
        facts.timers.discard(event.timer_id)
    elif isinstance(event, ev.NotificationSent):
        facts.notifications = max(facts.notifications, event.notification_id)
    elif isinstance(event, ev.CellCompleted | ev.CellTerminated):
        if facts.outcome is None:  # the first terminal event wins
            completed = isinstance(event, ev.CellCompleted)
            facts.outcome = (
                ev.ObservationKind.COMPLETED if completed else ev.ObservationKind.TERMINATED
            )
        facts.timers.clear()  # an ended cell's timers never fire (spec §2.1)
    elif isinstance(event, ev.CellClosed):
        facts.closed = True


def fold(events: Iterable[ev.AnyEvent]) -> CellFacts:
    """The facts after `events`, the events of one cell in log order."""
    facts = CellFacts()
    for event in events:
        advance(facts, event)
    return facts

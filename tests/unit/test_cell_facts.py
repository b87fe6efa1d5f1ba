"""A cell actor's facts (`actors/cell/facts.py`): folded from plain lists of events."""

from __future__ import annotations

from cellfleet.actors.cell.facts import CellFacts, advance, fold
from cellfleet.broker import events as ev


def cell_events() -> list[ev.AnyEvent]:
    seq = iter(range(100))

    def e(cls: type, **fields: object) -> ev.AnyEvent:
        event: ev.AnyEvent = cls(session="s", cell="1", seq=next(seq), at_ms=0.0, **fields)
        return event

    return [
        e(ev.CellAdmitted, call_id="c", source="x"),
        e(ev.CellStarted),
        e(ev.OutputProduced, item={"type": "input_text", "text": "a"}),
        e(ev.ToolRequested, call_id="tool-1", name="echo", kind="function"),
        e(ev.ToolRequested, call_id="tool-2", name="echo", kind="function"),
        e(ev.TimerSet, timer_id=1, delay_ms=10, due_clock_ms=10.0),
        e(ev.TimerSet, timer_id=2, delay_ms=10, due_clock_ms=10.0),
        e(ev.ObservationDelivered, kind=ev.ObservationKind.YIELDED, outputs=1),
        # a worker records tool-1's outcome (no cell sequence), the cell delivers it
        ev.ToolCompleted(session="s", cell="1", call_id="tool-1", result=1),
        e(ev.ToolResultDelivered, call_id="tool-1", clock_ms=1.0),
        e(ev.TimerFired, timer_id=1, clock_ms=10.0),
        e(ev.NotificationSent, notification_id=1, call_id="c", text="hi"),
        e(ev.NotificationSent, notification_id=2, call_id="c", text="ho"),
    ]


def test_facts_follow_the_events_of_a_running_cell() -> None:
    facts = fold(cell_events())
    assert facts == CellFacts(
        next_seq=12,
        delivered=1,
        observed=True,
        tools={"tool-2"},
        timers={2},
        notifications=2,
    )


def test_an_end_cancels_nothing_by_itself_but_drops_the_timers() -> None:
    events = cell_events()
    facts = fold(events)
    advance(facts, ev.CellTerminated(session="s", cell="1", seq=12))
    assert (facts.outcome, facts.timers, facts.tools) == (
        ev.ObservationKind.TERMINATED,
        set(),
        {"tool-2"},  # until its cancellation is recorded
    )
    advance(facts, ev.ToolCancelled(session="s", cell="1", seq=13, call_id="tool-2"))
    advance(facts, ev.CellCompleted(session="s", cell="1", seq=14))  # the first end wins
    advance(facts, ev.CellClosed(session="s", cell="1", seq=15))
    assert (facts.outcome, facts.tools, facts.closed, facts.next_seq) == (
        ev.ObservationKind.TERMINATED,
        set(),
        True,
        16,
    )


def test_a_repeated_entry_changes_nothing() -> None:
    """A retried append may store a batch twice, one copy after the other."""
    events = cell_events()
    assert fold([*events[:8], *events[3:8], *events[8:]]) == fold(events)


def test_copies_are_independent() -> None:
    facts = fold(cell_events())
    copy = facts.copy()
    advance(copy, ev.ToolCancelled(session="s", cell="1", seq=20, call_id="tool-2"))
    assert facts.tools == {"tool-2"}
    assert copy.tools == set()

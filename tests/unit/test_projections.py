"""The projections as pure folds over plain lists of events (no Redis)."""

from __future__ import annotations

from functools import reduce
from typing import Any

import pytest

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
    SessionOpened,
    ShutdownBegun,
    TimerCleared,
    TimerFired,
    TimerSet,
    ToolCancelled,
    ToolCompleted,
    ToolFailed,
    ToolRequested,
    YieldRequested,
)
from cellfleet.projections import (
    Phase,
    SeqSet,
    cells,
    project,
    rebuild,
    stored,
    stream_id,
    timeline,
)

SESSION = "unit"


class Writer:
    """Events of one cell, numbered by the cell actor's own counter."""

    def __init__(self, cell: str) -> None:
        self.cell = cell
        self.seq = 0

    def __call__(self, event_type: type[Any], **data: Any) -> Any:
        at_ms = 1000.0 + self.seq
        event = event_type(session=SESSION, cell=self.cell, seq=self.seq, at_ms=at_ms, **data)
        self.seq += 1
        return event

    def admitted(self) -> CellAdmitted:
        return self(CellAdmitted, call_id=f"call-{self.cell}", source="text(1)")

    def completed(self, error_text: str | None = None, **writes: str) -> CellCompleted:
        return self(CellCompleted, error_text=error_text, stored_writes=writes)

    def terminated(self, reason: str = "terminate") -> CellTerminated:
        return self(CellTerminated, reason=reason)


def text(value: str) -> dict[str, str]:
    return {"type": "input_text", "text": value}


def cell_of(events: list[AnyEvent], cell: str = "1") -> cells.CellState:
    return cells.fold(events).cells[cell]


# -- SeqSet ---------------------------------------------------------------------------


def test_seqset_keeps_contiguous_numbers_as_one_range():
    seqs = SeqSet.of(0, 1, 2, 3)
    assert seqs.ranges == ((0, 3),)
    assert 2 in seqs
    assert 4 not in seqs


def test_seqset_joins_ranges_when_a_gap_is_filled_out_of_order():
    seqs = SeqSet.of(5, 1, 3, 2)
    assert seqs.ranges == ((1, 3), (5, 5))
    assert 4 not in seqs
    assert seqs.add(4).ranges == ((1, 5),)
    assert seqs.add(3) is seqs


# -- cells: lifecycle -----------------------------------------------------------------


def test_cell_goes_from_admitted_to_running_to_completed_to_closed():
    a = Writer("1")
    events = [a.admitted()]
    assert cell_of(events).phase is Phase.ADMITTED
    events.append(a(CellStarted))
    assert cell_of(events).phase is Phase.RUNNING
    events.append(a.completed())
    assert (cell_of(events).phase, cell_of(events).outcome) == (Phase.COMPLETED, "completed")
    events.append(a(CellClosed))
    closed = cell_of(events)
    assert (closed.phase, closed.outcome, closed.error_text) == (Phase.CLOSED, "completed", None)
    assert closed.call_id == "call-1"


def test_failed_completion_keeps_its_error_text_and_termination_its_reason():
    a, b = Writer("1"), Writer("2")
    state = cells.fold(
        [
            a.admitted(),
            b.admitted(),
            a(CellStarted),
            a.completed("Error: boom\n    at exec_main.mjs:1:7"),
            b.terminated("shutdown"),
            b(CellClosed),
        ]
    )
    assert state.cells["1"].error_text == "Error: boom\n    at exec_main.mjs:1:7"
    assert state.cells["1"].terminated_reason is None
    assert (state.cells["2"].phase, state.cells["2"].outcome) == (Phase.CLOSED, "terminated")
    assert state.cells["2"].terminated_reason == "shutdown"


@pytest.mark.parametrize("first", ["completed", "terminated"])
def test_first_terminal_event_wins(first):
    a = Writer("1")
    complete, terminate = a.completed("late"), a.terminated()
    terminals = [complete, terminate] if first == "completed" else [terminate, complete]
    state = cells.fold([a.admitted(), a(CellStarted), *terminals])
    cell = state.cells["1"]
    assert cell.outcome == first
    assert cell.phase == first
    if first == "completed":
        assert (cell.error_text, cell.terminated_reason) == ("late", None)
    else:
        assert (cell.error_text, cell.terminated_reason) == (None, "terminate")


def test_second_terminal_event_after_close_does_not_reopen_the_cell():
    a = Writer("1")
    state = cells.fold([a.admitted(), a.terminated(), a(CellClosed), a.completed()])
    assert (state.cells["1"].phase, state.cells["1"].outcome) == (Phase.CLOSED, "terminated")


def test_close_before_any_terminal_event_is_ignored_and_started_after_end_too():
    a = Writer("1")
    state = cells.fold([a.admitted(), a(CellStarted), a(CellClosed)])
    assert state.cells["1"].phase is Phase.RUNNING
    ended = cells.fold([a.completed(), a(CellStarted)], state)
    assert ended.cells["1"].phase is Phase.COMPLETED


def test_events_for_unknown_cells_and_session_events_are_ignored():
    a, ghost = Writer("1"), Writer("9")
    before = cells.fold([a.admitted()])
    after = cells.fold(
        [
            ghost(CellStarted),
            ghost(OutputProduced, item=text("x")),
            ghost.completed(),
            SessionOpened(session=SESSION, seq=1),
            ShutdownBegun(session=SESSION, seq=2),
        ],
        before,
    )
    assert after is before
    assert list(after.cells) == ["1"]


def test_admission_without_a_cell_id_or_repeated_is_ignored():
    a = Writer("1")
    first = a.admitted()
    state = cells.fold([first, a(CellStarted)])
    again = CellAdmitted(session=SESSION, cell="1", seq=0, call_id="other", source="")
    assert cells.apply(state, again) is state
    assert cells.apply(state, CellAdmitted(session=SESSION, call_id="x", source="")) is state


# -- cells: repeated events -------------------------------------------------------------


def test_repeated_event_with_same_cell_and_seq_is_a_no_op():
    a = Writer("1")
    output = a(OutputProduced, item=text("once"))
    state = cells.fold([a.admitted(), a(CellStarted), output, output, output])
    assert state.cells["1"].outputs == 1
    assert cells.apply(state, output) is state


def test_same_seq_in_another_cell_is_a_different_event():
    a, b = Writer("1"), Writer("2")
    state = cells.fold(
        [a.admitted(), b.admitted(), a(OutputProduced, item=text("a")), b(OutputProduced)]
    )
    assert (state.cells["1"].outputs, state.cells["2"].outputs) == (1, 1)


def test_repeated_retried_batch_changes_nothing():
    a = Writer("1")
    batch = [a(CellStarted), a(TimerSet, timer_id=1, delay_ms=5, due_clock_ms=5.0)]
    once = cells.fold([a.admitted(), *batch, a(TimerFired, timer_id=1, clock_ms=5.0)])
    retried = cells.fold(batch, once)
    assert retried == once
    assert retried.cells["1"].timers_pending == ()


# -- cells: tools, timers, observations, notifications ---------------------------------


def test_outstanding_tool_calls_are_requested_minus_completed_failed_cancelled():
    a = Writer("1")
    requests = [
        a(ToolRequested, call_id=f"tool-{i}", name="echo", kind="function") for i in range(1, 5)
    ]
    state = cells.fold([a.admitted(), a(CellStarted), *requests])
    assert state.cells["1"].tools_pending == ("tool-1", "tool-2", "tool-3", "tool-4")
    state = cells.fold(
        [
            ToolCompleted(session=SESSION, cell="1", seq=2, call_id="tool-1", result=1),
            ToolFailed(session=SESSION, cell="1", seq=3, call_id="tool-2", error="no"),
            a(ToolCancelled, call_id="tool-4"),
        ],
        state,
    )
    cell = state.cells["1"]
    assert (cell.tools_pending, cell.tool_calls) == (("tool-3",), 4)


def test_tool_result_is_matched_by_call_id_not_by_seq():
    a = Writer("1")
    request = a(ToolRequested, call_id="tool-1", name="echo", kind="function")
    # A worker's result may carry a seq the cell actor already used: still applied.
    result = ToolCompleted(session=SESSION, cell="1", seq=request.seq, call_id="tool-1")
    state = cells.fold([a.admitted(), request, result])
    assert state.cells["1"].tools_pending == ()
    # A repeated result, or one for a call that is not outstanding, is a no-op.
    assert cells.apply(state, result) is state
    stray = ToolFailed(session=SESSION, cell="1", seq=99, call_id="tool-7", error="x")
    assert cells.apply(state, stray) is state


def test_pending_timers_are_set_minus_fired_and_cleared_and_discarded_at_the_end():
    a = Writer("1")
    timers = [a(TimerSet, timer_id=i, delay_ms=10, due_clock_ms=10.0) for i in (1, 2, 3)]
    state = cells.fold(
        [
            a.admitted(),
            a(CellStarted),
            *timers,
            a(TimerFired, timer_id=1, clock_ms=10.0),
            a(TimerCleared, timer_id=3),
        ]
    )
    assert state.cells["1"].timers_pending == (2,)
    ended = cells.fold(
        [a.completed(), a(TimerSet, timer_id=4, delay_ms=1, due_clock_ms=1.0)], state
    )
    assert ended.cells["1"].timers_pending == ()


def test_outputs_produced_and_delivered_to_observers():
    a = Writer("1")
    state = cells.fold(
        [
            a.admitted(),
            a(CellStarted),
            a(OutputProduced, item=text("1")),
            a(YieldRequested),
            a(ObservationDelivered, kind="yielded", outputs=1),
            a(OutputProduced, item=text("2")),
            a(OutputProduced, item=text("3")),
        ]
    )
    assert (state.cells["1"].outputs, state.cells["1"].delivered) == (3, 1)
    assert state.cells["1"].yields == 1
    state = cells.fold([a(ObservationDelivered, kind="yielded", outputs=3)], state)
    assert state.cells["1"].delivered == 3


def test_notification_counts():
    a = Writer("1")
    sent = [a(NotificationSent, notification_id=i, call_id="c", text="hi") for i in (1, 2, 3)]
    state = cells.fold(
        [
            a.admitted(),
            *sent,
            a(NotificationDelivered, notification_id=1),
            a(NotificationCancelled, notification_id=2),
            a(NotificationCancelled, notification_id=3),
        ]
    )
    cell = state.cells["1"]
    assert (cell.notifications_sent, cell.notifications_delivered) == (3, 1)
    assert cell.notifications_cancelled == 2


def test_cells_fold_equals_applying_one_event_at_a_time_and_survives_json():
    a, b = Writer("1"), Writer("2")
    events = [
        a.admitted(),
        b.admitted(),
        a(CellStarted),
        a(ToolRequested, call_id="tool-1", name="echo", kind="function"),
        b(TimerSet, timer_id=1, delay_ms=1, due_clock_ms=1.0),
        a.completed(),
        b.terminated(),
    ]
    state = cells.fold(events)
    assert reduce(cells.apply, events, cells.INITIAL) == state
    assert cells.from_json(cells.to_json(state)) == state


def test_cells_state_is_frozen():
    state = cells.fold([Writer("1").admitted()])
    with pytest.raises(TypeError):
        state.cells["2"] = state.cells["1"]  # type: ignore[index]


# -- stored values (§5.1) ---------------------------------------------------------------


def test_spec_example_concurrent_cells_merge_only_their_own_keys():
    init, a, b = Writer("1"), Writer("2"), Writer("3")
    events = [
        init.admitted(),
        init.completed(a="1", b="2"),  # init a=1, b=2
        a.admitted(),  # cell A snapshots {a:1,b:2}, stores a=3 and yields
        a(CellStarted),
        a(YieldRequested),
        a(ObservationDelivered, kind="yielded"),
        b.admitted(),  # cell B stores b=4 and completes
        b(CellStarted),
        b.completed(b="4"),
        a.completed(a="3"),  # A completes
    ]
    assert stored.fold(events).values == {"a": "3", "b": "4"}


def test_spec_example_from_initial_values():
    a, b = Writer("1"), Writer("2")
    start = stored.StoredValues(values={"a": "1", "b": "2"})
    events = [a.admitted(), b.admitted(), b.completed(b="4"), a.completed(a="3")]
    assert stored.fold(events, start).values == {"a": "3", "b": "4"}


def test_later_completion_overwrites_a_key_written_earlier():
    a, b = Writer("1"), Writer("2")
    events = [a.admitted(), b.admitted(), b.completed(k='"b"'), a.completed(k='"a"')]
    assert stored.fold(events).values == {"k": '"a"'}


def test_terminated_cell_never_commits_even_with_a_completion_after_it():
    a, b = Writer("1"), Writer("2")
    events = [
        a.admitted(),
        b.admitted(),
        b.completed(kept="1"),
        a.terminated(),
        a.completed(lost="2", kept="3"),  # too late: termination won
    ]
    state = stored.fold(events)
    assert state.values == {"kept": "1"}
    assert state.cells == {"1": "terminated", "2": "completed"}


def test_failed_completion_still_commits_its_writes():
    a = Writer("1")
    state = stored.fold([a.admitted(), a.completed("Error: boom", x="1")])
    assert state.values == {"x": "1"}


def test_repeated_completion_does_not_merge_again():
    a, b = Writer("1"), Writer("2")
    first = a.completed(k="1")
    events = [a.admitted(), b.admitted(), first, b.completed(k="2"), first]
    assert stored.fold(events).values == {"k": "2"}


def test_version_counts_the_merges_and_names_a_cells_snapshot():
    """A cell created before another's merge may be admitted after it: its snapshot is
    the version it names, not the values at its admission's place in the log."""
    a, b, c = Writer("1"), Writer("2"), Writer("3")
    events = [
        a.admitted(),
        a.completed(k='"a"'),  # version 1
        b.admitted(),
        b.completed(),  # no writes: no merge
        c.admitted(),  # created at version 1 ...
        a.terminated(),  # (repeated terminal: ignored)
    ]
    assert stored.fold(events).version == 1
    later = Writer("4")
    events += [later.admitted(), later.completed(k='"d"')]  # version 2, before C's admission
    assert stored.fold(events).version == 2
    assert stored.values_at(events, 0) == {}
    assert stored.values_at(events, 1) == {"k": '"a"'}
    assert stored.values_at(events, 2) == {"k": '"d"'}
    with pytest.raises(ValueError, match="2 merges, not 3"):
        stored.values_at(events, 3)
    assert stored.from_json(stored.to_json(stored.fold(events))) == stored.fold(events)


def test_completion_of_a_cell_never_admitted_is_ignored():
    state = stored.fold([Writer("7").completed(k="1")])
    assert state == stored.INITIAL


def test_stored_values_are_frozen_and_survive_json():
    a = Writer("1")
    state = stored.fold([a.admitted(), a.completed(k='{"deep":[1,2]}')])
    assert stored.from_json(stored.to_json(state)) == state
    with pytest.raises(TypeError):
        state.values["k"] = "2"  # type: ignore[index]


# -- timeline ---------------------------------------------------------------------------


def test_timeline_has_one_short_line_per_event():
    a = Writer("1")
    events = [
        SessionOpened(session=SESSION, seq=1, at_ms=1000.0),
        a.admitted(),
        a(ToolRequested, call_id="tool-1", name="echo", kind="function", input={"x": 1}),
        a(OutputProduced, item=text("hello")),
        a.completed(None, k="1"),
        a.terminated(),
    ]
    lines = timeline.fold(events).lines
    assert lines == (
        "+0ms session#1 session_opened",
        '+0ms cell 1#0 cell_admitted call=call-1 tools=- source="text(1)"',
        '+1ms cell 1#1 tool_requested tool-1 echo (function) input={"x":1}',
        '+2ms cell 1#2 output_produced text "hello"',
        "+3ms cell 1#3 cell_completed ok stored=k",
        "+4ms cell 1#4 cell_terminated reason=terminate",
    )


def test_timeline_marks_repeated_entries_and_clips_long_texts():
    a = Writer("1")
    output = a(OutputProduced, item=text("x" * 100))
    state = timeline.fold([a.admitted(), output, output])
    assert state.lines[2] == state.lines[1] + " (repeat)"
    assert len(state.lines[1]) < 100
    assert state.lines[1].endswith('…"')
    assert timeline.from_json(timeline.to_json(state)) == state
    assert timeline.render(state).count("\n") == 3


def test_timeline_apply_continues_the_fold():
    a = Writer("1")
    events = [a.admitted(), a(CellStarted), a(CellStarted)]
    assert reduce(timeline.apply, events, timeline.INITIAL) == timeline.fold(events)


# -- replay -----------------------------------------------------------------------------


class ListJournal:
    """An in-memory event source: stream entries of one session."""

    def __init__(self, events: list[AnyEvent]) -> None:
        self.entries = [(f"{i + 1}-0", event) for i, event in enumerate(events)]

    def read(self, session: str, after: str = "0-0") -> list[tuple[str, AnyEvent]]:
        return [(i, e) for i, e in self.entries if stream_id(i) > stream_id(after)]


def test_rebuild_folds_the_whole_stream_into_every_projection():
    a = Writer("1")
    events = [a.admitted(), a(CellStarted), a.completed(k="1"), a(CellClosed)]
    view = rebuild(ListJournal(events), SESSION)
    assert view.position == "4-0"
    assert view.cells == cells.fold(events)
    assert view.stored.values == {"k": "1"}
    assert len(view.timeline.lines) == 4


def test_rebuild_of_an_empty_stream_is_the_initial_state():
    view = project(SESSION, [])
    assert (view.position, view.cells, view.stored, view.timeline) == (
        "0-0",
        cells.INITIAL,
        stored.INITIAL,
        timeline.INITIAL,
    )

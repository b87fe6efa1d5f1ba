"""The session's event log tells the same story as the answers (read back from Redis).

Every answer is appended (`observation_delivered`, with the outputs it carried) before
the caller can see it, after the output events it reports; each cell has exactly one
terminal event, and an answer's kind agrees with it. (Every test's log is also checked
by `session_support.check_log` when its sessions shut down.)
"""

from __future__ import annotations

from typing import Any

import pytest

from cellfleet.actors.cell import log as cell_log
from cellfleet.broker.contract.responses import CellAnswer, Pending, Result, Terminated, Yielded
from cellfleet.broker.errors import JournalUnavailableError
from cellfleet.broker.events import (
    CellCompleted,
    CellTerminated,
    ObservationDelivered,
    ToolCompleted,
)
from tests.integration.session_support import (
    TIMEOUT_S,
    Gates,
    Harness,
    assert_plain_failure,
    delivered_items,
    is_event,
    text,
)

KINDS = {Yielded: "yielded", Result: "completed", Terminated: "terminated", Pending: "pending"}


def assert_recorded(harness: Harness, answer: CellAnswer) -> None:
    """The log's latest answer for the cell is `answer` (kind and items)."""
    answers = list(delivered_items(harness.events(), answer.cell_id))
    assert answers, "no answer recorded"
    assert answers[-1] == (KINDS[type(answer)], answer.content_items)


def test_every_answer_is_recorded_before_it_is_seen(harness: Harness, gates: Gates) -> None:
    cell, first = harness.start(
        "text('a');\nyield_control();\ntext('b');\nawait tools.gate({ name: '1' });\n"
        "text('c');\ntext('d');\nawait tools.gate({ name: '2' });\ntext('e')"
    )
    answer = first.result(TIMEOUT_S)
    assert answer == Yielded(cell_id=cell, content_items=[text("a")])
    assert_recorded(harness, answer)
    gates.wait_entered("1")
    answer = harness.observe(cell, 20).result(TIMEOUT_S)
    assert answer == Yielded(cell_id=cell, content_items=[text("b")])
    assert_recorded(harness, answer)
    waiting = harness.observe(cell, 30_000)
    gates.open("1")
    gates.wait_entered("2")
    gates.open("2")
    answer = waiting.result(TIMEOUT_S)
    assert answer == Result(cell_id=cell, content_items=[text("c"), text("d"), text("e")])
    assert_recorded(harness, answer)
    events = harness.cell_events(cell)
    kinds = [type(e) for e in events]
    assert kinds.count(CellCompleted) == 1
    assert kinds.index(CellCompleted) < max(
        i for i, e in enumerate(events) if isinstance(e, ObservationDelivered)
    )


def test_a_kept_initial_yield_and_the_completion_are_recorded_in_order(
    harness: Harness, gates: Gates
) -> None:
    cell, initial = harness.start("await tools.gate({});\ntext('i');\nyield_control();\ntext('m')")
    assert initial.cancel()
    gates.open()
    harness.wait_event(is_event(CellCompleted, cell))
    for expected in (Yielded(cell_id=cell, content_items=[text("i")]),
                     Result(cell_id=cell, content_items=[text("m")])):  # fmt: skip
        answer = harness.observe(cell).result(TIMEOUT_S)
        assert answer == expected
        assert_recorded(harness, answer)


def test_a_termination_seen_by_two_callers_is_recorded_once(harness: Harness, gates: Gates) -> None:
    cell, first = harness.start("yield_control();\ntext('x');\nawait tools.gate({})")
    assert first.result(TIMEOUT_S) == Yielded(cell_id=cell)
    gates.wait_entered()
    observer = harness.observe(cell, 30_000)
    answer = harness.session.backend.terminate(cell).result(TIMEOUT_S)
    assert answer == Terminated(cell_id=cell, content_items=[text("x")])
    assert observer.result(TIMEOUT_S) == answer
    assert_recorded(harness, answer)
    answers = list(delivered_items(harness.events(), cell))
    assert [kind for kind, _ in answers] == ["yielded", "terminated"]
    assert [type(e) for e in harness.cell_events(cell)].count(CellTerminated) == 1


def test_pending_answers_record_their_tool_calls(harness: Harness, gates: Gates) -> None:
    answer = harness.session.execute_to_pending("call-1", "text('p');\nawait tools.gate({})")
    assert answer == Pending(
        cell_id="1", content_items=[text("p")], pending_tool_call_ids=["tool-1"]
    )
    assert_recorded(harness, answer)
    delivered = [e for e in harness.cell_events("1") if isinstance(e, ObservationDelivered)]
    assert delivered[-1].pending_tool_call_ids == ("tool-1",)


def test_completion_and_termination_racing_agree_with_the_log(
    harness: Harness, gates: Gates
) -> None:
    """Cells finishing while being terminated: whichever wins, the answer, the terminal
    event and the stored values agree (first terminal wins, writes only with it)."""
    cells = []
    for index in range(12):
        cell, first = harness.start(
            f"store('k{index}', {index});\nyield_control();\n"
            f"await tools.gate({{ name: 'race' }});\ntext('done {index}')"
        )
        assert first.result(TIMEOUT_S) == Yielded(cell_id=cell)
        cells.append(cell)
    gates.wait_entered("race")
    gates.open("race")
    pending = {}
    for cell in cells:  # terminate each cell as soon as its tool's result is recorded
        harness.wait_event(is_event(ToolCompleted, cell))
        pending[cell] = harness.session.backend.terminate(cell)
    answers = {cell: future.result(TIMEOUT_S) for cell, future in pending.items()}
    events = harness.events()
    stored = harness.host.journal.stored_values(harness.id)
    for index, cell in enumerate(cells):
        terminals = [
            e for e in events if e.cell == cell and isinstance(e, CellCompleted | CellTerminated)
        ]
        assert len(terminals) == 1, cell
        answer = answers[cell]
        if isinstance(terminals[0], CellCompleted):
            assert answer == Result(cell_id=cell, content_items=[text(f"done {index}")])
            assert stored[f"k{index}"] == str(index)
        else:
            assert isinstance(answer, Terminated)
            assert f"k{index}" not in stored
        assert_recorded(harness, answer)


def test_an_answer_whose_record_fails_in_a_full_batch_is_that_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fills up is appended at once, also when the answer's own record
    fills it: if that append fails, the caller gets the error, not silence."""
    monkeypatch.setattr(cell_log, "MAX_UNSAVED_EVENTS", 1)  # every event appends
    journal = harness.host.journal
    original = journal.append

    def refuse_answers(events: Any) -> None:
        if any(isinstance(event, ObservationDelivered) for event in events):
            raise JournalUnavailableError("connection refused")
        original(events)

    monkeypatch.setattr(journal, "append", refuse_answers)
    output = harness.exec("text('a');\nyield_control();\nawait new Promise(() => {})")
    assert_plain_failure(output, "cellfleet event log is unavailable: connection refused")

"""One observer at a time, dropped observers, and pending mode (spec §4.3, §4.7, §4.9)."""

from __future__ import annotations

from cellfleet.broker.client import Session
from cellfleet.broker.contract.responses import Pending, Result, Terminated, Yielded
from cellfleet.broker.events import TimerFired, ToolCompleted
from tests.integration.session_support import (
    TIMEOUT_S,
    Gates,
    Harness,
    assert_not_found,
    assert_output,
    assert_plain_failure,
    is_event,
    render,
    text,
)

# -- §4.3 a single observer -------------------------------------------------------------


def test_a_second_observer_is_refused_and_the_first_gets_the_termination(
    harness: Harness, gates: Gates
) -> None:
    out = harness.exec("text('a');\nyield_control();\ntext('b');\nawait tools.gate({})")
    assert_output(out, "Script running with cell ID 1", ["a"])
    gates.wait_entered()
    first = harness.observe("1", 30_000)
    busy = harness.wait("1", yield_time_ms=30_000)
    assert_plain_failure(busy, "exec cell 1 already has an active observer")
    assert_output(harness.terminate("1"), "Script terminated", ["b"])
    assert_output(render(first.result(TIMEOUT_S)), "Script terminated", ["b"])


def test_the_exec_caller_is_the_active_observer_until_answered(
    harness: Harness, gates: Gates
) -> None:
    cell, initial = harness.start("await tools.gate({});\ntext('done')", 30_000)
    gates.wait_entered()
    assert_plain_failure(
        harness.wait(cell, yield_time_ms=10), f"exec cell {cell} already has an active observer"
    )
    gates.open()
    assert_output(render(initial.result(TIMEOUT_S)), "Script completed", ["done"])


def test_a_refused_observer_consumes_nothing(harness: Harness, gates: Gates) -> None:
    out = harness.exec("text('a');\nyield_control();\ntext('b');\nawait tools.gate({});\ntext('c')")
    assert_output(out, "Script running with cell ID 1", ["a"])
    gates.wait_entered()
    first = harness.observe("1", 30_000)
    assert_plain_failure(harness.wait("1"), "exec cell 1 already has an active observer")
    gates.open()
    assert_output(render(first.result(TIMEOUT_S)), "Script completed", ["b", "c"])


def test_a_dropped_observer_loses_and_duplicates_nothing(harness: Harness, gates: Gates) -> None:
    out = harness.exec(
        "text('a');\nyield_control();\nawait tools.gate({ name: '1' });\ntext('b');\n"
        "yield_control();\ntext('c');\nawait tools.gate({ name: '2' });\ntext('d')"
    )
    assert_output(out, "Script running with cell ID 1", ["a"])
    gates.wait_entered("1")
    dropped = harness.observe("1", 30_000)
    assert dropped.cancel()  # the wait's caller went away
    gates.open("1")
    gates.wait_entered("2")  # 'b', the yield and 'c' happened with nobody listening
    # A new observer replaces the vanished one instead of being refused.
    assert_output(harness.wait("1", yield_time_ms=50), "Script running with cell ID 1", ["b", "c"])
    gates.open("2")
    assert_output(harness.wait("1"), "Script completed", ["d"])


def test_a_dropped_observer_of_a_completed_cell_leaves_the_completion_buffered(
    harness: Harness, gates: Gates
) -> None:
    out = harness.exec("text('a');\nyield_control();\nawait tools.gate({});\ntext('b')")
    assert_output(out, "Script running with cell ID 1", ["a"])
    gates.wait_entered()
    dropped = harness.observe("1", 30_000)
    assert dropped.cancel()
    gates.open()
    harness.wait_event(is_event(ToolCompleted, "1"))
    assert_output(harness.wait("1"), "Script completed", ["b"])
    assert_not_found(harness.wait("1"), "1")


def test_many_dropped_observers_in_a_row(harness: Harness, gates: Gates) -> None:
    out = harness.exec("yield_control();\ntext('x');\nawait tools.gate({});\ntext('y')")
    assert_output(out, "Script running with cell ID 1", [])
    gates.wait_entered()
    for _ in range(20):
        assert harness.observe("1", 30_000).cancel()
    assert_output(harness.wait("1", yield_time_ms=20), "Script running with cell ID 1", ["x"])
    gates.open()
    assert_output(harness.wait("1"), "Script completed", ["y"])


# -- §4.7 pending mode ------------------------------------------------------------------

PENDING_SOURCE = (
    "text('a');\n"
    "const r = await tools.echo({ x: 1 });\n"
    "text(JSON.stringify(r));\n"
    "await tools.gate({ name: 'p' });\n"
    "text('end')"
)


def next_frontier(session: Session, cell_id: str, attempts: int = 10_000) -> object:
    """Ask for the frontier until something ran (spec §4.7: with nothing runnable yet the
    answer is an empty frontier at once, as when a logged tool outcome has not reached
    the cell yet)."""
    for _ in range(attempts):
        answer = session.wait_to_pending(cell_id)
        if answer != Pending(cell_id=cell_id):
            return answer
    raise AssertionError("the frontier never moved")


def test_execute_to_pending_reports_the_frontier_and_freezes_the_runtime(
    harness: Harness, gates: Gates
) -> None:
    session = harness.session
    first = session.execute_to_pending("call-1", PENDING_SOURCE)
    assert first == Pending(
        cell_id="1", content_items=[text("a")], pending_tool_call_ids=["tool-1"]
    )
    # The echo result arrives, but the frozen runtime does not process it: the cell does
    # not go on to call the gate. (A bounded wait for something that must not happen.)
    harness.wait_event(is_event(ToolCompleted, "1", call_id="tool-1"))
    assert not gates.entered("p").wait(0.2)
    second = session.wait_to_pending("1")
    assert second == Pending(
        cell_id="1", content_items=[text('{"x":1}')], pending_tool_call_ids=["tool-2"]
    )
    gates.wait_entered("p")
    gates.open("p")
    harness.wait_event(is_event(ToolCompleted, "1", call_id="tool-2"))
    assert next_frontier(session, "1") == Result(cell_id="1", content_items=[text("end")])
    assert session.wait_to_pending("1") == Result(cell_id="1", error_text="exec cell 1 not found")


def test_wait_to_pending_with_nothing_runnable_reports_an_empty_frontier(
    harness: Harness, gates: Gates
) -> None:
    session = harness.session
    assert session.execute_to_pending("call-1", "text('a');\nawait tools.gate({})") == Pending(
        cell_id="1", content_items=[text("a")], pending_tool_call_ids=["tool-1"]
    )
    frontier = session.backend.observe("1", "pending", 0)
    try:
        assert frontier.result(0.5) == Pending(cell_id="1")
    finally:
        gates.open()


def test_execute_to_pending_of_a_cell_without_frontier_completes(harness: Harness) -> None:
    answer = harness.session.execute_to_pending("call-1", "text('x');\nthrow new Error('e')")
    assert isinstance(answer, Result)
    assert answer.content_items == [text("x")]
    assert answer.error_text is not None
    assert answer.error_text.startswith("Error: e\n    at ")


def test_a_timer_issued_tool_call_shows_in_the_frontier_after_the_timer_fired(
    harness: Harness, gates: Gates
) -> None:
    session = harness.session
    first = session.execute_to_pending(
        "call-1", "setTimeout(() => { tools.echo({ t: 1 }) }, 30);\nawait tools.gate({})"
    )
    assert first == Pending(cell_id="1", pending_tool_call_ids=["tool-1"])
    harness.wait_event(is_event(TimerFired, "1"))
    assert session.wait_to_pending("1") == Pending(cell_id="1", pending_tool_call_ids=["tool-2"])


def test_a_dropped_pending_observer_loses_nothing(harness: Harness, gates: Gates) -> None:
    session = harness.session
    source = (
        "const r = await tools.echo({ x: 1 });\n"
        "let n = 0;\nfor (let i = 0; i < 2e7; i++) { n += i; }\n"  # keeps V8 busy a while
        "text(JSON.stringify(r));\n"
        "await tools.gate({ name: 'p' });\n"
        "text('end')"
    )
    assert session.execute_to_pending("call-1", source) == Pending(
        cell_id="1", pending_tool_call_ids=["tool-1"]
    )
    harness.wait_event(is_event(ToolCompleted, "1", call_id="tool-1"))
    while True:  # drop an observer while the runtime works towards its next frontier
        dropped = session.backend.observe("1", "pending", 0)
        if dropped.cancel():
            break
        # Answered before we could drop it: the outcome had not reached the cell yet,
        # so the frontier was empty (nothing of the cell's output went to it).
        assert dropped.result(5) == Pending(cell_id="1")
    again = next_frontier(session, "1")
    assert again == Pending(
        cell_id="1", content_items=[text('{"x":1}')], pending_tool_call_ids=["tool-2"]
    )


def test_a_wait_continues_a_runtime_frozen_at_its_frontier(harness: Harness, gates: Gates) -> None:
    session = harness.session
    assert session.execute_to_pending("call-1", PENDING_SOURCE) == Pending(
        cell_id="1", content_items=[text("a")], pending_tool_call_ids=["tool-1"]
    )
    gates.open("p")
    assert_output(harness.wait("1"), "Script completed", ['{"x":1}', "end"])


def test_wait_to_pending_of_an_unknown_cell_is_missing(harness: Harness) -> None:
    assert harness.session.wait_to_pending("42") == Result(
        cell_id="42", error_text="exec cell 42 not found"
    )


def test_terminating_a_frozen_cell(harness: Harness, gates: Gates) -> None:
    session = harness.session
    assert session.execute_to_pending("call-1", PENDING_SOURCE) == Pending(
        cell_id="1", content_items=[text("a")], pending_tool_call_ids=["tool-1"]
    )
    terminated = session.backend.terminate("1").result(TIMEOUT_S)
    assert terminated == Terminated(cell_id="1")


def test_pending_answers_are_not_yields(harness: Harness, gates: Gates) -> None:
    """A `yield_control()` does not answer a pending observer; the frontier does."""
    answer = harness.session.execute_to_pending(
        "call-1", "text('a');\nyield_control();\ntext('b');\nawait tools.gate({})"
    )
    assert answer == Pending(
        cell_id="1", content_items=[text("a"), text("b")], pending_tool_call_ids=["tool-1"]
    )
    assert not isinstance(answer, Yielded)

"""Termination through the public session API (spec §4.4, §5.1 for stored writes)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from cellfleet.broker.contract.responses import Terminated
from cellfleet.broker.events import AnyEvent, CellCompleted, CellTerminated, NotificationSent
from tests.integration.conftest import OpenSession
from tests.integration.session_support import (
    TIMEOUT_S,
    Gates,
    Harness,
    assert_not_found,
    assert_output,
    assert_plain_failure,
    hold_journal,
    is_event,
    render,
)


def test_terminate_returns_the_output_since_the_last_answer(harness: Harness, gates: Gates) -> None:
    out = harness.exec("text('a');\nyield_control();\ntext('b');\nawait tools.gate({});\ntext('c')")
    assert_output(out, "Script running with cell ID 1", ["a"])
    gates.wait_entered()
    assert_output(harness.terminate("1"), "Script terminated", ["b"])
    assert_not_found(harness.wait("1"), "1")
    assert_not_found(harness.terminate("1"), "1")
    gates.open()  # the tool's late result is dropped


def test_terminate_stops_a_busy_loop_within_a_second(harness: Harness) -> None:
    out = harness.exec("text('spin');\nyield_control();\nwhile (true) {}")
    assert_output(out, "Script running with cell ID 1", ["spin"])
    began = time.monotonic()
    assert_output(harness.terminate("1"), "Script terminated", [])
    assert time.monotonic() - began < 1.0


def test_a_busy_loop_yields_its_output_at_the_deadline_then_terminates(harness: Harness) -> None:
    out = harness.exec("// @exec: {\"yield_time_ms\": 100}\ntext('a');\nwhile (true) {}")
    assert_output(out, "Script running with cell ID 1", ["a"])
    assert_output(harness.wait("1", yield_time_ms=50), "Script running with cell ID 1", [])
    began = time.monotonic()
    assert_output(harness.terminate("1"), "Script terminated", [])
    assert time.monotonic() - began < 1.0


def test_the_terminator_and_the_active_observer_both_get_the_termination(
    harness: Harness, gates: Gates
) -> None:
    out = harness.exec("yield_control();\ntext('x');\nawait tools.gate({})")
    assert_output(out, "Script running with cell ID 1", [])
    gates.wait_entered()
    observer = harness.observe("1", 30_000)
    assert_output(harness.terminate("1"), "Script terminated", ["x"])
    assert observer.result(TIMEOUT_S) == Terminated(
        cell_id="1", content_items=[{"type": "input_text", "text": "x"}]
    )
    assert_output(render(observer.result()), "Script terminated", ["x"])


def test_termination_in_progress_refuses_another_and_hides_the_cell(
    harness: Harness, gates: Gates, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = harness.exec("text('a');\nyield_control();\ntext('b');\nawait tools.gate({})")
    assert_output(out, "Script running with cell ID 1", ["a"])
    gates.wait_entered()
    # The cell's termination is held just before it is recorded in the log.
    reached, release = hold_journal(
        monkeypatch, harness.host.journal, "finish", lambda e: isinstance(e, CellTerminated)
    )
    first = harness.session.backend.terminate("1")
    assert reached.wait(TIMEOUT_S)
    assert_plain_failure(harness.terminate("1"), "exec cell 1 is already terminating")
    assert_plain_failure(harness.terminate("1"), "exec cell 1 is already terminating")
    assert_not_found(harness.wait("1", yield_time_ms=10), "1")  # spec §4.3: during termination
    release.set()
    assert_output(render(first.result(TIMEOUT_S)), "Script terminated", ["b"])
    assert_not_found(harness.terminate("1"), "1")


def test_concurrent_terminations_end_the_cell_once(harness: Harness) -> None:
    out = harness.exec("yield_control();\nwhile (true) {}")
    assert_output(out, "Script running with cell ID 1", [])
    start = threading.Barrier(8)
    outputs: list[Any] = []

    def terminate() -> None:
        start.wait(TIMEOUT_S)
        outputs.append(harness.terminate("1"))

    threads = [threading.Thread(target=terminate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    statuses = sorted(out.items[0]["text"].split("\n")[0] for out in outputs)
    terminated = [s for s in statuses if s == "Script terminated"]
    assert len(terminated) == 1, statuses
    for other in outputs:
        first_line = other.items[0]["text"].split("\n")[0]
        if first_line == "Script terminated":
            assert_output(other, "Script terminated", [])
        elif first_line == "Script failed":
            assert_not_found(other, "1")
        else:
            assert_plain_failure(other, "exec cell 1 is already terminating")
    terminals = [e for e in harness.cell_events("1") if isinstance(e, CellTerminated)]
    assert len(terminals) == 1


def test_terminating_a_buffered_completion_returns_the_completion(
    harness: Harness, gates: Gates
) -> None:
    out = harness.exec("text('a');\nyield_control();\nawait tools.gate({});\ntext('b')")
    assert_output(out, "Script running with cell ID 1", ["a"])
    gates.open()
    harness.wait_event(is_event(CellCompleted, "1"))  # committed and buffered
    assert_output(harness.terminate("1"), "Script completed", ["b"])
    assert_not_found(harness.terminate("1"), "1")
    assert not [e for e in harness.cell_events("1") if isinstance(e, CellTerminated)]


def test_terminating_a_buffered_failure_returns_the_failure(harness: Harness, gates: Gates) -> None:
    out = harness.exec("yield_control();\nawait tools.gate({});\nthrow new Error('late')")
    assert_output(out, "Script running with cell ID 1", [])
    gates.open()
    harness.wait_event(is_event(CellCompleted, "1"))
    out = harness.terminate("1")
    assert out.success is False
    assert out.items[0]["text"].startswith("Script failed\n")
    assert out.items[1]["text"].startswith("Script error:\nError: late\n    at exec_main.mjs:3:")


def test_stored_writes_of_a_terminated_cell_are_discarded(harness: Harness) -> None:
    out = harness.exec(
        "store('k', 'discarded');\ntext('stored');\nyield_control();\nwhile (true) {}"
    )
    assert_output(out, "Script running with cell ID 1", ["stored"])
    assert_output(harness.terminate("1"), "Script terminated", [])
    assert_output(harness.exec("text(String(load('k')))"), "Script completed", ["undefined"])
    assert harness.host.journal.stored_values(harness.id) == {}


def test_a_result_still_queued_behind_the_termination_does_not_commit(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spec §4.4/§5.1: the cell's result is computed but termination is decided first."""

    def holding(event: Any) -> bool:
        return any(isinstance(e, NotificationSent) for e in event)

    # The notification is the cell's first effect outside: its batch admits the cell.
    reached, release = hold_journal(monkeypatch, harness.host.journal, "admit", holding)
    cell, initial = harness.start("store('k', 1);\nnotify('hold');\ntext('end')")
    assert reached.wait(TIMEOUT_S)  # the actor is busy with the cell's last events
    taken = threading.Event()  # the session took the termination (through the fleet:
    worker = getattr(harness.host, "worker", None)  # its worker, not the call, does)
    if worker is None:
        taken.set()
    else:
        serve = worker._serve_session

        def serving(op: Any, *args: Any) -> None:
            serve(op, *args)
            if op == "terminate":
                taken.set()

        monkeypatch.setattr(worker, "_serve_session", serving)
    terminated = harness.session.backend.terminate(cell)
    assert taken.wait(TIMEOUT_S)
    release.set()
    assert initial.result(TIMEOUT_S) == Terminated(
        cell_id=cell, content_items=[{"type": "input_text", "text": "end"}]
    )
    assert terminated.result(TIMEOUT_S) == initial.result()
    assert_output(harness.exec("text(String(load('k')))"), "Script completed", ["undefined"])
    kinds = [type(e) for e in harness.cell_events(cell)]
    assert CellTerminated in kinds
    assert CellCompleted not in kinds


def test_the_session_continues_after_a_termination(harness: Harness, gates: Gates) -> None:
    out = harness.exec("yield_control();\nawait tools.gate({})")
    assert_output(out, "Script running with cell ID 1", [])
    assert_output(harness.terminate("1"), "Script terminated", [])
    out = harness.exec("text('next');\nyield_control();\nawait tools.gate({ name: 'n' })")
    assert_output(out, "Script running with cell ID 2", ["next"])
    assert_output(harness.exec("text('third')"), "Script completed", ["third"])


def test_terminating_unknown_cells(open_session: OpenSession) -> None:
    harness = open_session()
    assert_not_found(harness.terminate("1"), "1")
    assert_not_found(harness.terminate("999999"), "999999")
    assert_not_found(harness.wait("999999"), "999999")


def test_terminated_cells_close_after_the_answer(harness: Harness, gates: Gates) -> None:
    out = harness.exec("yield_control();\nawait tools.gate({})")
    assert_output(out, "Script running with cell ID 1", [])
    assert harness.closed == []
    assert_output(harness.terminate("1"), "Script terminated", [])
    harness.wait_closed("1")
    assert harness.closed == ["1"]
    events: list[AnyEvent] = harness.cell_events("1")
    assert type(events[-1]).__name__ == "CellClosed"

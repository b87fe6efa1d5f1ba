"""When and how a cell's admission reaches the log (spec §4.2, §4.10, §5.1).

A cell starts at once; its `CellAdmitted` is the first event of its first append, which
comes before anything it does is seen outside. A short cell is admitted, completed,
answered and closed by one script; the log may refuse an admission, and then the cell
never existed.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from cellfleet.broker.contract.responses import Terminated
from cellfleet.broker.errors import JournalUnavailableError, SessionOwnedElsewhereError
from cellfleet.broker.events import (
    CellAdmitted,
    CellClosed,
    CellCompleted,
    CellStarted,
    ObservationDelivered,
    OutputProduced,
    SessionOpened,
    ShutdownBegun,
    YieldRequested,
)
from cellfleet.ops.host import Host
from cellfleet.projections import stored
from tests.integration.conftest import OpenSession
from tests.integration.fleet_support import FleetHost
from tests.integration.session_support import (
    TIMEOUT_S,
    Gates,
    Harness,
    assert_output,
    assert_plain_failure,
    hold_journal,
    is_event,
    text,
)

JOURNAL_WRITES = ("append", "admit", "finish", "begin_shutdown")


def count_writes(monkeypatch: pytest.MonkeyPatch, harness: Harness) -> Counter[str]:
    """Count the journal's round trips that write (by method) from now on."""
    counts: Counter[str] = Counter()
    journal = harness.host.journal
    for name in JOURNAL_WRITES:
        original = getattr(journal, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            counts[_name] += 1
            return _original(*args, **kw)

        monkeypatch.setattr(journal, name, counted)
    return counts


def kinds(harness: Harness, cell: str) -> list[type[Any]]:
    return [type(event) for event in harness.cell_events(cell)]


def test_a_short_cell_is_one_script(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = count_writes(monkeypatch, harness)
    assert_output(harness.exec("text('hi')"), "Script completed", ["hi"])
    harness.wait_closed("1")
    assert counts == Counter(finish=1)
    assert kinds(harness, "1") == [
        CellAdmitted,
        CellStarted,
        OutputProduced,
        CellCompleted,
        ObservationDelivered,
        CellClosed,
    ]


def test_a_yield_answer_follows_the_admission_in_the_log(harness: Harness, gates: Gates) -> None:
    out = harness.exec("text('a');\nyield_control();\nawait tools.gate({})")
    assert_output(out, "Script running with cell ID 1", ["a"])
    assert kinds(harness, "1")[:5] == [
        CellAdmitted,
        CellStarted,
        OutputProduced,
        YieldRequested,
        ObservationDelivered,
    ]


def test_a_cell_that_keeps_running_is_admitted_while_it_runs(harness: Harness) -> None:
    cell, answer = harness.start("while (true) {}", yield_time_ms=60_000)
    admitted = harness.wait_event(is_event(CellAdmitted, cell))
    assert admitted.call_id
    assert not answer.done()
    assert_output(harness.terminate(cell), "Script terminated", [])
    assert answer.result(TIMEOUT_S).content_items == []


def start_refused(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, source: str
) -> tuple[str, Any]:
    """Start a cell whose first append is held until the session's shutdown began: the
    log refuses its admission there, and the shutdown ends the cell (it ran). Returns its
    id and its first answer."""
    reached, release = hold_journal(monkeypatch, harness.host.journal, "admit", lambda events: True)
    cell, answer = harness.start(source)
    assert reached.wait(TIMEOUT_S)
    shutdown = threading.Thread(target=harness.session.shutdown)
    shutdown.start()
    harness.wait_event(is_event(ShutdownBegun))
    release.set()
    result = answer.result(TIMEOUT_S)
    shutdown.join(TIMEOUT_S)
    assert not shutdown.is_alive()
    return cell, result


def test_a_cell_whose_first_append_meets_the_shutdown_is_terminated_by_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown begins while a new cell's first append (its notification) is on its way:
    the cell is terminated by the shutdown, its notification never goes out, and the log
    says it was admitted and terminated."""
    cell, answer = start_refused(harness, monkeypatch, "notify('never');\ntext('x')")
    # (`text('x')` ran, or had not yet, when the termination collected the cell's output)
    assert answer in (
        Terminated(cell_id=cell, content_items=[]),
        Terminated(cell_id=cell, content_items=[{"type": "input_text", "text": "x"}]),
    )
    assert harness.notes == []
    kinds = [(type(e).__name__, getattr(e, "reason", None)) for e in harness.cell_events(cell)]
    assert kinds[0] == ("CellAdmitted", None)
    assert ("CellTerminated", "shutdown") in kinds
    assert ("NotificationSent", None) in kinds  # recorded, never handed over
    harness.wait_closed(cell)


def test_a_reopened_session_continues_its_ids_and_stored_values(
    open_session: OpenSession, host: Host
) -> None:
    first = open_session()
    assert_output(first.exec("store('k', 1);\ntext('one')"), "Script completed", ["one"])
    if not isinstance(host, FleetHost):  # (the fleet routes the reopening to its owner)
        first.session.backend.hand_over()  # type: ignore[attr-defined]
    again = open_session(session_id=first.id)
    out = again.exec("text(String(load('k')))", call_id="again")
    assert_output(out, "Script completed", ["1"])
    admitted = [e.cell for e in again.events() if isinstance(e, CellAdmitted)]
    assert admitted == ["1", "2"]


def test_a_session_is_served_once(open_session: OpenSession, host: Host) -> None:
    """In one process, a second opening of a session it serves is refused; through a
    fleet, it reaches the worker that serves it (never a second one)."""
    first = open_session()
    if not isinstance(host, FleetHost):
        with pytest.raises(SessionOwnedElsewhereError, match="is owned by another process"):
            open_session(session_id=first.id)
        return
    second = open_session(session_id=first.id)
    assert_output(first.exec("text('mine')"), "Script completed", ["mine"])
    assert_output(second.exec("text('also')", call_id="other"), "Script completed", ["also"])
    assert [e.cell for e in first.events() if isinstance(e, CellAdmitted)] == ["1", "2"]
    assert [type(e) for e in first.events()].count(SessionOpened) == 1


def test_a_cell_starts_from_the_values_when_it_was_created(
    harness: Harness, gates: Gates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cell 2 is created before cell 1 merges its write, and admitted after: it sees
    the values of its creation, and its admission names them by version."""
    out = harness.exec("store('k', 'a');\nyield_control();\nawait tools.gate({});\ntext('A')")
    assert_output(out, "Script running with cell ID 1", [])
    reached, release = hold_journal(
        monkeypatch, harness.host.journal, "finish", is_event(CellCompleted, "2")
    )
    _, answer = harness.start("text(String(load('k')))")
    assert reached.wait(TIMEOUT_S)
    gates.open()
    harness.wait_event(is_event(CellCompleted, "1"))
    release.set()
    assert answer.result(TIMEOUT_S).content_items == [{"type": "input_text", "text": "undefined"}]
    assert_output(harness.exec("text(load('k'))"), "Script completed", ["a"])
    events = harness.events()
    admitted = {e.cell: e for e in events if isinstance(e, CellAdmitted)}
    assert (admitted["2"].stored_version, admitted["3"].stored_version) == (0, 1)
    order = [(type(e), e.cell) for e in events]
    assert order.index((CellCompleted, "1")) < order.index((CellAdmitted, "2"))
    assert stored.values_at(events, 0) == {}
    assert stored.values_at(events, 1) == {"k": '"a"'}


def test_a_cell_lost_before_its_admission_does_not_stop_the_session(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log was unreachable when cell 1 would have been admitted: it fails with a
    clear error, and the next cell (id 2: the session counted 1) runs."""
    journal = harness.host.journal
    original = journal.finish
    calls = []

    def unreachable_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise JournalUnavailableError("connection refused")
        return original(*args, **kwargs)

    monkeypatch.setattr(journal, "finish", unreachable_once)
    assert_plain_failure(
        harness.exec("text('lost')"),
        "exec cell 1 failed: cellfleet event log is unavailable: connection refused",
    )
    assert_output(harness.exec("text('next')"), "Script completed", ["next"])
    assert [e.cell for e in harness.events() if isinstance(e, CellAdmitted)] == ["2"]


def test_cells_are_admitted_in_the_order_they_reach_the_log(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cell 1 was created first but is still on its way to the log when cell 2 is
    admitted and completes: both are admitted, each with its own id."""
    reached, release = hold_journal(
        monkeypatch, harness.host.journal, "finish", is_event(CellCompleted, "1")
    )
    _, first = harness.start("text('one')")
    assert reached.wait(TIMEOUT_S)
    assert_output(harness.exec("text('two')"), "Script completed", ["two"])
    release.set()
    assert first.result(TIMEOUT_S).content_items == [{"type": "input_text", "text": "one"}]
    admitted = [e.cell for e in harness.events() if isinstance(e, CellAdmitted)]
    assert admitted == ["2", "1"]
    assert_output(harness.exec("text('three')"), "Script completed", ["three"])


def test_a_yield_that_meets_the_shutdown_is_answered_with_the_termination(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The yield's answer is the cell's first effect outside; the shutdown began before
    it reached the log: the exec gets the termination, with the output."""
    cell, answer = start_refused(
        harness, monkeypatch, "text('x');\nyield_control();\nawait new Promise(() => {})"
    )
    assert answer == Terminated(cell_id=cell, content_items=[text("x")])


def test_a_cell_waiting_on_a_timer_is_admitted_while_it_waits(harness: Harness) -> None:
    cell, answer = harness.start(
        "text('waiting');\nawait new Promise((r) => setTimeout(r, 60000))", yield_time_ms=60_000
    )
    harness.wait_event(is_event(CellAdmitted, cell))
    assert not answer.done()
    assert_output(harness.terminate(cell), "Script terminated", ["waiting"])


def test_execs_racing_a_shutdown_all_get_an_answer(open_session: OpenSession) -> None:
    harness = open_session()
    outputs: list[Any] = []
    start = threading.Barrier(5)

    def keep_executing(worker: int) -> None:
        start.wait(TIMEOUT_S)
        for i in range(200):
            out = harness.session.exec(f"w{worker}-{i}", "text('x')")
            outputs.append(out)
            if not out.success:
                return

    threads = [threading.Thread(target=keep_executing, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    start.wait(TIMEOUT_S)
    harness.session.shutdown()
    for thread in threads:
        thread.join(TIMEOUT_S)
        assert not thread.is_alive()  # every exec was answered
    failures = {out.items[0]["text"] for out in outputs if not out.success}
    assert failures <= {"code mode session is shutting down"}

"""The end a failed cell still owes the log (actors/cell/log.py's FailedEnding), with
its open tool calls cancelled in the log though not where a tool worker looks (Redis
was unreachable when the cell failed): a worker's outcome arriving after that end is
not recorded after it (record_tool_outcome: the cell has ended)."""

from __future__ import annotations

from cellfleet.actors.cell.log import FailedEnding
from cellfleet.broker import events as ev
from cellfleet.broker.memory import MemoryJournal
from cellfleet.broker.tools.invocation import ToolOutcome, ToolReply
from tests.conftest import tool_invocation


def test_a_tool_outcome_after_a_recorded_failed_ending_is_not_recorded() -> None:
    journal, session = MemoryJournal(), "s1"
    journal.open_session(ev.SessionOpened(session=session))
    journal.admit(
        [
            ev.CellAdmitted(session=session, cell="1", seq=1, call_id="call-1", source="x"),
            ev.ToolRequested(
                session=session, cell="1", seq=2, call_id="tool-1", name="gate", kind="function"
            ),
        ]
    )
    FailedEnding(
        [ev.ToolCancelled(session=session, cell="1", seq=3, call_id="tool-1")],
        ev.CellCompleted(session=session, cell="1", seq=4, error_text="lost", by_host=True),
        [ev.CellClosed(session=session, cell="1", seq=5)],
    ).record(journal)  # type: ignore[arg-type]
    call = tool_invocation(session, "gate")
    late = ev.ToolCompleted(session=session, cell="1", call_id="tool-1", result=1)
    reply = ToolReply(call.idempotency_key, ToolOutcome("tool-1", result=1, clock_ms=1.0))
    assert journal.record_tool_outcome(call, late, reply).reply == b"cancelled"
    kinds = [type(event).__name__ for _, event in journal.read(session)]
    assert kinds[-3:] == ["ToolCancelled", "CellCompleted", "CellClosed"]

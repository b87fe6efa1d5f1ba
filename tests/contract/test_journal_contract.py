"""The journal's contract, held against both journals: `MemoryJournal` and `RedisJournal`
on a real redis-server. What only Redis has (outages, dropped connections, its key
layout) is tested in tests/integration/test_journal.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from cellfleet.broker.errors import (
    CellIdSpaceExhaustedError,
    SessionOwnedElsewhereError,
    SessionShuttingDownError,
)
from cellfleet.broker.events import (
    CellAdmitted,
    CellClosed,
    CellCompleted,
    CellStarted,
    CellTerminated,
    ObservationDelivered,
    ObservationKind,
    OutputProduced,
    SessionOpened,
    ShutdownBegun,
    ShutdownFinished,
    ToolAttemptFailed,
    ToolCompleted,
    ToolFailed,
)
from cellfleet.broker.journal import FinishOutcome, Journal, RedisJournal
from cellfleet.broker.keys import Keys, tool_call_field
from cellfleet.broker.memory import MemoryJournal
from cellfleet.broker.tools.invocation import ToolOutcome, ToolReply
from cellfleet.projections.ports import stream_id
from tests.conftest import tool_invocation


@pytest.fixture(params=["memory", "redis"])
def journal(request: pytest.FixtureRequest) -> Iterator[Journal]:
    if request.param == "memory":
        yield MemoryJournal()
        return
    client: redis.Redis = request.getfixturevalue("redis_client")  # (socket timeout: 60 s)
    # Blocking reads may last as long as the tests ask: a wait that ignored arrivals
    # would then show, instead of ending at a cap of a second.
    yield RedisJournal(client, Keys(f"contract-{uuid.uuid4().hex[:8]}"), max_block_s=30.0)


@pytest.fixture
def session() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


def admitted(
    session: str, call_id: str, cell: str, seed: tuple[int, int, int, int] = (1, 2, 3, 4)
) -> CellAdmitted:
    return CellAdmitted(
        session=session, cell=cell, call_id=call_id, source="text(1)", at_ms=1.0, seed=seed
    )


def kinds(journal: Journal, session: str) -> list[str]:
    return [type(event).__name__ for _, event in journal.read(session)]


def test_admission_takes_ids_in_order(journal: Journal, session: str) -> None:
    state = journal.open_session(SessionOpened(session=session))
    assert (state.last_cell, state.stored, state.stored_version) == (0, {}, 0)
    for i in range(3):
        journal.admit([admitted(session, f"call-{i}", str(i + 1))])
    events = [event for _, event in journal.read(session)]
    assert [e.cell for e in events if isinstance(e, CellAdmitted)] == ["1", "2", "3"]
    assert session in journal.sessions()
    assert journal.open_session(SessionOpened(session=session)).last_cell == 3


def test_an_opening_names_the_admitted_cells_that_never_ended(
    journal: Journal, session: str
) -> None:
    """Their owner stopped while they ran: the next owner ends them."""
    for cell in ("1", "2", "3", "5"):
        journal.admit([admitted(session, f"call-{cell}", cell)])
    journal.finish(CellCompleted(session=session, cell="2"))
    journal.finish(CellTerminated(session=session, cell="5"))
    state = journal.open_session(SessionOpened(session=session))
    assert (state.last_cell, state.unended) == (5, ("1", "3"))  # (4 was never admitted)
    journal.finish(CellCompleted(session=session, cell="1", error_text="lost"))
    assert journal.open_session(SessionOpened(session=session)).unended == ("3",)


def test_admission_takes_each_id_once_in_any_order(journal: Journal, session: str) -> None:
    """Cells are admitted at their first append, so out of creation order; an id
    another process admitted already is refused."""
    journal.admit([admitted(session, "b", "2")])  # cell 2 finished first
    journal.admit([admitted(session, "a", "1")])
    with pytest.raises(
        SessionOwnedElsewhereError,
        match=rf"^code mode session {session} is owned by another process$",
    ):
        journal.admit([admitted(session, "c", "2")])
    assert kinds(journal, session) == ["CellAdmitted", "CellAdmitted"]
    journal.admit([admitted(session, "d", "10")])  # compared as numbers, not as text
    assert journal.open_session(SessionOpened(session=session)).last_cell == 10


def test_admission_is_idempotent_per_admission(journal: Journal, session: str) -> None:
    started = CellStarted(session=session, cell="1", seq=1)
    journal.admit([admitted(session, "same", "1"), started])
    # A retry (its reply was lost) admits nothing again; the events after the admission
    # are appended again, as the batch may have grown meanwhile (readers drop repeats).
    journal.admit([admitted(session, "same", "1"), started])
    assert kinds(journal, session) == ["CellAdmitted", "CellStarted", "CellStarted"]
    # The same exec call id again is a new exec: a new cell.
    journal.admit([admitted(session, "same", "2", seed=(9, 9, 9, 9))])
    events = [event for _, event in journal.read(session) if isinstance(event, CellAdmitted)]
    assert [(e.cell, e.call_id) for e in events] == [("1", "same"), ("2", "same")]
    # Another admission of an admitted cell (another process's) is refused.
    with pytest.raises(SessionOwnedElsewhereError):
        journal.admit([admitted(session, "other", "1", seed=(7, 7, 7, 7))])


def test_admission_refused_after_shutdown(journal: Journal, session: str) -> None:
    journal.admit([admitted(session, "a", "1")])
    assert journal.begin_shutdown(ShutdownBegun(session=session)) is True
    assert journal.begin_shutdown(ShutdownBegun(session=session)) is False
    with pytest.raises(SessionShuttingDownError, match=r"^code mode session is shutting down$"):
        journal.admit([admitted(session, "b", "2")])
    assert kinds(journal, session) == ["CellAdmitted", "ShutdownBegun"]


def test_cell_ids_never_wrap(journal: Journal, session: str) -> None:
    journal.admit([admitted(session, "last", str(2**63 - 1))])
    with pytest.raises(
        CellIdSpaceExhaustedError, match=r"^code mode session exhausted its cell ID space$"
    ):
        journal.admit([admitted(session, "one-more", str(2**63))])
    assert journal.open_session(SessionOpened(session=session)).last_cell == 2**63 - 1


def test_first_terminal_event_wins_and_merge_goes_with_it(journal: Journal, session: str) -> None:
    journal.admit([admitted(session, "a", "1")])
    journal.admit([admitted(session, "b", "2")])
    terminated = CellTerminated(session=session, cell="1")
    completed = CellCompleted(session=session, cell="1", stored_writes={"k": "1"})
    assert journal.finish(terminated) is FinishOutcome.TERMINATED
    assert journal.finish(completed) is FinishOutcome.TERMINATED  # lost: no merge, no event
    assert journal.stored_snapshot(session) == ({}, 0)
    won = CellCompleted(session=session, cell="2", stored_writes={"a": "3", "b": '"x"'})
    out = OutputProduced(session=session, cell="2", item={"type": "input_text", "text": "hi"})
    assert journal.finish(won, before=[out]) is FinishOutcome.COMPLETED
    assert journal.stored_snapshot(session) == ({"a": "3", "b": '"x"'}, 1)
    assert kinds(journal, session) == [
        "CellAdmitted",
        "CellAdmitted",
        "CellTerminated",
        "OutputProduced",
        "CellCompleted",
    ]
    # what a process opening the session continues from
    state = journal.open_session(SessionOpened(session=session))
    assert (state.last_cell, state.stored, state.stored_version) == (2, {"a": "3", "b": '"x"'}, 1)


def test_a_completion_with_many_writes_commits_them_all(journal: Journal, session: str) -> None:
    """More writes than Lua can unpack at once (about 8,000 values): 5,000 keys."""
    journal.admit([admitted(session, "a", "1")])
    writes = {f"k{i}": str(i) for i in range(5000)}
    won = CellCompleted(session=session, cell="1", stored_writes=writes)
    assert journal.finish(won) is FinishOutcome.COMPLETED
    assert journal.stored_snapshot(session) == (writes, 1)


def test_a_short_cell_is_admitted_and_finished_in_one_call(journal: Journal, session: str) -> None:
    """The usual short cell: admission, its events, completion, delivery and close."""
    cell = "1"
    before = [admitted(session, "a", cell), CellStarted(session=session, cell=cell, seq=1)]
    won = CellCompleted(session=session, cell=cell, seq=2, stored_writes={"k": "1"})
    after = [
        ObservationDelivered(session=session, cell=cell, seq=3, kind=ObservationKind.COMPLETED),
        CellClosed(session=session, cell=cell, seq=4),
    ]
    assert journal.finish(won, before, after) is FinishOutcome.COMPLETED
    expected = [
        "CellAdmitted",
        "CellStarted",
        "CellCompleted",
        "ObservationDelivered",
        "CellClosed",
    ]
    assert kinds(journal, session) == expected
    assert journal.finish(won, before, after) is FinishOutcome.COMPLETED  # a retry
    assert kinds(journal, session) == expected  # appends nothing
    assert journal.stored_snapshot(session) == ({"k": "1"}, 1)


def test_a_completion_after_the_shutdown_began_admits_its_cell_and_loses(
    journal: Journal, session: str
) -> None:
    """The cell ran (its admission was still to be recorded): it is admitted with what it
    did, its completion loses, and the caller records its termination next."""
    journal.begin_shutdown(ShutdownBegun(session=session))
    before = [admitted(session, "a", "1"), CellStarted(session=session, cell="1", seq=1)]
    completed = CellCompleted(session=session, cell="1", seq=2, stored_writes={"k": "1"})
    assert journal.finish(completed, before) is FinishOutcome.SHUTDOWN
    assert kinds(journal, session) == ["ShutdownBegun", "CellAdmitted", "CellStarted"]
    assert journal.stored_snapshot(session) == ({}, 0)


def test_a_cell_the_shutdown_ends_is_admitted_with_its_termination(
    journal: Journal, session: str
) -> None:
    """It ran before the shutdown began (its admission was still to be recorded)."""
    journal.begin_shutdown(ShutdownBegun(session=session))
    before = [admitted(session, "a", "1"), CellStarted(session=session, cell="1", seq=1)]
    terminated = CellTerminated(session=session, cell="1", seq=2)
    assert journal.finish(terminated, before) is FinishOutcome.TERMINATED
    assert kinds(journal, session) == [
        "ShutdownBegun",
        "CellAdmitted",
        "CellStarted",
        "CellTerminated",
    ]
    with pytest.raises(SessionShuttingDownError):  # a new cell is refused all the same
        journal.admit([admitted(session, "b", "2")])


def test_completion_after_shutdown_began_loses(journal: Journal, session: str) -> None:
    journal.admit([admitted(session, "a", "1")])
    journal.begin_shutdown(ShutdownBegun(session=session))
    completed = CellCompleted(session=session, cell="1", stored_writes={"k": "1"})
    assert journal.finish(completed) is FinishOutcome.SHUTDOWN
    assert journal.stored_snapshot(session) == ({}, 0)
    assert "CellCompleted" not in kinds(journal, session)


def test_the_first_tool_outcome_wins(journal: Journal, session: str) -> None:
    call = tool_invocation(session)
    first = ToolReply(call.idempotency_key, ToolOutcome("tool-1", result=1, clock_ms=5.0))
    second = ToolReply(call.idempotency_key, ToolOutcome("tool-1", error="late", clock_ms=6.0))
    won = journal.record_tool_outcome(
        call, ToolCompleted(session=session, cell="1", call_id="tool-1", result=1), first
    )
    again = journal.record_tool_outcome(
        call, ToolFailed(session=session, cell="1", call_id="tool-1", error="late"), second
    )
    assert won == again  # the first reply, recorded for a worker that takes over
    assert b'"result":1' in won.reply
    assert kinds(journal, session) == ["ToolCompleted"]


def test_a_tool_outcome_after_its_cells_end_is_dropped(journal: Journal, session: str) -> None:
    """A cell that ended cancelled its open calls, whether or not the cancellation
    reached the tool workers (Redis down when it failed, say): an outcome arriving
    later is not appended after the cell's end, and the call stays cancelled."""
    journal.admit([admitted(session, "a", "1")])
    journal.finish(CellTerminated(session=session, cell="1", seq=2), after=[CellClosed(
        session=session, cell="1", seq=3)])  # fmt: skip
    call = tool_invocation(session)
    reply = ToolReply(call.idempotency_key, ToolOutcome("tool-1", result=1, clock_ms=5.0))
    completed = ToolCompleted(session=session, cell="1", call_id="tool-1", result=1)
    assert journal.record_tool_outcome(call, completed, reply).reply == b"cancelled"
    assert journal.record_tool_outcome(call, completed, reply).reply == b"cancelled"
    assert kinds(journal, session) == ["CellAdmitted", "CellTerminated", "CellClosed"]


def test_a_finished_session_takes_no_more_events(journal: Journal, session: str) -> None:
    """A tool worker's late write (its outcome, a failed attempt) lands after the
    session's shutdown finished: it is dropped, and the outcome counts as cancelled."""
    journal.open_session(SessionOpened(session=session))
    journal.finish_session(ShutdownFinished(session=session), retention_s=60)
    call = tool_invocation(session)
    reply = ToolReply(call.idempotency_key, ToolOutcome("tool-1", result=1, clock_ms=5.0))
    completed = ToolCompleted(session=session, cell="1", call_id="tool-1", result=1)
    assert journal.record_tool_outcome(call, completed, reply).reply == b"cancelled"
    if isinstance(journal, RedisJournal):  # (what a redelivered call's worker looks up)
        tools = journal.keys.session(session).tools
        assert journal.client.hget(tools, tool_call_field("1", "tool-1")) == b"cancelled"
        assert 0 < journal.client.pttl(tools) <= 60_000  # (it expires with the session)
    failed = ToolAttemptFailed(session=session, cell="1", call_id="tool-1", attempt=1, error="x")
    journal.append([failed])
    assert kinds(journal, session) == ["SessionOpened", "ShutdownFinished"]


def test_read_resumes_after_a_position_in_order(journal: Journal, session: str) -> None:
    journal.append([OutputProduced(session=session, cell="1", seq=seq) for seq in range(1, 6)])
    entries = list(journal.read(session))
    ids = [entry_id for entry_id, _ in entries]
    assert ids == sorted(ids, key=stream_id)
    assert len(set(ids)) == 5
    rest = list(journal.read(session, after=ids[1]))
    assert [event.seq for _, event in rest] == [3, 4, 5]
    assert list(journal.read(session, after=ids[-1])) == []
    assert list(journal.read("no-such-session")) == []


def test_read_decodes_only_the_cell_or_the_string_asked_for(journal: Journal, session: str) -> None:
    """`cell` keeps one cell's events; `mentioning` those whose data holds that string
    (as a whole JSON string: "r-1" is not in "r-10")."""
    journal.admit([replace(admitted(session, "c1", "1"), request="r-1")])
    journal.admit([replace(admitted(session, "c2", "2"), request="r-10")])
    journal.append([OutputProduced(session=session, cell=cell, seq=5) for cell in "12"])

    def read(**only: Any) -> list[tuple[str, str]]:
        return [(type(e).__name__, e.cell) for _, e in journal.read(session, **only)]

    assert read(cells=["2"]) == [("CellAdmitted", "2"), ("OutputProduced", "2")]
    assert read(mentioning="r-1") == [("CellAdmitted", "1")]
    assert read(cells=["2"], mentioning="r-1") == []
    assert read(mentioning="r-10", cells=["2"]) == [("CellAdmitted", "2")]
    assert read(cells=["2"], kinds=["cell_admitted"]) == [
        ("CellAdmitted", "1"),
        ("CellAdmitted", "2"),
        ("OutputProduced", "2"),
    ]
    assert read(cells=[]) == []
    assert len(read()) == 4


def test_wait_after_returns_when_an_event_arrives(journal: Journal, session: str) -> None:
    journal.append([OutputProduced(session=session, cell="1", seq=1)])
    (last, _), *_ = list(journal.read(session))
    waiting = threading.Event()
    done = threading.Event()

    def wait() -> None:
        waiting.set()
        journal.wait_after(session, last, timeout=20.0)
        done.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert waiting.wait(10)
    journal.append([OutputProduced(session=session, cell="1", seq=2)])
    assert done.wait(10)  # long before its 20 s
    waiter.join(10)
    began = time.monotonic()
    journal.wait_after(session, last, timeout=20.0)  # already there: returns at once
    assert time.monotonic() - began < 10


def test_wait_after_waits_while_nothing_arrives(journal: Journal, session: str) -> None:
    journal.append([OutputProduced(session=session, cell="1", seq=1)])
    (last, _), *_ = list(journal.read(session))
    began = time.monotonic()
    journal.wait_after(session, last, timeout=0.2)
    assert time.monotonic() - began >= 0.19  # it blocked (and then gave up)

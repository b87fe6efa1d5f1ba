"""The event log and its atomic decisions against a real redis-server."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from cellfleet.broker import keys
from cellfleet.broker.errors import (
    CellAlreadyExistsError,
    CellIdSpaceExhaustedError,
    JournalUnavailableError,
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
    OutputProduced,
    SessionOpened,
    ShutdownBegun,
)
from cellfleet.broker.journal import RedisJournal


@pytest.fixture
def journal(redis_client: redis.Redis) -> RedisJournal:
    return RedisJournal(redis_client)


@pytest.fixture
def session() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def admitted(session: str, call_id: str, cell: str) -> CellAdmitted:
    return CellAdmitted(session=session, cell=cell, call_id=call_id, source="text(1)", at_ms=1.0)


def kinds(journal: RedisJournal, session: str) -> list[str]:
    return [type(event).__name__ for _, event in journal.read(session)]


def test_admission_takes_ids_in_order(journal, session):
    state = journal.open_session(SessionOpened(session=session))
    assert (state.last_cell, state.stored, state.stored_version) == (0, {}, 0)
    for i in range(3):
        journal.admit([admitted(session, f"call-{i}", str(i + 1))])
    events = [event for _, event in journal.read(session)]
    assert [e.cell for e in events if isinstance(e, CellAdmitted)] == ["1", "2", "3"]
    assert session in journal.sessions()
    assert journal.open_session(SessionOpened(session=session)).last_cell == 3


def test_admission_takes_each_id_once_in_any_order(journal, session, redis_client):
    """Cells are admitted at their first append, so out of creation order; an id
    another process admitted already is refused."""
    journal.admit([admitted(session, "b", "2")])  # cell 2 finished first
    journal.admit([admitted(session, "a", "1")])
    with pytest.raises(
        SessionOwnedElsewhereError,
        match=rf"^code mode session {session} is owned by another process$",
    ):
        journal.admit([admitted(session, "c", "2")])
    assert redis_client.hget(keys.SessionKeys(session).meta, "next_cell") == b"2"
    assert kinds(journal, session) == ["CellAdmitted", "CellAdmitted"]
    journal.admit([admitted(session, "d", "10")])  # compared as numbers, not as text
    assert redis_client.hget(keys.SessionKeys(session).meta, "next_cell") == b"10"
    assert journal.open_session(SessionOpened(session=session)).last_cell == 10


def test_admission_is_idempotent_per_call(journal, session):
    started = CellStarted(session=session, cell="1", seq=1)
    journal.admit([admitted(session, "same", "1"), started])
    # A retry (its reply was lost) admits nothing again; the events after the admission
    # are appended again, as the batch may have grown meanwhile (readers drop repeats).
    journal.admit([admitted(session, "same", "1"), started])
    with pytest.raises(CellAlreadyExistsError, match=r"^exec cell 1 already exists$"):
        journal.admit([admitted(session, "same", "2")])
    assert kinds(journal, session) == ["CellAdmitted", "CellStarted", "CellStarted"]


def test_admission_refused_after_shutdown(journal, session):
    journal.admit([admitted(session, "a", "1")])
    assert journal.begin_shutdown(ShutdownBegun(session=session)) is True
    assert journal.begin_shutdown(ShutdownBegun(session=session)) is False
    with pytest.raises(SessionShuttingDownError, match=r"^code mode session is shutting down$"):
        journal.admit([admitted(session, "b", "2")])


def test_cell_ids_never_wrap(journal, session, redis_client):
    redis_client.hset(keys.SessionKeys(session).meta, "next_cell", 2**63 - 2)
    journal.admit([admitted(session, "last", str(2**63 - 1))])
    with pytest.raises(
        CellIdSpaceExhaustedError, match=r"^code mode session exhausted its cell ID space$"
    ):
        journal.admit([admitted(session, "one-more", str(2**63))])
    assert redis_client.hget(keys.SessionKeys(session).meta, "next_cell") == b"%d" % (2**63 - 1)


def test_first_terminal_event_wins_and_merge_goes_with_it(journal, session):
    journal.admit([admitted(session, "a", "1")])
    journal.admit([admitted(session, "b", "2")])
    terminated = CellTerminated(session=session, cell="1")
    completed = CellCompleted(session=session, cell="1", stored_writes={"k": "1"})
    assert journal.finish(terminated) == "terminated"
    assert journal.finish(completed) == "terminated"  # lost: no merge, no event
    assert journal.stored_snapshot(session) == ({}, 0)
    won = CellCompleted(session=session, cell="2", stored_writes={"a": "3", "b": '"x"'})
    out = OutputProduced(session=session, cell="2", item={"type": "input_text", "text": "hi"})
    assert journal.finish(won, before=[out]) == "completed"
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


def test_a_short_cell_is_admitted_and_finished_by_one_script(journal, session):
    """The usual short cell: admission, its events, completion, delivery and close."""
    cell = "1"
    before = [admitted(session, "a", cell), CellStarted(session=session, cell=cell, seq=1)]
    won = CellCompleted(session=session, cell=cell, seq=2, stored_writes={"k": "1"})
    after = [
        ObservationDelivered(session=session, cell=cell, seq=3, kind="completed"),
        CellClosed(session=session, cell=cell, seq=4),
    ]
    assert journal.finish(won, before, after) == "completed"
    expected = [
        "CellAdmitted",
        "CellStarted",
        "CellCompleted",
        "ObservationDelivered",
        "CellClosed",
    ]
    assert kinds(journal, session) == expected
    assert journal.finish(won, before, after) == "completed"  # a retry: appends nothing
    assert kinds(journal, session) == expected
    assert journal.stored_snapshot(session) == ({"k": "1"}, 1)


def test_a_refused_admission_finishes_nothing(journal, session):
    journal.begin_shutdown(ShutdownBegun(session=session))
    before = [admitted(session, "a", "1"), CellStarted(session=session, cell="1", seq=1)]
    completed = CellCompleted(session=session, cell="1", seq=2, stored_writes={"k": "1"})
    with pytest.raises(SessionShuttingDownError):
        journal.finish(completed, before)
    terminated = CellTerminated(session=session, cell="1", seq=2)
    with pytest.raises(SessionShuttingDownError):
        journal.finish(terminated, before)
    assert kinds(journal, session) == ["ShutdownBegun"]
    assert journal.stored_snapshot(session) == ({}, 0)


def test_completion_after_shutdown_began_loses(journal, session):
    journal.admit([admitted(session, "a", "1")])
    journal.begin_shutdown(ShutdownBegun(session=session))
    completed = CellCompleted(session=session, cell="1", stored_writes={"k": "1"})
    assert journal.finish(completed) == "shutdown"
    assert journal.stored_values(session) == {}


def test_outage_gives_a_clear_error(session):
    dead = RedisJournal.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(JournalUnavailableError, match=r"^cellfleet event log is unavailable"):
        dead.append([OutputProduced(session=session, cell="1")])


def test_appends_recover_when_every_connection_was_dropped(journal, session, redis_client):
    """After a Redis restart every idle connection is dead: a retry must not take them
    one by one (all four attempts would fail)."""
    start = threading.Barrier(6)

    def hold_a_connection() -> None:
        start.wait(10)
        journal.link.run([("BLPOP", f"cf:test:{session}:never", "0.2")])

    threads = [threading.Thread(target=hold_a_connection) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(journal.link._idle) >= 4  # several connections to be found dead
    redis_client.client_kill_filter(_type="normal", skipme=True)
    journal.append([OutputProduced(session=session, cell="1")])
    assert kinds(journal, session) == ["OutputProduced"]

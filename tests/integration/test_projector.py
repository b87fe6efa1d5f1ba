"""The projector runner and replay against a real redis-server."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from cellfleet.broker import codec, keys
from cellfleet.broker.events import (
    AnyEvent,
    CellAdmitted,
    CellClosed,
    CellCompleted,
    CellStarted,
    CellTerminated,
    OutputProduced,
    SessionOpened,
    ToolCancelled,
    ToolRequested,
)
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.projection_store import RedisProjectionStore
from cellfleet.projections import ProjectorRunner, SessionView, cells, rebuild, stored, timeline
from tests.golden.golden import assert_matches_expectations, trace_entries


@pytest.fixture
def journal(redis_client: redis.Redis) -> RedisJournal:
    return RedisJournal(redis_client)


@pytest.fixture
def session() -> str:
    return f"proj-{uuid.uuid4().hex[:12]}"


def runner(
    client: redis.Redis, session: str, module: Any = cells, batch: int = 500, **parts: Any
) -> Any:
    """A runner of projection module `module`, with some of its parts replaced."""
    projection = dataclasses.replace(module.PROJECTION, **parts)
    store = RedisProjectionStore(client)
    return ProjectorRunner(RedisJournal(client), store, session, projection, batch=batch)


def admit(journal: RedisJournal, session: str, call_id: str) -> str:
    """Admit the session's next cell, as its session actor would."""
    last = journal.client.hget(keys.SessionKeys(session).meta, "next_cell")
    cell = str(int(last or 0) + 1)  # type: ignore[arg-type]
    journal.admit([CellAdmitted(session=session, cell=cell, call_id=call_id, source="text(1)")])
    return cell


def outputs(session: str, cell: str, seqs: Iterable[int]) -> list[AnyEvent]:
    item = {"type": "input_text", "text": "x"}
    return [OutputProduced(session=session, cell=cell, seq=seq, item=item) for seq in seqs]


def last_id(client: redis.Redis, session: str) -> str:
    entries: list[tuple[bytes, Any]] = client.xrevrange(keys.SessionKeys(session).events, count=1)  # type: ignore[assignment]
    return entries[0][0].decode()


def play_session(journal: RedisJournal, session: str) -> None:
    """Two cells through the journal's own decisions: one completes, one is terminated."""
    journal.open_session(SessionOpened(session=session, seq=1))
    a, b = admit(journal, session, "call-a"), admit(journal, session, "call-b")
    journal.append([CellStarted(session=session, cell=a, seq=1), *outputs(session, a, [2, 3])])
    journal.append([CellStarted(session=session, cell=b, seq=1)])
    journal.append(
        [ToolRequested(session=session, cell=b, seq=2, call_id="tool-1", name="t", kind="function")]
    )
    journal.finish(CellCompleted(session=session, cell=a, seq=4, stored_writes={"k": '"a"'}))
    journal.finish(
        CellTerminated(session=session, cell=b, seq=4),
        before=[ToolCancelled(session=session, cell=b, seq=3, call_id="tool-1")],
    )
    # The completion that loses to the termination: nothing is appended, nothing merged.
    journal.finish(CellCompleted(session=session, cell=b, seq=5, stored_writes={"k": '"b"'}))
    journal.append([CellClosed(session=session, cell=a, seq=5)])


def test_runner_stores_state_together_with_its_stream_position(redis_client, journal, session):
    play_session(journal, session)
    projector = runner(redis_client, session)
    projected = projector.catch_up()
    stored_hash = redis_client.hgetall(keys.SessionKeys(session).projection("cells"))
    assert set(stored_hash) == {b"position", b"state", b"version"}
    assert stored_hash[b"version"] == b"%d" % cells.PROJECTION.version
    assert stored_hash[b"position"].decode() == projected.position == last_id(redis_client, session)
    assert cells.from_json(stored_hash[b"state"]) == projected.state
    assert projected.state.cells["1"].phase == "closed"
    assert projected.state.cells["2"].outcome == "terminated"
    assert projected.state.cells["2"].tools_pending == ()


def test_new_runner_resumes_where_the_last_one_stopped(redis_client, journal, session):
    folded: list[AnyEvent] = []

    def counting_fold(events: Iterable[AnyEvent], state: cells.CellsState) -> cells.CellsState:
        batch = list(events)
        folded.extend(batch)
        return cells.fold(batch, state)

    cell = admit(journal, session, "call-a")
    journal.append(outputs(session, cell, [1, 2]))
    first = runner(redis_client, session, fold=counting_fold).catch_up()
    assert len(folded) == 3
    assert first.state.cells[cell].outputs == 2

    folded.clear()
    restarted = runner(redis_client, session, fold=counting_fold)
    assert restarted.load() == first
    assert restarted.catch_up() == first
    assert folded == []  # nothing re-applied

    journal.append(outputs(session, cell, [3]))
    resumed = runner(redis_client, session, fold=counting_fold).catch_up()
    assert [event.seq for event in folded] == [3]
    assert resumed.state.cells[cell].outputs == 3
    assert resumed.state == rebuild(journal, session).cells
    # The first runner sees what the other one stored, not its own older copy.
    assert restarted.load() == resumed


def test_crash_between_batches_loses_no_event_and_applies_none_twice(
    redis_client, journal, session
):
    cell = admit(journal, session, "call-a")
    journal.append(outputs(session, cell, range(1, 6)))  # 6 entries: 3 batches of 2
    writes = 0

    def failing_to_json(state: cells.CellsState) -> str:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise ConnectionError("worker died before storing its second batch")
        return cells.to_json(state)

    with pytest.raises(ConnectionError):
        runner(redis_client, session, to_json=failing_to_json, batch=2).catch_up()
    survivor = runner(redis_client, session, batch=2)
    assert survivor.load().state.cells[cell].outputs == 1  # first batch only, with its position
    assert survivor.catch_up().state == rebuild(journal, session).cells
    assert survivor.load().state.cells[cell].outputs == 5


def test_incremental_projections_equal_a_rebuild_from_the_stream(redis_client, journal, session):
    projectors = [runner(redis_client, session, module) for module in (cells, stored, timeline)]
    journal.open_session(SessionOpened(session=session, seq=1))
    for round_ in range(3):
        cell = admit(journal, session, f"call-{round_}")
        journal.append(outputs(session, cell, [1, 2, 2]))  # with a repeated entry
        for projector in projectors:
            projector.catch_up()
        journal.finish(
            CellCompleted(session=session, cell=cell, seq=3, stored_writes={"k": str(round_)})
        )
    results = [projector.catch_up() for projector in projectors]
    view = rebuild(journal, session)
    assert [result.state for result in results] == [view.cells, view.stored, view.timeline]
    assert {result.position for result in results} == {view.position}
    # The fold agrees with the stored values the finish script merged in Redis.
    assert view.stored.values == journal.stored_values(session) == {"k": "2"}
    assert all(cell.outputs == 2 for cell in view.cells.cells.values())


def test_rebuild_of_the_golden_trace_from_redis_matches_the_expectations(redis_client, session):
    stream = keys.SessionKeys(session).events
    for entry_id, fields in trace_entries():
        redis_client.xadd(stream, fields, id=entry_id)  # type: ignore[arg-type]
    journal = RedisJournal(redis_client)
    view = rebuild(journal, session)
    assert_matches_expectations(view)
    projected = [runner(redis_client, session, m).catch_up() for m in (cells, stored, timeline)]
    assert SessionView(session, projected[0].position, *(p.state for p in projected)) == view
    assert json.loads(stored.to_json(projected[1].state))["values"]["hits"] == "3"


def test_wait_for_returns_once_the_position_is_folded(redis_client, journal, session):
    cell = admit(journal, session, "call-a")
    projector = runner(redis_client, session)
    target = f"{last_id(redis_client, session).split('-')[0]}-99"  # a later id, not yet there
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(projector.wait_for, target, 10.0)
        stream = keys.SessionKeys(session).events
        event = outputs(session, cell, [1])[0]
        redis_client.xadd(stream, codec.encode(event), id=target)  # type: ignore[arg-type]
        reached = waiting.result(timeout=10)
    assert reached.position == target
    assert reached.state.cells[cell].outputs == 1


def test_wait_for_an_entry_that_never_comes_times_out(redis_client, journal, session):
    admit(journal, session, "call-a")
    projector = runner(redis_client, session)
    assert projector.wait_for(last_id(redis_client, session), 1.0).position == last_id(
        redis_client, session
    )
    with pytest.raises(TimeoutError, match="projection cells"):
        projector.wait_for("99999999999999-0", 0.2)


def test_a_state_stored_by_another_version_is_folded_anew(redis_client, journal, session):
    cell = admit(journal, session, "call-a")
    journal.append(outputs(session, cell, [1, 2]))
    runner(redis_client, session).catch_up()
    key = keys.SessionKeys(session).projection("cells")
    redis_client.hset(key, "state", b"not what version 2 reads")
    upgraded = runner(redis_client, session, version=cells.PROJECTION.version + 1)
    assert upgraded.catch_up().state == rebuild(journal, session).cells
    assert redis_client.hget(key, "version") == b"%d" % (cells.PROJECTION.version + 1)
    redis_client.hdel(key, "version")  # as stored before projections had versions
    assert runner(redis_client, session).catch_up().state == rebuild(journal, session).cells

"""What only the Redis journal has: its key layout, outages and dropped connections.

The journal's decisions are tested on Redis and in memory alike by
tests/contract/test_journal_contract.py.
"""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from cellfleet.broker import keys
from cellfleet.broker.errors import (
    JournalUnavailableError,
)
from cellfleet.broker.events import (
    CellAdmitted,
    OutputProduced,
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


def test_the_meta_hash_keeps_the_highest_cell_id_as_a_number(journal, session, redis_client):
    """The layout admit_cell.lua keeps (the semantics are in the contract suite)."""
    journal.admit([admitted(session, "b", "2")])
    journal.admit([admitted(session, "a", "1")])
    assert redis_client.hget(keys.SessionKeys(session).meta, "next_cell") == b"2"
    journal.admit([admitted(session, "d", "10")])  # compared as numbers, not as text
    assert redis_client.hget(keys.SessionKeys(session).meta, "next_cell") == b"10"
    redis_client.hset(keys.SessionKeys(session).meta, "next_cell", 2**63 - 2)
    journal.admit([admitted(session, "last", str(2**63 - 1))])
    assert redis_client.hget(keys.SessionKeys(session).meta, "next_cell") == b"%d" % (2**63 - 1)


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

"""One owner per session: leases with fencing tokens, against the suite's real Redis.

A process serves a session only while it holds the session's lease; each new owner gets
a greater fencing token, and the log refuses every write that carries an older one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import partial

import pytest
import redis

from cellfleet.actors.session.actor import SessionActor
from cellfleet.broker import events as ev
from cellfleet.broker.contract.tools import ToolKind
from cellfleet.broker.errors import SessionFencedError, SessionOwnedElsewhereError
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.keys import Keys
from cellfleet.broker.leases import CLAIM_LEASE_MS, Leases
from cellfleet.broker.tools.dispatch import BrokerDispatcher
from cellfleet.broker.tools.invocation import ToolInvocation, ToolOutcome
from cellfleet.ops.host import Host


@pytest.fixture
def keys() -> Keys:
    return Keys(f"lease-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def journals(redis_url: str, keys: Keys) -> Iterator[tuple[RedisJournal, RedisJournal]]:
    """Two processes' journals on one Redis."""
    first, second = RedisJournal.from_url(redis_url, keys), RedisJournal.from_url(redis_url, keys)
    yield first, second
    first.close()
    second.close()


def opened(session: str, seq: int = 1) -> ev.SessionOpened:
    return ev.SessionOpened(session=session, seq=seq, at_ms=1.0)


def output(session: str, seq: int) -> ev.OutputProduced:
    item = {"type": "input_text", "text": "x"}
    return ev.OutputProduced(session=session, cell="1", seq=seq, at_ms=1.0, item=item)


def stream_length(journal: RedisJournal, session: str) -> int:
    return int(journal.client.xlen(journal.keys.session(session).events))


def test_a_live_owner_keeps_its_session(journals: tuple[RedisJournal, RedisJournal]) -> None:
    first, second = journals
    a, b = Leases(first, "a"), Leases(second, "b")
    assert a.claim("s") == 1
    with pytest.raises(SessionOwnedElsewhereError):  # served once, even here
        a.claim("s")
    with pytest.raises(SessionOwnedElsewhereError) as refused:
        b.claim("s")
    assert refused.value.owner == "a"
    assert str(refused.value) == "code mode session s is owned by another process"
    assert b.owner_of("s") == "a"


def test_a_new_owner_fences_the_old_one_off(journals: tuple[RedisJournal, RedisJournal]) -> None:
    first, second = journals
    fenced: list[str] = []
    first.when_fenced(fenced.append)
    a, b = Leases(first, "a"), Leases(second, "b")
    a.claim("s")
    first.open_session(opened("s"))
    a.opened("s")
    first.append([output("s", 2)])
    first.client.delete(first.keys.session("s").lease)  # as if it expired: a froze
    assert b.claim("s") == 2
    before = stream_length(first, "s")

    with pytest.raises(SessionFencedError, match=r"^code mode session s is now served by"):
        first.append([output("s", 3)])
    assert fenced == ["s"]
    assert stream_length(first, "s") == before  # nothing of the stale owner's
    with pytest.raises(SessionFencedError):  # refused at once from now on
        first.append([output("s", 4)])
    assert a.renew() == []  # (forgotten: the refusal fenced it off)
    second.append([output("s", 3)])
    assert stream_length(second, "s") == before + 1


def test_each_write_of_a_stale_owner_is_refused(
    journals: tuple[RedisJournal, RedisJournal],
) -> None:
    """Admission, completion and shutdown check the token as plain appends do."""
    first, second = journals
    Leases(first, "a").claim("s")
    first.open_session(opened("s"))
    first.client.delete(first.keys.session("s").lease)
    Leases(second, "b").claim("s")
    admitted = ev.CellAdmitted(
        session="s", cell="1", seq=0, at_ms=1.0, call_id="c", source="", yield_time_ms=1,
        max_output_tokens=None, tools_digest="", seed=(1, 2, 3, 4), clock_ms=1.0,
        stored_version=0,
    )  # fmt: skip
    shutdown = ev.ShutdownBegun(session="s", seq=2, at_ms=1.0)
    for write in (
        partial(first.admit, [admitted]),
        partial(first.begin_shutdown, shutdown),
        partial(first.finish_session, shutdown, 60),
    ):
        first.hold("s", 1)  # as if it had not noticed yet
        with pytest.raises(SessionFencedError):
            write()
    meta = first.client.hgetall(first.keys.session("s").meta)
    assert b"cell:1" not in meta
    assert b"shutdown" not in meta


def kept_and_taken(
    journals: tuple[RedisJournal, RedisJournal], *, opened: bool
) -> tuple[Leases, list[str]]:
    """Process a claims sessions "kept" and "taken" (and opens them, if `opened`); both
    leases lapse, and process b claims "taken". Process a's leases, and the sessions
    its journal was told are fenced off."""
    first, second = journals
    fenced: list[str] = []
    first.when_fenced(fenced.append)
    a, b = Leases(first, "a"), Leases(second, "b")
    for session in ("kept", "taken"):
        a.claim(session)
        if opened:
            a.opened(session)
        first.client.delete(first.keys.session(session).lease)  # (it lapsed)
    b.claim("taken")
    return a, fenced


def assert_only_kept_is_held(a: Leases, fenced: list[str]) -> None:
    """`a` still holds "kept" (and writes it) and was fenced off "taken"."""
    assert fenced == ["taken"]
    assert a.owner_of("kept") == "a"
    assert a.held() == ["kept"]
    a.journal.append([output("kept", 2)])
    with pytest.raises(SessionFencedError):
        a.journal.append([output("taken", 2)])


def test_renewal_finds_a_lost_lease_and_takes_back_an_expired_one(
    journals: tuple[RedisJournal, RedisJournal],
) -> None:
    a, fenced = kept_and_taken(journals, opened=True)
    assert a.renew() == ["taken"]  # "kept": nobody claimed it, so its token still holds
    assert_only_kept_is_held(a, fenced)


def test_a_claim_is_short_until_its_session_is_open(
    journals: tuple[RedisJournal, RedisJournal],
) -> None:
    """A process that dies between claiming a session and opening it holds the session
    up for `CLAIM_LEASE_MS`, not for a whole lease: renewals leave a claim alone until
    `opened`, which holds the lease for a whole time to live."""
    first, _ = journals
    a = Leases(first, "a", ttl_ms=60_000)
    lease = first.keys.session("s").lease
    a.claim("s")
    assert 0 < first.client.pttl(lease) <= CLAIM_LEASE_MS
    assert a.renew() == []
    assert first.client.pttl(lease) <= CLAIM_LEASE_MS
    a.opened("s")
    assert first.client.pttl(lease) > CLAIM_LEASE_MS
    first.client.pexpire(lease, 1)
    assert a.renew() == []
    assert first.client.pttl(lease) > CLAIM_LEASE_MS


def test_an_opener_slower_than_its_claim_keeps_the_session_unless_another_claimed_it(
    journals: tuple[RedisJournal, RedisJournal],
) -> None:
    a, fenced = kept_and_taken(journals, opened=False)  # (their claims ended)
    assert a.opened("kept")  # nobody claimed it meanwhile: its token still holds
    assert not a.opened("taken")
    assert_only_kept_is_held(a, fenced)


def test_opened_says_a_session_taken_meanwhile_is_lost_even_if_renewal_met_it_first(
    journals: tuple[RedisJournal, RedisJournal],
) -> None:
    first, second = journals
    a, b = Leases(first, "a"), Leases(second, "b")
    a.claim("s")
    first.client.delete(first.keys.session("s").lease)  # its claim ended
    b.claim("s")
    assert a.renew(["s"]) == ["s"]  # (the background renewal met the loss first)
    assert not a.opened("s")


def test_opened_leaves_a_renewal_redis_refused_to_the_background(
    journals: tuple[RedisJournal, RedisJournal], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = journals
    a = Leases(first, "a")
    a.claim("s")

    def away(_sessions: object = None) -> list[str]:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(a, "renew", away)
    assert a.opened("s")  # (still its own: the next renewal tries again)
    monkeypatch.undo()
    assert a.renew() == []
    assert a.held() == ["s"]


def _let_go_and_served_again(host: Host, session: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody holds `session`'s lease; once the fault is undone, `host` serves it."""
    leases = host.services.leases
    assert leases is not None
    assert not leases.holds(session)
    assert leases.owner_of(session) is None
    monkeypatch.undo()
    again = host.open_session(session_id=session)
    assert again.exec("c", "text('open')").items[1]["text"] == "open"


def test_a_session_actor_that_cannot_start_lets_its_claim_go(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(No thread, so no `on_start` to release it: the claim would be renewed for
    ever, and no other process could serve the session.)"""

    def fails(*args: object, **kwargs: object) -> object:
        raise RuntimeError("can't start new thread")

    host = Host(redis_url)
    try:
        monkeypatch.setattr(SessionActor, "start", fails)
        session = uuid.uuid4().hex
        with pytest.raises(RuntimeError, match="can't start new thread"):
            host.open_session(session_id=session)
        _let_go_and_served_again(host, session, monkeypatch)
    finally:
        host.close()


def test_a_session_whose_opening_failed_gives_its_lease_up(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opening's write fails (the session actor stops): its claim is released at
    once, and this process can open the session again."""

    def refused(*args: object, **kwargs: object) -> object:
        raise redis.ConnectionError("Redis went away")

    host = Host(redis_url)
    try:
        monkeypatch.setattr(host.services.journal, "open_session", refused)
        session = uuid.uuid4().hex
        failed = host.open_session(session_id=session)
        assert failed.backend._ref.actor_stopped.wait(10)  # type: ignore[attr-defined]
        _let_go_and_served_again(host, session, monkeypatch)
    finally:
        host.close()


def test_a_released_session_goes_to_the_next_owner_with_a_newer_token(
    journals: tuple[RedisJournal, RedisJournal],
) -> None:
    first, second = journals
    a, b = Leases(first, "a"), Leases(second, "b")
    a.claim("s")
    a.opened("s")
    a.release("s")
    assert a.owner_of("s") is None
    assert b.claim("s") == 2
    assert a.renew() == []  # released: not renewed


def test_a_fenced_owners_tool_calls_are_withdrawn(
    journals: tuple[RedisJournal, RedisJournal], redis_url: str, keys: Keys
) -> None:
    """Its `tool_requested` is refused, so the call it goes with leaves the calls stream;
    nothing else is written: the call is not marked cancelled, for the newer owner that
    recovers the cell makes the same call (same cell, same call id), which must run."""
    first, second = journals
    Leases(first, "a").claim("s")
    first.client.delete(first.keys.session("s").lease)
    Leases(second, "b").claim("s")
    dispatcher = BrokerDispatcher(redis.Redis.from_url(redis_url), registry="r", keys=keys)
    try:
        invocation = ToolInvocation(
            session="s", cell="1", call_id="tool-1", name="echo", raw_name="echo",
            kind=ToolKind.FUNCTION, input={},
        )  # fmt: skip
        requested = ev.ToolRequested(
            session="s", cell="1", seq=2, at_ms=1.0, call_id="tool-1", name="echo",
            kind="function", input={},
        )  # fmt: skip
        outcomes: list[ToolOutcome] = []
        with pytest.raises(SessionFencedError):
            dispatcher.dispatch_batch(
                [(invocation, outcomes.append)],
                before=first.appends([requested]),
                check_before=partial(first.check_appended, "s"),
            )
        assert dispatcher.client.xlen(dispatcher.calls_of("s")) == 0
        assert dispatcher.client.hget(keys.session("s").tools, "1/tool-1") is None
    finally:
        dispatcher.close()


def test_a_second_host_cannot_serve_a_session_another_serves(redis_url: str) -> None:
    """The measured bug: a second process re-opened a served session and the first
    one's live cell became `exec cell 1 not found`."""
    keys = Keys(f"lease-{uuid.uuid4().hex[:8]}")
    first = Host(redis_url, pool_size=1, workers=0, keys=keys)
    second = Host(redis_url, pool_size=1, workers=0, keys=keys)
    try:
        session = first.open_session()
        output_ = session.exec("c1", "text(1)")
        assert output_.success
        with pytest.raises(SessionOwnedElsewhereError):
            second.open_session(session_id=session.id)
        session.shutdown()
        again = second.open_session(session_id=session.id)  # nobody serves it now
        assert again.exec("c2", "text(1)").text == "code mode session is shutting down"
        again.shutdown()
    finally:
        first.close()
        second.close()

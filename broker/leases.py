"""Session leases: one process serves a session at a time, and a stale one cannot write.

A process claims the lease of each session it serves (`cf:{S}:lease`, "<owner> <token>"
with a time to live). Each claim by a new owner raises the session's fencing token, and
every write of the log carries the writer's token (`RedisJournal.hold`): the scripts
refuse a stale one. `Leases` renews the leases of one process in the background, in one
round trip per renewal; a lease it can no longer renew (a newer owner claimed the
session while this process was frozen or cut off) fences the session off at once.

A claim is short (`CLAIM_LEASE_MS`) until its session is open (`Leases.opened`): a
process that dies between the two holds up the next owner for that long, not for a
whole lease. A slow opener that outlives its claim is safe all the same: if nobody
claimed the session meanwhile it takes its lease back with its token, else its writes
are refused (the token is stale).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import redis

from cellfleet.broker.crash import crash_point
from cellfleet.broker.errors import SessionOwnedElsewhereError
from cellfleet.broker.journal import LeanScript, RedisJournal, failure_reason, run_retrying
from cellfleet.broker.keys import Keys
from cellfleet.broker.redis.link import Link, ReplicaWait
from cellfleet.broker.redis.scripts import script_source

log = logging.getLogger(__name__)
DEFAULT_LEASE_MS = 2_000  # a dead owner's sessions wait this long for a new owner
# What renew_lease.lua says of a lease (its other answer, 2: the session finished).
_TAKEN, _RENEWED, _DATA_LOST = 0, 1, 3
RENEWALS_PER_LEASE = 4  # renewals per time to live: one lost round trip is no loss
CLAIM_LEASE_MS = 500  # a claim's time to live until its session is open


def lease_state(link: Link, keys: Keys, session: str) -> tuple[str | None, int]:
    """Who holds the session's lease now (None: nobody) and for how many more
    milliseconds at most (0 when nobody), in one round trip."""
    key = keys.session(session).lease
    held, left_ms = run_retrying(lambda: link.run([("GET", key), ("PTTL", key)]))
    if held is None:
        return None, 0
    return bytes(held).decode().partition(" ")[0], max(0, int(left_ms))


class Leases:
    """The leases that process `owner` holds; `start` renews them in the background.

    A lease a newer owner took is fenced off in the journal (`RedisJournal.fence_off`,
    which tells its `when_fenced` listeners): the journal refuses this process's writes
    of that session from then on.
    """

    def __init__(
        self,
        journal: RedisJournal,
        owner: str,
        *,
        ttl_ms: int = DEFAULT_LEASE_MS,
    ) -> None:
        assert " " not in owner, "an owner id is one word (the lease holds '<owner> <token>')"
        self.journal = journal
        self.owner = owner
        self.ttl_ms = ttl_ms
        client = journal.client
        self._claim = LeanScript(client, journal.link, script_source("claim_lease"))
        self._renew = LeanScript(client, journal.link, script_source("renew_lease"))
        self._release = LeanScript(client, journal.link, script_source("release_lease"))
        self._held: dict[str, int] = {}  # session -> token
        self._opening: set[str] = set()  # claimed, not open yet: not renewed
        # The claim, the opening and `opened` may each wait for replicas (`WAIT`).
        wait = getattr(journal.link, "wait", None)
        waits_ms = 3 * wait.timeout_ms if isinstance(wait, ReplicaWait) else 0
        self._claim_ms = min(ttl_ms, CLAIM_LEASE_MS + waits_ms)
        self._lock = threading.Lock()  # a release never races a renewal of the same lease
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        journal.when_fenced(self.forget)

    def start(self) -> Leases:
        self._thread = threading.Thread(target=self._renew_loop, name="leases", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (the leases expire unless released)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def owner_of(self, session: str) -> str | None:
        """Who holds the session's lease now (None: nobody)."""
        return lease_state(self.journal.link, self.journal.keys, session)[0]

    def claim(self, session: str) -> int:
        """Hold the session's lease (its fencing token); raises
        `SessionOwnedElsewhereError` (with `.owner`) if another live process holds it,
        or this one does already (a session is served once)."""
        if self.holds(session):
            raise SessionOwnedElsewhereError(session, owner=self.owner)
        k = self.journal.keys.session(session)
        ttl = str(self._claim_ms)
        state, value = run_retrying(
            lambda: self._claim(keys=[k.lease, k.meta], args=[self.owner, ttl])
        )
        if state == b"owned":
            raise SessionOwnedElsewhereError(session, owner=value.decode())
        token = int(value)
        with self._lock:
            self._held[session] = token
            self._opening.add(session)
            self.journal.hold(session, token)
        crash_point("lease_claimed")
        return token

    def opened(self, session: str) -> bool:
        """The session is open here: hold its lease for a whole time to live from now on
        (renewed at once; a failed renewal is left to the background's next one). False
        if another owner claimed the session meanwhile (it is fenced off here)."""
        with self._lock:
            self._opening.discard(session)
        lost: list[str] = []
        try:
            lost = self.renew([session])
        except redis.RedisError as error:
            log.warning(
                "session %s: lease not renewed: %s", session, failure_reason(error) or error
            )
        # (`holds`: the background renewal may have met the loss first and forgotten it.)
        return session not in lost and self.holds(session)

    def holds(self, session: str) -> bool:
        with self._lock:
            return session in self._held

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def forget(self, session: str) -> None:
        """Stop renewing a lease this process lost (its writes were refused)."""
        with self._lock:
            self._held.pop(session, None)
            self._opening.discard(session)

    def release(self, session: str) -> None:
        """Give the session up (the next owner's token is newer); a lease lost already,
        or a session that finished (its lease went with it), is simply forgotten."""
        with self._lock:
            token = self._held.pop(session, None)
            self._opening.discard(session)
            self.journal.let_go(session)
        if token is None:
            return
        key = self.journal.keys.session(session).lease
        try:
            run_retrying(lambda: self._release(keys=[key], args=[self.owner, str(token)]))
        except Exception as error:  # it expires on its own
            log.warning("session %s: its lease was not released: %s", session, error)

    def renew(self, sessions: Iterable[str] | None = None) -> list[str]:
        """Renew every lease of a session open here (or those of `sessions`) in one round
        trip; returns the sessions whose lease is lost (each fenced off)."""
        with self._lock:
            if sessions is None:
                held = [(s, t) for s, t in self._held.items() if s not in self._opening]
            else:
                held = [(s, self._held[s]) for s in sessions if s in self._held]
            if not held:
                return []
            keys, ttl = self.journal.keys, str(self.ttl_ms)
            renewed = self._renew.run_many(
                [
                    ([keys.session(s).lease, keys.session(s).meta], [self.owner, str(token), ttl])
                    for s, token in held
                ]
            )
            for reply in renewed:
                if isinstance(reply, redis.ResponseError):
                    raise reply
            lost = [s for (s, _), said in zip(held, renewed, strict=True) if said == _TAKEN]
            for (session, _), said in zip(held, renewed, strict=True):
                if said != _RENEWED:  # taken over, finished (its lease went with it), or lost
                    self._held.pop(session, None)
                    self._opening.discard(session)
                if said == _DATA_LOST:
                    log.warning("session %s: Redis lost its lease and its log", session)
        for session in lost:
            log.warning("session %s: its lease was taken over; no longer served here", session)
            self.journal.fence_off(session)
        return lost

    def _renew_loop(self) -> None:
        period = self.ttl_ms / 1000 / RENEWALS_PER_LEASE
        while not self._stopped.wait(period):
            try:
                self.renew()
            except redis.RedisError as error:  # the next round tries again
                log.warning("leases not renewed: %s", failure_reason(error) or error)
            except Exception:
                log.exception("leases not renewed")

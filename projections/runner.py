"""The projector runner: keeps one projection of one session up to date in Redis.

The projection's state and the stream position it reflects live in one hash
(`SessionKeys(session).projection(name)`, fields `position` and `state`) and are
written together by a single `HSET`, so a stored state never disagrees with its
position: after a crash or restart the runner resumes exactly after the last event it
stored, and no event is folded twice. Two runners of the same projection may race;
each write is still a consistent pair (the folds are deterministic), at worst an older
one, which the next `catch_up` moves forward again. Runs in the caller's thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Generic, TypeVar

import redis

from cellfleet.broker import keys
from cellfleet.broker.events import AnyEvent
from cellfleet.broker.journal import RedisJournal

S = TypeVar("S")

START = "0-0"
MAX_BLOCK_MS = 1000  # redis-py 8 gives clients a 5 s socket timeout by default


@dataclass(frozen=True, slots=True)
class Projected(Generic[S]):
    """A projection's state and the id of the last stream entry folded into it."""

    position: str
    state: S


def stream_id(position: str | bytes) -> tuple[int, int]:
    """A stream id (`"<ms>-<seq>"`) as a comparable pair."""
    text = position.decode() if isinstance(position, bytes) else position
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _batches(
    entries: Iterable[tuple[str, AnyEvent]], size: int
) -> Iterator[list[tuple[str, AnyEvent]]]:
    iterator = iter(entries)
    while batch := list(islice(iterator, size)):
        yield batch


class ProjectorRunner(Generic[S]):
    """Folds a session's stream into one stored projection, resuming where it stopped."""

    def __init__(
        self,
        client: redis.Redis,
        session: str,
        name: str,
        *,
        fold: Callable[[Iterable[AnyEvent], S], S],
        initial: S,
        to_json: Callable[[S], str | bytes],
        from_json: Callable[[bytes], S],
        batch: int = 500,
    ) -> None:
        self.client = client
        self.session = session
        self.name = name
        self.key = keys.SessionKeys(session).projection(name)
        self._stream = keys.SessionKeys(session).events
        self._journal = RedisJournal(client)
        self._fold = fold
        self._initial = initial
        self._to_json = to_json
        self._from_json = from_json
        self._batch = batch
        self._cached: Projected[S] | None = None

    def load(self) -> Projected[S]:
        """The stored state and position (the initial state at `0-0` if none is stored)."""
        raw: bytes | None = self.client.hget(self.key, "position")  # type: ignore[assignment]
        if raw is None:
            self._cached = Projected(START, self._initial)
        elif self._cached is None or self._cached.position != raw.decode():
            fields: list[bytes | None] = self.client.hmget(self.key, ["position", "state"])  # type: ignore[assignment]
            position, state = fields
            if position is None or state is None:  # deleted meanwhile
                return self.load()
            self._cached = Projected(position.decode(), self._from_json(state))
        return self._cached

    def catch_up(self) -> Projected[S]:
        """Fold the events after the stored position and store state and position."""
        current = self.load()
        entries = self._journal.read(self.session, after=current.position, count=self._batch)
        for batch in _batches(entries, self._batch):
            state = self._fold((event for _, event in batch), current.state)
            current = Projected(batch[-1][0], state)
            self._store(current)
        return current

    def wait_for(self, position: str | bytes, timeout: float) -> Projected[S]:
        """Catch up until the projection has folded stream entry `position`.

        Blocks on the stream (`XREAD BLOCK`, at most `MAX_BLOCK_MS` at a time: less than
        any client socket timeout) between attempts, never sleeps; raises
        `TimeoutError` if `position` is not reached within `timeout` seconds.
        """
        target = stream_id(position)
        deadline = time.monotonic() + timeout
        while True:
            current = self.catch_up()
            if stream_id(current.position) >= target:
                return current
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise TimeoutError(
                    f"projection {self.name} of {self.session} is at {current.position}, "
                    f"not {position!r}, after {timeout} s"
                )
            block_ms = min(remaining_ms, MAX_BLOCK_MS)
            self.client.xread({self._stream: current.position}, count=1, block=block_ms)

    def _store(self, projected: Projected[S]) -> None:
        state = self._to_json(projected.state)
        self.client.hset(self.key, mapping={"position": projected.position, "state": state})
        self._cached = projected

"""The projector runner: keeps one projection of one session up to date in a store.

The projection's state and the position it reflects are saved together, so a stored
state never disagrees with its position: after a crash or restart the runner resumes
exactly after the last event it saved, and no event is folded twice. Two runners of
the same projection may race; each save is still a consistent pair (the folds are
deterministic), at worst an older one, which the next `catch_up` moves forward again.
A state saved by another version of the projection is folded anew from the start.
Runs in the caller's thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Generic, TypeVar

from cellfleet.broker.events import AnyEvent
from cellfleet.projections.ports import (
    START,
    EventSource,
    Projection,
    ProjectionStore,
    StoredProjection,
    stream_id,
)

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Projected(Generic[S]):
    """A projection's state and the position of the last event folded into it."""

    position: str
    state: S


def _batches(
    entries: Iterable[tuple[str, AnyEvent]], size: int
) -> Iterator[list[tuple[str, AnyEvent]]]:
    iterator = iter(entries)
    while batch := list(islice(iterator, size)):
        yield batch


class ProjectorRunner(Generic[S]):
    """Folds a session's events into one stored projection, resuming where it stopped."""

    def __init__(
        self,
        source: EventSource,
        store: ProjectionStore,
        session: str,
        projection: Projection[S],
        *,
        batch: int = 500,
    ) -> None:
        self.source = source
        self.store = store
        self.session = session
        self.projection = projection
        self.name = projection.name
        self._batch = batch
        self._cached: Projected[S] | None = None

    def load(self) -> Projected[S]:
        """The stored state and position (the initial state at `START` if none is
        stored, or only one an older version of the projection wrote)."""
        position = self.store.position(self.session, self.name)
        if position is None:
            self._cached = Projected(START, self.projection.initial)
        elif self._cached is None or self._cached.position != position:
            stored = self.store.load(self.session, self.name)
            if stored is None:  # deleted meanwhile
                return self.load()
            if stored.version != self.projection.version:
                self._cached = Projected(START, self.projection.initial)
            else:
                self._cached = Projected(stored.position, self.projection.from_json(stored.state))
        return self._cached

    def catch_up(self) -> Projected[S]:
        """Fold the events after the stored position and store state and position."""
        current = self.load()
        entries = self.source.read(self.session, after=current.position, count=self._batch)
        for batch in _batches(entries, self._batch):
            state = self.projection.fold((event for _, event in batch), current.state)
            current = Projected(batch[-1][0], state)
            self._store(current)
        return current

    def wait_for(self, position: str | bytes, timeout: float) -> Projected[S]:
        """Catch up until the projection has folded the event at `position`.

        Blocks on the event source between attempts, never sleeps; raises
        `TimeoutError` if `position` is not reached within `timeout` seconds.
        """
        target = stream_id(position)
        deadline = time.monotonic() + timeout
        while True:
            current = self.catch_up()
            if stream_id(current.position) >= target:
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"projection {self.name} of {self.session} is at {current.position}, "
                    f"not {position!r}, after {timeout} s"
                )
            self.source.wait_after(self.session, current.position, remaining)

    def _store(self, projected: Projected[S]) -> None:
        state = self.projection.to_json(projected.state)
        data = state.encode() if isinstance(state, str) else state
        stored = StoredProjection(projected.position, data, self.projection.version)
        self.store.save(self.session, self.name, stored)
        self._cached = projected

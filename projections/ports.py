"""What projections need from the outside, as small interfaces: where events come from
and where a projection's state is kept. `broker` implements both on Redis and in
memory; nothing here imports them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from cellfleet.broker.events import AnyEvent

S = TypeVar("S")

START = "0-0"  # the position before a session's first event


def stream_id(position: str | bytes) -> tuple[int, int]:
    """A stream id (`"<ms>-<seq>"`) as a comparable pair."""
    text = position.decode() if isinstance(position, bytes) else position
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class EventSource(Protocol):
    """A session's events in log order, each with its position (a stream id)."""

    def read(
        self, session: str, after: str = START, count: int = 1000
    ) -> Iterable[tuple[str, AnyEvent]]:
        """The session's events after position `after`, in order, as (position, event)."""
        ...

    def wait_after(self, session: str, after: str, timeout: float) -> None:
        """Block until the session has an event after `after`, or `timeout` seconds
        passed (at most about a second at a time: callers loop)."""
        ...


@dataclass(frozen=True, slots=True)
class StoredProjection:
    """A projection's state as kept: its JSON, the position it reflects, and the
    version of the projection that wrote it."""

    position: str
    state: bytes
    version: int


class ProjectionStore(Protocol):
    """Where projections keep their state; a save writes state and position together."""

    def position(self, session: str, name: str) -> str | None:
        """The stored position of projection `name` (cheaper than `load`)."""
        ...

    def load(self, session: str, name: str) -> StoredProjection | None: ...

    def save(self, session: str, name: str, stored: StoredProjection) -> None: ...


@dataclass(frozen=True, slots=True)
class Projection(Generic[S]):
    """A named fold with its initial state and JSON form. A new `version` makes every
    state stored by an older one be folded anew from the start."""

    name: str
    version: int
    initial: S
    fold: Callable[[Iterable[AnyEvent], S], S]
    to_json: Callable[[S], str | bytes]
    from_json: Callable[[bytes], S]

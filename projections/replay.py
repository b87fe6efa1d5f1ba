"""Rebuild every projection of a session from its stream alone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cellfleet.broker.events import AnyEvent
from cellfleet.projections import cells, stored, timeline
from cellfleet.projections.runner import START


class EventSource(Protocol):
    """Where a session's events come from (`broker.journal.RedisJournal` is one)."""

    def read(self, session: str, after: str = START) -> Iterable[tuple[str, AnyEvent]]:
        """The session's events after stream id `after`, in order, as (id, event)."""
        ...


@dataclass(frozen=True, slots=True)
class SessionView:
    """Every projection of one session, as of stream entry `position`."""

    session: str
    position: str
    cells: cells.CellsState
    stored: stored.StoredValues
    timeline: timeline.Timeline


def project(session: str, entries: Iterable[tuple[str, AnyEvent]]) -> SessionView:
    """Fold a session's stream entries, from the start, into all projections."""
    listed = list(entries)
    events = [event for _, event in listed]
    return SessionView(
        session=session,
        position=listed[-1][0] if listed else START,
        cells=cells.fold(events),
        stored=stored.fold(events),
        timeline=timeline.fold(events),
    )


def rebuild(journal: EventSource, session: str) -> SessionView:
    """The session's projections, rebuilt from its whole stream and nothing else."""
    return project(session, journal.read(session))

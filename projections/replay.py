"""Rebuild every projection of a session from its events alone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cellfleet.broker.events import AnyEvent
from cellfleet.projections import cells, stored, timeline
from cellfleet.projections.ports import START, EventSource


@dataclass(frozen=True, slots=True)
class SessionView:
    """Every projection of one session, as of the event at `position`."""

    session: str
    position: str
    cells: cells.CellsState
    stored: stored.StoredValues
    timeline: timeline.Timeline


def project(session: str, entries: Iterable[tuple[str, AnyEvent]]) -> SessionView:
    """Fold a session's entries, from the start, into all projections."""
    listed = list(entries)
    events = [event for _, event in listed]
    return SessionView(
        session=session,
        position=listed[-1][0] if listed else START,
        cells=cells.fold(events),
        stored=stored.fold(events),
        timeline=timeline.fold(events),
    )


def rebuild(source: EventSource, session: str) -> SessionView:
    """The session's projections, rebuilt from all its events and nothing else."""
    return project(session, source.read(session))

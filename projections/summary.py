"""One line about a session, folded from its events: for `cellfleet sessions`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cellfleet.broker.events import AnyEvent, SessionOpened, ShutdownBegun, ShutdownFinished
from cellfleet.projections import cells


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session: str
    opened_ms: float | None  # its `SessionOpened` (None: the log lacks it)
    cells: int
    live_cells: int  # admitted, not ended yet
    state: str  # "open", "shutting down" or "shut down"
    last_activity_ms: float | None  # its last event
    label: str = ""  # the harness's name for it (`SessionOpened.label`)


_LIVE = (cells.Phase.ADMITTED, cells.Phase.RUNNING)


def summarize(session: str, events: Iterable[AnyEvent]) -> SessionSummary:
    listed = list(events)
    opening = next((e for e in listed if isinstance(e, SessionOpened)), None)
    opened = None if opening is None else opening.at_ms
    kinds = {type(e) for e in listed}
    state = (
        "shut down"
        if ShutdownFinished in kinds
        else "shutting down"
        if ShutdownBegun in kinds
        else "open"
    )
    folded = cells.fold(listed).cells.values()
    return SessionSummary(
        session=session,
        opened_ms=opened,
        cells=len(folded),
        live_cells=sum(cell.phase in _LIVE for cell in folded),
        state=state,
        last_activity_ms=listed[-1].at_ms if listed else None,
        label="" if opening is None else opening.label,
    )

"""Pure folds from a session's events to state, the projector runner, and replay.

`cells`, `stored` and `timeline` each hold a frozen state type with `INITIAL`,
`apply(state, event)`, `fold(events, state)`, `to_json`, `from_json` and `PROJECTION`;
they import nothing but `broker.events`. `runner` keeps one projection stored next to
its position, and `replay` rebuilds all of them, through the interfaces of `ports`
(an event source, a projection store), which `broker` implements.
"""

from cellfleet.projections import cells, stored, timeline
from cellfleet.projections.cells import CellsState, CellState, Phase
from cellfleet.projections.ports import (
    START,
    EventSource,
    Projection,
    ProjectionStore,
    StoredProjection,
    stream_id,
)
from cellfleet.projections.replay import SessionView, project, rebuild
from cellfleet.projections.runner import Projected, ProjectorRunner
from cellfleet.projections.seqset import SeqSet
from cellfleet.projections.stored import StoredValues
from cellfleet.projections.timeline import Timeline

__all__ = [
    "START",
    "CellState",
    "CellsState",
    "EventSource",
    "Phase",
    "Projected",
    "Projection",
    "ProjectionStore",
    "ProjectorRunner",
    "SeqSet",
    "SessionView",
    "StoredProjection",
    "StoredValues",
    "Timeline",
    "cells",
    "project",
    "rebuild",
    "stored",
    "stream_id",
    "timeline",
]

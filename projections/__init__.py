"""Pure folds from a session's events to state, the projector runner, and replay.

`cells`, `stored` and `timeline` each hold a frozen state type with `INITIAL`,
`apply(state, event)`, `fold(events, state)`, `to_json` and `from_json`; they import
nothing but `broker.events`. `runner` keeps one projection stored in Redis next to its
stream position; `replay` rebuilds all of them from a stream.
"""

from cellfleet.projections import cells, stored, timeline
from cellfleet.projections.cells import CellsState, CellState, Phase
from cellfleet.projections.replay import EventSource, SessionView, project, rebuild
from cellfleet.projections.runner import Projected, ProjectorRunner, stream_id
from cellfleet.projections.seqset import SeqSet
from cellfleet.projections.stored import StoredValues
from cellfleet.projections.timeline import Timeline

__all__ = [
    "CellState",
    "CellsState",
    "EventSource",
    "Phase",
    "Projected",
    "ProjectorRunner",
    "SeqSet",
    "SessionView",
    "StoredValues",
    "Timeline",
    "cells",
    "project",
    "rebuild",
    "stored",
    "stream_id",
    "timeline",
]

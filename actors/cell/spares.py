"""Starting cell actors. A cell actor costs no thread to start (`lazy_thread`): one
gets a thread only if a message must wait for it, so none is started ahead of time."""

from __future__ import annotations

from typing import Any

import pykka

from cellfleet.actors.base import tell_here
from cellfleet.actors.cell.actor import CellActor
from cellfleet.actors.cell.context import CellContext
from cellfleet.actors.cell.handle import CellHandle
from cellfleet.actors.cell.messages import Begin, Recover
from cellfleet.actors.replay.plan import CellRecord
from cellfleet.actors.runtime.protocol import CellSpec
from cellfleet.actors.scheduler import Scheduler
from cellfleet.broker import events as ev


class CellActors:
    """Starts the cell actors of the sessions that share it."""

    def __init__(self, scheduler: Scheduler) -> None:
        del scheduler  # (spares were started on it, before actors were lazy)

    def start(
        self, handle: CellHandle, spec: CellSpec, context: CellContext, admitted: ev.CellAdmitted
    ) -> pykka.ActorRef[Any]:
        """An actor running the cell `spec`: it starts on this thread, if it may."""
        ref = CellActor.start()
        tell_here(ref, Begin(handle, spec, context, admitted))
        return ref

    def recover(
        self, handle: CellHandle, record: CellRecord, context: CellContext
    ) -> pykka.ActorRef[Any]:
        """An actor bringing the recorded cell back, on a thread of its own (a replay
        may take long)."""
        ref = CellActor.start()
        ref.tell(Recover(handle, record, context))
        return ref

    def close(self) -> None:
        """Nothing to stop: actors handed out end with their cells."""

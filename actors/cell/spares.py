"""Cell actors started ahead of time: starting an actor's thread costs about as much
as running a short cell."""

from __future__ import annotations

import threading
from typing import Any

import pykka

from cellfleet.actors.base import tell_here
from cellfleet.actors.cell.actor import CellActor
from cellfleet.actors.cell.context import CellContext
from cellfleet.actors.cell.handle import CellHandle
from cellfleet.actors.cell.messages import Begin, Recover
from cellfleet.actors.replay.plan import CellRecord
from cellfleet.actors.runtime.pool import BACKGROUND_DELAY_S
from cellfleet.actors.runtime.protocol import CellSpec
from cellfleet.actors.scheduler import Scheduler
from cellfleet.broker import events as ev


class CellActors:
    """Starts cell actors, keeping one started ahead of time. The next spare is started
    in the background a moment later, so that it does not compete with the cell just
    begun."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._spare: pykka.ActorRef[Any] | None = None
        self._refilling = False
        self._closed = False

    def start(
        self, handle: CellHandle, spec: CellSpec, context: CellContext, admitted: ev.CellAdmitted
    ) -> pykka.ActorRef[Any]:
        """An actor running the cell `spec` (it starts at once)."""
        return self._started(Begin(handle, spec, context, admitted))

    def recover(
        self, handle: CellHandle, record: CellRecord, context: CellContext
    ) -> pykka.ActorRef[Any]:
        """An actor bringing the recorded cell back (it starts at once)."""
        return self._started(Recover(handle, record, context))

    def _started(self, first: Begin | Recover) -> pykka.ActorRef[Any]:
        with self._lock:
            ref, self._spare = self._spare, None
            refill = not self._refilling and not self._closed
            self._refilling |= refill
        if refill:  # first: scheduling may wake the scheduler's thread
            self._scheduler.call_later(BACKGROUND_DELAY_S, self._refill)
        if ref is None:
            ref = CellActor.start()
        if isinstance(first, Begin):  # (a recovery may take long: on the actor's thread)
            tell_here(ref, first)
        else:
            ref.tell(first)
        return ref

    def close(self) -> None:
        """Stop the spare; actors already handed out end with their cells."""
        with self._lock:
            self._closed = True
            ref, self._spare = self._spare, None
        if ref is not None:
            ref.stop()

    def _refill(self) -> None:
        ref: pykka.ActorRef[Any] | None = CellActor.start()
        with self._lock:
            self._refilling = False
            if self._spare is None and not self._closed:
                self._spare, ref = ref, None
        if ref is not None:
            ref.stop()

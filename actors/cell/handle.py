"""What callers of a cell share with its actor (spec §4.1): phase, observer, terminators.

Callers (the session actor, `wait`s) decide synchronously on these few facts, behind the
handle's lock; everything else about a cell belongs to its actor (`actors.cell.actor`),
which they reach with the two requests defined here.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pykka

from cellfleet.actors.cell.deadlines import yield_timeout_ms
from cellfleet.actors.errors import CellAlreadyTerminatingError, CellBusyError
from cellfleet.actors.scheduler import Scheduled
from cellfleet.broker.client import missing_cell
from cellfleet.broker.contract.responses import CellAnswer, ObserveMode
from cellfleet.broker.events import TerminationReason


class Phase(Enum):
    RUNNING = "running"
    TERMINATING = "terminating"
    COMPLETED = "completed"  # committed, buffered until someone observes it
    CLAIMED = "claimed"
    TOMBSTONE = "tombstone"


@dataclass(eq=False)
class Observer:
    """The one caller waiting for a cell's next answer."""

    mode: ObserveMode
    yield_ms: int = 0
    future: Future[CellAnswer] = field(default_factory=Future)
    deadline: float | None = None
    timer: Scheduled | None = None
    # The actor took it on (an exec's observer from the start; a wait's once its request
    # is processed): only then can a `yield_control()` answer it.
    admitted: bool = False
    request: str = ""  # the fleet request it answers (recorded with its answer)

    @property
    def gone(self) -> bool:
        return self.future.cancelled()


def missing(cell_id: str) -> Future[CellAnswer]:
    """The answer for a cell that does not exist (any more)."""
    return missing_cell(cell_id)


class CellHandle:
    """What callers of a cell share with its actor, behind one lock (spec §4.1)."""

    def __init__(self, cell_id: str, max_yield_time_ms: int | None) -> None:
        self.cell_id = cell_id
        self.max_yield_time_ms = max_yield_time_ms
        self.lock = threading.Lock()
        self.phase = Phase.RUNNING
        self.observer: Observer | None = None
        self.terminators: list[Future[CellAnswer]] = []
        self.requests: dict[Future[CellAnswer], str] = {}  # a terminator's fleet request
        self.actor: pykka.ActorRef[Any] | None = None

    def observe(
        self, mode: ObserveMode, yield_time_ms: int = 0, request: str = ""
    ) -> Future[CellAnswer]:
        """Attach an observer (caller thread); raises `CellBusyError`."""
        observer = Observer(mode, yield_timeout_ms(yield_time_ms, self.max_yield_time_ms))
        observer.request = request
        with self.lock:
            if self.phase in (Phase.TERMINATING, Phase.CLAIMED, Phase.TOMBSTONE):
                return missing(self.cell_id)
            if self.observer is not None and not self.observer.gone:
                raise CellBusyError(self.cell_id)
            self.observer = observer
        assert self.actor is not None
        self.actor.tell(ObserveRequest(observer))
        return observer.future

    def terminate(
        self, reason: TerminationReason = TerminationReason.TERMINATE, request: str = ""
    ) -> Future[CellAnswer]:
        """Request termination (caller thread); raises `CellAlreadyTerminatingError`."""
        future: Future[CellAnswer] = Future()
        with self.lock:
            if self.phase is Phase.TOMBSTONE:
                return missing(self.cell_id)
            if self.phase in (Phase.TERMINATING, Phase.CLAIMED):
                if (
                    reason == TerminationReason.SHUTDOWN
                ):  # already ending; the session waits for its close
                    return missing(self.cell_id)
                raise CellAlreadyTerminatingError(self.cell_id)
            claims_completion = self.phase is Phase.COMPLETED
            self.phase = Phase.CLAIMED if claims_completion else Phase.TERMINATING
            self.terminators.append(future)
            if request:
                self.requests[future] = request
        assert self.actor is not None
        self.actor.tell(TerminateRequest(reason))
        return future


@dataclass(frozen=True, slots=True)
class ObserveRequest:
    """A caller attached `observer` (the actor takes it on when it gets this)."""

    observer: Observer


@dataclass(frozen=True, slots=True)
class TerminateRequest:
    reason: TerminationReason

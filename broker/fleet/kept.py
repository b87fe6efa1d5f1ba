"""Answers that reached a fleet client after their caller went away (spec §4.9).

In-process, a caller that cancels its wait is gone before the cell answers again: the
cell keeps what it produced (a completion stays buffered, a yield's output goes in front
of the next answer) for the cell's next observer. Through the fleet, the cancellation
travels to the worker as a `drop`, and an answer the worker sent before the drop reached
it arrives for nobody. Such an answer is kept here, per cell, and given to the cell's
next observer as the cell would have given it: a completion as it is (and the cell's
closed callback waits until then, as the in-process cell's close does), a pending
frontier to the next pending observer as it is, any other answer's output in front of
the next answer.

A dropped request is settled by its answer, by the worker's word that it dropped it,
or by its failure. Until every dropped request of a cell is settled, that cell's next
requests are held here: one sent meanwhile could be answered before the answer it must
carry arrives (a completion's cell is gone at the worker: "not found").

One client's answers are kept for that client's observers only: a cell shared by two
clients whose dropped answer crossed the drop is answered "not found" to the other.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from cellfleet.broker.contract.responses import (
    CellAnswer,
    ContentItem,
    Pending,
    Result,
    Terminated,
    Yielded,
)

R = TypeVar("R", bound=Hashable)


class Step(Enum):
    HOLD = "hold"  # a dropped request of the cell is not settled yet: sent once it is
    ANSWER = "answer"  # answered with the kept answer, not sent
    SEND = "send"  # sent, its answer to carry `before` in front
    FORGET = "forget"  # held, and its caller went away before it could go


@dataclass(frozen=True, slots=True)
class Next:
    """What to do with a request about a cell (see `KeptAnswers.take`)."""

    step: Step
    answer: CellAnswer | None = None  # ANSWER: the kept one
    before: Sequence[ContentItem] = ()  # SEND: kept output for the front of its answer
    closed: bool = False  # ANSWER: the cell closed meanwhile; its callback is due now


def with_front(answer: CellAnswer, before: Sequence[ContentItem]) -> CellAnswer:
    """`answer` with the output `before` in front (a missing cell's has none)."""
    if not before or (isinstance(answer, Result) and answer.missing):
        return answer
    return dataclasses.replace(answer, content_items=[*before, *answer.content_items])


class KeptAnswers(Generic[R]):
    """One session's dropped requests per cell, the answers they left and the
    requests waiting for them. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unsettled: dict[str, set[R]] = {}
        self._kept: dict[str, CellAnswer] = {}
        self._held: dict[str, list[R]] = {}
        self._released: set[R] = set()  # held ones that may go, not taken again yet
        self._closed: set[str] = set()  # closed cells whose kept completion is unclaimed

    def dropped(self, cell: str, request: R) -> bool:
        """The caller of `request` (about `cell`) went away. False if the request was
        held here, never sent: it is forgotten; else it is unsettled until `settled`."""
        with self._lock:
            held = self._held.get(cell, [])
            if request in held:
                held.remove(request)
                return False
            if request in self._released:
                self._released.discard(request)
                return False
            self._unsettled.setdefault(cell, set()).add(request)
            return True

    def settled(
        self,
        cell: str,
        request: R,
        answer: CellAnswer | None,
        before: Sequence[ContentItem] = (),
    ) -> list[R]:
        """A dropped request's end: the answer it got (None: none came; `before`, the
        kept output it was to carry, is kept again). Returns the requests held for
        the cell that may go now."""
        with self._lock:
            waiting = self._unsettled.get(cell)
            if waiting is not None:
                waiting.discard(request)
                if not waiting:
                    del self._unsettled[cell]
            self._keep(
                cell,
                Yielded(cell_id=cell, content_items=list(before)) if answer is None else answer,
            )
            if cell in self._unsettled:
                return []
            released = self._held.pop(cell, [])
            self._released.update(released)
            return released

    def _keep(self, cell: str, answer: CellAnswer) -> None:
        if isinstance(answer, Terminated) or (isinstance(answer, Result) and answer.missing):
            return  # the cell ended for another caller, who has its answer
        if isinstance(answer, Yielded) and not answer.content_items:
            return
        earlier = self._kept.pop(cell, None)
        if earlier is not None:
            answer = with_front(answer, earlier.content_items)
        self._kept[cell] = answer

    def take(self, cell: str, request: R, *, pending: bool, released: bool = False) -> Next:
        """What to do with a new request about `cell`, or a `released` one (`pending`:
        an observer that wants the next pending frontier)."""
        with self._lock:
            if released:
                if request not in self._released:
                    return Next(Step.FORGET)  # (`dropped` meanwhile)
                self._released.discard(request)
            if cell in self._unsettled:
                self._held.setdefault(cell, []).append(request)
                return Next(Step.HOLD)
            kept = self._kept.pop(cell, None)
            if kept is None:
                return Next(Step.SEND)
            if isinstance(kept, Result) or (isinstance(kept, Pending) and pending):
                closed = cell in self._closed
                self._closed.discard(cell)
                return Next(Step.ANSWER, answer=kept, closed=closed)
            # Spec §4.7: an observer that is not a pending one forgets the frontier's ids.
            return Next(Step.SEND, before=kept.content_items)

    def closing(self, cell: str) -> bool:
        """The worker closed `cell`: whether its closed callback waits for the kept
        completion to be claimed (until then the cell is not closed in-process)."""
        with self._lock:
            if isinstance(self._kept.get(cell), Result):
                self._closed.add(cell)
                return True
            return False

    def close(self) -> tuple[list[R], list[str]]:
        """The session ended: the requests still held, and the cells whose closed
        callback waited (both due now); nothing is kept any longer."""
        with self._lock:
            held = [request for requests in self._held.values() for request in requests]
            closed = sorted(self._closed)
            self._unsettled.clear()
            self._kept.clear()
            self._held.clear()
            self._released.clear()
            self._closed.clear()
            return held, closed

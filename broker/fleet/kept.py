"""Answers that reached a fleet client after their caller went away (spec §4.9).

In-process, a caller that cancels its wait is gone before the cell answers again: the
cell keeps what it produced for the cell's next observer (a completion stays buffered,
an exec's first yield is kept apart, other output goes in front of the next answer).
Through the fleet, the cancellation travels to the worker as a `drop`, and an answer the
worker sent before the drop reached it arrives for nobody. Such an answer is kept here,
per cell, and given to the cell's next observer as the cell would have given it: a
completion as it is (and the cell's closed callback waits until then, as the in-process
cell's close does), a pending frontier to the next pending observer as it is, an exec's
first yield to the next waiting observer as it is, any other output in front of the
next answer.

A dropped request is settled by its answer, by the worker's word that it dropped it, or
by its failure. Until every dropped request of a cell is settled, the cell's next
requests are held here, in order (one sent meanwhile could be answered before the answer
it must carry arrives: a completed cell is gone at the worker, "not found"), and they
then go one after another, in the order they came.

Known limits (each needs a drop to cross its answer first):
- Kept answers live in this client's memory: another client of the cell, or this one
  after a restart, finds a kept completion's cell "not found" (the log records it as
  delivered to the dropped request).
- Kept output goes to the first request that takes it: a wait and a terminate held
  together both end with the cell, and only the wait's answer carries it (in-process,
  both answers do).
- A worker older than the `dropped` reply never confirms a drop: the cell's next
  requests wait for the dropped one's answer (at most its yield time).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, NamedTuple, TypeVar

from cellfleet.broker.contract.responses import (
    CellAnswer,
    ContentItem,
    Pending,
    Result,
    Terminated,
    Yielded,
)

R = TypeVar("R", bound=Hashable)


class Asks(Enum):
    """What a request about a cell wants of it."""

    YIELD = "yield"  # the next answer (a wait, `exec`'s observer mode)
    PENDING = "pending"  # the next pending frontier or the end
    TERMINATE = "terminate"  # the end, now
    NOTHING = "nothing"  # no answer (a `yield_now`): only its order matters


class Step(Enum):
    HOLD = "hold"  # a dropped request of the cell is not settled yet: sent once it is
    ANSWER = "answer"  # answered with the kept answer, not sent
    SEND = "send"  # sent, its answer to carry `before` in front


class Settled(NamedTuple):
    """What a dropped request's end makes due (see `KeptAnswers.settled`)."""

    release: bool  # the cell's held requests go now: one `release_next` after another
    closed: bool  # the cell's closed callback, which waited for this answer


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
        self._lock = threading.Condition()
        self._unsettled: dict[str, set[R]] = {}
        self._kept: dict[str, CellAnswer] = {}
        self._initial: set[str] = set()  # cells whose kept answer is an exec's first yield
        self._held: dict[str, deque[tuple[R, Asks]]] = {}
        self._releasing: set[str] = set()  # cells whose held requests are going now
        self._closed: set[str] = set()  # closed cells whose callback waits (`closing`)
        # Requests answered with a kept answer, until `answered`: what to put back if
        # their caller went away meanwhile (and, in `_local`, that they were never sent).
        self._answering: dict[R, tuple[CellAnswer, bool, bool]] = {}
        self._local: set[R] = set()

    def dropped(self, cell: str, request: R) -> bool:
        """The caller of `request` (about `cell`) went away. False if it was held here,
        never sent: it is forgotten; else it is unsettled until `settled`."""
        with self._lock:
            if request in self._local:  # (answered here: `answered` puts it back)
                self._local.discard(request)
                return False
            held = self._held.get(cell, deque())
            for entry in held:
                if entry[0] == request:
                    held.remove(entry)
                    if not held:
                        del self._held[cell]
                        self._lock.notify_all()
                    return False
            self._unsettled.setdefault(cell, set()).add(request)
            return True

    def settled(
        self,
        cell: str,
        request: R,
        answer: CellAnswer | None,
        before: Sequence[ContentItem] = (),
        *,
        first: bool = False,
    ) -> Settled:
        """A dropped request's end: the answer it got (`first`: an exec's, the cell's
        first), or None if none came (then `before`, the kept output it was to carry,
        is kept again)."""
        with self._lock:
            waiting = self._unsettled.get(cell)
            if waiting is not None:
                waiting.discard(request)
                if not waiting:
                    del self._unsettled[cell]
            if answer is None:
                self._keep(cell, Yielded(cell_id=cell, content_items=list(before)), front=True)
            else:
                self._keep(cell, answer, initial=first)
            closed = (
                cell in self._closed
                and cell not in self._unsettled
                and not isinstance(self._kept.get(cell), Result)
            )
            if closed:  # (no completion came to be kept after all)
                self._closed.discard(cell)
            if cell in self._unsettled or cell in self._releasing or not self._held.get(cell):
                return Settled(release=False, closed=closed)
            self._releasing.add(cell)
            return Settled(release=True, closed=closed)

    def answered(self, cell: str, request: R, *, taken: bool, left: bool) -> None:
        """A request `take` or `release_next` answered with a kept answer: `taken` by
        its caller, or not: then the answer is kept again (`left`: its caller cancelled,
        and `dropped` is told, or was)."""
        with self._lock:
            answer, initial, closed = self._answering.pop(request)
            if taken or not left:
                self._local.discard(request)
            if taken:
                return
            self._keep(cell, answer, front=True, initial=initial)
            if closed:
                self._closed.add(cell)

    def put_back(self, cell: str, before: Sequence[ContentItem]) -> None:
        """A request that carried kept output failed: the output waits for the next."""
        with self._lock:
            self._keep(cell, Yielded(cell_id=cell, content_items=list(before)), front=True)

    def _keep(
        self, cell: str, answer: CellAnswer, *, front: bool = False, initial: bool = False
    ) -> None:
        """Keep `answer` for the cell's next observer: after what is kept already, or
        (`front`: its output only) in front of it."""
        if isinstance(answer, Terminated) or (isinstance(answer, Result) and answer.missing):
            return  # the cell ended for another caller, who has its answer
        if isinstance(answer, Yielded) and not answer.content_items:
            return
        earlier = self._kept.pop(cell, None)
        if earlier is not None:
            initial = False
            answer = (
                with_front(earlier, answer.content_items)
                if front
                else with_front(answer, earlier.content_items)
            )
        self._kept[cell] = answer
        if initial and isinstance(answer, Yielded):
            self._initial.add(cell)
        else:
            self._initial.discard(cell)

    def take(self, cell: str, request: R, asks: Asks) -> Next:
        """What to do with a new request about `cell`."""
        with self._lock:
            if cell in self._unsettled or cell in self._releasing:
                self._held.setdefault(cell, deque()).append((request, asks))
                return Next(Step.HOLD)
            return self._decide(cell, request, asks)

    def release_next(self, cell: str, alive: Callable[[R], bool]) -> tuple[R, Next] | None:
        """The next held request of `cell` that is `alive`, and what to do with it; None
        when none is left, or when one that went was dropped since (the rest waits)."""
        with self._lock:
            held = self._held.get(cell, deque())
            while held and cell not in self._unsettled:
                request, asks = held.popleft()
                if alive(request):
                    return request, self._decide(cell, request, asks)
            if not held:
                self._held.pop(cell, None)
            self._releasing.discard(cell)
            self._lock.notify_all()
            return None

    def wait_released(self, timeout: float) -> None:
        """Until no request is held (the session's shutdown goes after them), at most
        `timeout` s (a dropped request is asked again 1 s after its drop)."""
        with self._lock:
            self._lock.wait_for(lambda: not self._held and not self._releasing, timeout)

    def _decide(self, cell: str, request: R, asks: Asks) -> Next:
        if asks is Asks.NOTHING or (kept := self._kept.pop(cell, None)) is None:
            return Next(Step.SEND)
        initial = cell in self._initial
        self._initial.discard(cell)
        if (
            isinstance(kept, Result)
            or (isinstance(kept, Pending) and asks is Asks.PENDING)
            or (initial and asks is Asks.YIELD)
        ):
            closed = cell in self._closed
            self._closed.discard(cell)
            self._answering[request] = (kept, initial, closed)
            self._local.add(request)
            return Next(Step.ANSWER, answer=kept, closed=closed)
        # Spec §4.7: an observer that is not a pending one forgets the frontier's ids.
        return Next(Step.SEND, before=kept.content_items)

    def closing(self, cell: str) -> bool:
        """The worker closed `cell`: whether its closed callback waits for a kept
        completion to be claimed (until then the cell is not closed in-process), or
        for a dropped request, whose answer may be that completion (`settled` says
        when the callback is due after all)."""
        with self._lock:
            if isinstance(self._kept.get(cell), Result) or cell in self._unsettled:
                self._closed.add(cell)
                return True
            return False

    def close(self) -> tuple[list[R], list[R], list[str]]:
        """The session ended: the requests still held (due an answer), the dropped ones
        still unsettled (due nothing), and the cells whose closed callback waited (due
        now); nothing is kept any longer."""
        with self._lock:
            held = [request for entries in self._held.values() for request, _ in entries]
            unsettled = [request for requests in self._unsettled.values() for request in requests]
            closed = sorted(self._closed)
            for table in (self._unsettled, self._kept, self._held):
                table.clear()
            for cells in (self._initial, self._releasing, self._closed):
                cells.clear()
            self._lock.notify_all()
            return held, unsettled, closed

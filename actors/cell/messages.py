"""What a cell actor is told besides its callers' requests (`handle.py`): its cell, and
what its timers, tools and helpers report. Every message is a small frozen record."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cellfleet.actors.cell.context import CellContext
from cellfleet.actors.cell.handle import CellHandle, Observer, ObserveRequest, TerminateRequest
from cellfleet.actors.replay.plan import CellRecord
from cellfleet.actors.runtime.protocol import CellSpec
from cellfleet.broker import events as ev
from cellfleet.broker.tools.invocation import ToolOutcome


@dataclass(frozen=True, slots=True)
class Begin:
    """The cell an actor started ahead of time is for (its first message)."""

    handle: CellHandle
    spec: CellSpec
    context: CellContext
    admitted: ev.CellAdmitted


@dataclass(frozen=True, slots=True)
class Recover:
    """The cell an actor started ahead of time brings back by replay (its first
    message, instead of `Begin`): one its session's previous owner left running."""

    handle: CellHandle
    record: CellRecord
    context: CellContext


@dataclass(frozen=True, slots=True)
class YieldDue:
    """`observer`'s yield deadline passed."""

    observer: Observer


@dataclass(frozen=True, slots=True)
class TimerDue:
    """A JavaScript timer is due."""

    timer_id: int
    due_clock_ms: float


@dataclass(frozen=True, slots=True)
class ToolDone:
    """A nested tool call has its outcome."""

    outcome: ToolOutcome


@dataclass(frozen=True, slots=True)
class Poll:
    """JavaScript is still running: collect what it reported."""


@dataclass(frozen=True, slots=True)
class NotificationsSettled:
    """Some notifications were delivered (or failed): record them."""


@dataclass(frozen=True, slots=True)
class AdmitDue:
    """The cell has run for `ADMIT_WITHIN_S`: admit it if nothing did yet."""


@dataclass(frozen=True, slots=True)
class Release:
    """Hand out held answers even though JavaScript is still running."""


@dataclass(frozen=True, slots=True)
class CleanUp:
    """The terminal answer went out a moment ago: finish closing the cell."""


@dataclass(frozen=True, slots=True)
class Continue:
    """Go on with what the runtime reported, on the actor's own thread: its ending,
    which a message handled on another thread leaves there (`_process_incoming`), or
    what a poll on the scheduler's thread found."""


@dataclass(frozen=True, slots=True)
class Abandon:
    """A newer owner took the session over: end the cell here at once, writing nothing,
    and say so through `done`."""

    done: threading.Event = field(default_factory=threading.Event)


# Every message but the runtime's own (those come from the V8 thread).
OWN_MESSAGES = (
    Abandon,
    ObserveRequest,
    TerminateRequest,
    YieldDue,
    TimerDue,
    ToolDone,
    Poll,
    Release,
    NotificationsSettled,
    AdmitDue,
    CleanUp,
    Continue,
)

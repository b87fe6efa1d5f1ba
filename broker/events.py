"""Every lifecycle event of a session and its cells: frozen, typed records.

All events share one envelope: `session`, `cell` (empty for session-level events),
`seq` (the writer's own counter: per cell for a cell actor, per session for the session
actor; with `cell` it identifies an event, so a retried append is recognisable) and
`at_ms` (wall clock when the event was decided). `broker.codec` is the only code that
knows how they are stored; projections fold them.

Inputs that reach the JavaScript of a cell (`ToolCompleted`, `ToolFailed`,
`TimerFired`) carry the clock reading delivered with them, so replaying a cell's events
into a fresh runtime reproduces it exactly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, TypeAlias, TypedDict

from cellfleet.broker.contract.responses import ContentItem
from cellfleet.broker.contract.tools import JsonValue


def wall_clock_ms() -> float:
    """The clock events are stamped with (and inputs carry into JavaScript): ms since epoch."""
    return time.time() * 1000.0


class ObservationKind(StrEnum):
    """What an observer was answered with (`ObservationDelivered.kind`)."""

    YIELDED = "yielded"
    PENDING = "pending"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class TerminationReason(StrEnum):
    """Why a cell was terminated (`CellTerminated.reason`)."""

    TERMINATE = "terminate"  # `wait {terminate: true}`
    SHUTDOWN = "shutdown"  # the session shut down


class Envelope(TypedDict):
    """The envelope fields of an event, for `SomeEvent(**envelope, ...)`."""

    session: str
    cell: str
    seq: int
    at_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The envelope every event carries."""

    TYPE: ClassVar[str] = ""
    session: str
    cell: str = ""
    seq: int = 0
    at_ms: float = 0.0


# -- session ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOpened(Event):
    TYPE: ClassVar[str] = "session_opened"
    max_yield_time_ms: int | None = None
    # What V8 takes from the environment (TZ, LANG/LC_ALL): Date's local time and the
    # default locale of Intl. A replay runs under the same ("" where not recorded).
    time_zone: str = ""
    locale: str = ""
    label: str = ""  # the harness's own name for the session (Codex's `sessionId`)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSetDefined(Event):
    """A set of nested tools the session's cells may be given, recorded once and named
    by `digest` (`CellAdmitted.tools_digest`): a cell's admission does not carry it."""

    TYPE: ClassVar[str] = "tool_set_defined"
    digest: str
    tools: tuple[Mapping[str, JsonValue], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownBegun(Event):
    TYPE: ClassVar[str] = "shutdown_begun"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownFinished(Event):
    TYPE: ClassVar[str] = "shutdown_finished"


# -- cell lifecycle -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CellAdmitted(Event):
    """A cell was created with id `cell`; everything its runtime starts from."""

    TYPE: ClassVar[str] = "cell_admitted"
    call_id: str  # the exec tool call that created it
    source: str
    yield_time_ms: int | None = None
    max_output_tokens: int | None = None
    tools: tuple[Mapping[str, JsonValue], ...] = ()  # its nested tools (older logs), or
    tools_digest: str = ""  # the `ToolSetDefined` that lists them
    seed: tuple[int, int, int, int] = (0, 0, 0, 0)
    clock_ms: float = 0.0
    # The session's stored values the cell starts from: those after this many merging
    # completions (`projections.stored` counts them as `version`).
    stored_version: int = 0
    request: str = ""  # the fleet request that asked for it (a re-sent one finds it)
    # The V8 and prelude that ran it (`pool.runtime_identity`); "" in older logs. A replay
    # under another one may differ: a divergence then names both.
    runtime: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CellStarted(Event):
    TYPE: ClassVar[str] = "cell_started"
    # Its context's start and output paths had run before (an idle pool warms them):
    # how much stack the prelude's frames take, hence how deep the cell's recursion gets
    # before it overflows. A replay starts from the same. (Older logs: always.)
    warmed: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputProduced(Event):
    TYPE: ClassVar[str] = "output_produced"
    item: ContentItem = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class YieldRequested(Event):
    TYPE: ClassVar[str] = "yield_requested"


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservationDelivered(Event):
    """An observer was answered; `outputs` is how many outputs it had seen in all."""

    TYPE: ClassVar[str] = "observation_delivered"
    kind: ObservationKind
    outputs: int = 0
    pending_tool_call_ids: tuple[str, ...] = ()
    # The fleet requests it answered: one re-sent after its worker died is answered
    # again from the log (`projections.answers`).
    requests: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CellCompleted(Event):
    """Terminal: the script finished (or failed); its stored writes were merged."""

    TYPE: ClassVar[str] = "cell_completed"
    error_text: str | None = None
    stored_writes: Mapping[str, str] = field(default_factory=dict)  # key -> JSON text
    by_host: bool = False  # a limit of the host's ended it, not its own script


@dataclass(frozen=True, slots=True, kw_only=True)
class CellTerminated(Event):
    """Terminal: stopped by `wait {terminate: true}` or shutdown; writes discarded."""

    TYPE: ClassVar[str] = "cell_terminated"
    reason: TerminationReason = TerminationReason.TERMINATE


@dataclass(frozen=True, slots=True, kw_only=True)
class CellClosed(Event):
    TYPE: ClassVar[str] = "cell_closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class CellRecovered(Event):
    """A new owner replayed a cell its previous owner left running: `replayed` events
    were made again and found equal, in `elapsed_ms`. With a `problem` the replay could
    not bring it back (the cell is then ended as lost, and `problem` says why)."""

    TYPE: ClassVar[str] = "cell_recovered"
    replayed: int = 0
    elapsed_ms: float = 0.0
    problem: str | None = None


# -- nested tools -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolRequested(Event):
    TYPE: ClassVar[str] = "tool_requested"
    call_id: str  # "tool-N"
    name: str  # JS global name
    kind: str  # "function" | "freeform"
    input: JsonValue = None
    idempotency_key: str = ""
    # The tools (a registry's fingerprint) whose workers it was sent to ("": its owner
    # or its harness ran it): whoever recovers its cell waits for their outcome, whatever
    # its own tools are (other tools, or this one `local=True` since).
    sent_to: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCompleted(Event):
    TYPE: ClassVar[str] = "tool_completed"
    call_id: str
    result: JsonValue = None
    clock_ms: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolFailed(Event):
    TYPE: ClassVar[str] = "tool_failed"
    call_id: str
    error: str
    clock_ms: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolAttemptFailed(Event):
    """A retryable failure of one attempt; the worker tries again (its policy allowing)."""

    TYPE: ClassVar[str] = "tool_attempt_failed"
    call_id: str
    attempt: int
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResultDelivered(Event):
    """The cell handed a worker-recorded outcome to its JavaScript (input order, clock)."""

    TYPE: ClassVar[str] = "tool_result_delivered"
    call_id: str
    clock_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCancelled(Event):
    TYPE: ClassVar[str] = "tool_cancelled"
    call_id: str


# -- timers and notifications -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerSet(Event):
    TYPE: ClassVar[str] = "timer_set"
    timer_id: int
    delay_ms: int
    due_clock_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerCleared(Event):
    TYPE: ClassVar[str] = "timer_cleared"
    timer_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(Event):
    TYPE: ClassVar[str] = "timer_fired"
    timer_id: int
    clock_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationSent(Event):
    TYPE: ClassVar[str] = "notification_sent"
    notification_id: int
    call_id: str  # the exec call the notification belongs to
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationDelivered(Event):
    TYPE: ClassVar[str] = "notification_delivered"
    notification_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationCancelled(Event):
    TYPE: ClassVar[str] = "notification_cancelled"
    notification_id: int


AnyEvent: TypeAlias = (
    SessionOpened
    | ToolSetDefined
    | ShutdownBegun
    | ShutdownFinished
    | CellAdmitted
    | CellStarted
    | OutputProduced
    | YieldRequested
    | ObservationDelivered
    | CellCompleted
    | CellTerminated
    | CellClosed
    | CellRecovered
    | ToolRequested
    | ToolCompleted
    | ToolFailed
    | ToolAttemptFailed
    | ToolResultDelivered
    | ToolCancelled
    | TimerSet
    | TimerCleared
    | TimerFired
    | NotificationSent
    | NotificationDelivered
    | NotificationCancelled
)

EVENT_TYPES: Mapping[str, type[AnyEvent]] = {
    cls.TYPE: cls
    for cls in (
        SessionOpened, ToolSetDefined, ShutdownBegun, ShutdownFinished, CellAdmitted,
        CellStarted,
        OutputProduced, YieldRequested, ObservationDelivered, CellCompleted, CellTerminated,
        CellClosed, CellRecovered, ToolRequested, ToolCompleted, ToolFailed, ToolAttemptFailed,
        ToolResultDelivered, ToolCancelled, TimerSet,
        TimerCleared, TimerFired, NotificationSent, NotificationDelivered,
        NotificationCancelled,
    )
}  # fmt: skip


def admitted_tools(
    admitted: CellAdmitted, tool_sets: Mapping[str, tuple[Mapping[str, JsonValue], ...]]
) -> tuple[Mapping[str, JsonValue], ...] | None:
    """The nested tools of an admitted cell: inline, or from the `ToolSetDefined` events
    seen so far (`tool_sets`: digest -> tools); None when its set is not among them."""
    if not admitted.tools_digest:
        return admitted.tools
    return tool_sets.get(admitted.tools_digest)

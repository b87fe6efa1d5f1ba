"""How a cell's nested tool calls reach their handlers (spec §3.2, §3.3).

A dispatcher (`broker.tools.dispatch.BrokerDispatcher`) takes a `ToolInvocation` and later
reports its `ToolOutcome` through a callback; the host-side payload rules of spec §3.2
are checked here, before any handler runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cellfleet.broker.contract import texts
from cellfleet.broker.contract.tools import JsonValue, ToolKind

ToolHandler = Callable[[JsonValue], JsonValue]


class ToolCallError(Exception):
    """Raised by a handler: the JS promise rejects with exactly this message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolInvocation:
    session: str
    cell: str
    call_id: str  # "tool-N"
    name: str  # JS global name
    raw_name: str  # the harness's tool name
    kind: ToolKind
    input: JsonValue
    namespace: str | None = None  # the harness's namespace of it (Codex's host protocol)
    # The tools (a registry's fingerprint) whose workers a dead owner sent it to (its
    # `tool_requested` says so): adopted with its cell, it stays theirs, never run again
    # here nor sent to other workers (`local.LocalTools.adopt`, `dispatch`).
    sent_to: str = ""

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.session, self.cell, self.call_id)


def idempotency_key(session: str, cell: str, call_id: str) -> str:
    """What names a nested tool call everywhere (workers dedupe and cancel by it)."""
    return f"{session}/{cell}/{call_id}"


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """A call's result or error. `recorded`: a worker already appended it to the session's
    log, with `clock_ms` as the clock reading JavaScript must see with it."""

    call_id: str
    result: JsonValue = None
    error: str | None = None
    clock_ms: float | None = None
    recorded: bool = False


@dataclass(frozen=True, slots=True)
class ToolReply:
    """What a worker answers the calling host with (and keeps with the call's record)."""

    key: str  # the call's idempotency key
    outcome: ToolOutcome


class CancelHandle:
    """Tells a running handler that its result is no longer wanted."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def cancel(self) -> None:
        self.event.set()

    def drop(self) -> None:
        """Forget the call here without telling anyone (this process was fenced off: the
        session's new owner may have adopted the call, which must run on)."""
        self.event.set()


class ToolDispatcher(Protocol):
    """Where a session's nested tool calls go: the worker fleet over Redis
    (`dispatch.BrokerDispatcher`), the harness itself (`delegate.DelegateDispatcher`),
    and local tools in front of either (`local.LocalTools`)."""

    @property
    def sends_every_call(self) -> bool:
        """Calls a cell requested and no longer needs before they were sent are sent and
        then withdrawn (Codex's host does so), rather than never sent."""
        ...

    @property
    def replies(self) -> str:
        """The stream its outcomes come back on ("": none, the harness answers
        directly); a session's owner names it in the log, for calls a dead owner sent
        (`adopt`)."""
        ...

    @property
    def outcomes_here(self) -> bool:
        """A cell may handle an outcome on the thread that delivers it (when the cell is
        idle), which then writes the cell's log meanwhile: not a thread that serves
        other sessions under a lock."""
        ...

    def sends_to(self, invocation: ToolInvocation) -> str:
        """The tools (a registry's fingerprint) whose workers of the fleet run the call:
        its `ToolRequested` is appended before it goes out, naming them (a worker may
        run it while this process dies). "": this process or its harness runs it, and
        it is appended with a later batch (the outcome's)."""
        ...

    def dispatch_batch(
        self,
        calls: Sequence[tuple[ToolInvocation, Callable[[ToolOutcome], None]]],
        before: Sequence[Any] = (),
        check_before: Callable[[Sequence[Any]], None] | None = None,
    ) -> list[CancelHandle]:
        """Send `calls` (each outcome reported through its callback), after appending the
        log commands `before` (their `tool_requested` events): one round trip.
        `check_before` raises the log's refusal among the replies of `before` (then no
        call stays sent)."""
        ...

    def adopt(
        self, calls: Sequence[tuple[ToolInvocation, Callable[[ToolOutcome], None]]]
    ) -> list[CancelHandle]:
        """Take on calls an earlier owner of their session sent before it stopped (their
        cell is recovered here): each outcome is reported through its callback."""
        ...

    def close(self) -> None:
        """Stop: no call is sent any more."""
        ...


def payload_error(invocation: ToolInvocation) -> str | None:
    """The host-side input check of spec §3.2, or None if the input is acceptable."""
    if invocation.raw_name == "exec":
        return texts.EXEC_CANNOT_INVOKE_ITSELF
    if invocation.kind is ToolKind.FREEFORM:
        if not isinstance(invocation.input, str):
            return texts.tool_expects_string(invocation.raw_name)
    elif invocation.input is not None and not isinstance(invocation.input, dict):
        return texts.tool_expects_object(invocation.raw_name)
    return None

"""Nested tool calls answered by the harness itself (Codex's host protocol: the client
is the tool worker), instead of the worker fleet over Redis (`dispatch.py`).

The cell's `tool_requested` events are appended with its outcome (`sends_to` is
empty); each call goes to the harness through `send` and its outcome comes back through
`answer`. The outcome is not recorded by anyone else: the cell records it (with its
clock) while JavaScript goes on with it, as for a call a dispatcher refuses; nothing
the cell does next is recorded or seen before that write returned. A call the cell no longer
needs is withdrawn (`withdraw`: Codex's `delegate/cancel`); its late answer is dropped.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from cellfleet.broker.contract import texts
from cellfleet.broker.journal import run_retrying
from cellfleet.broker.redis.link import Command, Link
from cellfleet.broker.tools.invocation import CancelHandle, ToolInvocation, ToolOutcome

MAX_IN_FLIGHT = 4096  # Codex's `delegate-capacity-4096`

Send = Callable[[int, ToolInvocation], None]  # (delegate id, call): ask the harness


class _Withdraw(CancelHandle):
    def __init__(self, dispatcher: DelegateDispatcher, delegate_id: int) -> None:
        super().__init__()
        self._dispatcher = dispatcher
        self._delegate_id = delegate_id

    def cancel(self) -> None:
        super().cancel()
        self._dispatcher.withdraw(self._delegate_id)


class DelegateDispatcher:
    """Sends calls to the harness (`send`), routes its answers (`answer`) to cells.

    The harness checks a call's input itself (Codex does, before running the tool):
    every call reaches it, even one withdrawn before it was sent.
    """

    sends_every_call = True
    replies = ""  # (the harness answers on this connection)

    def __init__(
        self,
        link: Link,
        send: Send,
        withdrawn: Callable[[int], None],
        ids: itertools.count[int],
        *,
        outcomes_here: bool = True,
    ) -> None:
        # (False on a fleet worker: its answers come on the thread that serves every
        # session of the worker.)
        self.outcomes_here = outcomes_here
        self._link = link
        self._send = send
        self._withdrawn = withdrawn  # tell the harness a call is no longer needed
        self._ids = ids  # shared with the connection's other requests to the harness
        self._lock = threading.Lock()
        # delegate id -> (the call's idempotency key, its id, where its outcome goes)
        self._waiting: dict[int, tuple[str, str, Callable[[ToolOutcome], None]]] = {}

    def sends_to(self, invocation: ToolInvocation) -> str:
        """No workers: the harness is this process's own client; a call it runs dies
        with the connection if this process does, so recording the request first buys
        nothing. It goes with the outcome (one durable write per call)."""
        del invocation
        return ""

    def dispatch_batch(
        self,
        calls: Sequence[tuple[ToolInvocation, Callable[[ToolOutcome], None]]],
        before: Sequence[Command] = (),
        check_before: Callable[[Sequence[Any]], None] | None = None,
    ) -> list[CancelHandle]:
        if before:  # the calls' `tool_requested` events: in the log before the harness asks
            replies = run_retrying(lambda: self._link.run(before, raise_errors=False))
            if check_before is not None:
                check_before(replies)
        handles: list[CancelHandle] = []
        for invocation, on_outcome in calls:
            problem = None
            with self._lock:
                if len(self._waiting) >= MAX_IN_FLIGHT:
                    problem = texts.too_many_tool_calls(MAX_IN_FLIGHT)
                delegate_id = next(self._ids)
                if problem is None:
                    self._waiting[delegate_id] = (
                        invocation.idempotency_key,
                        invocation.call_id,
                        on_outcome,
                    )
            if problem is not None:
                handles.append(CancelHandle())
                on_outcome(ToolOutcome(invocation.call_id, error=problem))
                continue
            handles.append(_Withdraw(self, delegate_id))
            self._send(delegate_id, invocation)
        return handles

    def adopt(
        self, calls: Sequence[tuple[ToolInvocation, Callable[[ToolOutcome], None]]]
    ) -> list[CancelHandle]:
        """Calls sent to an earlier connection's harness died with it: this harness is
        asked again."""
        return self.dispatch_batch(calls)

    def answer(
        self, delegate_id: int, result: Any, error: str | None, key: str | None = None
    ) -> bool:
        """The harness answered; False if no call waits for it (withdrawn, unknown, or
        not the call `key` names: an answer to an earlier owner's call of that id)."""
        with self._lock:
            waiting = self._waiting.get(delegate_id)
            if waiting is None or key not in (None, waiting[0]):
                return False
            del self._waiting[delegate_id]
        _, call_id, on_outcome = waiting
        on_outcome(ToolOutcome(call_id, result=result, error=error))
        return True

    def withdraw(self, delegate_id: int) -> None:
        with self._lock:
            waiting = self._waiting.pop(delegate_id, None)
        if waiting is not None:
            self._withdrawn(delegate_id)

    def close(self) -> None:
        """Nothing to stop: the connection's end fails the calls waiting (`fail_all`)."""

    def fail_all(self, error: str) -> None:
        """The harness is gone: every waiting call fails with `error`."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for _, call_id, on_outcome in waiting.values():
            on_outcome(ToolOutcome(call_id, error=error))

"""Local tools: nested calls of tools registered with `local=True` run in the process that
runs the cell, each on a thread of its own (started on demand, reused, a daemon: one
blocked handler holds nobody else's call, nor the process's exit); every other call
goes on to `remote` (the tool workers over Redis, `dispatch.py`).

A local call crosses neither Redis nor another process. Its `ToolRequested` is not
appended before it runs: the cell appends it with its outcome, in one durable write
after the handler returned (`sends_to` is empty), while JavaScript goes on with
the outcome; nothing the cell does next is recorded or seen before that write returned
(`Effects.tool_done`). A crash before that write loses the call with its cell's
unrecorded rest, and the recovered cell makes the call again: local tools run at least
once, like a tool worker's calls (Temporal's local activities make the same trade). A
local tool's failed attempts (its retry policy applies as anywhere) are not recorded,
only its outcome: its request is not in the log before that.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import orjson

from cellfleet.broker.contract import texts
from cellfleet.broker.crash import crash_point
from cellfleet.broker.threads import OnDemandThreads
from cellfleet.broker.tools.invocation import (
    CancelHandle,
    ToolDispatcher,
    ToolInvocation,
    ToolOutcome,
    payload_error,
)
from cellfleet.broker.tools.registry import ToolContext, ToolRegistry
from cellfleet.broker.tools.running import run_call

MAX_IN_FLIGHT_PER_SESSION = 256  # as the tool workers' (`dispatch.py`), counted apart

Call = tuple[ToolInvocation, Callable[[ToolOutcome], None]]


def with_local_tools(registry: ToolRegistry, remote: ToolDispatcher) -> ToolDispatcher:
    """`remote`, or, if `registry` has local tools, `LocalTools` in front of it."""
    if any(spec.local for spec in map(registry.spec, registry.names) if spec is not None):
        return LocalTools(registry, remote)
    return remote


class LocalTools:
    """Runs the calls of `registry`'s local tools here, and sends the others to `remote`."""

    def __init__(self, registry: ToolRegistry, remote: ToolDispatcher) -> None:
        self.registry = registry
        self.remote = remote
        self._local = frozenset(
            name for name in registry.names if (spec := registry.spec(name)) and spec.local
        )
        self._threads = OnDemandThreads("local-tool", "local tools are closed: the host stopped")
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()

    @property
    def sends_every_call(self) -> bool:
        return self.remote.sends_every_call

    @property
    def replies(self) -> str:
        return self.remote.replies

    @property
    def outcomes_here(self) -> bool:
        return self.remote.outcomes_here

    def sends_to(self, invocation: ToolInvocation) -> str:
        return "" if invocation.raw_name in self._local else self.remote.sends_to(invocation)

    def dispatch_batch(
        self,
        calls: Sequence[Call],
        before: Sequence[Any] = (),
        check_before: Callable[[Sequence[Any]], None] | None = None,
    ) -> list[CancelHandle]:
        send = partial(self.remote.dispatch_batch, before=before, check_before=check_before)
        return self._split(calls, send, always=bool(before))

    def adopt(self, calls: Sequence[Call]) -> list[CancelHandle]:
        """Calls a dead owner had sent: remote ones are taken on where they run (also
        one of a tool made local since); a local one died with that owner, so it runs
        again here."""
        return self._split(calls, self.remote.adopt, always=False)

    def _split(
        self,
        calls: Sequence[Call],
        remote: Callable[[list[Call]], list[CancelHandle]],
        *,
        always: bool,
    ) -> list[CancelHandle]:
        """The handles of `calls`, in order: the remote ones through `remote` (called
        also without any if `always`), the local ones run here."""
        indexes = [
            i
            for i, (call, _) in enumerate(calls)
            if call.raw_name not in self._local or call.sent_to
        ]
        handles: dict[int, CancelHandle] = {}
        if indexes or always:
            sent = remote([calls[i] for i in indexes])
            handles.update(zip(indexes, sent, strict=True))
        for index, (invocation, on_outcome) in enumerate(calls):
            if index not in handles:
                handles[index] = self._run(invocation, on_outcome)
        return [handles[index] for index in range(len(calls))]

    def close(self) -> None:
        """Stop taking calls (handlers still running finish on their threads), and close
        `remote`."""
        self._threads.shutdown()
        self.remote.close()

    def _run(
        self, invocation: ToolInvocation, on_outcome: Callable[[ToolOutcome], None]
    ) -> CancelHandle:
        problem = payload_error(invocation)
        if problem is None:
            with self._lock:
                if self._in_flight[invocation.session] >= MAX_IN_FLIGHT_PER_SESSION:
                    problem = texts.too_many_tool_calls(MAX_IN_FLIGHT_PER_SESSION)
                else:
                    self._in_flight[invocation.session] += 1
        if problem is not None:
            on_outcome(ToolOutcome(invocation.call_id, error=problem))
            return CancelHandle()
        # The handler gets a copy: the input is recorded after it ran, as the cell sent it.
        invocation = dataclasses.replace(
            invocation, input=orjson.loads(orjson.dumps(invocation.input))
        )
        handle = _LocalCall(self, invocation.session)
        context = ToolContext(idempotency_key=invocation.idempotency_key, cancelled=handle.event)

        def run() -> None:
            try:
                if handle.event.is_set():  # cancelled before its turn: never run
                    return
                result, error = run_call(self.registry, invocation, context)
                if error is None:  # a copy: the handler may keep and change what it returned
                    result = orjson.loads(orjson.dumps(result))
                crash_point("local_tool_ran")
                on_outcome(ToolOutcome(invocation.call_id, result=result, error=error))
            finally:
                handle.end()

        try:
            self._threads.submit(run)
        except RuntimeError:  # closed: this process is stopping, its cells with it
            handle.end()
        return handle

    def _ended(self, session: str) -> None:
        with self._lock:
            self._in_flight[session] -= 1
            if not self._in_flight[session]:
                del self._in_flight[session]


class _LocalCall(CancelHandle):
    """A local call's place in its session's in-flight count, given back once: when the
    call ends or when it is cancelled (its handler may run on, unheeded)."""

    def __init__(self, tools: LocalTools, session: str) -> None:
        super().__init__()
        self._tools = tools
        self._session = session
        self._counted = True
        self._lock = threading.Lock()

    def cancel(self) -> None:
        super().cancel()
        self.end()

    def end(self) -> None:
        with self._lock:
            counted, self._counted = self._counted, False
        if counted:
            self._tools._ended(self._session)

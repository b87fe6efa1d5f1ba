"""A host's side of nested tool calls over Redis (the worker side is broker/tools/worker.py).

`dispatch` puts the call on its session's calls stream of these tools
(`cf:tools:{R.P}:calls`, read by the worker fleet's consumer group) and remembers whom
to tell. Workers record the outcome in the session's log first and then answer on
this host's replies stream; a reader thread routes each answer to its cell. Outcomes
arrive with `recorded=True` and the clock reading the worker recorded, which the cell
delivers into JavaScript unchanged.

Bounds: at most `max_in_flight_per_session` calls of one session are outstanding; a
call beyond that fails at once with a clear message rather than queueing without end.
Cancelling a call marks it in the session's `tools` hash (a worker that has not started
it skips it) and publishes it (a running handler's `ToolContext.cancelled` is set).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis

from cellfleet.broker import codec, crash
from cellfleet.broker.contract import texts
from cellfleet.broker.journal import run_retrying, tool_cancellation
from cellfleet.broker.keys import (
    DEFAULT_KEYS,
    TOOL_WORKERS_GROUP,
    Keys,
    tool_call_field,
    tool_call_partition,
)
from cellfleet.broker.redis.link import WAKE_FIELD, Command, link_to, wake_reader
from cellfleet.broker.tools.invocation import (
    CancelHandle,
    ToolInvocation,
    ToolOutcome,
    payload_error,
)

log = logging.getLogger(__name__)
DEFAULT_MAX_IN_FLIGHT_PER_SESSION = 256
TRIM_EVERY = 128  # replies; an idle reader (a block that timed out) trims at once
# A host's replies stream outlives its reader (a killed host) by this much at most: the
# reader renews it every `REPLIES_RENEW_S`, and each reply a tool worker adds renews it.
REPLIES_TTL_MS = 300_000
REPLIES_RENEW_S = 10.0


def ensure_group(client: redis.Redis, calls: str) -> bool:
    """Create the workers' consumer group on a calls stream (idempotent); whether it
    was missing."""
    try:
        client.xgroup_create(calls, TOOL_WORKERS_GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
        return False
    return True


@dataclass(slots=True)
class _Waiting:
    session: str
    on_outcome: Callable[[ToolOutcome], None]
    entry_id: Any = None  # the call's entry in the calls stream


class _BrokerCancel(CancelHandle):
    def __init__(self, dispatcher: BrokerDispatcher, invocation: ToolInvocation) -> None:
        super().__init__()
        self._dispatcher = dispatcher
        self._invocation = invocation

    def cancel(self) -> None:
        super().cancel()
        self._dispatcher.cancel(self._invocation)

    def drop(self) -> None:
        super().drop()
        self._dispatcher.withdraw_unsent(self._invocation, delete=False)


class BrokerDispatcher:
    """Sends tool calls to the worker fleet; routes their outcomes back to cells."""

    sends_every_call = False  # a call withdrawn before it was sent never reaches a worker
    # Not on its reader, which serves every session of the host (and an outcome there
    # would overtake a caller's drop of its observer, on its way through Redis, more
    # often than it does now).
    outcomes_here = False

    def __init__(
        self,
        client: redis.Redis,
        *,
        registry: str,
        host_id: str | None = None,
        keys: Keys = DEFAULT_KEYS,
        max_in_flight_per_session: int = DEFAULT_MAX_IN_FLIGHT_PER_SESSION,
    ) -> None:
        self.client = client
        self.keys = keys
        self.registry = registry  # its calls streams are read by the workers of these tools
        self._link = link_to(client)
        self.host_id = host_id or uuid.uuid4().hex[:12]
        self.replies = keys.host_replies(self.host_id)
        self.max_in_flight_per_session = max_in_flight_per_session
        self._waiting: dict[str, _Waiting] = {}
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        for stream in keys.tool_call_streams(registry):
            ensure_group(client, stream)
        self._reader = threading.Thread(target=self._read_replies, name="tool-replies", daemon=True)
        self._reader.start()

    def sends_to(self, invocation: ToolInvocation) -> str:
        del invocation
        return self.registry

    def dispatch(
        self, invocation: ToolInvocation, on_outcome: Callable[[ToolOutcome], None]
    ) -> CancelHandle:
        return self.dispatch_batch([(invocation, on_outcome)])[0]

    def dispatch_batch(
        self,
        calls: Sequence[tuple[ToolInvocation, Callable[[ToolOutcome], None]]],
        before: Sequence[Command] = (),
        check_before: Callable[[Sequence[Any]], None] | None = None,
    ) -> list[CancelHandle]:
        """Send calls in one round trip; the commands `before` go ahead of them (the
        cell's `tool_requested` events: recorded before any worker sees the call).

        If the log refused `before` (`check_before` raises: this process was fenced
        off), the calls are withdrawn at once (a worker that read one in between is
        told to cancel it) and the refusal is raised."""
        handles: list[CancelHandle] = []
        accepted: list[tuple[ToolInvocation, _Waiting]] = []
        for invocation, on_outcome in calls:
            handles.append(_BrokerCancel(self, invocation))
            problem = payload_error(invocation)
            waiting = _Waiting(invocation.session, on_outcome)
            if problem is None:
                with self._lock:
                    if self._in_flight[invocation.session] >= self.max_in_flight_per_session:
                        problem = texts.too_many_tool_calls(self.max_in_flight_per_session)
                    else:
                        self._in_flight[invocation.session] += 1
                        self._waiting[_call_key(invocation)] = waiting
                        accepted.append((invocation, waiting))
            if problem is not None:
                on_outcome(ToolOutcome(invocation.call_id, error=problem))

        commands = [
            *before,
            *(self._call_command(invocation) for invocation, _ in accepted),
        ]
        if commands:
            if before and crash.armed("tool_unsent"):  # (the write cut after the log's part)
                self._link.run(list(before))
                crash.crash_point("tool_unsent")
            replies = run_retrying(lambda: self._link.run(commands, raise_errors=False))
            with self._lock:
                for (_, waiting), entry_id in zip(
                    accepted, replies[len(replies) - len(accepted) :], strict=True
                ):
                    waiting.entry_id = entry_id
            errors = [reply for reply in replies if isinstance(reply, redis.ResponseError)]
            if errors:
                # The log did not take the calls' `tool_requested`: their entries go, and
                # nothing else is written (a call of this cell is not marked cancelled:
                # a newer owner that recovers the cell makes the same call, which must run).
                for invocation, _ in accepted:
                    self.withdraw_unsent(invocation)
                if check_before is not None:
                    check_before(replies[: len(before)])
                raise errors[0]
        return handles

    def adopt(
        self, calls: Sequence[tuple[ToolInvocation, Callable[[ToolOutcome], None]]]
    ) -> list[CancelHandle]:
        """Take on calls that an earlier owner of their session sent before it stopped:
        their outcomes come to this host from now on (the session's `replies`, set when
        this process opened it; see record_tool_outcome.lua), and one recorded already
        is reported at once. Nothing is sent: a call never runs twice."""
        handles: list[CancelHandle] = []
        with self._lock:
            for invocation, on_outcome in calls:
                handles.append(_BrokerCancel(self, invocation))
                self._in_flight[invocation.session] += 1
                self._waiting[_call_key(invocation)] = _Waiting(invocation.session, on_outcome)
        # Waited for first, looked up second: an outcome recorded before this process
        # opened the session is in the hash; one recorded since comes to its replies.
        commands: list[Command] = [
            (
                "HGET",
                self.keys.session(invocation.session).tools,
                tool_call_field(invocation.cell, invocation.call_id),
            )
            for invocation, _ in calls
        ]
        states = run_retrying(lambda: self._link.run(commands)) if commands else []
        unrecorded = []
        for (invocation, _), state in zip(calls, states, strict=True):
            if state is None:
                unrecorded.append(invocation)
            elif state != b"cancelled":  # (cancelled: its cell was ending)
                waiting = self._forget(_call_key(invocation))
                if waiting is not None:  # (else its reply came meanwhile)
                    waiting.on_outcome(codec.decode_tool_reply(state).outcome)
        if unrecorded:
            try:
                self._send_unsent(unrecorded)
            except redis.RedisError as error:  # (they wait; a terminate still ends them)
                log.warning("adopted tool calls not checked: %s", error)
        return handles

    def _send_unsent(self, calls: list[ToolInvocation]) -> None:
        """Send again the adopted calls that no tool worker has: its owner was killed in
        the middle of its dispatch (the log has the call's `tool_requested`, the calls
        stream never got the call). One still in the stream (a worker holds it, or has
        yet to read it) is left alone; one sent again is looked up first by the worker
        that reads it (its outcome may have been recorded since): no call runs twice."""
        by_stream: dict[str, list[ToolInvocation]] = {}
        for invocation in calls:
            by_stream.setdefault(self._stream_of(invocation), []).append(invocation)
        for stream, invocations in by_stream.items():
            entries: Any = run_retrying(partial(self.client.xrange, stream))
            present = {
                (fields.get(b"session"), fields.get(b"cell"), fields.get(b"call_id"))
                for _, fields in entries
            }
            for invocation in invocations:
                named = (
                    invocation.session.encode(),
                    invocation.cell.encode(),
                    invocation.call_id.encode(),
                )
                if named in present:
                    continue
                fields = [*codec.encode_tool_call(invocation, self.replies), "handed_back", "1"]
                command: Command = ("XADD", stream, "*", *fields)
                (entry_id,) = run_retrying(partial(self._link.run, [command]))
                log.warning("tool call %s was never sent: sent now", invocation.idempotency_key)
                with self._lock:
                    waiting = self._waiting.get(_call_key(invocation))
                    if waiting is not None:
                        waiting.entry_id = entry_id

    def withdraw_unsent(self, invocation: ToolInvocation, *, delete: bool = True) -> None:
        """Forget a call here, deleting its entry (if `delete`), and tell nobody else."""
        waiting = self._forget(_call_key(invocation))
        if delete and waiting is not None and waiting.entry_id is not None:
            with contextlib.suppress(redis.RedisError):  # (read already: it runs once)
                self._link.run([("XDEL", self._stream_of(invocation), waiting.entry_id)])

    def cancel(self, invocation: ToolInvocation) -> None:
        """Withdraw a call: unread, it is deleted; running, its handler is told."""
        waiting = self._forget(_call_key(invocation))
        if waiting is None:
            return  # already answered
        commands = tool_cancellation(
            self.keys, invocation.session, invocation.cell, invocation.call_id
        )
        if waiting.entry_id is not None:  # (unread: no worker need see it)
            commands.append(("XDEL", self._stream_of(invocation), waiting.entry_id))
        self._link.run(commands)

    def _forget(self, key: str) -> _Waiting | None:
        with self._lock:
            waiting = self._waiting.pop(key, None)
            if waiting is not None:
                self._in_flight[waiting.session] -= 1
                if not self._in_flight[waiting.session]:
                    del self._in_flight[waiting.session]
            return waiting

    def _read_replies(self) -> None:
        # From the start of this host's stream, never "$": a read that a dropped
        # connection interrupts must resume where it stopped, not at the newest reply.
        position = "0-0"
        untrimmed = 0  # replies read since the stream was last trimmed
        renewed = 0.0  # when the stream's time to live was last renewed
        while not self._closed.is_set():
            if time.monotonic() - renewed >= REPLIES_RENEW_S:
                with contextlib.suppress(redis.RedisError):  # (the read below says why)
                    self.client.pexpire(self.replies, REPLIES_TTL_MS)
                    renewed = time.monotonic()
            try:
                answer: Any = self.client.xread({self.replies: position}, block=500, count=256)
            except redis.RedisError as error:  # the reader lives on: every reply needs it
                # (a refusal too: UNBLOCKED by a failover, BUSY behind a long script)
                log.warning("tool replies unavailable: %s", error)
                self._closed.wait(0.2)
                continue
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    position = entry_id.decode()
                    self._route(fields)
                untrimmed += len(entries)
            # Trimming now and then, not after every reply: the trim would compete with
            # the cells just told of their results.
            if untrimmed >= TRIM_EVERY or (untrimmed and not answer):
                try:
                    self.client.xtrim(self.replies, minid=position, approximate=False)
                    untrimmed = 0
                except redis.RedisError as error:
                    log.warning("tool replies not trimmed: %s", error)  # next time, then

    def _route(self, fields: dict[bytes, bytes]) -> None:
        if WAKE_FIELD in fields:
            return
        try:
            reply = codec.decode_tool_reply(fields[b"reply"])
        except (KeyError, codec.DecodeError) as error:
            log.warning("dropped a tool reply that is not one: %s", error)
            return
        waiting = self._forget(reply.key)
        if waiting is None:
            return  # cancelled, or the cell is gone: dropped (spec §3.3)
        waiting.on_outcome(reply.outcome)

    def calls_of(self, session: str, registry: str = "") -> str:
        """The calls stream that carries the session's calls (to the workers of this
        dispatcher's tools, or of `registry`'s)."""
        return self.keys.tool_calls(registry or self.registry, tool_call_partition(session))

    def _stream_of(self, invocation: ToolInvocation) -> str:
        """Where `invocation` went: an adopted call to the workers it was sent to (a dead
        owner's tools may differ from this process's)."""
        return self.calls_of(invocation.session, invocation.sent_to)

    def _call_command(self, invocation: ToolInvocation) -> Command:
        fields = codec.encode_tool_call(invocation, self.replies)
        return ("XADD", self._stream_of(invocation), "*", *fields)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(redis.RedisError):  # (else it wakes within its block)
            wake_reader(self._link, self.replies)
        self._reader.join(timeout=2)
        with contextlib.suppress(redis.RedisError):  # nobody reads it any more
            self._link.run([("DEL", self.replies)])
        self._link.close()


def _call_key(invocation: ToolInvocation) -> str:
    return invocation.idempotency_key

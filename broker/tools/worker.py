"""A tool-dispatch worker: runs nested tool calls from the `workers` consumer group.

Delivery is at least once. For each call a worker
1. skips it if the session marked it cancelled, or answers from the recorded outcome if
   an earlier delivery already recorded one (a worker that died after recording);
2. runs the handler under the tool's retry policy (tenacity), recording each failed
   attempt, with the call's idempotency key and cancellation signal;
3. records the outcome in the session's log, first outcome wins (Lua), then answers
   the calling host and acknowledges the entry, in one round trip.
Leases: a worker keeps its running entries fresh (XCLAIM JUSTID, every lease/3) so a
slow but healthy handler is never taken over; entries idle longer than the lease belong
to a dead worker and are claimed by another (XAUTOCLAIM). An entry delivered more than
`max_deliveries` times goes to the dead-letter stream and fails with a clear message.
Bounds: a worker reads no more entries than it has free slots (`concurrency`).
A consumer group lost with Redis's data is re-created by the loop that finds it gone.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis
from tenacity import (
    RetryCallState,
)

from cellfleet.broker import codec
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.tools import JsonValue
from cellfleet.broker.crash import crash_point
from cellfleet.broker.events import ToolAttemptFailed, ToolCompleted, ToolFailed, wall_clock_ms
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.keys import DEFAULT_KEYS, TOOL_WORKERS_GROUP, Keys, tool_call_field
from cellfleet.broker.redis.link import entry_after
from cellfleet.broker.tools.dispatch import REPLIES_TTL_MS, ensure_group
from cellfleet.broker.tools.invocation import ToolInvocation, ToolOutcome, ToolReply
from cellfleet.broker.tools.registry import (
    ToolContext,
    ToolRegistry,
)
from cellfleet.broker.tools.running import run_call

log = logging.getLogger(__name__)
LISTEN_WITHIN_S = 5.0  # how long `start` waits for the subscription to cancellations
# How long `stop` waits, after the grace, for its loops to end: all of them together, not
# each (they wake every 0.2 s; one stuck in a Redis call without a timeout is a daemon
# thread, left behind rather than holding the stop for 5 s a thread, as it did).
JOIN_WITHIN_S = 2.0
DEAD_LETTERS_KEPT = 10_000  # (about: trimmed approximately)


@dataclass(slots=True)
class _Running:
    stream: str  # the calls stream it was read from
    entry_id: str
    context: ToolContext
    invocation: ToolInvocation
    reply_to: str
    call_key: str  # its field in the session's `tools` hash
    deliveries: int
    # A redelivered or handed-back call may have been cancelled, or recorded by a
    # worker that died before answering: it looks its state up first. (A first delivery
    # skips this round trip: the record script still refuses a cancelled call.)
    look_up: bool
    # Whether `stop` gave the call up (its grace ended first): it is another worker's to
    # run and answer then. Once `settling` (recording, answering), it is never given up.
    given_up: bool = False
    settling: bool = False


class ToolWorker:
    """Runs tool calls for a registry; `start()` in threads, `stop()` to end."""

    def __init__(
        self,
        client: redis.Redis,
        registry: ToolRegistry,
        *,
        name: str | None = None,
        concurrency: int = 8,
        lease_s: float = 5.0,
        max_deliveries: int = 3,
        stop_grace_s: float = 30.0,
        keys: Keys = DEFAULT_KEYS,
        clock: Callable[[], float] = wall_clock_ms,
    ) -> None:
        self.client = client
        self.keys = keys
        self.streams = keys.tool_call_streams(registry.fingerprint)  # calls of these tools
        self.journal = RedisJournal(client, keys)  # writes to the sessions' logs
        self.registry = registry
        self.name = name or f"{socket.gethostname()}-{time.monotonic_ns() % 10**9}"
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.max_deliveries = max_deliveries
        self.stop_grace_s = stop_grace_s
        self.clock = clock
        self._running: dict[str, _Running] = {}  # idempotency key -> running call
        # Cancellations heard before their call was read (bounded: oldest dropped first).
        self._cancelled: dict[str, None] = {}
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)  # a running call ended
        self._stop_requested = threading.Event()  # `wait()` returns
        self._draining = threading.Event()  # no call is read any more
        self._stop = threading.Event()  # every loop ends
        self._listening = threading.Event()  # subscribed to cancellations (or stopping)
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"tool-{self.name}"
        )
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> ToolWorker:
        """Start serving; returns once cancellations are heard (or `LISTEN_WITHIN_S`
        passed), before any call is read. A cancellation the worker misses meanwhile is
        found in the call's record within a lease tick (`_reconcile_cancellations`)."""
        for stream in self.streams:
            ensure_group(self.client, stream)
        self._start_thread(self._cancel_loop, "cancels")
        if not self._listening.wait(LISTEN_WITHIN_S):
            log.warning("tool cancellations not heard yet; serving calls anyway")
        # A reader per calls stream: on a Redis Cluster one read may not span slots.
        for partition, stream in enumerate(self.streams):
            self._start_thread(partial(self._read_loop, stream), f"read{partition}")
        self._start_thread(self._lease_loop, "leases")
        return self

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"tools-{name}-{self.name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop serving: read no more calls, let running handlers finish their calls
        (for `stop_grace_s`, their leases kept fresh), then end. A call read as it
        stops goes back to the stream for another worker; a handler still running
        after the grace is left to the others, who take its call over once its lease
        expired. The worker never records or answers a call it gave up: its handler's
        late result is dropped."""
        self._stop_requested.set()
        with self._slot_freed:
            # Under the lock `_submit` checks it with: a call read as the worker stops
            # is either in `_running` now (waited for, or given up, below) or handed
            # back, never started after the wait found `_running` empty (it was then
            # neither waited for nor counted in `unfinished`, and its pool thread held
            # the process's exit).
            self._draining.set()
            self._slot_freed.wait_for(lambda: not self._running, self.stop_grace_s)
            for call in self._running.values():  # outlived the grace: the others' now
                call.given_up = not call.settling
        self._stop.set()
        joined_by = time.monotonic() + JOIN_WITHIN_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, joined_by - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def unfinished(self) -> int:
        """Handlers still running (after `stop`: those that outlived the grace)."""
        with self._lock:
            return len(self._running)

    def wait(self, timeout: float | None = None) -> bool:
        """Until a stop is requested (or `timeout` passed); whether it was."""
        return self._stop_requested.wait(timeout)

    def request_stop(self) -> None:
        """Ask `wait()` to return. (Not from a signal handler: `Event.set` takes the
        lock that the interrupted `wait` may hold; `run_worker` polls a flag instead.)"""
        self._stop_requested.set()

    # -- reading ---------------------------------------------------------------------

    def _read_loop(self, stream: str) -> None:
        """Read calls of one stream as slots free up. (The readers of the other streams
        read meanwhile too: a worker may take up to one batch per stream more than it
        has slots; those wait in its pool, their entries kept fresh, as a prefetch.)"""
        while not self._draining.is_set():
            with self._slot_freed:  # every slot busy: wait until a handler frees one
                self._slot_freed.wait_for(self._has_free_slot, timeout=0.2)
                free = self.concurrency - len(self._running)  # (the lease loop may take
            if free <= 0:  # slots too, between our wait and the read)
                continue  # look at `_stop` again now and then
            try:
                answer: Any = self.client.xreadgroup(
                    TOOL_WORKERS_GROUP,
                    self.name,
                    {stream: ">"},
                    count=free,
                    block=200,
                )
            except redis.RedisError as error:  # the loop lives on: it is the worker
                if not self._regrouped(error, stream):
                    log.warning("tool calls unavailable: %s", error)
                    self._stop.wait(0.2)
                continue
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    self._submit(stream, entry_id.decode(), fields, deliveries=1)

    def _has_free_slot(self) -> bool:  # (with the lock held)
        return len(self._running) < self.concurrency

    def _free_slots(self) -> int:
        """(0 when the read loops of several partitions together took more entries than
        there were slots: each reads up to what was free when it asked.)"""
        with self._lock:
            return max(0, self.concurrency - len(self._running))

    def _submit(
        self, stream: str, entry_id: str, fields: dict[bytes, bytes], deliveries: int
    ) -> None:
        try:
            invocation, reply_to = codec.decode_tool_call(fields)
        except codec.DecodeError as error:  # not ours to run: kept aside for operators
            log.error("tool call entry %s is not a tool call: %s", entry_id, error)
            self._dead_letter(stream, entry_id, fields, deliveries)
            return
        running = _Running(
            stream,
            entry_id,
            ToolContext(idempotency_key=invocation.idempotency_key),
            invocation,
            reply_to,
            tool_call_field(invocation.cell, invocation.call_id),
            deliveries,
            look_up=deliveries > 1 or b"handed_back" in fields,
        )
        with self._lock:  # (`stop` sets `_draining` under it: see there)
            draining = self._draining.is_set()
            if not draining:
                self._running[invocation.idempotency_key] = running
        if draining:  # read as the worker stops: for another worker
            self._hand_back(stream, entry_id, invocation, reply_to)
            return
        self._pool.submit(self._handle, running)

    # -- leases ----------------------------------------------------------------------

    def _lease_loop(self) -> None:
        """Keep our entries fresh; take over entries whose worker stopped renewing them."""
        lease_ms = int(self.lease_s * 1000)
        while not self._stop.wait(self.lease_s / 3):
            for stream in self.streams:
                try:
                    self._keep_up(stream, lease_ms)
                except redis.RedisError as error:
                    if not self._regrouped(error, stream):
                        log.warning("lease upkeep failed: %s", error)
            try:
                self._reconcile_cancellations()
            except redis.RedisError as error:
                log.warning("cancellations not reconciled: %s", error)

    def _keep_up(self, stream: str, lease_ms: int) -> None:
        """Keep this worker's entries of `stream` fresh, take over abandoned ones, trim."""
        with self._lock:
            ids: list[Any] = [r.entry_id for r in self._running.values() if r.stream == stream]
        if ids:
            self.client.xclaim(stream, TOOL_WORKERS_GROUP, self.name, 0, ids, justid=True)
        free = self._free_slots()
        if free:
            self._take_over(stream, lease_ms, free)
        self._trim(stream)

    def _regrouped(self, error: redis.RedisError, stream: str) -> bool:
        """Re-create the consumer group if `error` says it is gone; whether it is back.
        Redis that lost its data (FLUSHALL, a restart without its append-only file, a
        failover to an empty replica) lost the group too, and only start-up creates it.
        (UNBLOCKED: the stream was deleted under a blocked read; NOGROUP: no group.)"""
        gone = str(error).startswith(("NOGROUP", "UNBLOCKED"))
        if not isinstance(error, redis.ResponseError) or not gone:
            return False
        try:
            if ensure_group(self.client, stream):  # (else another loop or worker did)
                log.warning("tool group on %s was gone (Redis lost data?): re-created", stream)
        except redis.RedisError as again:
            log.warning("tool calls' consumer group cannot be re-created: %s", again)
            return False
        return True

    def _trim(self, stream: str) -> None:
        """Delete the calls every worker is done with: XACK does not delete an entry, and
        a calls stream nobody trims only grows. Kept: entries still pending (delivered,
        not acknowledged) and those not delivered yet (Redis 7.0 has no ACKED trim)."""
        groups: Any = self.client.xinfo_groups(stream)
        group = next((g for g in groups if _text(g["name"]) == TOOL_WORKERS_GROUP), None)
        if group is None:
            return
        last = _text(group["last-delivered-id"])
        keep_from = entry_after(last)
        if int(group["pending"]):
            summary: Any = self.client.xpending(stream, TOOL_WORKERS_GROUP)
            oldest = summary.get("min")
            if oldest is not None:
                keep_from = _text(oldest)
        if keep_from != "0-1":
            self.client.xtrim(stream, minid=keep_from, approximate=False)

    def _take_over(self, stream: str, lease_ms: int, free: int) -> None:
        reply: Any = self.client.xautoclaim(
            stream, TOOL_WORKERS_GROUP, self.name, lease_ms, "0-0", count=free
        )
        for entry_id, fields in reply[1]:  # (entries deleted by a cancellation: skipped)
            if not fields:
                continue
            entry = entry_id.decode()
            pending: Any = self.client.xpending_range(
                stream, TOOL_WORKERS_GROUP, min=entry, max=entry, count=1
            )
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            self._submit(stream, entry, fields, deliveries)

    def _cancel_loop(self) -> None:
        """Hear cancellations; survives Redis outages by subscribing again (what was
        published meanwhile, `_reconcile_cancellations` finds in the calls' records)."""
        while not self._stop.is_set():
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(self.keys.tool_cancel_channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._listening.set()
                    elif message["type"] == "message":
                        self._heard_cancel(message["data"].decode())
            except (redis.ConnectionError, redis.TimeoutError) as error:
                log.warning("tool cancellations unavailable: %s", error)
                self._stop.wait(0.2)
            except redis.RedisError as error:  # e.g. an ACL user without channel access
                log.error("tool cancellations cannot be heard: %s; found by lease", error)
                break
            finally:
                pubsub.close()
        self._listening.set()  # stopping: nobody waits for the subscription any more

    def _reconcile_cancellations(self) -> None:
        """Tell running handlers of cancellations that were published while this
        worker did not listen: a cancelled call is marked in its session's `tools`."""
        with self._lock:
            running = list(self._running.items())
        if not running:
            return
        pipe = self.client.pipeline(transaction=False)
        for _, call in running:
            pipe.hget(self.keys.session(call.invocation.session).tools, call.call_key)
        for (_, call), state in zip(running, pipe.execute(), strict=True):
            if state == b"cancelled":
                call.context.cancelled.set()

    def _heard_cancel(self, key: str) -> None:
        with self._lock:
            running = self._running.get(key)
            if running is None:  # not read yet: skip it when it is
                self._cancelled[key] = None
                if len(self._cancelled) > 10_000:
                    del self._cancelled[next(iter(self._cancelled))]
        if running is not None:
            running.context.cancelled.set()

    # -- running a call ---------------------------------------------------------------

    def _handle(self, call: _Running) -> None:
        try:
            settle = self._handle_call(call)
            if self._may_settle(call):
                settle()
        except Exception:  # never lose the worker; the entry stays pending for takeover
            log.exception("tool call %s failed in the worker", call.invocation.idempotency_key)
        finally:
            with self._lock:
                self._running.pop(call.invocation.idempotency_key, None)
                self._slot_freed.notify_all()  # the read loop, or a stopping worker

    def _handle_call(self, call: _Running) -> Callable[[], None]:
        """Run the call; returns what settles it (record, answer, acknowledge)."""
        invocation = call.invocation
        tools = self.keys.session(invocation.session).tools
        with self._lock:
            heard_cancelled = self._cancelled.pop(invocation.idempotency_key, 0) is None
        if heard_cancelled:
            return lambda: self._ack(call.stream, call.entry_id)
        state: Any = self.client.hget(tools, call.call_key) if call.look_up else None
        if state is not None:
            return lambda: self._answer(call, state)
        if call.deliveries > self.max_deliveries:
            return lambda: self._abandon(call)
        result, error = run_call(self.registry, invocation, call.context, self._record_attempt)
        if call.context.cancelled.is_set() and self.client.hget(tools, call.call_key):
            return lambda: self._ack(call.stream, call.entry_id)
        return lambda: self._finish(call, result, error)

    def _may_settle(self, call: _Running) -> bool:
        """Whether this worker still records and answers `call`: not once `stop` gave it
        up, for another worker runs it again (the handler's effect would count twice)."""
        with self._lock:
            call.settling = not call.given_up
        if not call.settling:
            log.warning(
                "tool call %s was handed back on stop: its late result is dropped",
                call.invocation.idempotency_key,
            )
        return call.settling

    def _abandon(self, call: _Running) -> None:
        """Fail a call delivered too often (its handler kills workers, say)."""
        invocation, reply_to = call.invocation, call.reply_to
        fields = dict(_pairs(codec.encode_tool_call(invocation, reply_to)))
        self._dead_letter(call.stream, call.entry_id, fields, call.deliveries, ack=False)
        abandoned = texts.tool_abandoned(invocation.raw_name, call.deliveries - 1)
        self._finish(call, None, abandoned)

    def _record_attempt(self, invocation: ToolInvocation, state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        event = ToolAttemptFailed(
            session=invocation.session,
            cell=invocation.cell,
            at_ms=self.clock(),
            call_id=invocation.call_id,
            attempt=state.attempt_number,
            error=codec.well_formed(str(error)),
        )
        self.journal.append([event])

    def _finish(self, call: _Running, result: JsonValue, error: str | None) -> None:
        """Record the outcome (first wins), answer the host, acknowledge."""
        invocation = call.invocation
        clock = self.clock()
        session, cell, call_id = invocation.session, invocation.cell, invocation.call_id
        event: ToolCompleted | ToolFailed = (
            ToolCompleted(
                session=session,
                cell=cell,
                at_ms=clock,
                call_id=call_id,
                result=result,
                clock_ms=clock,
            )
            if error is None
            else ToolFailed(
                session=session,
                cell=cell,
                at_ms=clock,
                call_id=call_id,
                error=error,
                clock_ms=clock,
            )
        )
        outcome = ToolOutcome(call_id, result=result, error=error, clock_ms=clock)
        reply = ToolReply(invocation.idempotency_key, outcome)
        recorded = self.journal.record_tool_outcome(invocation, event, reply)
        crash_point("tool_outcome_recorded")
        self._answer(call, recorded.reply, recorded.replies_to)

    def _answer(self, call: _Running, state: bytes, replies_to: str | None = None) -> None:
        """Send the recorded reply to the session's owner (`replies_to`: one that took
        the session over since the call was sent; else the calling host) and
        acknowledge the entry."""
        to = replies_to or call.reply_to
        pipe = self.client.pipeline(transaction=False)
        if state != b"cancelled":
            pipe.xadd(to, {"reply": state})
            pipe.pexpire(to, REPLIES_TTL_MS)  # (a dead host's goes, in time)
        pipe.xack(call.stream, TOOL_WORKERS_GROUP, call.entry_id)
        pipe.execute()

    def _hand_back(
        self, stream: str, entry_id: str, invocation: ToolInvocation, reply_to: str
    ) -> None:
        """Put a call this worker will not answer back on the stream, for another."""
        try:
            pipe = self.client.pipeline(transaction=False)
            fields = dict(_pairs(codec.encode_tool_call(invocation, reply_to)))
            fields["handed_back"] = "1"  # its first delivery must look for a cancellation
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
            pipe.xack(stream, TOOL_WORKERS_GROUP, entry_id)
            pipe.execute()
        except redis.RedisError as error:  # it stays pending: taken over after the lease
            log.warning("could not hand back tool call %s: %s", invocation.idempotency_key, error)

    def _ack(self, stream: str, entry_id: str) -> None:
        self.client.xack(stream, TOOL_WORKERS_GROUP, entry_id)

    def _dead_letter(
        self,
        stream: str,
        entry_id: str,
        fields: dict[Any, Any],
        deliveries: int,
        *,
        ack: bool = True,
    ) -> None:
        """Keep a call that is not to be run again aside for operators."""
        self.client.xadd(  # (operators read the newest; the oldest go)
            self.keys.tool_dead_letters,
            {**fields, "deliveries": deliveries},
            maxlen=DEAD_LETTERS_KEPT,
            approximate=True,
        )
        if ack:
            self._ack(stream, entry_id)


def _pairs(flat: list[bytes | str]) -> list[tuple[bytes | str, bytes | str]]:
    return list(zip(flat[::2], flat[1::2], strict=True))


__all__ = ["ToolWorker"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

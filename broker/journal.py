"""The session event log on Redis Streams, with the atomic decisions as Lua scripts.

Every append is one round trip (events of one decision are pipelined). Transient
connection errors are retried with tenacity; each script is idempotent or guarded, so
a retry after a lost reply does not change the outcome:
admission is keyed by the exec call id, a terminal event is recorded at most once, and
plain appends carry (cell, seq), which readers use to drop a repeated entry.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any, Protocol, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.retry import Retry
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from cellfleet.broker import codec
from cellfleet.broker.errors import (
    AdmissionRefusedError,
    BrokerError,
    CellIdSpaceExhaustedError,
    JournalUnavailableError,
    SessionFencedError,
    SessionOwnedElsewhereError,
    SessionShuttingDownError,
)
from cellfleet.broker.events import (
    AnyEvent,
    CellAdmitted,
    CellCompleted,
    CellTerminated,
    ShutdownBegun,
    ToolCompleted,
    ToolFailed,
)
from cellfleet.broker.keys import DEFAULT_KEYS, Keys, tool_call_field
from cellfleet.broker.redis.connect import connect_redis
from cellfleet.broker.redis.link import (
    Command,
    Link,
    ReplicationTimeoutError,
    entry_fields,
    link_to,
)
from cellfleet.broker.redis.scripts import script_source
from cellfleet.broker.tools.invocation import ToolInvocation, ToolReply, idempotency_key

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_CELL_ID = 2**63 - 1  # Redis's integer limit: the log refuses ids above (lib.lua)
DEFAULT_RETENTION_S = 7 * 24 * 3600  # a finished session's keys, as Temporal's default
MAX_RELEASED_TOKENS = 10_000  # tokens of sessions let go of, kept for their late writes
MAX_BLOCK_S = 1.0  # a blocking read's longest wait: redis-py 8's socket timeout is 5 s
# Retried: Redis unreachable, or a cluster that is failing over or moving a slot.
_TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,  # (redis-py's retries ran out: TTL exhausted)
    redis.exceptions.TryAgainError,
)


class FinishOutcome(StrEnum):
    """What holds after `RedisJournal.finish`: the first terminal event wins."""

    COMPLETED = "completed"
    TERMINATED = "terminated"
    SHUTDOWN = "shutdown"  # a completion refused: the session's shutdown began first


# Redis's refusals the model may be told of (checked in order: some are ConnectionErrors).
_REASONS: tuple[tuple[type[redis.RedisError], str], ...] = (
    (redis.BusyLoadingError, "Redis is loading its data"),
    (ReplicationTimeoutError, "Redis replicas did not confirm the write in time"),
    (redis.AuthenticationError, "Redis refused the credentials"),
    (redis.TimeoutError, "timed out"),
    (redis.ConnectionError, "connection failed"),
    (redis.OutOfMemoryError, "Redis is out of memory (maxmemory)"),
    (redis.ReadOnlyError, "Redis is a read-only replica"),
    (redis.exceptions.NoPermissionError, "Redis refused the command (ACL)"),
    (redis.exceptions.ClusterDownError, "the Redis Cluster is down"),
    (redis.exceptions.ClusterError, "the Redis Cluster did not settle (failover or resharding)"),
    (redis.exceptions.TryAgainError, "a Redis Cluster slot is being moved"),
    (redis.exceptions.AskError, "a Redis Cluster slot kept moving"),  # (and MOVED)
    (redis.exceptions.ClusterCrossSlotError, "Redis Cluster refused keys of several slots"),
)


def failure_reason(error: BaseException) -> str | None:
    """Why Redis did not take a command, in words the model may read (never an address:
    a socket path or a host is for the logs); None for an error that is not Redis's."""
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    if isinstance(error, redis.ResponseError):
        if str(error).startswith("MISCONF"):
            return "Redis cannot save to disk"
        if str(error).startswith("BUSY"):
            return "Redis is busy running a script"
    return None


def _unavailable(error: redis.ResponseError) -> JournalUnavailableError | None:
    """The log's unavailability for Redis's refusal `error` if Redis said why (out of
    memory, read-only, busy, ...); None for a script's own refusal (SHUTTING_DOWN, ...),
    which is the caller's to read."""
    reason = failure_reason(error)
    if reason is None:
        return None
    log.warning("the event log refused a command: %s", error)
    return JournalUnavailableError(reason)


def _retrying(call: Callable[[], T]) -> T:
    """Run `call`, retrying transient Redis errors; give up with a clear error.

    The first attempt runs bare: building tenacity's machinery costs more than a
    round trip to Redis, and the usual call succeeds. After a transient failure,
    tenacity retries three more times with backoff.
    """
    try:
        return call()
    except _TRANSIENT:
        pass
    except redis.ResponseError as error:  # a refusal (out of memory, read-only): say so
        if (unavailable := _unavailable(error)) is None:
            raise
        raise unavailable from error
    runner = retry(
        retry=retry_if_exception_type(_TRANSIENT),
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.02, max=0.5),
        reraise=True,
    )(call)
    try:
        return runner()
    except redis.ResponseError as error:  # a retry met a refusal
        if (unavailable := _unavailable(error)) is None:
            raise
        raise unavailable from error
    except _TRANSIENT as error:
        # The model sees the reason; the address (a socket path, a host) is for logs.
        log.warning("the event log is unreachable: %s", error)
        raise JournalUnavailableError(failure_reason(error) or "connection failed") from error


def _add_batches(args: list[bytes | str], events: Sequence[AnyEvent]) -> None:
    """Script arguments for `events`: per event, its field count, then its fields."""
    for event in events:
        fields = codec.encode_flat(event)
        args.append(str(len(fields) // 2))
        args += fields


def admission_token(admitted: CellAdmitted) -> str:
    """What tells this admission from another of the same call id and cell: its random
    seed (a retry of the same admission carries the same one)."""
    return "".join(f"{part:08x}" for part in admitted.seed)


def _refusal(session: str, error: redis.ResponseError) -> BrokerError | None:
    """The broker error for a script's refusal `error` (None: not a refusal)."""
    reason = str(error).partition(" ")[0]
    if reason == "FENCED":
        return SessionFencedError(session)
    if reason == "LOST":  # (its meta is gone, fence and all: Redis lost its data)
        return JournalUnavailableError("Redis lost this session's log")
    refusal: AdmissionRefusedError | None = {
        "SHUTTING_DOWN": SessionShuttingDownError(),
        "EXHAUSTED": CellIdSpaceExhaustedError(),
        "CONFLICT": SessionOwnedElsewhereError(session),
    }.get(reason)
    return refusal


def tool_cancellation(keys: Keys, session: str, cell: str, call_id: str) -> list[Command]:
    """The commands that cancel a nested tool call: marked in its session's `tools`
    hash unless its outcome is there (its outcome is then never recorded), and told to
    the tool workers (a running handler's `cancelled` is set)."""
    return [
        ("HSETNX", keys.session(session).tools, tool_call_field(cell, call_id), "cancelled"),
        ("PUBLISH", keys.tool_cancel_channel, idempotency_key(session, cell, call_id)),
    ]


def _decoded(flat: dict[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in flat.items()}


def _raise(error: BaseException) -> None:
    raise error


def run_retrying(call: Callable[[], T]) -> T:
    """Run a Redis round trip with the journal's retry policy for transient errors."""
    return _retrying(call)


class LeanScript:
    """A registered Lua script, called through a `RedisLink`; a script the server
    forgot (restarted without its AOF) is loaded again."""

    def __init__(self, client: redis.Redis, link: Link, text: str) -> None:
        self._link = link
        self._script: Script = client.register_script(text)

    def __call__(self, keys: Sequence[str], args: Sequence[bytes | str]) -> Any:
        command = ("EVALSHA", self._script.sha, len(keys), *keys, *args)
        try:
            return self._link.run([command])[0]
        except NoScriptError:  # loaded again, and run again through the link (its WAIT)
            self._script.registered_client.script_load(self._script.script)
            return self._link.run([command])[0]

    def run_many(self, calls: Sequence[tuple[Sequence[str], Sequence[bytes | str]]]) -> list[Any]:
        """Call the script once per (keys, args), in one round trip (per node of a
        cluster); the replies in order, an error reply in its call's place."""
        commands: list[Command] = [
            ("EVALSHA", self._script.sha, len(keys), *keys, *args) for keys, args in calls
        ]
        replies = self._link.run(commands, raise_errors=False)
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:  # a node that restarted without its data: load it everywhere, again
            self._script.registered_client.script_load(self._script.script)
            again = self._link.run([commands[i] for i in unknown], raise_errors=False)
            for index, reply in zip(unknown, again, strict=True):
                replies[index] = reply
        return replies


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """What holds for a tool call once a worker tried to record its outcome."""

    reply: bytes  # the reply recorded first, or b"cancelled"
    replies_to: str | None  # the session's owner's replies stream (None: not known)


@dataclass(frozen=True, slots=True)
class SessionState:
    """Where a session's log stands when a process opens it."""

    last_cell: int  # the highest cell id admitted so far (0: none)
    stored: dict[str, str]  # stored key -> JSON text
    stored_version: int  # how many completions merged stored writes
    shutting_down: bool = False  # its shutdown began (a session reopened after it)
    finished: bool = False  # and finished
    # Admitted cells without a terminal event: their owner stopped while they ran.
    unended: tuple[str, ...] = ()
    # Cells that ended and were not closed: their answer may not have been given.
    unclosed: tuple[str, ...] = ()


class Journal(Protocol):
    """The event log of every session: what the actors, the tool workers, replay and
    projections use. `RedisJournal` is the real one, `broker.memory.MemoryJournal` one
    for fast tests; tests/contract/test_journal_contract.py holds both to it."""

    def append(self, events: Sequence[AnyEvent]) -> None: ...

    def open_session(
        self, event: AnyEvent, also: Sequence[AnyEvent] = (), replies: str = ""
    ) -> SessionState: ...

    def admit(self, events: Sequence[AnyEvent]) -> None: ...

    def finish(
        self,
        terminal: CellCompleted | CellTerminated,
        before: Sequence[AnyEvent] = (),
        after: Sequence[AnyEvent] = (),
    ) -> FinishOutcome: ...

    def begin_shutdown(self, event: ShutdownBegun) -> bool: ...

    def finish_session(self, event: AnyEvent, retention_s: int) -> None: ...

    def record_tool_outcome(
        self, invocation: ToolInvocation, event: ToolCompleted | ToolFailed, reply: ToolReply
    ) -> RecordedOutcome: ...

    def cancel_tool(self, session: str, cell: str, call_id: str) -> None: ...

    def stored_snapshot(self, session: str) -> tuple[dict[str, str], int]: ...

    def read(
        self,
        session: str,
        after: str = "0-0",
        count: int = 1000,
        *,
        cells: Collection[str] | None = None,
        kinds: Collection[str] = (),
        mentioning: str | None = None,
    ) -> Iterator[tuple[str, AnyEvent]]: ...

    def wait_after(self, session: str, after: str, timeout: float) -> None: ...

    def sessions(self) -> list[str]: ...

    def close(self) -> None: ...


class RedisJournal:
    """The event log of every session, on one Redis (or Redis Cluster) connection."""

    def __init__(
        self, client: redis.Redis, keys: Keys = DEFAULT_KEYS, *, max_block_s: float = MAX_BLOCK_S
    ) -> None:
        self.client = client
        self.keys = keys
        self.max_block_s = max_block_s  # below the client's socket timeout
        self.link = link_to(client)
        self._append_text = script_source("append", lib=True)
        self._open_text = script_source("open_session", lib=True)
        self._append = LeanScript(client, self.link, self._append_text)
        self._admit = LeanScript(client, self.link, script_source("admit_cell", lib=True))
        self._finish = LeanScript(client, self.link, script_source("finish_cell", lib=True))
        self._shutdown = LeanScript(client, self.link, script_source("begin_shutdown", lib=True))
        self._finish_session = LeanScript(
            client, self.link, script_source("finish_session", lib=True)
        )
        self._record_tool = LeanScript(client, self.link, script_source("record_tool_outcome"))
        self._tokens: dict[str, str] = {}  # session -> this process's fencing token
        self._released: OrderedDict[str, str] = OrderedDict()  # let go of, newest last
        self._fenced_off: set[str] = set()  # sessions a newer owner took over
        self._when_fenced: list[Callable[[str], None]] = []  # told once per session

    @classmethod
    def from_url(cls, url: str, keys: Keys = DEFAULT_KEYS) -> RedisJournal:
        """A journal on its own connection pool; retries are ours (tenacity), not redis-py's."""
        client = connect_redis(url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
        return cls(client, keys)

    # -- fencing ---------------------------------------------------------------------

    def hold(self, session: str, token: int) -> None:
        """This process owns `session` with fencing token `token` (`broker.leases`): its
        writes carry the token, and the log refuses them once a newer owner claimed it."""
        self._tokens[session] = str(token)
        self._released.pop(session, None)
        self._fenced_off.discard(session)

    def let_go(self, session: str) -> None:
        """This process no longer owns `session` (it released its lease, or the session
        finished). Its token is kept a while: a cell of it still closing writes with
        it, and is refused once the next owner claimed the session."""
        token = self._tokens.pop(session, None)
        if token is not None:
            self._released[session] = token
            while len(self._released) > MAX_RELEASED_TOKENS:
                self._released.popitem(last=False)

    def when_fenced(self, listener: Callable[[str], None]) -> None:
        """Have `listener(session)` told when a newer owner takes a session over."""
        self._when_fenced.append(listener)

    def fence_off(self, session: str) -> None:
        """A newer owner took `session` over (or its opening here failed): refuse this
        process's writes from now on, without asking Redis, and tell the `when_fenced`
        listeners (once)."""
        if self._tokens.pop(session, None) is None and session in self._fenced_off:
            return
        self._fenced_off.add(session)
        for listener in self._when_fenced:
            listener(session)

    def fenced_off(self, session: str) -> bool:
        """Whether a newer owner took `session` from this process."""
        return session in self._fenced_off

    def token(self, session: str) -> str:
        """The fencing token this process writes `session` with ("": no lease)."""
        if session in self._fenced_off:
            raise SessionFencedError(session)
        token = self._tokens.get(session)
        return token if token is not None else self._released.get(session, "")

    def _guarded(self, session: str, call: Callable[[], T]) -> T:
        """Run a write of `session`'s log (retrying transient errors), raising a script's
        refusal as a broker error; a fenced writer is cut off at once."""
        try:
            return _retrying(call)
        except redis.ResponseError as error:
            refusal = _refusal(session, error)
            if refusal is None:
                raise
            if isinstance(refusal, SessionFencedError):
                self.fence_off(session)
            raise refusal from None

    # -- writes ------------------------------------------------------------------------

    def appends(self, events: Sequence[AnyEvent]) -> list[Command]:
        """The command that appends `events` (of one session), in order, unless this
        process was fenced off: for a caller that sends it in a round trip of its own
        (read its reply with `check_appended`). EVAL, not EVALSHA: a batch must not fail
        halfway on a script the server forgot."""
        if not events:
            return []
        session = events[0].session
        k = self.keys.session(session)
        args: list[bytes | str] = [self.token(session), str(len(events))]
        _add_batches(args, events)
        return [("EVAL", self._append_text, 2, k.meta, k.events, *args)]

    def check_appended(self, session: str, replies: Sequence[Any]) -> None:
        """Raise the refusal among the replies of `appends` commands, if one is."""
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                self._guarded(session, partial(_raise, reply))

    def close(self) -> None:
        self.link.close()
        self.client.close()

    def append(self, events: Sequence[AnyEvent]) -> None:
        """Append events (of one session) in order, in one round trip."""
        if not events:
            return
        session = events[0].session
        k = self.keys.session(session)
        args: list[bytes | str] = [self.token(session), str(len(events))]
        _add_batches(args, events)
        self._guarded(session, partial(self._append, [k.meta, k.events], args))

    def import_events(
        self, events: Sequence[AnyEvent], at_ms: float, retention_s: int = DEFAULT_RETENTION_S
    ) -> None:
        """Write the events of a trace as a session of their own, indexed as opened at
        `at_ms` (its import) once all are written: the commands that read logs see it
        whole or not at all. What its cells decided (cell ids, stored values) stays in
        the events, not in a live session's state."""
        if not events:
            return
        session = events[0].session
        commands = self.appends(events)
        try:
            for start in range(0, len(commands), 10_000):  # round trips of bounded size
                self.link.run(commands[start : start + 10_000])  # (a retry could repeat)
            events_key = self.keys.session(session).events
            self.link.run(
                [
                    ("EXPIRE", events_key, retention_s),  # (kept as long as a finished one)
                    ("ZADD", self.keys.sessions, "NX", repr(at_ms), session),
                ]
            )
        except redis.RedisError as error:
            with contextlib.suppress(redis.RedisError):  # what was written goes
                self.client.delete(self.keys.session(session).events)
            reason = failure_reason(error) or "connection failed"
            raise JournalUnavailableError(reason) from error

    def open_session(
        self, event: AnyEvent, also: Sequence[AnyEvent] = (), replies: str = ""
    ) -> SessionState:
        """Record the session's opening (and the events `also`, in the same round trip;
        nothing for a session whose shutdown finished); returns what its cells continue
        from. `replies`: the opener's tool replies stream (see record_tool_outcome.lua)."""
        session = event.session
        k = self.keys.session(session)
        args: list[bytes | str] = [self.token(session), replies, str(1 + len(also))]
        _add_batches(args, (event, *also))
        commands: list[Command] = [
            ("ZADD", self.keys.sessions, "NX", repr(event.at_ms), session),
            ("EVAL", self._open_text, 3, k.meta, k.events, k.terminal, *args),
            ("HGETALL", k.stored),
        ]
        answers = self._guarded(session, partial(self.link.run, commands))
        last_cell, version, shutdown, finished, *cells = answers[1]
        named = [bytes(cell).decode() for cell in cells]
        return SessionState(
            last_cell=int(last_cell or 0),
            stored=_decoded(entry_fields(answers[2])),  # (a map, or a flat list)
            stored_version=int(version or 0),
            shutting_down=shutdown == b"1",
            finished=finished == b"1",
            unended=tuple(sorted((cell for cell in named if cell[0] != "~"), key=int)),
            unclosed=tuple(sorted((cell[1:] for cell in named if cell[0] == "~"), key=int)),
        )

    def admit(self, events: Sequence[AnyEvent]) -> None:
        """Admit a cell and append its first events, in one round trip.

        `events[0]` is its `CellAdmitted` (with the id the session chose); a retry
        records the admission once and appends the later events again (readers drop a
        repeated (cell, seq)). Raises an `AdmissionRefusedError` when the log refuses
        the cell (then nothing was appended).
        """
        admitted = events[0]
        assert isinstance(admitted, CellAdmitted)
        args: list[bytes | str] = [
            self.token(admitted.session),
            admitted.call_id,
            admitted.cell,
            admission_token(admitted),
            str(len(events)),
        ]
        _add_batches(args, events)
        k = self.keys.session(admitted.session)

        self._guarded(admitted.session, partial(self._admit, [k.meta, k.events], args))

    def finish(
        self,
        terminal: CellCompleted | CellTerminated,
        before: Sequence[AnyEvent] = (),
        after: Sequence[AnyEvent] = (),
    ) -> FinishOutcome:
        """Append `before`, then the terminal event and `after` unless the cell already has
        a terminal event (`after` records what the winner's answer was delivered to).
        A `before` that starts with the cell's `CellAdmitted` admits it first, as
        `admit` does (and raises as it does).

        Returns what holds (`FinishOutcome`); on `SHUTDOWN` only `before` was appended.
        """
        k = self.keys.session(terminal.session)
        kind = "completed" if isinstance(terminal, CellCompleted) else "terminated"
        batch = (*before, terminal, *after)
        admitted = before[0] if before and isinstance(before[0], CellAdmitted) else None
        args: list[bytes | str] = [
            self.token(terminal.session),
            terminal.cell,
            kind,
            str(len(batch)),
            str(len(before) + 1),
            admitted.call_id if admitted else "",
            admission_token(admitted) if admitted else "",
        ]
        _add_batches(args, batch)
        if isinstance(terminal, CellCompleted):
            for key, value in terminal.stored_writes.items():
                args += [key, value]

        keys = [k.terminal, k.events, k.stored, k.meta]
        result: bytes = self._guarded(terminal.session, partial(self._finish, keys, args))
        return FinishOutcome(result.decode())

    def finish_session(self, event: AnyEvent, retention_s: int) -> None:
        """Record the end of the session's shutdown; its keys expire `retention_s` later
        (one round trip)."""
        k = self.keys.session(event.session)
        others = [key for key in k.retired_together if key not in (k.meta, k.events)]
        keys = [k.meta, k.events, *others, k.lease]
        args: list[bytes | str] = [self.token(event.session), str(retention_s)]
        args += codec.encode_flat(event)
        self._guarded(event.session, partial(self._finish_session, keys, args))
        self.let_go(event.session)

    def begin_shutdown(self, event: ShutdownBegun) -> bool:
        k = self.keys.session(event.session)
        args: list[bytes | str] = [self.token(event.session), *codec.encode_flat(event)]
        began: int = self._guarded(event.session, partial(self._shutdown, [k.meta, k.events], args))
        return bool(began)

    def cancel_tool(self, session: str, cell: str, call_id: str) -> None:
        """Mark a call cancelled unless its outcome is recorded: a worker that has not
        run it skips it, one that runs it is told, and its outcome is never recorded."""
        _retrying(partial(self.link.run, tool_cancellation(self.keys, session, cell, call_id)))

    def record_tool_outcome(
        self, invocation: ToolInvocation, event: ToolCompleted | ToolFailed, reply: ToolReply
    ) -> RecordedOutcome:
        """Append a nested tool call's outcome and keep the host's `reply` with the call,
        unless an outcome is recorded already, the call was cancelled, its cell ended or
        its session finished (Lua, atomic).

        Returns what holds afterwards (the reply recorded first, or `b"cancelled"`) and
        where the session's owner now takes its replies.
        """
        k = self.keys.session(invocation.session)
        args: list[bytes | str] = [
            tool_call_field(invocation.cell, invocation.call_id),
            codec.encode_tool_reply(reply),
            invocation.cell,
            *codec.encode_flat(event),
        ]
        state, replies = _retrying(
            lambda: self._record_tool(keys=[k.tools, k.events, k.meta, k.terminal], args=args)
        )
        return RecordedOutcome(bytes(state), bytes(replies).decode() or None)

    def stored_values(self, session: str) -> dict[str, str]:
        return self.stored_snapshot(session)[0]

    def stored_snapshot(self, session: str) -> tuple[dict[str, str], int]:
        """The session's stored values and how many merges made them."""
        k = self.keys.session(session)

        def run() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(k.stored)
            pipe.hget(k.meta, "stored_version")
            return pipe.execute()

        flat, version = _retrying(run)
        return _decoded(flat), int(version or 0)

    def read(
        self,
        session: str,
        after: str = "0-0",
        count: int = 1000,
        *,
        cells: Collection[str] | None = None,
        kinds: Collection[str] = (),
        mentioning: str | None = None,
    ) -> Iterator[tuple[str, AnyEvent]]:
        """The session's events after stream id `after`, in order, as (id, event); if
        given, only those of `cells` (and those of the event types `kinds`, whatever
        their cell), and only those whose data holds the string `mentioning` (a cheap
        first sieve: the caller checks the events). Entries left out are not decoded
        (a long session's log is mostly other cells')."""
        stream = self.keys.session(session).events
        keep = codec.sieve(cells, kinds, mentioning)
        position = after
        while True:

            def run(start: str = position) -> Any:
                return self.client.xrange(stream, f"({start}", "+", count=count)

            entries: list[tuple[bytes, dict[bytes, bytes]]] = _retrying(run)
            for entry_id, fields in entries:
                position = entry_id.decode()
                if keep is None or keep(fields):
                    yield position, codec.decode(session, fields)
            if len(entries) < count:
                return

    def wait_after(self, session: str, after: str, timeout: float) -> None:
        """Block until the session has an event after stream id `after`, or `timeout`
        seconds passed, or `max_block_s` (less than the client's socket timeout)."""
        block_ms = max(1, int(min(timeout, self.max_block_s) * 1000))
        stream = self.keys.session(session).events
        _retrying(lambda: self.client.xread({stream: after}, count=1, block=block_ms))

    def newest_sessions(self, limit: int) -> list[str]:
        """The `limit` sessions opened last, newest first; sessions whose keys expired
        leave the index as they are met."""
        found: list[str] = []
        start = 0
        while len(found) < limit:
            names = self._index_page(start, limit)
            if not names:
                break
            alive = self._with_events(names)
            gone = [name for name in names if name not in alive]
            if gone:
                _retrying(partial(self.link.run, [("ZREM", self.keys.sessions, *gone)]))
            found += [name for name in names if name in alive]
            start += len(names) - len(gone)
        return found[:limit]

    def prune_index(self, start: int = 0, count: int = 1000) -> int:
        """Drop from the sessions index those of `count` sessions (oldest first, from
        position `start`) whose keys expired; returns where the next call starts (0
        after the end), so that calls over time cover the whole index."""
        command: Command = ("ZRANGE", self.keys.sessions, start, start + count - 1)
        (page,) = _retrying(partial(self.link.run, [command]))
        names = [name.decode() for name in page]
        if not names:
            return 0
        alive = self._with_events(names)
        gone = [name for name in names if name not in alive]
        if gone:
            _retrying(partial(self.link.run, [("ZREM", self.keys.sessions, *gone)]))
        return 0 if len(names) < count else start + len(names) - len(gone)

    def _index_page(self, first: int, count: int) -> list[str]:
        command: Command = ("ZREVRANGE", self.keys.sessions, first, first + count - 1)
        (page,) = _retrying(partial(self.link.run, [command]))
        return [name.decode() for name in page]

    def _with_events(self, names: list[str]) -> set[str]:
        """Those of `names` whose events stream exists."""
        commands: list[Command] = [("EXISTS", self.keys.session(n).events) for n in names]
        exists = _retrying(partial(self.link.run, commands))
        return {name for name, present in zip(names, exists, strict=True) if present}

    def sessions(self) -> list[str]:
        def run() -> Any:
            return self.client.zrange(self.keys.sessions, 0, -1)

        names: list[bytes] = _retrying(run)
        return [name.decode() for name in names]

"""The journal and the projection store in this process's memory.

For fast tests of whatever sits on a journal. `MemoryJournal` keeps the contract of
`RedisJournal` (tests/contract/test_journal_contract.py runs the same suite on both):
the same decisions with the same refusals, events stored in their codec form and read
back decoded, stream ids of the form `<ms>-<seq>`. One lock makes every decision
atomic, as a Lua script is on Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from cellfleet.broker import codec
from cellfleet.broker.errors import (
    CellIdSpaceExhaustedError,
    SessionOwnedElsewhereError,
    SessionShuttingDownError,
)
from cellfleet.broker.events import (
    AnyEvent,
    CellAdmitted,
    CellClosed,
    CellCompleted,
    CellTerminated,
    ShutdownBegun,
    ToolCompleted,
    ToolFailed,
)
from cellfleet.broker.journal import (
    MAX_CELL_ID,
    FinishOutcome,
    RecordedOutcome,
    SessionState,
    admission_token,
)
from cellfleet.broker.keys import tool_call_field
from cellfleet.broker.tools.invocation import ToolInvocation, ToolReply
from cellfleet.projections.ports import START, StoredProjection, stream_id

CANCELLED = b"cancelled"


@dataclass
class _Session:
    events: list[tuple[str, dict[bytes, bytes]]] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    terminal: dict[str, FinishOutcome] = field(default_factory=dict)
    stored: dict[str, str] = field(default_factory=dict)
    tools: dict[str, bytes] = field(default_factory=dict)


class MemoryJournal:
    """Every session's event log, in memory; thread-safe."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._sessions: dict[str, _Session] = {}
        self._opened: dict[str, float] = {}  # session -> when it was first opened
        self._last = (0, 0)  # the last stream id handed out

    def close(self) -> None:
        return None

    # -- decisions ------------------------------------------------------------------

    def append(self, events: Sequence[AnyEvent]) -> None:
        with self._changed:
            for event in events:
                if self._session(event.session).meta.get("finished") != "1":
                    self._add(event)  # (a finished session's log takes nothing more)

    def open_session(
        self, event: AnyEvent, also: Sequence[AnyEvent] = (), replies: str = ""
    ) -> SessionState:
        with self._changed:
            self._opened.setdefault(event.session, event.at_ms)
            log = self._session(event.session)
            if log.meta.get("finished") != "1":  # a finished session stays so
                if replies:
                    log.meta["replies"] = replies
                for added in (event, *also):
                    self._add(added)
            last = int(log.meta.get("next_cell", 0))
            return SessionState(
                last_cell=last,
                stored=dict(log.stored),
                stored_version=int(log.meta.get("stored_version", 0)),
                shutting_down=log.meta.get("shutdown") == "1",
                finished=log.meta.get("finished") == "1",
                unended=tuple(
                    str(cell)
                    for cell in range(max(1, last - 9999), last + 1 if last < 10**14 else 1)
                    if str(cell) not in log.terminal and f"cell:{cell}" in log.meta
                ),
                unclosed=tuple(
                    str(cell)
                    for cell in range(max(1, last - 9999), last + 1 if last < 10**14 else 1)
                    if f"open:{cell}" in log.meta
                ),
            )

    def admit(self, events: Sequence[AnyEvent]) -> None:
        admitted = events[0]
        assert isinstance(admitted, CellAdmitted)
        with self._changed:
            self._admit(admitted)
            for event in events[1:]:
                self._add(event)

    def finish(
        self,
        terminal: CellCompleted | CellTerminated,
        before: Sequence[AnyEvent] = (),
        after: Sequence[AnyEvent] = (),
    ) -> FinishOutcome:
        kind = (
            FinishOutcome.COMPLETED
            if isinstance(terminal, CellCompleted)
            else FinishOutcome.TERMINATED
        )
        with self._changed:
            log = self._session(terminal.session)
            rest = list(before)
            if rest and isinstance(rest[0], CellAdmitted):
                # It ran: admitted even after the shutdown began (a completion then loses).
                again = self._admit(rest.pop(0), ending_by_shutdown=True)
                if again and terminal.cell in log.terminal:
                    return log.terminal[terminal.cell]  # this very call, retried
            for event in rest:
                self._add(event)
            existing = log.terminal.get(terminal.cell)
            if existing is not None:
                return existing
            if kind is FinishOutcome.COMPLETED and log.meta.get("shutdown") == "1":
                return FinishOutcome.SHUTDOWN
            log.meta[f"open:{terminal.cell}"] = "1"  # until its close
            for event in (terminal, *after):
                self._add(event)
            log.terminal[terminal.cell] = kind
            if isinstance(terminal, CellCompleted) and terminal.stored_writes:
                log.stored.update(terminal.stored_writes)
                log.meta["stored_version"] = str(int(log.meta.get("stored_version", 0)) + 1)
            return kind

    def finish_session(self, event: AnyEvent, retention_s: int) -> None:
        del retention_s  # (nothing here outlives the process)
        with self._changed:
            self._add(event)
            self._session(event.session).meta["finished"] = "1"

    def begin_shutdown(self, event: ShutdownBegun) -> bool:
        with self._changed:
            log = self._session(event.session)
            if log.meta.get("shutdown") == "1":
                return False
            log.meta["shutdown"] = "1"
            self._add(event)
            return True

    def record_tool_outcome(
        self, invocation: ToolInvocation, event: ToolCompleted | ToolFailed, reply: ToolReply
    ) -> RecordedOutcome:
        field_name = tool_call_field(invocation.cell, invocation.call_id)
        with self._changed:
            log = self._session(invocation.session)
            replies_to = log.meta.get("replies") or None
            state = log.tools.get(field_name)
            if state is not None:
                return RecordedOutcome(state, replies_to)
            if log.meta.get("finished") == "1" or invocation.cell in log.terminal:
                log.tools[field_name] = CANCELLED  # (its late outcome is dropped, for good)
                return RecordedOutcome(CANCELLED, replies_to)
            self._add(event)
            recorded = codec.encode_tool_reply(reply)
            log.tools[field_name] = recorded
            return RecordedOutcome(recorded, replies_to)

    def fenced_off(self, session: str) -> bool:
        del session  # (one process: nobody takes a session over)
        return False

    def cancel_tool(self, session: str, cell: str, call_id: str) -> None:
        """Mark a call cancelled unless its outcome is recorded (what a host does)."""
        with self._changed:
            self._session(session).tools.setdefault(tool_call_field(cell, call_id), CANCELLED)

    # -- reading ----------------------------------------------------------------------

    def stored_values(self, session: str) -> dict[str, str]:
        return self.stored_snapshot(session)[0]

    def stored_snapshot(self, session: str) -> tuple[dict[str, str], int]:
        with self._changed:
            log = self._session(session)
            return dict(log.stored), int(log.meta.get("stored_version", 0))

    def read(
        self,
        session: str,
        after: str = START,
        count: int = 1000,
        *,
        cells: Collection[str] | None = None,
        kinds: Collection[str] = (),
        mentioning: str | None = None,
    ) -> Iterator[tuple[str, AnyEvent]]:
        del count  # everything is in memory: one batch
        keep = codec.sieve(cells, kinds, mentioning)
        start = stream_id(after)
        with self._changed:
            entries = [
                (entry_id, fields)
                for entry_id, fields in self._session(session).events
                if stream_id(entry_id) > start
            ]
        for entry_id, fields in entries:
            if keep is None or keep(fields):
                yield entry_id, codec.decode(session, fields)

    def wait_after(self, session: str, after: str, timeout: float) -> None:
        start = stream_id(after)

        def arrived() -> bool:
            events = self._session(session).events
            return bool(events) and stream_id(events[-1][0]) > start

        with self._changed:
            self._changed.wait_for(arrived, timeout)

    def sessions(self) -> list[str]:
        with self._changed:
            return sorted(self._opened, key=lambda s: (self._opened[s], s))

    # -- with the lock held -----------------------------------------------------------

    def _session(self, session: str) -> _Session:
        return self._sessions.setdefault(session, _Session())

    def _add(self, event: AnyEvent) -> None:
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        entry_id = f"{self._last[0]}-{self._last[1]}"
        encoded = codec.encode(event)
        fields = {name.encode(): value for name, value in encoded.items()}
        log = self._session(event.session)
        log.events.append((entry_id, fields))
        if isinstance(event, CellClosed):
            log.meta.pop(f"open:{event.cell}", None)
        self._changed.notify_all()

    def _admit(self, admitted: AnyEvent, *, ending_by_shutdown: bool = False) -> bool:
        """Record an admission by `admit_cell`'s rules; True if it was recorded already
        (a retry). Raises the refusals `RedisJournal` raises."""
        assert isinstance(admitted, CellAdmitted)
        log = self._session(admitted.session)
        cell, token = admitted.cell, admission_token(admitted)
        existing = log.meta.get(f"cell:{cell}")
        if existing == f"{admitted.call_id} {token}":
            return True
        if log.meta.get("shutdown") == "1" and not ending_by_shutdown:
            raise SessionShuttingDownError
        if int(cell) > MAX_CELL_ID:
            raise CellIdSpaceExhaustedError
        if existing is not None:
            raise SessionOwnedElsewhereError(admitted.session)
        if int(cell) > int(log.meta.get("next_cell", 0)):
            log.meta["next_cell"] = cell
        self._add(admitted)
        log.meta[f"cell:{cell}"] = f"{admitted.call_id} {token}"
        return False


class MemoryProjectionStore:
    """A `projections.ports.ProjectionStore` in memory."""

    def __init__(self, stored: Mapping[tuple[str, str], StoredProjection] | None = None) -> None:
        self._lock = threading.Lock()
        self._stored: dict[tuple[str, str], StoredProjection] = dict(stored or {})

    def position(self, session: str, name: str) -> str | None:
        stored = self.load(session, name)
        return None if stored is None else stored.position

    def load(self, session: str, name: str) -> StoredProjection | None:
        with self._lock:
            return self._stored.get((session, name))

    def save(self, session: str, name: str, stored: StoredProjection) -> None:
        with self._lock:
            self._stored[(session, name)] = stored

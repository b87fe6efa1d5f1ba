"""A cell's event writer: numbers its events, batches them, appends them.

Events that have no effect outside the actor yet (output, timers set) wait in a batch
and go with the next append that has one. The batch starts with the cell's
`CellAdmitted`: a cell runs at once and its admission rides on its first append. If
the log refuses the admission (shutdown began, the session is owned elsewhere), the
cell never existed: `Refused` carries the refusal to the actor. Every event the
writer takes also advances the cell's `CellFacts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cellfleet.actors.cell.facts import CellFacts, advance
from cellfleet.actors.session.store import SessionStore
from cellfleet.broker import events as ev
from cellfleet.broker.crash import crash_point
from cellfleet.broker.errors import AdmissionRefusedError
from cellfleet.broker.journal import FinishOutcome, RedisJournal
from cellfleet.broker.redis.link import Command

_T = TypeVar("_T")
_E = TypeVar("_E", bound=ev.AnyEvent)
MAX_UNSAVED_EVENTS = 256
# What one cell may write to the log before it is ended (its ending is written still).
MAX_CELL_EVENTS = 300_000


@dataclass(frozen=True, slots=True)
class FailedEnding:
    """The end of a failed cell, for the session to record once the log takes it."""

    before: list[ev.AnyEvent]
    terminal: ev.CellCompleted
    after: list[ev.AnyEvent]

    def record(self, journal: RedisJournal) -> None:
        journal.finish(self.terminal, self.before, self.after)


class Refused(Exception):  # noqa: N818 - control flow inside the cell actor
    """The log refused the cell's admission (carries the refusal)."""

    def __init__(self, error: AdmissionRefusedError) -> None:
        super().__init__(str(error))
        self.error = error


class CellLog:
    """The single writer of one cell's events (runs on the cell actor's thread)."""

    def __init__(
        self, journal: RedisJournal, clock: Callable[[], float], admitted: ev.CellAdmitted
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._session = admitted.session
        self._cell = admitted.cell
        self.facts = CellFacts()
        advance(self.facts, admitted)
        self._next_seq = self.facts.next_seq
        self._unsaved: list[ev.AnyEvent] = [admitted]  # the admission goes first
        self.admitted = False  # the log accepted the admission
        self._written = 1  # events of the cell, the admission counted

    @classmethod
    def resumed(
        cls, journal: RedisJournal, clock: Callable[[], float], events: Sequence[ev.AnyEvent]
    ) -> CellLog:
        """The writer of a cell whose `events` (its own, admission first) are in the log
        already: a recovered cell's, whose previous owner stopped."""
        admitted = events[0]
        assert isinstance(admitted, ev.CellAdmitted)
        log = cls(journal, clock, admitted)
        for event in events[1:]:
            advance(log.facts, event)
        log._next_seq = log.facts.next_seq
        log._unsaved = []
        log.admitted = True
        log._written = len(events)
        return log

    def stamp(self) -> ev.Envelope:
        """The envelope of the cell's next event: `SomeEvent(**log.stamp(), ...)`."""
        seq = self._next_seq
        self._next_seq += 1
        return {"session": self._session, "cell": self._cell, "seq": seq, "at_ms": self._clock()}

    @property
    def over_budget(self) -> bool:
        """The cell wrote more events than `MAX_CELL_EVENTS`: it must end."""
        return self._written > MAX_CELL_EVENTS

    def add(self, event: _E) -> _E:
        """Batch `event` (stamped by `stamp`) for the next append."""
        self._written += 1
        self._unsaved.append(event)
        advance(self.facts, event)
        if len(self._unsaved) >= MAX_UNSAVED_EVENTS:
            self.flush()
        return event

    def withdraw(self, event: ev.AnyEvent, facts: CellFacts) -> None:
        """Take back `event`, the last one added (if it was), whose effect did not
        happen; `facts` are the facts from before it."""
        self._unsaved = [unsaved for unsaved in self._unsaved if unsaved is not event]
        self.facts = facts

    def flush(self) -> None:
        """Append the batch; on failure it stays batched (nothing is lost)."""
        if not self._unsaved:
            return
        if self.admitted:
            self._journal.append(self._unsaved)
        else:
            self._admitting(lambda: self._journal.admit(self._unsaved))
        self._unsaved = []
        crash_point("events_appended")

    def ending_after_failure(
        self, error_text: str, open_tool_calls: Sequence[str]
    ) -> FailedEnding | None:
        """What an admitted cell that failed outside its lifecycle still owes the log:
        the batch that could not be appended, its open tool calls cancelled, a
        completion with `error_text` and its close (None: nothing is owed)."""
        if not self.admitted or self.facts.outcome is not None:
            return None
        before = [*self._unsaved]
        self._unsaved = []
        before += [ev.ToolCancelled(**self.stamp(), call_id=call) for call in open_tool_calls]
        terminal = ev.CellCompleted(**self.stamp(), error_text=error_text, by_host=True)
        return FailedEnding(before, terminal, [ev.CellClosed(**self.stamp())])

    def take_commands(self) -> tuple[list[ev.AnyEvent], list[Command]]:
        """The batch, as the commands that append it, for a caller that sends them in
        its own round trip (tool calls); `put_back` if that fails."""
        events, self._unsaved = self._unsaved, []
        return events, self._journal.appends(events)

    def check_commands(self, replies: Sequence[Any]) -> None:
        """Raise the log's refusal among the replies of `take_commands`' commands."""
        if replies:
            self._journal.check_appended(self._session, replies)

    def put_back(self, events: Sequence[ev.AnyEvent]) -> None:
        """Batch `events` again, ahead of anything batched since they were taken."""
        self._unsaved[0:0] = events

    def finish(
        self,
        store: SessionStore,
        terminal: ev.CellCompleted | ev.CellTerminated,
        after: Sequence[ev.AnyEvent] = (),
        writes: Mapping[str, str] | None = None,
    ) -> FinishOutcome:
        """Append the batch, then `terminal` and `after` unless another terminal event
        won (the session's `store` merges a winning completion's `writes`)."""
        before, self._unsaved = self._unsaved, []
        try:
            won = store.commit(
                writes or {},
                lambda: self._admitting(lambda: self._journal.finish(terminal, before, after)),
            )
        except BaseException:
            self._unsaved[0:0] = before  # nothing is lost (the cell fails next)
            raise
        ours = (
            FinishOutcome.COMPLETED
            if isinstance(terminal, ev.CellCompleted)
            else FinishOutcome.TERMINATED
        )
        if won is ours:
            for event in (terminal, *after):
                advance(self.facts, event)
        return won

    def _admitting(self, append: Callable[[], _T]) -> _T:
        """Run an append that may carry the admission (first in the batch)."""
        try:
            result = append()
        except AdmissionRefusedError as error:
            raise Refused(error) from None
        self.admitted = True
        return result

"""Helpers for the session-layer tests: gated tools, exact model outputs, the event log.

Nothing here sleeps to wait for something: tests wait on `threading.Event`s that tool
handlers set, on answer futures, or on entries of the session's event stream (read
with a blocking `XREAD`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import orjson

from cellfleet.actors.cell.facts import CellFacts
from cellfleet.actors.cell.facts import fold as fold_facts
from cellfleet.broker import codec, keys
from cellfleet.broker.client import Session
from cellfleet.broker.contract.render import ToolOutput, render_response
from cellfleet.broker.contract.responses import (
    CellAnswer,
    ContentItem,
    Pending,
    Result,
    Terminated,
    Yielded,
)
from cellfleet.broker.contract.tools import JsonValue, ToolDefinition
from cellfleet.broker.events import (
    AnyEvent,
    CellAdmitted,
    CellClosed,
    CellCompleted,
    CellTerminated,
    ObservationDelivered,
    OutputProduced,
    ShutdownBegun,
    ShutdownFinished,
    ToolAttemptFailed,
    ToolCancelled,
    ToolCompleted,
    ToolFailed,
    ToolRequested,
)
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.tools.invocation import ToolCallError
from cellfleet.ops.host import Host
from tests.reference import behaviors

TIMEOUT_S = 10.0  # an answer or event that takes longer than this is a failure
TOOLS = [ToolDefinition(name=name) for name in ("echo", "fail", "sleep", "gate")]


# -- tools ------------------------------------------------------------------------------


class Gates:
    """The `gate` tool: a call blocks until the test opens its gate (by name).

    `tools.gate({name: "g", result: v})` sets `entered("g")` when the handler starts
    and returns `v` (default `{"opened": "g"}`) once `open("g")` was called.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}
        self._entered: dict[str, threading.Event] = {}

    def _event(self, table: dict[str, threading.Event], name: str) -> threading.Event:
        with self._lock:
            return table.setdefault(name, threading.Event())

    def entered(self, name: str = "g") -> threading.Event:
        return self._event(self._entered, name)

    def wait_entered(self, name: str = "g") -> None:
        assert self.entered(name).wait(TIMEOUT_S), f"tool gate {name!r} was never called"

    def open(self, name: str = "g") -> None:
        self._event(self._gates, name).set()

    def open_all(self) -> None:
        with self._lock:
            names = [*self._gates, *self._entered]
        for name in names:
            self.open(name)

    def handler(self, value: JsonValue) -> JsonValue:
        args = value if isinstance(value, dict) else {}
        name = str(args.get("name", "g"))
        self.entered(name).set()
        if not self._event(self._gates, name).wait(TIMEOUT_S * 3):
            raise ToolCallError(f"gate {name} was never opened")
        return args.get("result", {"opened": name})


def handlers(gates: Gates) -> dict[str, Callable[[JsonValue], JsonValue]]:
    return {
        "echo": behaviors.echo,
        "fail": behaviors.fail,
        "sleep": behaviors.sleep,
        "gate": gates.handler,
    }


# -- sessions ---------------------------------------------------------------------------


@dataclass
class Harness:
    """A session plus what its delegate callbacks received."""

    host: Host
    session: Session
    notes: list[tuple[str, str, str]] = field(default_factory=list)
    calls: int = 0
    closed: list[str] = field(default_factory=list)
    _closed_events: dict[str, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        return self.session.id

    def on_notify(self, call_id: str, cell_id: str, text: str) -> None:
        self.notes.append((call_id, cell_id, text))

    def on_cell_closed(self, cell_id: str) -> None:
        self.closed.append(cell_id)
        self._closed_event(cell_id).set()

    def _closed_event(self, cell_id: str) -> threading.Event:
        with self._lock:
            return self._closed_events.setdefault(cell_id, threading.Event())

    def wait_closed(self, cell_id: str) -> None:
        assert self._closed_event(cell_id).wait(TIMEOUT_S), f"cell {cell_id} never closed"

    # -- model-facing calls --------------------------------------------------------------

    def next_call_id(self) -> str:
        self.calls += 1
        return f"call-{self.calls}"

    def exec(self, source: str, call_id: str | None = None) -> ToolOutput:
        return self.session.exec(call_id or self.next_call_id(), source)

    def wait(self, cell_id: str, yield_time_ms: int | None = None, **extra: Any) -> ToolOutput:
        args: dict[str, Any] = {"cell_id": cell_id, **extra}
        if yield_time_ms is not None:
            args["yield_time_ms"] = yield_time_ms
        return self.session.wait(orjson.dumps(args).decode())

    def terminate(self, cell_id: str) -> ToolOutput:
        return self.session.terminate(cell_id)

    # -- backend futures (an observer that stays registered while the test acts) -------

    def start(
        self, source: str, yield_time_ms: int = 5_000, call_id: str | None = None
    ) -> tuple[str, Future[CellAnswer]]:
        """Start a cell; the future is its `exec` observer (cancel it to drop it)."""
        return self.session.backend.execute(
            call_id or self.next_call_id(), source, yield_time_ms, None
        )

    def observe(self, cell_id: str, yield_time_ms: int = 5_000) -> Future[CellAnswer]:
        """Attach a `wait` observer; returns once it is registered."""
        return self.session.backend.observe(cell_id, "yield", yield_time_ms)

    # -- the event log -------------------------------------------------------------------

    def events(self) -> list[AnyEvent]:
        return [event for _, event in self.host.journal.read(self.id)]

    def cell_events(self, cell_id: str) -> list[AnyEvent]:
        return [event for event in self.events() if event.cell == cell_id]

    def wait_event(
        self, predicate: Callable[[AnyEvent], bool], timeout: float = TIMEOUT_S
    ) -> AnyEvent:
        """Block until the log holds an event matching `predicate` (blocking XREAD)."""
        return wait_for_event(self.host, self.id, predicate, timeout)


def wait_for_event(
    host: Host, session_id: str, predicate: Callable[[AnyEvent], bool], timeout: float
) -> AnyEvent:
    client = host.journal.client
    stream = keys.SessionKeys(session_id).events
    position = "0-0"
    deadline = time.monotonic() + timeout
    while True:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        assert remaining_ms > 0, "the expected event never reached the log"
        batches = client.xread({stream: position}, block=min(remaining_ms, 2_000), count=500)
        for _, entries in batches or ():
            for entry_id, fields in entries:
                position = entry_id.decode()
                event = codec.decode(session_id, fields)
                if predicate(event):
                    return event


def is_event(cls: type[Any], cell: str | None = None, **fields: Any) -> Callable[[AnyEvent], bool]:
    def matches(event: AnyEvent) -> bool:
        return (
            isinstance(event, cls)
            and (cell is None or event.cell == cell)
            and all(getattr(event, name) == value for name, value in fields.items())
        )

    return matches


def hold_journal(
    monkeypatch: Any,
    journal: RedisJournal,
    method: str,
    when: Callable[[Any], bool],
) -> tuple[threading.Event, threading.Event]:
    """Make `journal.<method>` block (on the cell actor's thread) when `when(first arg)`:
    returns (reached, release)."""
    original = getattr(journal, method)
    reached, release = threading.Event(), threading.Event()

    def held(first: Any, *args: Any, **kwargs: Any) -> Any:
        if when(first):
            reached.set()
            assert release.wait(TIMEOUT_S)
        return original(first, *args, **kwargs)

    monkeypatch.setattr(journal, method, held)
    return reached, release


# -- exact outputs ----------------------------------------------------------------------


def text(value: str) -> ContentItem:
    return {"type": "input_text", "text": value}


def header_pattern(status: str) -> str:
    return rf"{re.escape(status)}\nWall time \d+\.\d seconds\nOutput:\n"


def assert_output(
    output: ToolOutput, status: str, items: list[str | ContentItem], success: bool | None = None
) -> None:
    """`output` is exactly: the `status` header, then `items` (strings are text items)."""
    assert output.items, "empty tool output"
    header = output.items[0]
    assert header["type"] == "input_text"
    assert re.fullmatch(header_pattern(status), header["text"]), header["text"]
    expected = [text(item) if isinstance(item, str) else item for item in items]
    assert output.items[1:] == expected
    assert output.success is (status != "Script failed" if success is None else success)


def assert_plain_failure(output: ToolOutput, message: str) -> None:
    """A lifecycle failure: just the message, no header, not successful."""
    assert output.items == [text(message)]
    assert output.success is False


def assert_not_found(output: ToolOutput, cell_id: str) -> None:
    assert_output(output, "Script failed", [f"Script error:\nexec cell {cell_id} not found"])


def render(answer: CellAnswer, began: float | None = None) -> ToolOutput:
    """What the model would see for a backend answer."""
    assert not isinstance(answer, Pending)
    wall = 0.0 if began is None else time.monotonic() - began
    return render_response(answer, wall_time_s=wall, max_output_tokens=None)


def answer_kind(answer: CellAnswer) -> str:
    return {Yielded: "Yielded", Result: "Result", Terminated: "Terminated", Pending: "Pending"}[
        type(answer)
    ]


def wall_seconds(output: ToolOutput) -> float:
    found = re.search(r"Wall time (\d+\.\d) seconds", output.items[0]["text"])
    assert found is not None
    return float(found.group(1))


# -- event-log invariants ---------------------------------------------------------------

_TOOL_ENDS = (ToolCompleted, ToolFailed, ToolCancelled)
_WORKER_EVENTS = (ToolCompleted, ToolFailed, ToolAttemptFailed)


class FactsAudit:
    """The final `CellFacts` of every cell a host closed, by (session, cell): what each
    cell actor believed about its cell, to check against the cell's events."""

    def __init__(self) -> None:
        self._facts: dict[tuple[str, str], CellFacts] = {}
        self._lock = threading.Lock()

    def record(self, session: str, cell: str, facts: CellFacts) -> None:
        with self._lock:
            self._facts[(session, cell)] = facts.copy()

    def check(self, session: str, events: list[AnyEvent]) -> None:
        """Each closed cell's facts are what its events in the log say."""
        with self._lock:
            audited = {c: f for (s, c), f in self._facts.items() if s == session}
        for cell, facts in audited.items():
            logged = fold_facts(e for e in events if e.cell == cell)
            assert facts == logged, f"cell {cell}: the actor's {facts}, the log's {logged}"


def check_log(events: list[AnyEvent], *, shut_down: bool) -> None:
    """Invariants every session's log must satisfy, whatever the test did."""
    by_cell: dict[str, list[AnyEvent]] = {}
    for event in events:
        if event.cell:
            by_cell.setdefault(event.cell, []).append(event)
    for cell, cell_events in by_cell.items():
        _check_cell(cell, cell_events)
    if shut_down:
        kinds = [type(e) for e in events]
        assert kinds.count(ShutdownBegun) == 1, kinds
        assert kinds.count(ShutdownFinished) == 1, kinds
        assert isinstance(events[-1], ShutdownFinished), events[-1]
        began = kinds.index(ShutdownBegun)
        # After the shutdown began, a cell is admitted only with its termination (it
        # ran before; the shutdown, or a terminate, ends it).
        for event in events[began:]:
            if isinstance(event, CellAdmitted):
                ends = [e for e in events if e.cell == event.cell]
                assert any(isinstance(e, CellTerminated) for e in ends), (
                    f"cell {event.cell} admitted after the shutdown began"
                )
                assert not any(isinstance(e, CellCompleted) for e in ends)
    merges = 0  # a cell starts from stored values the log already holds
    for event in events:
        if isinstance(event, CellAdmitted):
            assert event.stored_version <= merges, f"cell {event.cell}: {event.stored_version}"
        elif isinstance(event, CellCompleted) and event.stored_writes:
            merges += 1  # (a losing completion is never appended)


def _check_cell(cell: str, events: list[AnyEvent]) -> None:
    assert isinstance(events[0], CellAdmitted), f"cell {cell}: first event {events[0]}"
    # A retried append whose first attempt did land repeats (cell, seq) entries, which
    # readers drop; each repeat is the same event again, and every other one is newer.
    # Tool outcomes are written by tool workers, which carry no cell sequence.
    seqs = [e.seq for e in events if not isinstance(e, _WORKER_EVENTS)]
    first: dict[int, AnyEvent] = {}
    kept: list[AnyEvent] = []
    newest = -1  # (a running maximum: 300,000 events must not take quadratic time)
    for event in events:
        if isinstance(event, _WORKER_EVENTS):
            kept.append(event)
        elif event.seq in first:
            assert event == first[event.seq], f"cell {cell}: seq {event.seq} differs on repeat"
        else:
            assert event.seq > newest, f"cell {cell}: seqs {seqs}"
            newest = event.seq
            first[event.seq] = event
            kept.append(event)
    events = kept
    terminals = [i for i, e in enumerate(events) if isinstance(e, CellCompleted | CellTerminated)]
    assert len(terminals) <= 1, f"cell {cell}: {len(terminals)} terminal events"
    closes = [i for i, e in enumerate(events) if isinstance(e, CellClosed)]
    assert len(closes) <= 1, f"cell {cell}: closed {len(closes)} times"
    if closes:
        assert terminals, f"cell {cell}: closed without an end"
        assert terminals[0] < closes[0], f"cell {cell}: closed before its end"
        assert closes[0] == len(events) - 1, f"cell {cell}: events after close"
    outputs = 0
    delivered = 0
    open_tools: set[str] = set()
    for index, event in enumerate(events):
        if isinstance(event, OutputProduced):
            outputs += 1
        elif isinstance(event, ObservationDelivered):
            assert delivered <= event.outputs <= outputs, (
                f"cell {cell}: answer counts {event.outputs} outputs "
                f"(before: {delivered}, produced: {outputs})"
            )
            delivered = event.outputs
            if event.kind in ("completed", "terminated"):
                assert terminals, f"cell {cell}: a terminal answer without an end"
                assert terminals[0] < index, f"cell {cell}: answer before its end"
        elif isinstance(event, ToolRequested):
            open_tools.add(event.call_id)
        elif isinstance(event, _TOOL_ENDS):
            open_tools.discard(event.call_id)
        elif isinstance(event, CellCompleted | CellTerminated):
            assert not open_tools, f"cell {cell}: tools {open_tools} outstanding at its end"


def delivered_items(events: list[AnyEvent], cell: str) -> Iterator[tuple[str, list[ContentItem]]]:
    """Per answer recorded for `cell`: (kind, the output items it carried, from the log)."""
    produced: list[ContentItem] = []
    seen = 0
    for event in events:
        if event.cell != cell:
            continue
        if isinstance(event, OutputProduced):
            produced.append(event.item)
        elif isinstance(event, ObservationDelivered):
            yield event.kind, produced[seen : event.outputs]
            seen = event.outputs

"""Portable traces: one session's events as a self-describing JSON Lines file.

Line 1 is the header: the format and its version, the cellfleet and V8 versions that
recorded the session, the session id, when it was exported and how many events follow.
Each further line is one event: its stream id and its stream fields (as the log stores
them, `codec.encode`), so that a trace holds exactly what Redis held.

    {"format": "cellfleet-trace", "version": 1, "cellfleet": "0.1.0", "v8": "14.4.258.23",
     "session": "3f2a…", "exported_at": "2026-12-04T20:59:12Z", "events": 42}
    {"id": "1764878352000-0", "fields": {"v": "1", "t": "session_opened", …}}

Reading checks everything: a file that is not a trace, a version this cellfleet does not
know, a line that is not an event, ids out of order, a missing tail. Each refusal is one
`TraceError` naming the line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

from cellfleet.broker import codec
from cellfleet.broker.events import AnyEvent, SessionOpened

FORMAT = "cellfleet-trace"
VERSION = 1
MAX_AT_MS = 1e14  # milliseconds since 1970: the year 5138


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the line."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line


@dataclass(frozen=True, slots=True)
class TraceHeader:
    session: str
    cellfleet: str
    v8: str
    exported_at: str
    events: int
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Trace:
    header: TraceHeader
    entries: list[tuple[str, AnyEvent]]  # (stream id, event), in log order


def write_trace(out: IO[str], header: TraceHeader, entries: Iterable[tuple[str, AnyEvent]]) -> None:
    """Write `header` (its `events` is counted here) and `entries` to `out`."""
    lines = [_entry_line(entry_id, event) for entry_id, event in entries]
    counted = dataclasses.replace(header, events=len(lines))
    fields = {"format": FORMAT, **dataclasses.asdict(counted)}
    out.write(orjson.dumps(fields).decode() + "\n")
    for line in lines:
        out.write(line + "\n")


def export_header(session: str, cellfleet: str, v8: str) -> TraceHeader:
    exported_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return TraceHeader(
        session=session, cellfleet=cellfleet, v8=v8, exported_at=exported_at, events=0
    )


def read_trace(lines: Iterable[str]) -> Trace:
    """Read a whole trace, checking every line (see the module docstring)."""
    numbered = iter(enumerate(lines, start=1))
    header = _header(next(numbered, (1, "")))
    entries: list[tuple[str, AnyEvent]] = []
    previous: tuple[int, int] | None = None
    for number, line in numbered:
        if not line.strip():
            continue
        if not line.endswith("\n"):
            raise TraceError(number, "cut off (the file ends in the middle of a line)")
        entry_id, event = _entry(number, line, header.session)
        order = _stream_order(number, entry_id)
        if previous is not None and order == previous:
            raise TraceError(number, f"event {entry_id} appears twice (a repeated line)")
        if previous is not None and order < previous:
            raise TraceError(number, f"event {entry_id} comes after a later one (reordered)")
        if not entries and not isinstance(event, SessionOpened):
            raise TraceError(number, "the first event is not the session's opening (cut off?)")
        previous = order
        entries.append((entry_id, event))
    if not header.events:
        raise TraceError(1, "the trace has no events")
    if len(entries) != header.events:
        missing = len(entries) + 2  # the line where the next event was due
        raise TraceError(
            missing, f"the header announces {header.events} events, the file has {len(entries)}"
        )
    return Trace(header, entries)


def renamed(entries: Iterable[tuple[str, AnyEvent]], session: str) -> Iterator[AnyEvent]:
    """The events of `entries` as events of `session` (an imported trace's new id)."""
    for _, event in entries:
        yield dataclasses.replace(event, session=session)


def _entry_line(entry_id: str, event: AnyEvent) -> str:
    fields = {name: value.decode() for name, value in codec.encode(event).items()}
    return orjson.dumps({"id": entry_id, "fields": fields}).decode()


def _header(numbered: tuple[int, str]) -> TraceHeader:
    number, line = numbered
    data = _json(number, line)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TraceError(number, f'not a cellfleet trace (no "format": "{FORMAT}" header)')
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TraceError(number, f"the header's version is not a version: {version!r}")
    if version > VERSION:
        raise TraceError(
            number, f"trace format version {version} is newer than this cellfleet's ({VERSION})"
        )
    session = data.get("session")
    if not isinstance(session, str) or not session or not session.isprintable():
        raise TraceError(number, "the header's session is not a session id")
    try:
        return TraceHeader(
            session=session,
            cellfleet=_text(data, "cellfleet"),
            v8=_text(data, "v8"),
            exported_at=_text(data, "exported_at"),
            events=_count(data, "events"),
            version=version,
        )
    except (KeyError, TypeError) as error:
        raise TraceError(number, f"the header lacks {error}") from None


def _entry(number: int, line: str, session: str) -> tuple[str, AnyEvent]:
    data = _json(number, line)
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise TraceError(number, 'not an event (expected {"id": ..., "fields": {...}})')
    fields = data.get("fields")
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise TraceError(number, "not an event: its fields are not an object of strings")
    try:
        event = codec.decode(session, fields)
    except codec.DecodeError as error:
        raise TraceError(number, str(error)) from None
    problem = codec.type_problem(event)
    if problem is not None:
        raise TraceError(number, f"not a {event.TYPE} event: {problem}")
    if not 0 <= event.at_ms < MAX_AT_MS:  # (NaN fails this too)
        raise TraceError(number, f"not a time: {fields.get('at')!r}")
    if event.cell and not (event.cell.isascii() and event.cell.isdigit()):
        raise TraceError(number, f"not a cell id: {event.cell!r}")
    return data["id"], event


def _stream_order(number: int, entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    try:
        return int(milliseconds), int(sequence)
    except ValueError:
        raise TraceError(number, f"not a stream id: {entry_id!r}") from None


def _json(number: int, line: str) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise TraceError(number, f"not JSON ({error})") from None


def _text(data: dict[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise TypeError(f'"{name}" as text')
    return value


def _count(data: dict[str, Any], name: str) -> int:
    value = data[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f'"{name}" as a count')
    return value

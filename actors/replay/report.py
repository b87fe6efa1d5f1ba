"""What a replay found: per cell identical, diverged (where, and what each side did) or
not replayable (why), as text for a person and as JSON data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

MAIN_FILE = "exec_main.mjs"
_SHOWN_CHARS = 400  # of each side of a divergence, in the text report (JSON has all)


class Status(StrEnum):
    IDENTICAL = "identical"
    DIVERGED = "diverged"
    UNREPLAYABLE = "unreplayable"


@dataclass(frozen=True, slots=True)
class Divergence:
    """The first difference: the recorded event at `position` among the cell's events
    (its admission is 0) and what the replay produced instead (None: nothing)."""

    position: int
    recorded: dict[str, Any] | None  # None: the record holds nothing more
    produced: dict[str, Any] | None
    reason: str
    site: tuple[int, int] | None = None  # (line, column) of the source that produced it
    after_site: tuple[int, int] | None = None  # else: of the last event produced again


@dataclass(frozen=True, slots=True)
class CellReport:
    cell: str
    status: Status
    events: int  # events produced again and found equal
    divergence: Divergence | None = None
    notes: tuple[str, ...] = ()
    problem: str | None = None  # UNREPLAYABLE: why
    source: str = ""
    elapsed_s: float = 0.0

    def render(self) -> str:
        if self.status is Status.UNREPLAYABLE:
            lines = [f"cell {self.cell}: cannot be replayed: {self.problem}"]
        elif self.divergence is None:
            lines = [f"cell {self.cell}: identical ({self.events} events)"]
        else:
            lines = [f"cell {self.cell}: " + _render_divergence(self.divergence, self.source)]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"cell": self.cell, "status": str(self.status)}
        data["events"] = self.events
        if self.problem is not None:
            data["problem"] = self.problem
        if self.divergence is not None:
            d = self.divergence
            where = d.site or d.after_site
            data["divergence"] = {
                "position": d.position,
                "reason": d.reason,
                "recorded": d.recorded,
                "produced": d.produced,
                "location": None
                if where is None
                else {
                    "file": MAIN_FILE,
                    "line": where[0],
                    "column": where[1],
                    "exact": d.site is not None,
                    "source_line": _source_line(self.source, where[0]),
                },
            }
        data["notes"] = list(self.notes)
        data["elapsed_s"] = round(self.elapsed_s, 6)
        return data


@dataclass(frozen=True, slots=True)
class ReplayReport:
    session: str
    cells: Sequence[CellReport]
    notes: Sequence[str] = field(default_factory=tuple)  # about the whole session

    @property
    def identical(self) -> bool:
        return all(cell.status is Status.IDENTICAL for cell in self.cells)

    @property
    def events(self) -> int:
        return sum(cell.events for cell in self.cells)

    def render(self) -> str:
        lines = [f"note: {note}" for note in self.notes]
        lines += [cell.render() for cell in self.cells]
        counts = dict.fromkeys(Status, 0)
        for cell in self.cells:
            counts[cell.status] += 1
        summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        cells = f"{len(self.cells)} cell{'s' if len(self.cells) != 1 else ''}"
        lines.append(f"session {self.session}: {cells} replayed ({summary or 'none'})")
        return "\n".join(lines)

    def to_data(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "identical": self.identical,
            "notes": list(self.notes),
            "cells": [cell.to_data() for cell in self.cells],
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_data()).decode()


def _render_divergence(d: Divergence, source: str) -> str:
    lines = [f"diverged at event {d.position}: {d.reason}"]
    lines.append(f"  recorded: {_shown(d.recorded, 'nothing more')}")
    lines.append(f"  produced: {_shown(d.produced, 'nothing')}")
    where, exact = (d.site, True) if d.site is not None else (d.after_site, False)
    if where is not None:
        line, column = where
        lead = "at" if exact else "after the event made at"
        lines.append(f"  {lead} {MAIN_FILE}:{line}:{column}")
        text = _source_line(source, line)
        if text is not None:
            text, column = _window(text, column)
            number = str(line)
            lines.append(f"    {number} | {text}")
            lines.append(f"    {' ' * len(number)} | {_caret(text, column)}")
    return "\n".join(lines)


def _shown(view: dict[str, Any] | None, nothing: str) -> str:
    if view is None:
        return nothing
    rest = {key: value for key, value in view.items() if key != "event"}
    text = f"{view.get('event')} {orjson.dumps(rest).decode()}" if rest else str(view["event"])
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _source_line(source: str, line: int) -> str | None:
    lines = source.split("\n")
    return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else None


def _window(text: str, column: int, reach: int = 60) -> tuple[str, int]:
    """At most `reach` characters of a long line on each side of `column` (a minified
    source is one line), and the column within what is shown."""
    if len(text) <= 2 * reach:
        return text, column
    start = max(0, column - 1 - reach)
    shown = text[start : column - 1 + reach]
    lead = "…" if start else ""
    tail = "…" if start + len(shown) < len(text) else ""
    return lead + shown + tail, column - start + len(lead)


def _caret(text: str, column: int) -> str:
    """A caret under `column` (1-based), keeping the line's tabs so that it lines up."""
    lead = "".join(ch if ch == "\t" else " " for ch in text[: max(0, column - 1)])
    return lead + "^"

"""What the HTML trace page shows, folded from a session's events into plain JSON data.

Times are milliseconds from the session's first event. Per cell: its source and exec
call, its outcome, outputs, nested tool calls (input, outcome, retries), timers,
notifications, observations, stored writes, and three kinds of intervals for its bar:
its life (admission to its terminal event, or to the end of the log), `waiting` (a tool
call or a timer outstanding: its JavaScript awaits an input) and `yielded` (from an
answer that left the cell running to the cell's next answer: the model had control).

The fold follows `projections.cells`: an entry that repeats a (cell, seq) already seen is
skipped, tool outcomes (written by workers) are matched by call id and the first wins,
the first terminal event wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cellfleet.broker import events as ev

_TERMINAL = (ev.CellCompleted, ev.CellTerminated)
_TOOL_OUTCOMES = (ev.ToolCompleted, ev.ToolFailed, ev.ToolCancelled)
_LEFT_RUNNING = (ev.ObservationKind.YIELDED, ev.ObservationKind.PENDING)


def page_data(session: str, events: Iterable[ev.AnyEvent]) -> dict[str, Any]:
    """The page's data: the session's facts and one record per cell, in admission order."""
    listed = list(events)
    origin = listed[0].at_ms if listed else 0.0
    end = _ms(listed[-1].at_ms - origin) if listed else 0.0
    cells: dict[str, _Cell] = {}
    seen: set[tuple[str, int]] = set()
    data: dict[str, Any] = {
        "session": session,
        "origin_ms": origin,  # (wall clock; every other time is counted from it)
        "end": end,
        "events": len(listed),
        "repeats": 0,
        "opened": None,
        "max_yield_time_ms": None,
        "shutdown_begun": None,
        "shutdown_finished": None,
        "marks": [],  # session-level events, for the time axis
    }
    tool_sets: dict[str, Any] = {}  # digest -> tools (`ToolSetDefined`)
    for event in listed:
        at = _ms(event.at_ms - origin)
        if isinstance(event, ev.ToolSetDefined):
            tool_sets.setdefault(event.digest, event.tools)
        if not event.cell:
            _session_event(data, event, at)
            continue
        if isinstance(event, ev.CellAdmitted) and event.cell not in cells:
            cells[event.cell] = _Cell(event, at, ev.admitted_tools(event, tool_sets) or ())
            seen.add((event.cell, event.seq))
            continue
        cell = cells.get(event.cell)
        if cell is None:
            continue  # (an event of a cell the log never admitted)
        if isinstance(event, ev.ToolCompleted | ev.ToolFailed | ev.ToolAttemptFailed):
            cell.apply(event, at)  # a worker's: matched by call id, not by seq
        elif (event.cell, event.seq) in seen:
            data["repeats"] += 1
        else:
            seen.add((event.cell, event.seq))
            cell.apply(event, at)
    data["cells"] = [cell.finish(end) for cell in cells.values()]
    return data


def _ms(value: float) -> float:
    return round(value, 3)


def _session_event(data: dict[str, Any], event: ev.AnyEvent, at: float) -> None:
    if isinstance(event, ev.SessionOpened) and data["opened"] is None:
        data["opened"] = at
        data["max_yield_time_ms"] = event.max_yield_time_ms
    elif isinstance(event, ev.ShutdownBegun) and data["shutdown_begun"] is None:
        data["shutdown_begun"] = at
        data["marks"].append({"t": at, "what": "shutdown begun"})
    elif isinstance(event, ev.ShutdownFinished) and data["shutdown_finished"] is None:
        data["shutdown_finished"] = at
        data["marks"].append({"t": at, "what": "shutdown finished"})


class _Cell:
    """One cell's record while the fold runs (mutable; `finish` hands out plain data)."""

    def __init__(self, admitted: ev.CellAdmitted, at: float, tools: Any) -> None:
        self.record: dict[str, Any] = {
            "id": admitted.cell,
            "call": admitted.call_id,
            "source": admitted.source,
            "yield_time_ms": admitted.yield_time_ms,
            "tools": [str(tool.get("global_name") or tool.get("name")) for tool in tools],
            "t0": at,
            "t1": None,
            "closed": None,
            "state": "running",
            "error": None,
            "reason": None,
            "writes": {},
            "outputs": [],
            "calls": [],
            "timers": [],
            "notes": [],
            "observations": [],
            "yield_requests": [],
        }
        self.calls: dict[str, dict[str, Any]] = {}
        self.timers: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        self.yielded: list[list[float | None]] = []

    def apply(self, event: ev.AnyEvent, at: float) -> None:
        record = self.record
        if isinstance(event, _TERMINAL):
            self._end(event, at)
        elif isinstance(event, ev.CellClosed):
            record["closed"] = at
        elif isinstance(event, ev.OutputProduced):
            record["outputs"].append({"t": at, **event.item})
        elif isinstance(event, ev.ObservationDelivered):
            self._observed(event, at)
        elif isinstance(event, ev.YieldRequested):
            record["yield_requests"].append(at)
        elif isinstance(event, ev.ToolRequested | ev.ToolAttemptFailed | ev.ToolResultDelivered):
            self._tool(event, at)
        elif isinstance(event, _TOOL_OUTCOMES):
            self._tool_outcome(event, at)
        elif isinstance(event, ev.TimerSet | ev.TimerFired | ev.TimerCleared):
            self._timer(event, at)
        elif isinstance(event, ev.NotificationSent):
            sent = {"id": event.notification_id, "text": event.text, "t": at, "state": "sent"}
            self.notes.setdefault(event.notification_id, sent)
        elif isinstance(event, ev.NotificationDelivered | ev.NotificationCancelled):
            note = self.notes.get(event.notification_id)
            if note is not None and note["state"] == "sent":
                kind = "delivered" if isinstance(event, ev.NotificationDelivered) else "cancelled"
                note.update(state=kind, t1=at)

    def _end(self, event: ev.CellCompleted | ev.CellTerminated, at: float) -> None:
        record = self.record
        if record["t1"] is not None:
            return  # the first terminal event wins
        record["t1"] = at
        if isinstance(event, ev.CellTerminated):
            record.update(state="terminated", reason=str(event.reason))
        else:
            failed = event.error_text is not None
            record.update(state="failed" if failed else "ok", error=event.error_text)
            record["writes"] = dict(event.stored_writes)

    def _observed(self, event: ev.ObservationDelivered, at: float) -> None:
        kind = str(event.kind)
        self.record["observations"].append({"t": at, "kind": kind, "outputs": event.outputs})
        if self.yielded and self.yielded[-1][1] is None:
            self.yielded[-1][1] = at
        if event.kind in _LEFT_RUNNING:
            self.yielded.append([at, None])

    def _tool(
        self, event: ev.ToolRequested | ev.ToolAttemptFailed | ev.ToolResultDelivered, at: float
    ) -> None:
        if isinstance(event, ev.ToolRequested):
            if event.call_id not in self.calls:
                self.calls[event.call_id] = {
                    "id": event.call_id,
                    "name": event.name,
                    "kind": event.kind,
                    "input": event.input,
                    "t0": at,
                    "t1": None,
                    "outcome": "outstanding",
                    "attempts": [],
                }
            return
        call = self.calls.get(event.call_id)
        if call is None:
            return
        if isinstance(event, ev.ToolResultDelivered):
            call.setdefault("delivered", at)
        elif all(a["attempt"] != event.attempt for a in call["attempts"]):
            call["attempts"].append({"attempt": event.attempt, "error": event.error, "t": at})

    def _tool_outcome(
        self, event: ev.ToolCompleted | ev.ToolFailed | ev.ToolCancelled, at: float
    ) -> None:
        call = self.calls.get(event.call_id)
        if call is None or call["outcome"] != "outstanding":
            return  # the first outcome wins
        call["t1"] = at
        if isinstance(event, ev.ToolCompleted):
            call.update(outcome="completed", result=event.result)
        elif isinstance(event, ev.ToolFailed):
            call.update(outcome="failed", error=event.error)
        else:
            call["outcome"] = "cancelled"

    def _timer(self, event: ev.TimerSet | ev.TimerFired | ev.TimerCleared, at: float) -> None:
        if isinstance(event, ev.TimerSet):
            if event.timer_id not in self.timers:
                self.timers[event.timer_id] = {
                    "id": event.timer_id,
                    "delay": event.delay_ms,
                    "t0": at,
                    "t1": None,
                    "end": "pending",
                }
            return
        timer = self.timers.get(event.timer_id)
        if timer is not None and timer["end"] == "pending":
            fired = isinstance(event, ev.TimerFired)
            timer.update(end="fired" if fired else "cleared", t1=at)

    def finish(self, log_end: float) -> dict[str, Any]:
        """The cell's data; what is still open ends with the cell (or the log)."""
        record = self.record
        until = record["t1"] if record["t1"] is not None else log_end
        record["calls"] = list(self.calls.values())
        record["timers"] = list(self.timers.values())
        record["notes"] = list(self.notes.values())
        waits = [(c["t0"], c["t1"]) for c in record["calls"]]
        waits += [(t["t0"], t["t1"]) for t in record["timers"]]
        record["waiting"] = _merged(waits, until)
        record["yielded"] = [
            [since, until if end is None else min(end, until)] for since, end in self.yielded
        ]
        return record


def _merged(spans: list[tuple[float, float | None]], until: float) -> list[list[float]]:
    """The union of `spans` (an open end: `until`), clipped to `until`, in order."""
    merged: list[list[float]] = []
    for since, end in sorted((s, until if e is None else min(e, until)) for s, e in spans):
        if since > until:
            continue
        if merged and since <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([since, end])
    return merged

"""A session's events as a Chrome Trace Event file, for the Perfetto UI and chrome://tracing.

One process (the session), one track per cell. A cell is a complete slice (`X`) from its
admission to its end, with a `yielded` slice from each yield to the next observation;
each nested tool call is an async slice (`b`/`e`, its own lane: calls overlap) named by
its tool, its input and outcome in `args`; outputs, timers, notifications and
observations are instant events (`i`). Timestamps are microseconds from the first event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cellfleet.broker import events as ev

PID = 1
_TOOL_ENDS = (ev.ToolCompleted, ev.ToolFailed, ev.ToolCancelled)
_INSTANTS: dict[type, str] = {
    ev.OutputProduced: "output",
    ev.TimerSet: "timer set",
    ev.TimerFired: "timer fired",
    ev.NotificationSent: "notification",
    ev.ObservationDelivered: "observation",
    ev.SessionOpened: "session opened",
    ev.ShutdownBegun: "shutdown begun",
    ev.ShutdownFinished: "shutdown finished",
}


def render(session: str, events: Iterable[ev.AnyEvent]) -> dict[str, Any]:
    """The trace as a JSON object (`{"traceEvents": [...]}`)."""
    listed = list(events)
    origin = listed[0].at_ms if listed else 0.0
    out: list[dict[str, Any]] = [_meta("process_name", 0, session)]
    admitted: dict[str, ev.CellAdmitted] = {}
    ended: dict[str, float] = {}
    yielded: dict[str, float] = {}
    tools: dict[tuple[str, str], ev.ToolRequested] = {}

    def us(at_ms: float) -> float:
        return round((at_ms - origin) * 1000, 3)

    tids: dict[str, int] = {}  # cell id -> track, in order of appearance (0: the session)

    def tid_of(cell: str) -> int:
        return tids.setdefault(cell, len(tids) + 1) if cell else 0

    for event in listed:
        tid = tid_of(event.cell)
        if isinstance(event, ev.CellAdmitted):
            admitted[event.cell] = event
            out.append(_meta("thread_name", tid, f"cell {event.cell}"))
        elif isinstance(event, ev.CellCompleted | ev.CellTerminated):
            ended.setdefault(event.cell, event.at_ms)
        elif isinstance(event, ev.YieldRequested):
            yielded.setdefault(event.cell, event.at_ms)
        elif isinstance(event, ev.ToolRequested):
            tools[(event.cell, event.call_id)] = event
            out.append(_async("b", event, us, tid, args={"input": event.input}))
        elif isinstance(event, _TOOL_ENDS) and (event.cell, event.call_id) in tools:
            began = tools.pop((event.cell, event.call_id))
            out.append(_async("e", event, us, tid, name=began.name, args=_tool_end(event)))
        if isinstance(event, ev.ObservationDelivered) and event.cell in yielded:
            since = yielded.pop(event.cell)  # (ends with its cell at the latest: below)
            until = min(event.at_ms, ended.get(event.cell, event.at_ms))
            out.append(_slice("yielded", tid, us(since), us(until) - us(since)))
        name = _INSTANTS.get(type(event))
        if name is not None:
            out.append(_instant(name, tid, us(event.at_ms), _instant_args(event)))
        if isinstance(event, ev.CellClosed):
            ended.setdefault(event.cell, event.at_ms)
    last = listed[-1].at_ms if listed else origin
    for cell, since in yielded.items():  # not observed before the end of the log
        until = ended.get(cell, last)
        out.append(_slice("yielded", tid_of(cell), us(since), us(until) - us(since)))
    for cell, admission in admitted.items():
        end = ended.get(cell, last)  # still running at the end of the log
        args = {"exec call": admission.call_id, "source": admission.source}
        began_us = us(admission.at_ms)
        out.append(_slice(f"cell {cell}", tid_of(cell), began_us, us(end) - began_us, args))
    for began in tools.values():  # outstanding at the end of the log
        tid = tid_of(began.cell)
        out.append(_async("e", began, us, tid, at_ms=last, args={"outcome": "outstanding"}))
    return {"traceEvents": out, "displayTimeUnit": "ms"}


def _meta(name: str, tid: int, value: str) -> dict[str, Any]:
    return {"ph": "M", "name": name, "pid": PID, "tid": tid, "args": {"name": value}}


def _slice(
    name: str, tid: int, ts: float, dur: float, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    event: dict[str, Any] = {"ph": "X", "name": name, "pid": PID, "tid": tid, "ts": ts}
    event["dur"] = max(dur, 0.0)
    if args:
        event["args"] = args
    return event


def _instant(name: str, tid: int, ts: float, args: dict[str, Any]) -> dict[str, Any]:
    return {"ph": "i", "s": "t", "name": name, "pid": PID, "tid": tid, "ts": ts, "args": args}


def _async(
    phase: str,
    event: ev.ToolRequested | ev.ToolCompleted | ev.ToolFailed | ev.ToolCancelled,
    us: Any,
    tid: int,
    *,
    name: str | None = None,
    at_ms: float | None = None,
    args: dict[str, Any],
) -> dict[str, Any]:
    label = name or (event.name if isinstance(event, ev.ToolRequested) else "tool")
    return {
        "ph": phase,
        "cat": "tool",
        "name": label,
        "id": f"{event.cell}/{event.call_id}",
        "pid": PID,
        "tid": tid,
        "ts": us(event.at_ms if at_ms is None else at_ms),
        "args": args,
    }


def _tool_end(event: ev.ToolCompleted | ev.ToolFailed | ev.ToolCancelled) -> dict[str, Any]:
    if isinstance(event, ev.ToolCompleted):
        return {"outcome": "completed", "result": event.result}
    if isinstance(event, ev.ToolFailed):
        return {"outcome": "failed", "error": event.error}
    return {"outcome": "cancelled"}


def _instant_args(event: ev.AnyEvent) -> dict[str, Any]:
    if isinstance(event, ev.OutputProduced):
        return {"item": dict(event.item)}
    if isinstance(event, ev.TimerSet):
        return {"timer": event.timer_id, "delay_ms": event.delay_ms}
    if isinstance(event, ev.TimerFired):
        return {"timer": event.timer_id}
    if isinstance(event, ev.NotificationSent):
        return {"text": event.text}
    if isinstance(event, ev.ObservationDelivered):
        return {"kind": str(event.kind), "outputs": event.outputs}
    return {}

"""A human-readable trace of a session: one short line per event, as the log holds it.

Each line reads `+<ms since the first event> <who>#<seq> <type> <key facts>`, where
`who` is `session` or `cell <id>`. The trace shows the log as it is; an entry that
repeats an earlier one (same cell, type and seq, as a retried append leaves it) is
marked `(repeat)`, since the other projections skip it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cellfleet.broker.events import (
    AnyEvent,
    CellAdmitted,
    CellCompleted,
    CellTerminated,
    NotificationCancelled,
    NotificationDelivered,
    NotificationSent,
    ObservationDelivered,
    OutputProduced,
    SessionOpened,
    TimerCleared,
    TimerFired,
    TimerSet,
    ToolCancelled,
    ToolCompleted,
    ToolFailed,
    ToolRequested,
    ToolSetDefined,
)
from cellfleet.projections.ports import Projection

_LIMIT = 48


_Key = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Timeline:
    """The trace lines, the time of the first event (`None` before any), the keys seen."""

    origin_ms: float | None = None
    lines: tuple[str, ...] = ()
    seen: frozenset[_Key] = frozenset()


INITIAL = Timeline()


def _clip(text: str) -> str:
    return text if len(text) <= _LIMIT else text[: _LIMIT - 1] + "…"


def _quoted(text: str) -> str:
    return json.dumps(_clip(text), ensure_ascii=False)


def _json(value: Any) -> str:
    return _clip(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def _opened(event: SessionOpened) -> str:
    limit = event.max_yield_time_ms
    return "" if limit is None else f"max_yield_time_ms={limit}"


def _admitted(event: CellAdmitted) -> str:
    tools = f"set:{event.tools_digest[:8]}" if event.tools_digest else _names(event.tools)
    return f"call={event.call_id} tools={tools} source={_quoted(event.source)}"


def _tool_set(event: ToolSetDefined) -> str:
    return f"set:{event.digest[:8]} tools={_names(event.tools)}"


def _names(tools: Iterable[Mapping[str, Any]]) -> str:
    return ",".join(str(tool.get("name", "?")) for tool in tools) or "-"


def _output(event: OutputProduced) -> str:
    kind = event.item.get("type", "?")
    if kind == "input_text":
        return f"text {_quoted(event.item.get('text', ''))}"
    url = event.item.get("image_url") or event.item.get("audio_url") or ""
    return f"{kind.removeprefix('input_')} {_quoted(url)}"


def _observed(event: ObservationDelivered) -> str:
    pending = ",".join(event.pending_tool_call_ids)
    return f"{event.kind} outputs={event.outputs}" + (f" pending={pending}" if pending else "")


def _completed(event: CellCompleted) -> str:
    result = "ok" if event.error_text is None else f"error {_quoted(event.error_text)}"
    keys = ",".join(sorted(event.stored_writes))
    return result + (f" stored={keys}" if keys else "")


_FACTS: Mapping[type[AnyEvent], Callable[[Any], str]] = {
    SessionOpened: _opened,
    ToolSetDefined: _tool_set,
    CellAdmitted: _admitted,
    OutputProduced: _output,
    ObservationDelivered: _observed,
    CellCompleted: _completed,
    CellTerminated: lambda e: f"reason={e.reason}",
    ToolRequested: lambda e: f"{e.call_id} {e.name} ({e.kind}) input={_json(e.input)}",
    ToolCompleted: lambda e: f"{e.call_id} result={_json(e.result)}",
    ToolFailed: lambda e: f"{e.call_id} error {_quoted(e.error)}",
    ToolCancelled: lambda e: e.call_id,
    TimerSet: lambda e: f"timer {e.timer_id} delay={e.delay_ms}ms",
    TimerCleared: lambda e: f"timer {e.timer_id}",
    TimerFired: lambda e: f"timer {e.timer_id}",
    NotificationSent: lambda e: f"#{e.notification_id} {_quoted(e.text)}",
    NotificationDelivered: lambda e: f"#{e.notification_id}",
    NotificationCancelled: lambda e: f"#{e.notification_id}",
}


def line(event: AnyEvent, origin_ms: float) -> str:
    """The trace line of `event`, timed from `origin_ms`."""
    who = f"cell {event.cell}" if event.cell else "session"
    facts = _FACTS.get(type(event))
    text = f"+{event.at_ms - origin_ms:.0f}ms {who}#{event.seq} {event.TYPE}"
    return f"{text} {facts(event)}".rstrip() if facts is not None else text


def apply(state: Timeline, event: AnyEvent) -> Timeline:
    """The timeline after `event`."""
    return fold((event,), state)


def fold(events: Iterable[AnyEvent], state: Timeline = INITIAL) -> Timeline:
    """The timeline after `events` (linear time: collected mutably, then frozen)."""
    origin = state.origin_ms
    lines = list(state.lines)
    seen = set(state.seen)
    for event in events:
        origin = event.at_ms if origin is None else origin
        key = (event.cell, event.TYPE, event.seq)
        lines.append(line(event, origin) + (" (repeat)" if key in seen else ""))
        seen.add(key)
    return Timeline(origin, tuple(lines), frozenset(seen))


def render(state: Timeline) -> str:
    """The trace as text, one line per event."""
    return "".join(f"{text}\n" for text in state.lines)


def to_json(state: Timeline) -> str:
    """`state` as JSON text."""
    data = {"origin_ms": state.origin_ms, "lines": state.lines, "seen": sorted(state.seen)}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def from_json(text: str | bytes) -> Timeline:
    """The state `to_json` wrote."""
    data: dict[str, Any] = json.loads(text)
    seen = frozenset((cell, kind, seq) for cell, kind, seq in data["seen"])
    return Timeline(data["origin_ms"], tuple(data["lines"]), seen)


PROJECTION: Projection[Timeline] = Projection(
    name="timeline",
    version=1,
    initial=INITIAL,
    fold=fold,
    to_json=to_json,
    from_json=from_json,
)

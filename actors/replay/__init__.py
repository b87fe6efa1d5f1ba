"""Replay a recorded session: re-execute its cells from their recorded inputs, compare.

    from cellfleet.actors.replay import replay
    report = replay(trace)          # a trace file's `Trace`, or a session's events
    print(report.render())          # `cell 1: identical (7 events)`, or the divergence

Each cell runs again in a fresh context from what its admission recorded (source, seed,
clock, tools) and the stored values it started from (rebuilt from the log), with its
recorded inputs fed in log order; no tool runs and no log is written. See `engine.py`
for how a cell is driven and compared, `plan.py` for what the record says.

Time zone and locale: V8 takes them from the process's environment, once. A session
records those it ran under; the replay notes when it runs under others (the
`cellfleet replay` command sets them before V8 starts, so it does not).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from typing import Any

from cellfleet.actors.replay.engine import replay_cell
from cellfleet.actors.replay.plan import SessionRecord, plan
from cellfleet.actors.replay.report import CellReport, Divergence, ReplayReport, Status
from cellfleet.actors.runtime import v8
from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.broker.events import AnyEvent
from cellfleet.broker.trace_file import Trace

__all__ = ["CellReport", "Divergence", "ReplayReport", "Status", "replay", "use_environment_of"]


def replay(
    trace: Trace | Iterable[AnyEvent] | Iterable[tuple[str, AnyEvent]],
    *,
    cells: Collection[str] | None = None,
    pool: ContextPool | None = None,
    time_limit_s: float | None = None,
) -> ReplayReport:
    """Replay the cells of `trace` (all, or those in `cells`), one after the other.

    `time_limit_s` bounds each cell (default: 10 s plus twice its recorded duration).
    """
    record = plan(_events(trace), cells)
    own_pool = pool is None
    pool = pool if pool is not None else ContextPool(size=1)
    try:
        reports = [replay_cell(cell, pool, time_limit_s=time_limit_s) for cell in record.cells]
    finally:
        if own_pool:
            pool.close()
    notes = environment_notes(record)
    if isinstance(trace, Trace) and trace.header.v8 != v8.v8_version():
        notes.append(f"recorded with V8 {trace.header.v8}, replayed with V8 {v8.v8_version()}")
    return ReplayReport(record.session, reports, tuple(notes))


def environment_notes(record: SessionRecord) -> list[str]:
    """What differs between the environment the session ran under and this one."""
    time_zone, locale = v8.environment()
    notes = []
    if record.time_zone and record.time_zone != time_zone:
        notes.append(
            f"recorded in time zone {record.time_zone}, replayed in {time_zone}:"
            " Date's local time may differ"
        )
    if record.locale and record.locale != locale:
        notes.append(
            f"recorded with locale {record.locale}, replayed with {locale}:"
            " Intl and toLocaleString() may differ"
        )
    return notes


def use_environment_of(events: Iterable[AnyEvent]) -> None:
    """Set this process's TZ and LC_ALL to those the session recorded: effective only
    before V8 first reads them (call it before anything starts V8)."""
    record = plan(event for event in events if not event.cell)
    if record.time_zone:
        os.environ["TZ"] = record.time_zone
    if record.locale:
        os.environ["LC_ALL"] = record.locale.replace("-", "_") + ".UTF-8"


def _events(trace: Any) -> list[AnyEvent]:
    if isinstance(trace, Trace):
        return [event for _, event in trace.entries]
    return [item[1] if isinstance(item, tuple) else item for item in trace]

"""`cellfleet bench replay`: replay speed next to the projection rebuild and the live
cost of the same cells, all measured in one run.

A session of `CELLS` short cells, each with a text, a 1 ms timer, a nested tool call and
a stored value, is recorded live through the in-process `Host`, execs back to back
(each answered at its completion). Then, in the same process:

* `rebuild`: every projection of the session, rebuilt from its events read back from
  Redis (`projections.replay.rebuild`); `fold` is the same without the read.
* `replay`: every cell re-executed from its recorded inputs and compared with its record
  (`actors.replay.replay`).
* `bare`: the same cells fed the same inputs by the bare runtime (`LocalCell`), with
  nothing compared: what re-execution alone costs, the floor under `replay`.
* cost per cell, wall and CPU (this process's; Redis runs in its own), live against
  replay. Live wall time includes waiting for the cell's 1 ms timer and its tool's round
  trip, which a replay does not wait for; CPU time is the like-for-like figure. Targets:
  a rebuild of at least 20,000 events/s; a replay no costlier (CPU) per cell than 1.5x
  the live cell.

The benchmark runs its own redis-server in a temporary directory.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from cellfleet.actors.replay import replay
from cellfleet.actors.replay.plan import plan
from cellfleet.actors.runtime.local import LocalCell
from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.broker.journal import RedisJournal
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import start_redis
from cellfleet.projections import replay as projections

CELLS = 1000
SOURCE = (
    "text('cell');\n"
    "await new Promise((r) => setTimeout(r, 1));\n"
    "const got = await tools.echo({ n: 1 });\n"
    "store('last', got);\n"
    "text(JSON.stringify(got));\n"
)
PRAGMA = '// @exec: {"yield_time_ms": 30000}\n'  # answered at completion
REBUILD_TARGET_EVENTS_S = 20_000
REPLAY_TARGET_RATIO = 1.5


def _timed(action: Any) -> tuple[Any, float, float]:
    """`action()`, its wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _record(host: Host, cells: int) -> str:
    session = host.open_session()
    for index in range(cells):
        output = session.exec(f"call-{index}", PRAGMA + SOURCE)
        if not output.success or len(output.items) != 3:  # (header, two texts)
            raise RuntimeError(f"cell {index + 1} did not complete: {output}")
    return session.id


def run(cells: int = CELLS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        server = start_redis(Path(scratch))
        try:
            host = Host(server.url, handlers={"echo": lambda value: value})
            try:
                session, live_wall, live_cpu = _timed(lambda: _record(host, cells))
            finally:
                host.close()
            journal = RedisJournal.from_url(server.url)
            try:
                view, rebuild_wall, _ = _timed(lambda: projections.rebuild(journal, session))
                entries = list(journal.read(session))
            finally:
                journal.close()
        finally:
            server.stop()
    events = [event for _, event in entries]
    _, fold_wall, _ = _timed(lambda: projections.project(session, entries))
    pool = ContextPool(1)
    try:
        report, replay_wall, replay_cpu = _timed(lambda: replay(events, pool=pool))
        _, bare_wall, bare_cpu = _timed(lambda: _bare(events, pool))
    finally:
        pool.close()
    if not report.identical:
        raise RuntimeError(
            "the benchmark's session did not replay identically:\n" + report.render()
        )
    assert len(view.cells.cells) == cells
    live_ms = 1000 * live_wall / cells
    replay_ms = 1000 * replay_wall / cells
    return {
        "cells": cells,
        "events": len(events),
        "replayed_events": report.events,
        "live": {"wall_ms_per_cell": round(live_ms, 3), "cpu_ms_per_cell": _per(live_cpu, cells)},
        "replay": {
            "wall_ms_per_cell": round(replay_ms, 3),
            "cpu_ms_per_cell": _per(replay_cpu, cells),
            "events_per_s": round(len(events) / replay_wall),
            "cells_per_s": round(cells / replay_wall, 1),
        },
        "bare": {
            "wall_ms_per_cell": _per(bare_wall, cells),
            "cpu_ms_per_cell": _per(bare_cpu, cells),
        },
        "rebuild": {"events_per_s": round(len(events) / rebuild_wall)},
        "fold": {"events_per_s": round(len(events) / fold_wall)},
        "replay_over_live": {
            "wall": round(replay_wall / live_wall, 3),
            "cpu": round(replay_cpu / live_cpu, 3),
        },
        "targets": {
            "rebuild_events_per_s": REBUILD_TARGET_EVENTS_S,
            "replay_over_live": REPLAY_TARGET_RATIO,
        },
    }


def _bare(events: list[Any], pool: ContextPool) -> None:
    """Every cell re-executed from its recorded inputs by the bare runtime."""
    for record in plan(events).cells:
        inputs = [step.input for step in record.steps if step.input is not None]
        LocalCell(record.spec, pool, replay=inputs, warmed=record.warmed).wait()


def _per(seconds: float, cells: int) -> float:
    return round(1000 * seconds / cells, 3)


def table(report: dict[str, Any]) -> str:
    live, rep = report["live"], report["replay"]
    ratio = report["replay_over_live"]
    rebuild = report["rebuild"]["events_per_s"]
    lines = [
        f"a session of {report['cells']} cells (text, 1 ms timer, tool call, store),"
        f" {report['events']} events",
        "",
        "| | wall ms/cell | CPU ms/cell | events/s | cells/s |",
        "| --- | --- | --- | --- | --- |",
        f"| live (recorded, back to back) | {live['wall_ms_per_cell']} |"
        f" {live['cpu_ms_per_cell']} | | |",
        f"| replay | {rep['wall_ms_per_cell']} | {rep['cpu_ms_per_cell']} |"
        f" {rep['events_per_s']} | {rep['cells_per_s']} |",
        f"| bare runtime, same inputs, nothing compared | {report['bare']['wall_ms_per_cell']} |"
        f" {report['bare']['cpu_ms_per_cell']} | | |",
        f"| projection rebuild (read + fold) | | | {rebuild} | |",
        f"| projection fold alone | | | {report['fold']['events_per_s']} | |",
        "",
        f"replay / live: CPU {ratio['cpu']} (target at most {REPLAY_TARGET_RATIO}:"
        f" {_met(ratio['cpu'] <= REPLAY_TARGET_RATIO)}); wall {ratio['wall']} (live waits"
        " for its timer and tool)",
        f"projection rebuild: {rebuild} events/s"
        f" (target at least {REBUILD_TARGET_EVENTS_S}: {_met(rebuild >= REBUILD_TARGET_EVENTS_S)})",
    ]
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"

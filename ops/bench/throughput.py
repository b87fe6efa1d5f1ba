"""`cellfleet bench throughput`: cells per second and CPU per cell under sustained load,
next to Codex's own `codex-code-mode-host` running the same workload in the same run
(its rows are left out when the binary is not at hand: `$CODEX_HOST_BIN`, or
`../shared/reference/fetch-codex-host`'s cache).

* Sustained: 1, 4 and 16 sessions, a client thread each, exec back to back (the next
  exec is sent as soon as the previous one answered; nothing is waited for in between)
  for a fixed time. Workloads: `text("bench");`, and a cell with one nested tool call
  and one 1 ms timer, its tool served by a tool worker (`tool_timer`) and registered
  `local=True` (`tool_timer_local`). cellfleet is an in-process `Host` (its cells'
  events written to a redis-server of its own); the reference is one host process with
  the sessions open on it, its tool calls answered by this process at once (the same
  for both tool workloads: it has no other way).
* CPU per cell: for cellfleet, this process's CPU (the harness's client threads
  included) plus its redis-server's; for the reference, its process's CPU alone.
* Memory: `samples` cells (10,000 by default) in sessions of 100 cells, four at a time,
  each session shut down when done; this process's RSS after 1,000 cells and at the end,
  on a host of its own, each read with every session shut down and the pool's idle
  memory given back.

Targets (ratios in the same run): sustained `text` cells/s at least 1.3x the
reference's with 4 sessions and at least 1.0x with 1 and 16; RSS growth from 1,000
cells to the end under 1 MiB.
"""

from __future__ import annotations

import gc
import itertools
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cellfleet.broker.tools.registry import ToolRegistry
from cellfleet.ops.bench import runtime as bench_runtime
from cellfleet.ops.bench.host import HELLO, _Client, _tool, reference_binary
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import start_redis

SESSIONS = (1, 4, 16)
SECONDS = 4.0
MEMORY_CELLS = 10_000
MEMORY_FIRST = 1_000
MEMORY_SESSION_CELLS = 100
MEMORY_THREADS = 4
# `--samples`: the memory run's cells (split among its threads); RSS is read after
# `MEMORY_FIRST` of them and at its end.
MIN_SAMPLES = (
    MEMORY_FIRST + MEMORY_THREADS,
    f"the memory run reads RSS after {MEMORY_FIRST} cells and at its end",
)
TOOL_TIMER = (
    'await tools.echo({x: "a"}); await new Promise((resolve) => setTimeout(resolve, 1));'
    ' text("bench");'
)
WORKLOADS = {  # name: (cellfleet's source, the reference's)
    "text": ('text("bench");', 'text("bench");'),
    "tool_timer": (TOOL_TIMER, TOOL_TIMER),
    "tool_timer_local": (TOOL_TIMER.replace("tools.echo", "tools.echo_local"), TOOL_TIMER),
}
TARGETS = {1: 1.0, 4: 1.3, 16: 1.0}
MEMORY_TARGET_KIB = 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process `pid` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def back_to_back(runners: Sequence[Callable[[int], None]], seconds: float) -> tuple[int, float]:
    """Every runner called with 0, 1, 2, ... in its own thread for `seconds`, all
    started together, nothing waited for between calls: calls made and the wall time
    they took. A runner's error ends the run and is raised."""
    counts = [0] * len(runners)
    start = threading.Barrier(len(runners) + 1)
    stop = threading.Event()
    failures: list[BaseException] = []

    def loop(index: int) -> None:
        start.wait()
        try:
            while not stop.is_set():
                runners[index](counts[index])
                counts[index] += 1
        except BaseException as error:  # reported after the run, not lost in a thread
            failures.append(error)
            stop.set()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(runners))]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise failures[0]
    return sum(counts), elapsed


def _row(host: str, workload: str, sessions: int, measured: tuple[int, float, float]) -> Any:
    cells, wall, cpu = measured
    return {
        "host": host,
        "workload": workload,
        "sessions": sessions,
        "cells": cells,
        "cells_per_s": round(cells / wall, 1),
        "cpu_ms_per_cell": round(cpu * 1000 / max(cells, 1), 3),
    }


def _cellfleet(host: Host, redis_pid: int, workload: str, sessions: int, seconds: float) -> Any:
    source = WORKLOADS[workload][0]
    opened = [host.open_session() for _ in range(sessions)]

    def runner(session: Any) -> Callable[[int], None]:
        def once(index: int) -> None:
            output = session.exec(f"c{index}", source)
            if not output.success:
                raise RuntimeError(f"a benchmark cell failed: {output}")

        return once

    runners = [runner(session) for session in opened]
    for once in runners:  # each session's first cell is not part of the measure
        once(-1)
    cpu_before = time.process_time() + _cpu_s(redis_pid)
    cells, wall = back_to_back(runners, seconds)
    cpu = time.process_time() + _cpu_s(redis_pid) - cpu_before
    for session in opened:
        session.shutdown()
    return _row("cellfleet", workload, sessions, (cells, wall, cpu))


class _SharedClient(_Client):
    """One connection to a reference host serving several sessions, a thread each: a
    reader thread answers tool calls and hands each answer to its request's waiter."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._ids = itertools.count(1)
        self._write = threading.Lock()
        self._waiting: dict[tuple[int, str], Future[Any]] = {}
        self.send(HELLO)
        self.read()
        self._reader = threading.Thread(target=self._read_frames, daemon=True)
        self._reader.start()

    def send(self, message: Any) -> None:
        with self._write:
            super().send(message)

    def call(self, request: dict[str, Any], answer: str) -> Any:
        """Send `request`; its frame of type `answer` (an `operation/response` or the
        execute's `execute/initialResponse`)."""
        future: Future[Any] = Future()
        with self._write:
            request_id = next(self._ids)
            self._waiting[(request_id, answer)] = future
            super().send({"type": "operation/request", "id": request_id, "request": request})
        return future.result(timeout=60)

    def _read_frames(self) -> None:
        while True:
            try:
                frame = self.read()
            except (RuntimeError, ValueError, OSError):
                return
            kind = frame.get("type")
            if kind == "delegate/request":
                self._answer(frame)
            elif "id" in frame:  # (an execute's `execution/started` is waited for by none)
                future = self._waiting.pop((frame["id"], kind), None)
                if future is not None:
                    future.set_result(frame)


def _reference(client: _SharedClient, workload: str, sessions: int, seconds: float) -> Any:
    source, tools = WORKLOADS[workload][1], [_tool(0)]
    names = [f"{workload}-{sessions}-{index}" for index in range(sessions)]
    for name in names:
        client.call({"method": "session/open", "sessionId": name}, "operation/response")

    def runner(name: str) -> Callable[[int], None]:
        def once(index: int) -> None:
            body = {"tool_call_id": f"c{index}", "enabled_tools": tools, "source": source,
                    "yield_time_ms": 30_000, "max_output_tokens": None}  # fmt: skip
            request = {"method": "session/execute", "sessionId": name, "request": body}
            frame = client.call(request, "execute/initialResponse")
            value = frame["result"].get("value", {}).get("Result", {})
            if frame["result"]["status"] != "ok" or value.get("error_text") is not None:
                raise RuntimeError(f"a reference benchmark cell failed: {frame}")

        return once

    runners = [runner(name) for name in names]
    for once in runners:
        once(-1)
    cpu_before = _cpu_s(client.process.pid)
    cells, wall = back_to_back(runners, seconds)
    cpu = _cpu_s(client.process.pid) - cpu_before
    for name in names:
        client.call({"method": "session/shutdown", "sessionId": name}, "operation/response")
    return _row("reference", workload, sessions, (cells, wall, cpu))


def _rss_kib() -> int:
    return round(bench_runtime.rss_mib() * 1024)


@contextmanager
def _host(redis_url: str) -> Iterator[Host]:
    host = Host(redis_url, tools=_tools())
    try:
        yield host
    finally:
        host.close()


def _memory(host: Host, cells: int) -> dict[str, Any]:
    """RSS after `MEMORY_FIRST` cells and after `cells`, in short sessions; each read
    idle (`_idle_rss_kib`), every session shut down."""
    per_thread = cells // MEMORY_THREADS
    first = MEMORY_FIRST // MEMORY_THREADS
    paused = threading.Barrier(MEMORY_THREADS + 1)  # (twice: paused, then let go on)
    failures: list[BaseException] = []

    def cells_of(start: int, end: int) -> None:
        for opened in range(start, end, MEMORY_SESSION_CELLS):
            session = host.open_session()
            for index in range(opened, min(opened + MEMORY_SESSION_CELLS, end)):
                output = session.exec(f"m{index}", 'text("bench");')
                if not output.success:
                    raise RuntimeError(f"a benchmark cell failed: {output}")
            session.shutdown()

    def loop() -> None:
        try:
            cells_of(0, first)
            paused.wait()
            paused.wait()
            cells_of(first, per_thread)
        except BaseException as error:
            failures.append(error)
            paused.abort()  # (the others, and the reading, stop waiting)

    threads = [threading.Thread(target=loop) for _ in range(MEMORY_THREADS)]
    for thread in threads:
        thread.start()
    try:
        paused.wait()
        after_first = _idle_rss_kib(host)
        paused.wait()
    except threading.BrokenBarrierError:  # (a client thread failed: raised below)
        after_first = 0
    except BaseException:
        paused.abort()  # (the client threads stop waiting, and end)
        raise
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    at_end = _idle_rss_kib(host)
    return {
        "cells": per_thread * MEMORY_THREADS,
        "rss_kib_after_first": after_first,
        "rss_kib_at_end": at_end,
        "growth_kib": at_end - after_first,
    }


def _idle_rss_kib(host: Host) -> int:
    """RSS with no cell running: the pool's background work done and its idle memory
    given back (what it does itself after `STOCK_IDLE_S` idle), Python's garbage
    collected. Read in the middle of a load, RSS moves by megabytes with what the hubs'
    heaps and the allocator hold at that moment, whatever the process keeps for good."""
    host.pool.wait_idle()
    host.pool.give_back_memory()
    gc.collect()
    return _rss_kib()


@contextmanager
def _reference_client() -> Iterator[_SharedClient | None]:
    binary = reference_binary()
    if binary is None:
        yield None
        return
    client = _SharedClient([binary])
    try:
        yield client
    finally:
        client.close()


def _tools() -> ToolRegistry:
    registry = ToolRegistry()
    registry.function(name="echo", input_schema={"type": "object"})(_echo)
    registry.function(name="echo_local", input_schema={"type": "object"}, local=True)(_echo)
    return registry


def _echo(value: Any) -> Any:
    return value


def run(samples: int = MEMORY_CELLS, seconds: float = SECONDS) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch, _reference_client() as reference:
        server = start_redis(Path(scratch))
        try:
            with _host(server.url) as host:
                for workload in WORKLOADS:
                    for sessions in SESSIONS:
                        rows.append(
                            _cellfleet(host, server.process.pid, workload, sessions, seconds)
                        )
                        if reference is not None:
                            rows.append(_reference(reference, workload, sessions, seconds))
            # A host of its own: not the stock the 16 sessions left (the process's own
            # memory, its allocator's arenas, are as those runs left them).
            with _host(server.url) as host:
                memory = _memory(host, samples)
        finally:
            server.stop()
    targets = {str(sessions): ratio for sessions, ratio in TARGETS.items()}  # (JSON keys)
    return {"rows": rows, "memory": memory, "targets": {"cells_per_s": targets,
            "memory_growth_kib": MEMORY_TARGET_KIB}}  # fmt: skip


def table(report: dict[str, Any]) -> str:
    lines = [
        "| workload | sessions | cellfleet cells/s | CPU ms/cell | reference cells/s"
        " | CPU ms/cell | ratio cells/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = {(r["workload"], r["sessions"], r["host"]): r for r in report["rows"]}
    verdicts = []
    for workload, sessions, _ in [key for key in rows if key[2] == "cellfleet"]:
        ours, theirs = (
            rows[(workload, sessions, "cellfleet")],
            rows.get((workload, sessions, "reference")),
        )
        ratio = None if theirs is None else ours["cells_per_s"] / theirs["cells_per_s"]
        lines.append(
            f"| {workload} | {sessions} | {ours['cells_per_s']} | {ours['cpu_ms_per_cell']} |"
            f" {theirs['cells_per_s'] if theirs else '-'} |"
            f" {theirs['cpu_ms_per_cell'] if theirs else '-'} |"
            f" {'-' if ratio is None else f'{ratio:.2f}'} |"
        )
        if ratio is not None and workload == "text":
            target = report["targets"]["cells_per_s"][str(sessions)]
            verdicts.append(f"text, {sessions} sessions: target at least {target}x: "
                            f"{'met' if ratio >= target else 'NOT met'}")  # fmt: skip
    if not verdicts:
        verdicts.append("no reference host here: ratios not measured")
    memory = report["memory"]
    growth = memory["growth_kib"]
    verdicts.append(
        f"RSS after {MEMORY_FIRST} cells {memory['rss_kib_after_first']} KiB, after"
        f" {memory['cells']} {memory['rss_kib_at_end']} KiB: growth {growth} KiB (target under"
        f" {report['targets']['memory_growth_kib']} KiB: {'met' if growth < 1024 else 'NOT met'})"
    )
    return "\n".join([*lines, "", *verdicts])

"""`cellfleet bench exec`: Codex's `exec_overhead`, through sessions, actors and the log.

Script `text("bench");` with 0, 32 and 128 nested tools. `cold_exec`: the first exec of
a fresh process (a child process per sample). `warm_exec`: one warm-up exec, then 25
execs per sample, 10 samples; a sample is the mean of its 25, each exec started with
the context pool full and idle. `sustained_exec`: the same, but back to back (the next
exec sent as soon as the previous answered, nothing waited for), so that preparing and
disposing of contexts competes with the execs, as under load. Timed from `Session.exec`
to its completed output, every event up to that answer acknowledged by Redis (AOF on).
Baselines in the same run, their samples interleaved with the warm execs' (the
machine's speed drifts): `warm_runtime`, the bare runtime (ops/bench/runtime.py), and
`warm_runtime_append`, the bare runtime followed by the one durable append a short cell
needs (the journal's `finish` with the same six events). The first is the issue's
baseline; the second splits the overhead into the log's round trip and the rest.
The benchmark runs its own redis-server in a temporary directory.
"""

from __future__ import annotations

import itertools
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.actors.runtime.protocol import RuntimeTool
from cellfleet.broker import events as ev
from cellfleet.broker.client import Session
from cellfleet.broker.contract.inventory import build_inventory
from cellfleet.broker.contract.tools import ToolDefinition
from cellfleet.broker.events import wall_clock_ms
from cellfleet.broker.journal import RedisJournal
from cellfleet.ops.bench import runtime as bench_runtime
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import start_redis

TOOL_COUNTS = (0, 32, 128)
SAMPLES = 10
WARM_ITERATIONS = 25
COLD_SAMPLES = 5


def _tools(count: int) -> list[ToolDefinition]:
    return [
        ToolDefinition(name=f"bench_tool_{i:04d}", description=f"Benchmark tool {i}")
        for i in range(count)
    ]


def _max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _summary(name: str, tools: int, values: list[float], rss: list[int]) -> dict[str, Any]:
    return bench_runtime.summarize(
        name,
        tools,
        values,
        mean_us=round(statistics.fmean(values) * 1e6, 1),
        rss_delta_p50_kib=int(statistics.median(rss)) if rss else 0,
        rss_delta_max_kib=max(rss) if rss else 0,
    )


Samples = tuple[list[float], list[int]]  # (sample means in seconds, RSS deltas in KiB)


def warm(url: str, count: int) -> tuple[Samples, Samples, Samples, Samples]:
    """Warm execs, the warm bare runtime, and the bare runtime plus one durable append,
    their samples interleaved: this machine's speed drifts over seconds, and the
    overhead is their difference."""
    host = Host(url, pool_size=4)
    definitions = _tools(count)
    session = host.open_session(definitions)
    session.exec("warmup", 'text("bench");')
    pool = ContextPool(4)
    tools = bench_runtime.bench_tools(count)
    bench_runtime.run_once(pool, tools)
    appender = _Appender(host.journal, definitions)
    appender.run_once(pool, tools)
    execs: Samples = ([], [])
    bare: Samples = ([], [])
    appended: Samples = ([], [])
    calls = (f"s{i}" for i in itertools.count())
    for _ in range(SAMPLES):
        for measured, into, once in (
            (host.pool, execs, lambda: _exec_once(session, next(calls))),
            (pool, bare, lambda: bench_runtime.run_once(pool, tools)),
            (pool, appended, lambda: appender.run_once(pool, tools)),
        ):
            host.pool.wait_idle()  # the others' background work is done
            pool.wait_idle()
            _sample(into, measured, once)
    sustained: Samples = ([], [])
    host.pool.wait_idle()
    for _ in range(SAMPLES):
        _sample(sustained, None, lambda: _exec_once(session, next(calls)))
    pool.close()
    host.close()
    return execs, sustained, bare, appended


class _Appender:
    """The bare runtime, then what the log needs of a short cell: its six events
    (admitted, started, output, completed, delivered, closed) in one `finish` script,
    in a session of its own."""

    def __init__(self, journal: RedisJournal, definitions: list[ToolDefinition]) -> None:
        self._journal = journal
        self._session = f"bench-append-{uuid.uuid4().hex[:12]}"
        self._records = build_inventory(definitions).records()
        self._cells = itertools.count(1)

    def run_once(self, pool: ContextPool, tools: list[RuntimeTool]) -> float:
        began = time.perf_counter()
        bench_runtime.run_once(pool, tools)
        cell = str(next(self._cells))
        at = wall_clock_ms()

        def event(cls: type[Any], seq: int, **fields: Any) -> Any:
            return cls(session=self._session, cell=cell, seq=seq, at_ms=at, **fields)

        admitted = event(
            ev.CellAdmitted,
            0,
            call_id=f"call-{cell}",
            source='text("bench");',
            yield_time_ms=10_000,
            tools=self._records,
            seed=struct.unpack("<4I", os.urandom(16)),
            clock_ms=at,
        )
        item = {"type": "input_text", "text": "bench"}
        won = self._journal.finish(
            event(ev.CellCompleted, 3),
            before=[admitted, event(ev.CellStarted, 1), event(ev.OutputProduced, 2, item=item)],
            after=[
                event(ev.ObservationDelivered, 4, kind="completed", outputs=1),
                event(ev.CellClosed, 5),
            ],
        )
        seconds = time.perf_counter() - began
        if won != "completed":
            raise RuntimeError(f"benchmark append refused: {won}")
        return seconds


def _exec_once(session: Session, call_id: str) -> float:
    began = time.perf_counter()
    output = session.exec(call_id, 'text("bench");')
    seconds = time.perf_counter() - began
    if not output.success or len(output.items) != 2:
        raise RuntimeError(f"benchmark exec failed: {output}")
    return seconds


def _sample(into: Samples, pool: ContextPool | None, once: Callable[[], float]) -> None:
    """One sample: the mean of `WARM_ITERATIONS` runs, each with a full context pool
    (`pool` None: back to back)."""
    before = _max_rss_kib()
    total = 0.0
    for _ in range(WARM_ITERATIONS):
        if pool is not None:
            pool.wait_ready(pool.size)
        total += once()
    into[0].append(total / WARM_ITERATIONS)
    into[1].append(_max_rss_kib() - before)


def cold_exec(url: str, count: int) -> tuple[list[float], list[int]]:
    """First exec of a fresh process: one child process per sample."""
    values, rss = [], []
    for _ in range(COLD_SAMPLES):
        child = subprocess.run(
            [sys.executable, "-m", "cellfleet.ops.bench.exec", "--cold-worker", url, str(count)],
            check=True,
            capture_output=True,
            env={**os.environ},
        )
        result = orjson.loads(child.stdout.splitlines()[-1])
        values.append(result["seconds"])
        rss.append(result["rss_delta_kib"])
    return values, rss


def _cold_worker(url: str, count: int) -> None:
    host = Host(url, pool_size=0)
    session = host.open_session(_tools(count))
    before = _max_rss_kib()
    began = time.perf_counter()
    output = session.exec("cold", 'text("bench");')
    seconds = time.perf_counter() - began
    assert output.success, output
    print(orjson.dumps({"seconds": seconds, "rss_delta_kib": _max_rss_kib() - before}).decode())
    host.close()


def run(samples: int = SAMPLES) -> dict[str, Any]:
    del samples  # the protocol is fixed: 10 samples of 25 warm execs, as Codex's bench
    with tempfile.TemporaryDirectory(prefix="cellfleet-bench-") as data_dir:
        server = start_redis(Path(data_dir))
        try:
            scenarios, baseline = [], []
            for count in TOOL_COUNTS:
                scenarios.append(_summary("cold_exec", count, *cold_exec(server.url, count)))
                execs, sustained, bare, appended = warm(server.url, count)
                scenarios.append(_summary("warm_exec", count, *execs))
                scenarios.append(_summary("sustained_exec", count, *sustained))
                baseline.append(_summary("warm_runtime", count, *bare))
                baseline.append(_summary("warm_runtime_append", count, *appended))
        finally:
            server.stop()
    return {"scenarios": scenarios, "baseline": baseline}


def table(report: dict[str, Any]) -> str:
    lines = [
        "| scenario | tools | samples | p50 µs | p95 µs | rssΔ p50 KiB | rssΔ max KiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["scenarios"] + report["baseline"]:
        lines.append(
            f"| {row['name']} | {row['tools']} | {row['samples']} | {row['p50_us']} | "
            f"{row['p95_us']} | {row['rss_delta_p50_kib']} | {row['rss_delta_max_kib']} |"
        )

    def p50(rows: list[dict[str, Any]], name: str) -> dict[int, float]:
        return {r["tools"]: r["p50_us"] for r in rows if r["name"] == name}

    warm = p50(report["scenarios"], "warm_exec")
    bare = p50(report["baseline"], "warm_runtime")
    appended = p50(report["baseline"], "warm_runtime_append")
    lines.append("")
    for n in TOOL_COUNTS:
        line = f"log + actors over the bare runtime, {n} tools: {warm[n] - bare[n]:.1f} µs"
        if n in appended:
            line += (
                f" (the log's one append alone: {appended[n] - bare[n]:.1f} µs;"
                f" the rest: {warm[n] - appended[n]:.1f} µs)"
            )
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--cold-worker":
        _cold_worker(sys.argv[2], int(sys.argv[3]))

"""`cellfleet bench exec`: Codex's `exec_overhead`, through sessions, actors and the log.

Script `text("bench");` with 0, 32 and 128 nested tools. `cold_exec`: the first exec of
a fresh process (a child process per sample). `warm_exec`: one warm-up exec, then 25
execs per sample, 10 samples; a sample is the mean of its 25. Timed from `Session.exec`
to its completed output, every event up to that answer acknowledged by Redis (AOF on).
Baseline in the same run: the bare runtime (ops/bench_runtime.py) measured the same way,
its samples interleaved with the warm execs' (the machine's speed drifts).
The benchmark runs its own redis-server in a temporary directory.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from actors.pool import ContextPool
from broker.client import Session
from broker.tooldefs import ToolDefinition
from ops import bench_runtime
from ops.host import Host
from ops.redis_server import start_redis

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


def warm(url: str, count: int) -> tuple[Samples, Samples]:
    """Warm execs and the warm bare runtime, their samples interleaved: this machine's
    speed drifts over seconds, and the overhead is their difference."""
    host = Host(url, pool_size=4)
    session = host.open_session(_tools(count))
    session.exec("warmup", 'text("bench");')
    pool = ContextPool(4)
    tools = bench_runtime.bench_tools(count)
    bench_runtime.run_once(pool, tools)
    execs: Samples = ([], [])
    bare: Samples = ([], [])
    calls = (f"s{i}" for i in range(SAMPLES * WARM_ITERATIONS))
    for _ in range(SAMPLES):
        for measured, into, once in (
            (host.pool, execs, lambda: _exec_once(session, next(calls))),
            (pool, bare, lambda: bench_runtime.run_once(pool, tools)),
        ):
            host.pool.wait_idle()  # the other half's background work is done
            pool.wait_idle()
            _sample(into, measured, once)
    pool.close()
    host.close()
    return execs, bare


def _exec_once(session: Session, call_id: str) -> float:
    began = time.perf_counter()
    output = session.exec(call_id, 'text("bench");')
    seconds = time.perf_counter() - began
    if not output.success or len(output.items) != 2:
        raise RuntimeError(f"benchmark exec failed: {output}")
    return seconds


def _sample(into: Samples, pool: ContextPool, once: Callable[[], float]) -> None:
    """One sample: the mean of `WARM_ITERATIONS` runs, each with a full context pool."""
    before = _max_rss_kib()
    total = 0.0
    for _ in range(WARM_ITERATIONS):
        pool.wait_ready(pool.size)
        total += once()
    into[0].append(total / WARM_ITERATIONS)
    into[1].append(_max_rss_kib() - before)


def cold_exec(url: str, count: int) -> tuple[list[float], list[int]]:
    """First exec of a fresh process: one child process per sample."""
    values, rss = [], []
    for _ in range(COLD_SAMPLES):
        child = subprocess.run(
            [sys.executable, "-m", "ops.bench_exec", "--cold-worker", url, str(count)],
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
                execs, bare = warm(server.url, count)
                scenarios.append(_summary("warm_exec", count, *execs))
                baseline.append(_summary("warm_runtime", count, *bare))
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
    warm = {r["tools"]: r["p50_us"] for r in report["scenarios"] if r["name"] == "warm_exec"}
    bare = {r["tools"]: r["p50_us"] for r in report["baseline"]}
    lines.append("")
    lines += [
        f"log + actors over the bare runtime, {n} tools: {warm[n] - bare[n]:.1f} µs"
        for n in TOOL_COUNTS
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--cold-worker":
        _cold_worker(sys.argv[2], int(sys.argv[3]))

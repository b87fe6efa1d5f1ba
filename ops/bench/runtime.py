"""`cellfleet bench runtime`: start-to-result latency of one cell, and idle-cell memory.

Scenarios (script `text("bench");`, 0 / 32 / 128 nested tools):
* `cold` — context creation included (no pool);
* `warm` — a pooled context, prepared before the clock starts.
Timed from "start cell" to "final result collected". Baseline in the same run: a bare
mini-racer context creation plus one `eval`, and (warm) one `eval` on a live context.
"""

from __future__ import annotations

import gc
import queue
import statistics
import time
from collections.abc import Callable
from typing import Any

from py_mini_racer import MiniRacer

from cellfleet.actors.runtime.pool import ContextPool, prepare_context
from cellfleet.actors.runtime.protocol import CellSpec, Finished, RuntimeEvent, RuntimeTool, Stopped
from cellfleet.actors.runtime.runtime import CellRuntime, RuntimeMessage
from cellfleet.actors.runtime.v8 import create_isolate, free_isolate
from cellfleet.broker.contract.inventory import build_inventory
from cellfleet.broker.contract.tools import ToolDefinition

SCRIPT = 'text("bench");'
TOOL_COUNTS = (0, 32, 128)


def bench_tools(count: int) -> list[RuntimeTool]:
    """N function tools `bench_tool_0000…` described as `Benchmark tool {i}`, no schemas."""
    inventory = build_inventory(
        [
            ToolDefinition(name=f"bench_tool_{i:04d}", description=f"Benchmark tool {i}")
            for i in range(count)
        ]
    )
    return [
        RuntimeTool(
            name=entry.global_name, description=entry.description, kind=entry.definition.kind
        )
        for entry in inventory.entries
    ]


def run_once(pool: ContextPool, tools: list[RuntimeTool], source: str = SCRIPT) -> float:
    """Run one cell on this thread; return seconds from start to its final event."""
    inbox: queue.SimpleQueue[RuntimeMessage] = queue.SimpleQueue()
    final: list[RuntimeEvent] = []

    def listener(event: RuntimeEvent) -> None:
        if isinstance(event, Finished | Stopped):
            final.append(event)

    spec = CellSpec(cell_id="1", source=source, tools=tools, clock_ms=time.time() * 1000)
    began = time.perf_counter()
    runtime = CellRuntime(
        spec,
        pool.acquire(spec.tools, source=spec.source),
        listener=listener,
        sink=inbox.put,
        release=pool.release,
        memory_limit_bytes=pool.memory_limit_bytes,
    )
    runtime.start()
    while not runtime.done:
        runtime.handle(inbox.get())
    elapsed = time.perf_counter() - began
    result = final[0]
    if not isinstance(result, Finished) or result.error_text is not None:
        raise RuntimeError(f"benchmark cell failed: {result}")
    return elapsed


def summarize(name: str, tools: int, samples: list[float], **extra: Any) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "name": name,
        "tools": tools,
        "samples": len(samples),
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p95_us": round(ordered[(len(ordered) - 1) * 95 // 100] * 1e6, 1),
        **extra,
    }


def _time(action: Callable[[], object], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        began = time.perf_counter()
        action()
        out.append(time.perf_counter() - began)
    return out


def _ignore(event: RuntimeEvent) -> None:
    del event


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def idle_cell_rss_mib(cells: int = 50) -> float:
    """RSS per live idle cell: each started and waiting on a promise that never settles."""
    pool = ContextPool(0)
    gc.collect()
    before = rss_mib()
    runtimes = []
    for index in range(cells):
        inbox: queue.SimpleQueue[RuntimeMessage] = queue.SimpleQueue()
        spec = CellSpec(cell_id=str(index), source="await new Promise(() => {})")
        runtime = CellRuntime(
            spec,
            prepare_context(),
            listener=_ignore,
            sink=inbox.put,
            release=pool.release,
            memory_limit_bytes=pool.memory_limit_bytes,
        )
        runtime.start()
        while runtime.busy:
            runtime.handle(inbox.get())
        runtimes.append(runtime)
    per_cell = (rss_mib() - before) / cells
    for runtime in runtimes:
        runtime.terminate()
    pool.close()
    return round(per_cell, 3)


def run(samples: int = 200) -> dict[str, Any]:
    scenarios = []
    cold_pool = ContextPool(0)
    warm_pool = ContextPool(4)
    for count in TOOL_COUNTS:
        tools = bench_tools(count)
        run_once(cold_pool, tools)  # first use of V8 in this process stays out of the figures
        cold = [run_once(cold_pool, tools) for _ in range(max(20, samples // 5))]
        scenarios.append(summarize("cold", count, cold))
        warm = []
        for _ in range(samples):
            warm_pool.wait_ready(warm_pool.size)
            warm.append(run_once(warm_pool, tools))
        scenarios.append(summarize("warm", count, warm))
    cold_pool.close()
    warm_pool.close()

    def bare_create_and_eval() -> None:
        racer = create_isolate(MiniRacer)
        racer.eval('"bench"')
        free_isolate(racer.close)

    live = create_isolate(MiniRacer)
    baseline = [
        summarize("bare_context_eval", 0, _time(bare_create_and_eval, max(20, samples // 5))),
        summarize("bare_eval", 0, _time(lambda: live.eval('"bench"'), samples)),
    ]
    free_isolate(live.close)
    return {
        "scenarios": scenarios,
        "baseline": baseline,
        "rss_per_idle_cell_mib": idle_cell_rss_mib(),
    }


def table(report: dict[str, Any]) -> str:
    lines = ["| scenario | tools | samples | p50 µs | p95 µs |", "| --- | --- | --- | --- | --- |"]
    for row in report["scenarios"] + report["baseline"]:
        lines.append(
            f"| {row['name']} | {row['tools']} | {row['samples']} | {row['p50_us']} | "
            f"{row['p95_us']} |"
        )
    lines.append(f"\nRSS per live idle cell: {report['rss_per_idle_cell_mib']} MiB")
    return "\n".join(lines)

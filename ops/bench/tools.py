"""`cellfleet bench tools`: nested tool calls through the broker, worker in another process.

* `roundtrip`: JS call to resolved promise of a trivial echo tool. A cell awaits calls
  one after another; the time between consecutive `tool_requested` events is one full
  round trip (call, worker, outcome recorded, promise resolved, next call).
* `roundtrip_local`: the same with `echo` registered `local=True`: run in this process,
  its request and outcome recorded in one write. Next to it, in the same run, Codex's
  host's delegate round trip (`reference_delegate_roundtrip`, `bench host`'s
  `tool_roundtrip`; left out when the binary is not at hand). Target: local at most 2x
  the reference's, at p50.
* `throughput_1_worker` / `throughput_2_workers`: calls per second with 1 and 2 worker
  processes, four sessions each keeping 200 calls in flight.
* Baseline `raw_floor`: an XADD request read by XREADGROUP in another process and an
  XADD reply read back (no actors, no V8, no event log).
The benchmark runs its own redis-server in a temporary directory.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from threading import Thread
from typing import Any

from cellfleet.broker import events as ev
from cellfleet.broker.redis.connect import connect_redis
from cellfleet.broker.tools.registry import ToolRegistry
from cellfleet.ops.bench import host as bench_host
from cellfleet.ops.bench import runtime as bench_runtime
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import start_redis
from cellfleet.ops.tools_worker import start_tools_process

TOOLS_FILE = Path(__file__).parents[1] / "examples" / "echo_tools.py"
ROUNDTRIP_CALLS = 400
THROUGHPUT_SESSIONS = 4
THROUGHPUT_BATCH = 200
THROUGHPUT_BATCHES = 5
FLOOR_CALLS = 400
LOCAL_TARGET = 2.0


def _summary(name: str, seconds: list[float]) -> dict[str, Any]:
    return bench_runtime.summarize(name, 1, seconds)


def _workers(url: str, count: int) -> list[subprocess.Popen[bytes]]:
    args = ["--tools", str(TOOLS_FILE), "--concurrency", "16"]
    return [start_tools_process(args, {**os.environ, "REDIS_URL": url}) for _ in range(count)]


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(10)


def roundtrip(url: str, *, local: bool = False) -> list[float]:
    host = Host(url, workers=0, tools=_local_registry() if local else _registry())
    workers = [] if local else _workers(url, 1)
    try:
        session = host.open_session()
        session.exec("warm", "for (let i = 0; i < 50; i++) await tools.echo({i});")
        source = f"for (let i = 0; i < {ROUNDTRIP_CALLS}; i++) await tools.echo({{i}});"
        output = session.exec("bench", source)
        if not output.success:
            raise RuntimeError(f"benchmark cell failed: {output}")
        requested = [
            e.at_ms
            for _, e in host.journal.read(session.id)
            if isinstance(e, ev.ToolRequested) and e.cell == "2"
        ]
        return [(b - a) / 1000 for a, b in itertools.pairwise(requested)]
    finally:
        host.close()
        _stop(workers)


def throughput(url: str, worker_count: int) -> float:
    host = Host(url, workers=0, tools=_registry(), pool_size=THROUGHPUT_SESSIONS)
    workers = _workers(url, worker_count)
    try:
        sessions = [host.open_session() for _ in range(THROUGHPUT_SESSIONS)]
        batch = (
            f"for (let b = 0; b < {THROUGHPUT_BATCHES}; b++) await Promise.all("
            f"Array.from({{length: {THROUGHPUT_BATCH}}}, (_, i) => tools.echo({{i}})));"
        )
        sessions[0].exec("warm", batch)
        began = time.perf_counter()
        threads = [Thread(target=s.exec, args=(f"t{i}", batch)) for i, s in enumerate(sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        return THROUGHPUT_SESSIONS * THROUGHPUT_BATCHES * THROUGHPUT_BATCH / elapsed
    finally:
        host.close()
        _stop(workers)


def raw_floor(url: str) -> list[float]:
    """Request/reply over two streams between this process and an echo process."""
    client = connect_redis(url, socket_timeout=30)  # (blocks 5 s: redis-py's default)
    client.delete("bench:req", "bench:rep")
    client.xgroup_create("bench:req", "g", id="0", mkstream=True)
    echo = subprocess.Popen(
        [sys.executable, "-m", "cellfleet.ops.bench.tools", "--floor-echo", url]
    )
    try:
        position = "0"
        samples = []
        for i in range(FLOOR_CALLS + 20):
            began = time.perf_counter()
            client.xadd("bench:req", {"i": i})
            reply: Any = client.xread({"bench:rep": position}, block=5000, count=1)
            position = reply[0][1][0][0].decode()
            if i >= 20:
                samples.append(time.perf_counter() - began)
        return samples
    finally:
        echo.terminate()
        echo.wait(10)
        client.close()


def _floor_echo(url: str) -> None:
    client = connect_redis(url, socket_timeout=30)  # (blocks 5 s: redis-py's default)
    while True:
        batch: Any = client.xreadgroup("g", "echo", {"bench:req": ">"}, count=1, block=5000)
        for _stream, entries in batch or ():
            for entry_id, fields in entries:
                pipe = client.pipeline(transaction=False)
                pipe.xadd("bench:rep", fields)
                pipe.xack("bench:req", "g", entry_id)
                pipe.execute()


def _local_registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.function(name="echo", input_schema={"type": "object"}, local=True)(lambda v: v)
    return registry


def reference_roundtrip() -> list[float] | None:
    """Codex's host: a cell's delegate round trip to a client that answers at once."""
    binary = bench_host.reference_binary()
    if binary is None:
        return None
    client = bench_host._Client([binary], dict(os.environ))
    try:
        bench_host.tool_roundtrip(client, 50)  # (warm-up)
        return bench_host.tool_roundtrip(client, ROUNDTRIP_CALLS)
    finally:
        client.close()


def _registry() -> Any:
    from cellfleet.broker.tools.registry import load_tools_file  # noqa: PLC0415 - the example tools file

    return load_tools_file(TOOLS_FILE)


def run(samples: int | None = None) -> dict[str, Any]:
    del samples  # the protocol is fixed
    with tempfile.TemporaryDirectory(prefix="cellfleet-bench-") as data_dir:
        server = start_redis(Path(data_dir))
        try:
            scenarios = [
                _summary("roundtrip", roundtrip(server.url)),
                _summary("roundtrip_local", roundtrip(server.url, local=True)),
                {
                    "name": "throughput_1_worker",
                    "tools": 1,
                    "calls_per_s": round(throughput(server.url, 1)),
                },
                {
                    "name": "throughput_2_workers",
                    "tools": 1,
                    "calls_per_s": round(throughput(server.url, 2)),
                },
            ]
            baseline = [_summary("raw_floor", raw_floor(server.url))]
            reference = reference_roundtrip()
            if reference is not None:
                baseline.append(_summary("reference_delegate_roundtrip", reference))
        finally:
            server.stop()
    return {"scenarios": scenarios, "baseline": baseline, "local_target": LOCAL_TARGET}


def table(report: dict[str, Any]) -> str:
    lines = ["| scenario | p50 µs | p95 µs | calls/s |", "| --- | --- | --- | --- |"]
    for row in report["scenarios"] + report["baseline"]:
        lines.append(
            f"| {row['name']} | {row.get('p50_us', '')} | {row.get('p95_us', '')} | "
            f"{row.get('calls_per_s', '')} |"
        )
    rows = {row["name"]: row for row in report["scenarios"] + report["baseline"]}
    trip, floor = rows["roundtrip"]["p50_us"], rows["raw_floor"]["p50_us"]
    lines.append(f"\noverhead over the raw floor (p50): {trip - floor:.1f} µs")
    reference = rows.get("reference_delegate_roundtrip")
    if reference is None:
        lines.append("no reference host here: the local round trip's ratio is not measured")
    else:
        ratio = rows["roundtrip_local"]["p50_us"] / reference["p50_us"]
        target = report["local_target"]
        lines.append(
            f"roundtrip_local over the reference's delegate round trip (p50): {ratio:.2f}x"
            f" (target at most {target}x: {'met' if ratio <= target else 'NOT met'})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--floor-echo":
        _floor_echo(sys.argv[2])

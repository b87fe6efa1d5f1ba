"""`cellfleet bench durability`: what `CELLFLEET_DURABILITY=power` costs an exec.

Private redis-servers in one run, all with an append-only file: one as `process`
leaves it (`appendfsync everysec`: written before Redis answers, on disk within a
second), one as `power` sets it (`appendfsync always`: on disk before Redis answers),
and a primary with one replica for `replica` (every writing batch ends with `WAIT 1`).
One session on each runs `text("bench"); store("k", n);` execs one at a time, their
samples interleaved (the machine's speed drifts): p50 and p95 of each, and the ratios
to `process`. What `always` costs depends on the disk's fsync far more than on
cellfleet; what `replica` costs, on the round trip to the replica.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from cellfleet.broker.client import Session
from cellfleet.ops.bench.fleet import _percentiles
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import start_redis

SAMPLES = 300
WARM_UP = 30


def _timed(session: Session, call_id: str, n: int) -> float:
    began = time.perf_counter()
    output = session.exec(call_id, f'text("bench"); store("k", {n});')
    elapsed = time.perf_counter() - began
    assert output.success, output
    return elapsed


def run(samples: int = SAMPLES) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="cellfleet-bench-durability-") as folder,
        ExitStack() as stack,
    ):
        sessions: dict[str, Session] = {}
        for level, fsync in (("process", "everysec"), ("power", "always"), ("replica", "")):
            server = start_redis(Path(folder) / level)
            stack.callback(server.stop)
            admin = redis.Redis.from_url(server.url, socket_timeout=30)  # (WAIT: up to 10 s)
            if fsync:
                admin.config_set("appendfsync", fsync)
            else:
                copy = start_redis(Path(folder) / "its-replica", replica_of=server.port)
                stack.callback(copy.stop)
                admin.set("synced", 1)
                if admin.wait(1, 10_000) != 1:
                    raise RuntimeError("the benchmark's replica did not catch up in 10 s")
            admin.close()
            # The level is read where the links are made: only this host's wait.
            os.environ["CELLFLEET_DURABILITY"] = level
            try:
                host = Host(server.url, pool_size=2, workers=0)
            finally:
                del os.environ["CELLFLEET_DURABILITY"]
            stack.callback(host.close)
            sessions[level] = host.open_session()
        times: dict[str, list[float]] = {level: [] for level in sessions}
        for i in range(WARM_UP + samples):
            for level, session in sessions.items():
                elapsed = _timed(session, f"c{i}", i)
                if i >= WARM_UP:
                    times[level].append(elapsed)
        for session in sessions.values():
            session.shutdown()
    process, power = _percentiles(times["process"]), _percentiles(times["power"])
    replica = _percentiles(times["replica"])
    return {
        "benchmark": "durability",
        "samples": samples,
        "process": process,
        "power": power,
        "replica": replica,
        "power_over_process_p50": round(power["p50_ms"] / process["p50_ms"], 3),
        "power_over_process_p95": round(power["p95_ms"] / process["p95_ms"], 3),
        "replica_over_process_p50": round(replica["p50_ms"] / process["p50_ms"], 3),
        "replica_over_process_p95": round(replica["p95_ms"] / process["p95_ms"], 3),
    }


def table(report: dict[str, Any]) -> str:
    process, power = report["process"], report["power"]
    return "\n".join(
        [
            f"exec with a store ({report['samples']} samples)      p50 ms    p95 ms",
            f"  process (appendfsync everysec)     {process['p50_ms']:8.3f}  "
            f"{process['p95_ms']:8.3f}",
            f"  power (appendfsync always)         {power['p50_ms']:8.3f}  {power['p95_ms']:8.3f}",
            f"  power / process                    {report['power_over_process_p50']:8.3f}  "
            f"{report['power_over_process_p95']:8.3f}",
            f"  replica (WAIT 1)                   {report['replica']['p50_ms']:8.3f}  "
            f"{report['replica']['p95_ms']:8.3f}",
            f"  replica / process                  {report['replica_over_process_p50']:8.3f}  "
            f"{report['replica_over_process_p95']:8.3f}",
        ]
    )

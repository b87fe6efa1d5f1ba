"""`cellfleet bench fleet`: what going through the fleet costs, next to the in-process host.

`round_trip`: one session, `text("bench");` execs one at a time, timed from `Session.exec`
to its output: through a `FleetClient` to one `cellfleet worker` process and back, and
through an in-process `Host` in this process, their samples interleaved (the machine's
speed drifts), with one Redis round trip (PING) timed between them: the fleet cannot
add less than two (the request, the answer). Targets: the fleet adds at most 0.6 ms at p50.

`sustained`: 16 client sessions (a thread each) exec back to back, nothing waited for
between execs, for a fixed time: cells/s through the in-process host, then through the
fleet with 1 and with 2 worker processes. Target: 2 workers give at least 0.9x the
in-process figure. (On a 2-core machine a second worker mostly shows what distribution
costs: the client, the workers and Redis share two cores.)

`--soak N`: N short sessions (open, one exec, shutdown) through a worker whose finished
sessions expire after 1 s; then Redis's memory and key count once retention ran, next
to where they started (target: within 10%).

The benchmark runs its own redis-server in a temporary directory.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import redis

from cellfleet.broker.client import Session
from cellfleet.broker.fleet import FleetClient
from cellfleet.broker.keys import DEFAULT_KEYS
from cellfleet.broker.redis.connect import connect_redis
from cellfleet.broker.redis.link import Link, link_to
from cellfleet.ops.bench.throughput import back_to_back
from cellfleet.ops.host import Host
from cellfleet.ops.processes import stop_processes, worker_ready
from cellfleet.ops.redis_server import start_redis

SOURCE = 'text("bench");'
ROUND_TRIPS = 300
SUSTAINED_SESSIONS = 16
SUSTAINED_S = 5.0
WARM_UP = 30
SESSIONS_INDEX_SLACK = WARM_UP  # sessions the index may still name once the soak settled


@contextmanager
def worker_processes(url: str, count: int, *extra: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` `cellfleet worker` processes, serving until the block ends."""
    env = {**os.environ, "REDIS_URL": url}
    command = [sys.executable, "-m", "cellfleet.ops.cli", "worker", *extra]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        for process in processes:
            worker_ready(process)
        yield processes
    finally:
        stop_processes(processes)


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3),
    }


def _timed(session: Session, call_id: str) -> float:
    began = time.perf_counter()
    output = session.exec(call_id, SOURCE)
    elapsed = time.perf_counter() - began
    assert output.success, output
    return elapsed


def round_trip(url: str, samples: int) -> dict[str, Any]:
    with ExitStack() as stack, worker_processes(url, 1):
        host = Host(url)
        stack.callback(host.close)
        client = FleetClient(url)
        stack.callback(client.close)
        local, remote = host.open_session(), client.open_session()
        for i in range(WARM_UP):
            _timed(local, f"w{i}")
            _timed(remote, f"w{i}")
        link = link_to(connect_redis(url))
        in_process, fleet, redis_trips = [], [], []
        for i in range(samples):
            in_process.append(_timed(local, f"c{i}"))
            fleet.append(_timed(remote, f"c{i}"))
            redis_trips.append(_redis_round_trip(link))
        local.shutdown()
        remote.shutdown()
        link.close()
    a, b = _percentiles(in_process), _percentiles(fleet)
    redis_p50 = _percentiles(redis_trips)["p50_ms"]
    added = round(b["p50_ms"] - a["p50_ms"], 3)
    return {
        "in_process": a,
        "fleet": b,
        "added_p50_ms": added,
        "added_p95_ms": round(b["p95_ms"] - a["p95_ms"], 3),
        "redis_round_trip_p50_ms": redis_p50,
        "added_in_redis_round_trips": round(added / redis_p50, 2) if redis_p50 else None,
        "samples": samples,
    }


def _redis_round_trip(link: Link) -> float:
    """One command's round trip to Redis: the fleet's floor is two in a row (the
    request to the worker's inbox, the answer to the client's stream)."""
    began = time.perf_counter()
    link.run([("PING",)])
    return time.perf_counter() - began


def _sustained(open_session: Callable[[], Session], seconds: float) -> float:
    """Cells per second of `SUSTAINED_SESSIONS` sessions exec'ing back to back."""
    sessions = [open_session() for _ in range(SUSTAINED_SESSIONS)]
    for session in sessions:
        _timed(session, "warm")
    runners = [partial(_exec_as, session) for session in sessions]
    cells, elapsed = back_to_back(runners, seconds)
    rate = cells / elapsed
    for session in sessions:
        session.shutdown()
    return round(rate, 1)


def _exec_as(session: Session, index: int) -> None:
    _timed(session, f"s{index}")


def sustained(url: str, seconds: float) -> dict[str, Any]:
    host = Host(url)
    try:
        local = _sustained(host.open_session, seconds)
    finally:
        host.close()
    rates: dict[str, float] = {}
    for workers in (1, 2):
        with worker_processes(url, workers):
            client = FleetClient(url)
            try:
                rates[f"fleet_{workers}_workers"] = _sustained(client.open_session, seconds)
            finally:
                client.close()
    return {
        "sessions": SUSTAINED_SESSIONS,
        "seconds": seconds,
        "in_process_cells_per_s": local,
        **{f"{name}_cells_per_s": rate for name, rate in rates.items()},
        "ratio_2_workers": round(rates["fleet_2_workers"] / local, 3),
        "ratio_1_worker": round(rates["fleet_1_workers"] / local, 3),
    }


def soak_run(url: str, count: int) -> dict[str, Any]:
    client = connect_redis(url)
    with worker_processes(url, 1, "--retention-s", "1"):
        fleet = FleetClient(url)
        try:
            _short_sessions(fleet, WARM_UP)  # (scripts loaded, connections made)
            before_keys = _settled_keys(client, None)
            before = client.memory_stats()
            _short_sessions(fleet, count)
            peak_keys = client.dbsize()
            after_keys = _settled_keys(client, before_keys)
            after = client.memory_stats()
        finally:
            fleet.close()
    client.close()
    return {
        "sessions": count,
        "keys_before": before_keys,
        "keys_peak": peak_keys,
        "keys_after": after_keys,
        "memory_before_bytes": before["total.allocated"],
        "memory_after_bytes": after["total.allocated"],
        "memory_ratio": round(after["total.allocated"] / before["total.allocated"], 3),
        "dataset_before_bytes": before["dataset.bytes"],
        "dataset_after_bytes": after["dataset.bytes"],
        "dataset_ratio": round(after["dataset.bytes"] / before["dataset.bytes"], 3),
    }


def _short_sessions(fleet: FleetClient, count: int) -> None:
    for i in range(count):
        session = fleet.open_session()
        _timed(session, f"soak{i}")
        session.shutdown()


def _settled_keys(client: redis.Redis, target: int | None, limit_s: float = 60.0) -> int:
    """The key count once the finished sessions' keys expired and the worker dropped
    them from the sessions index: down to `target`, or (None) no longer falling."""
    deadline = time.monotonic() + limit_s
    last = (-1, -1)
    while time.monotonic() < deadline:
        time.sleep(1.0)  # (Redis expires keys on its own clock; the worker prunes)
        now = (int(client.dbsize()), int(client.zcard(DEFAULT_KEYS.sessions)))
        if target is not None and now[0] <= target and now[1] <= SESSIONS_INDEX_SLACK:
            return now[0]
        if target is None and now == last:
            return now[0]
        last = now
    return int(client.dbsize())


def run(samples: int = ROUND_TRIPS, *, soak: int | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {"benchmark": "fleet"}
    with tempfile.TemporaryDirectory(prefix="cellfleet-bench-fleet-") as folder:
        server = start_redis(Path(folder))
        try:
            report["round_trip"] = round_trip(server.url, samples)
            report["sustained"] = sustained(server.url, SUSTAINED_S)
            if soak:
                report["soak"] = soak_run(server.url, soak)
        finally:
            server.stop()
    return report


def table(report: dict[str, Any]) -> str:
    trip, rate = report["round_trip"], report["sustained"]
    lines = [
        f"round trip of one exec ({trip['samples']} samples)   p50 ms    p95 ms",
        f"  in-process Host                    {trip['in_process']['p50_ms']:8.3f}  "
        f"{trip['in_process']['p95_ms']:8.3f}",
        f"  fleet (client -> worker -> client) {trip['fleet']['p50_ms']:8.3f}  "
        f"{trip['fleet']['p95_ms']:8.3f}",
        f"  added by the fleet                 {trip['added_p50_ms']:8.3f}  "
        f"{trip['added_p95_ms']:8.3f}   (target: p50 at most 0.6 ms)",
        f"  one Redis round trip               {trip['redis_round_trip_p50_ms']:8.3f}"
        f"             (the fleet adds {trip['added_in_redis_round_trips']} of them;"
        " two is its floor)",
        "",
        f"sustained, {rate['sessions']} sessions back to back, {rate['seconds']:g} s   cells/s",
        f"  in-process Host                    {rate['in_process_cells_per_s']:8.1f}",
        f"  fleet, 1 worker                    {rate['fleet_1_workers_cells_per_s']:8.1f}"
        f"   ratio {rate['ratio_1_worker']:.2f}",
        f"  fleet, 2 workers                   {rate['fleet_2_workers_cells_per_s']:8.1f}"
        f"   ratio {rate['ratio_2_workers']:.2f} (target: at least 0.9)",
    ]
    if "soak" in report:
        s = report["soak"]
        lines += [
            "",
            f"soak: {s['sessions']} sessions; keys {s['keys_before']} -> peak {s['keys_peak']}"
            f" -> {s['keys_after']}",
            f"  memory {s['memory_before_bytes']} -> {s['memory_after_bytes']} bytes (ratio "
            f"{s['memory_ratio']}, target at most 1.1); of it data {s['dataset_before_bytes']}"
            f" -> {s['dataset_after_bytes']} (ratio {s['dataset_ratio']})",
        ]
    return "\n".join(lines)

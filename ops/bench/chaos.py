"""`cellfleet bench chaos --kills 100`: the long chaos run (`ops/chaos.py`).

A private redis-server; 3 cell worker processes and a tool worker process; 20 sessions
of random programs; a random cell worker SIGKILLed about every second and replaced,
`--kills` times; then the same programs without kills, compared step by step. Prints
kills, takeovers and takeover time (p50, p99; the target: at most the lease plus 1 s),
cells recovered, and the counts that must be 0: outputs and notifications lost or
duplicated, steps answered differently, tool handlers re-run, divergences, broken log
invariants.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from cellfleet.ops.chaos import run_chaos
from cellfleet.ops.redis_server import start_redis

KILLS = 100
LEASE_MS = 2000


def run(samples: int | None = None, *, kills: int = KILLS) -> dict[str, Any]:
    del samples  # (a chaos run has kills, not samples)
    with tempfile.TemporaryDirectory(prefix="cellfleet-bench-chaos-") as folder:
        server = start_redis(Path(folder))
        try:
            report = run_chaos(
                server.url,
                kills=kills,
                lease_ms=LEASE_MS,
                progress=lambda line: print(line, file=sys.stderr, flush=True),
            )
        finally:
            server.stop()
    return {
        "benchmark": "chaos",
        "lease_s": LEASE_MS / 1000,
        **report.figures(),
        "problems": report.problems()[:50],
    }


def table(report: dict[str, Any]) -> str:
    lines = [f"{name:26} {value}" for name, value in report.items() if name != "problems"]
    lines.append(f"{'takeover_p99 target_s':26} {report['lease_s'] + 1:g} (the lease plus 1 s)")
    return "\n".join(lines + [f"  {problem}" for problem in report["problems"]])

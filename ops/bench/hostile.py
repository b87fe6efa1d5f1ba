"""`cellfleet bench hostile`: every hostile probe (tests/hostile/), the slow ones too.

It runs the probes with pytest in this process and prints how many were tried and
passed, the time they took and the peak RSS of the process (cells run in it). The probes
are the project's tests: this needs a checkout with its development tools (pytest).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

PROBES = Path(__file__).resolve().parents[2] / "tests" / "hostile"


class _Tally:
    """A pytest plugin that counts the probes' outcomes."""

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.outcomes[report.outcome] = self.outcomes.get(report.outcome, 0) + 1
            if report.outcome == "failed":
                self.failed.append(report.nodeid)


def run(samples: int = 1) -> dict[str, Any]:
    del samples  # each probe runs once
    try:
        import pytest  # noqa: PLC0415 - a development tool, needed by this command only
    except ImportError:
        raise SystemExit("cellfleet bench hostile: needs pytest (sh ops/setup.sh)") from None
    if not PROBES.is_dir():
        raise SystemExit(f"cellfleet bench hostile: no probes at {PROBES} (a checkout is needed)")
    tally = _Tally()
    began = time.monotonic()
    pytest.main(
        [
            str(PROBES),
            "--slow",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(PROBES.parents[1]),
        ],
        plugins=[tally],
    )
    passed = tally.outcomes.get("passed", 0)
    tried = sum(tally.outcomes.values())
    return {
        "tried": tried,
        "passed": passed,
        "failed": tally.failed,
        "seconds": round(time.monotonic() - began, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| probes tried | passed | seconds | peak RSS MiB |",
        "| --- | --- | --- | --- |",
        "| {tried} | {passed} | {seconds} | {peak_rss_mib} |".format(**report),
    ]
    lines += [f"failed: {nodeid}" for nodeid in report["failed"]]
    return "\n".join(lines)

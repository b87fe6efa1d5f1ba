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
    """A pytest plugin that tells each probe's outcome: failed if any of its phases
    failed (the checks after a probe, of the log and of memory, run in its teardown),
    else skipped if it was, else passed."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}  # by probe

    def pytest_runtest_logreport(self, report: Any) -> None:
        if self.outcomes.get(report.nodeid) == "failed":
            return
        if report.outcome != "passed" or report.when == "call":
            self.outcomes[report.nodeid] = report.outcome
        else:
            self.outcomes.setdefault(report.nodeid, "passed")

    @property
    def failed(self) -> list[str]:
        return [probe for probe, outcome in self.outcomes.items() if outcome == "failed"]


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
    status = pytest.main(
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
    outcomes = list(tally.outcomes.values())
    return {
        "tried": len(outcomes),
        "passed": outcomes.count("passed"),
        "failed": tally.failed,
        "pytest_status": int(status),  # (not 0: something failed, collection included)
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
    if report["pytest_status"] not in (0, 5) and not report["failed"]:  # (5: nothing ran)
        lines.append(f"pytest ended with status {report['pytest_status']}")
    return "\n".join(lines)

"""`cellfleet bench hostile` tells each probe's outcome from all of its phases."""

from __future__ import annotations

from types import SimpleNamespace

from cellfleet.ops.bench.hostile import _Tally


def _report(nodeid: str, when: str, outcome: str) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, when=when, outcome=outcome)


def test_a_probe_whose_checks_fail_after_it_ran_failed() -> None:
    """The log's and memory's checks after a probe run in its teardown."""
    tally = _Tally()
    phases = {
        "ok": ["passed", "passed", "passed"],
        "teardown": ["passed", "passed", "failed"],
        "call": ["passed", "failed", "passed"],
        "setup": ["failed", None, "passed"],
        "skipped": ["skipped", None, "passed"],
    }
    for probe, outcomes in phases.items():
        for when, outcome in zip(("setup", "call", "teardown"), outcomes, strict=True):
            if outcome is not None:
                tally.pytest_runtest_logreport(_report(probe, when, outcome))
    assert tally.outcomes == {
        "ok": "passed",
        "teardown": "failed",
        "call": "failed",
        "setup": "failed",
        "skipped": "skipped",
    }
    assert tally.failed == ["teardown", "call", "setup"]

"""The chaos test (issue 14), bounded to about a minute: 3 cell worker processes and a
tool worker process on one Redis, 20 sessions of random programs, a random cell worker
SIGKILLed about every second and replaced, 20 times (`cellfleet bench chaos` runs the
long version). What every session's model saw must equal what the same programs show
without kills; no tool handler may complete twice; the log's invariants must hold."""

from __future__ import annotations

import pytest

from cellfleet.ops.chaos import run_chaos


@pytest.mark.timeout(300)  # (the suite's 60 s is for ordinary tests; this one is about 60 s)
def test_cells_survive_random_sigkills_of_their_workers(redis_url: str) -> None:
    report = run_chaos(redis_url, sessions=20, workers=3, kills=20, kill_every_s=1.0)
    assert report.kills == 20
    assert report.takeovers > 0  # (the killed workers served sessions)
    assert report.clean, "\n".join(report.problems()[:20]) + f"\n{report.figures()}"

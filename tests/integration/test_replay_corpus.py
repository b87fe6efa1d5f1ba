"""The replay corpus replays identically: every cell of every recorded session,
re-executed from its recorded inputs, makes the same events again.

This is what guards an upgrade of mini-racer, V8 or the prelude (as Temporal's replay
tests guard a workflow deploy): a change that makes a recorded cell behave otherwise
fails here, with the report's first divergence. A change meant to alter behaviour
re-records the corpus (`python -m cellfleet.ops.replay_corpus`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cellfleet.actors.replay import replay
from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.broker import trace_file

CORPUS = Path(__file__).parents[1] / "replay_corpus"
FILES = sorted(CORPUS.glob("*.trace.jsonl"))


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_a_recorded_session_replays_identically(path: Path, pool: ContextPool) -> None:
    with path.open(encoding="utf-8") as lines:
        trace = trace_file.read_trace(lines)
    report = replay(trace, pool=pool)
    assert report.cells
    assert report.identical, report.render()
    assert not report.notes, report.notes  # the environment it was recorded in, here too

"""The replay corpus (`tests/replay_corpus/`, written by `cellfleet.ops.replay_corpus`)
stays readable: every file is a whole trace of one session whose cells all ended.

The replay itself (every cell re-executed and compared) is another test's; this one
keeps the corpus from rotting unnoticed when the trace format or the events change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cellfleet.broker import trace_file
from cellfleet.broker.events import CellAdmitted, CellClosed, CellCompleted, CellTerminated
from cellfleet.ops.corpus_scenarios import SCENARIOS
from cellfleet.ops.replay_corpus import REFERENCE, reference_scenarios

CORPUS = Path(__file__).parents[1] / "replay_corpus"
FILES = sorted(CORPUS.glob("*.trace.jsonl"))


def test_the_corpus_holds_every_scenario_and_stays_small() -> None:
    references, _ = reference_scenarios(REFERENCE)
    expected = {scenario.name for scenario in [*SCENARIOS, *references]}
    assert {path.name.removesuffix(".trace.jsonl") for path in FILES} == expected
    assert sum(path.stat().st_size for path in FILES) < 1_000_000


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_a_corpus_file_is_a_trace_whose_cells_all_ended(path: Path) -> None:
    with path.open(encoding="utf-8") as lines:
        trace = trace_file.read_trace(lines)
    events = [event for _, event in trace.entries]
    cells = [event.cell for event in events if isinstance(event, CellAdmitted)]
    assert cells, "no cell"
    assert len(set(cells)) == len(cells), f"cells admitted twice: {cells}"
    for cell in cells:
        own = [event for event in events if event.cell == cell]
        ends = [event for event in own if isinstance(event, CellCompleted | CellTerminated)]
        assert len(ends) == 1, f"cell {cell}: {len(ends)} terminal events"
        assert isinstance(own[-1], CellClosed), f"cell {cell} ends with {own[-1]}"

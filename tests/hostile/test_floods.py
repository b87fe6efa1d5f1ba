"""Hostile probes, family "output floods": what a cell may write is bounded (item 8)."""

from __future__ import annotations

import pytest

from cellfleet.actors.cell import log as cell_log
from tests.integration.session_support import assert_output


@pytest.mark.parametrize(
    "flood",
    [
        "for (let i = 0; i < 10000; i++) clearTimeout(setTimeout(() => {}, 1e6));",
        "for (let i = 0; i < 10000; i++) notify(`n${i}`);",
        "for (let i = 0; i < 10000; i++) text(i);",
    ],
    ids=["timers", "notifications", "output"],
)
def test_a_cell_that_floods_its_log_is_ended(
    harness, monkeypatch: pytest.MonkeyPatch, flood: str
) -> None:
    monkeypatch.setattr(cell_log, "MAX_CELL_EVENTS", 200)
    output = harness.exec(f"{flood}\nstore('k', 1);\ntext('never');")
    assert output.items[0]["text"].startswith("Script failed\n")
    assert output.items[-1]["text"] == (
        "Script error:\nexec cell wrote more than 200 events to its log"
    )
    events = harness.cell_events("1")
    # The budget, the settling of notifications sent within it, and the cell's ending.
    assert len(events) < 2 * 200 + 10
    assert harness.session.execute_to_pending("c2", "text(String(load('k')))").content_items == [
        {"type": "input_text", "text": "undefined"}  # nothing of it was committed
    ]
    assert_output(harness.exec("text('next')"), "Script completed", ["next"])

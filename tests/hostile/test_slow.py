"""Slow hostile probes (more than a few seconds each): `cellfleet bench hostile` runs
them (pytest --slow); CI runs their fast counterparts with lowered limits."""

from __future__ import annotations

import time

import pytest

from cellfleet.actors.cell import log as cell_log
from cellfleet.broker.events import CellCompleted
from tests.integration.session_support import assert_output, is_event

# (a probe and the log checks after it may take minutes; CI never runs these)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_sixty_thousand_text_items_are_answered_in_the_time_the_cell_took(harness) -> None:
    """Item 6: the exec answered 211 s after a cell that ran 1.6 s."""
    began = time.monotonic()
    output = harness.exec(
        '// @exec: {"yield_time_ms": 120000}\nconst s = "y".repeat(200);'
        " for (let i = 0; i < 60000; i++) text(s);"
    )
    elapsed = time.monotonic() - began
    header = output.items[0]["text"]
    assert header.startswith("Script completed\nWall time ")
    reported = float(header.split("Wall time ")[1].split(" ")[0])
    assert elapsed < 2 * reported + 5, (elapsed, reported)  # the answer is not the slow part
    assert output.items[1]["text"].startswith("Warning: truncated output")


def test_yields_beyond_the_log_budget_end_the_cell(harness) -> None:
    """Item 8, with the real budget (300,000 events): 400,000 yields."""
    budget = cell_log.MAX_CELL_EVENTS
    output = harness.exec(
        '// @exec: {"yield_time_ms": 120000}\n'
        f"for (let i = 0; i < {budget + 100_000}; i++) yield_control();"
    )
    assert output.items[0]["text"].startswith("Script running with cell ID 1")
    ended = harness.wait_event(is_event(CellCompleted, "1"), timeout=180)
    assert isinstance(ended, CellCompleted)
    assert ended.error_text == f"exec cell wrote more than {budget} events to its log"
    assert len(harness.cell_events("1")) < budget + 10
    assert_output(harness.exec("text('next')"), "Script completed", ["next"])


def test_cells_terminated_while_allocating_do_not_take_the_process_down(harness) -> None:
    """250 cells, each terminated while it allocates: their JavaScript went on in the
    contexts waiting to be freed, past 2 GB, until V8 aborted the process."""
    source = (
        '// @exec: {"yield_time_ms": 20}\nconst a = [];\n'
        "while (true) { a.push(new Array(1000).fill(1)); if (a.length > 20000) a.length = 0 }"
    )
    for _ in range(250):
        output = harness.exec(source)
        assert output.running_cell_id is not None
        harness.session.wait(f'{{"cell_id": "{output.running_cell_id}", "terminate": true}}')
    assert_output(harness.exec("text('alive')"), "Script completed", ["alive"])

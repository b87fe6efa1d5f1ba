"""Hostile probes, family "output floods": what a cell may write is bounded (item 8), and
notifications reach the harness whatever its other callbacks do."""

from __future__ import annotations

import threading

import pytest

from cellfleet.actors.cell import log as cell_log
from cellfleet.actors.cell import notifications
from cellfleet.actors.runtime.protocol import Finished
from tests.integration.session_support import TIMEOUT_S, assert_output


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


def test_hung_notify_callbacks_do_not_hold_other_sessions_notifications(
    open_session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight sessions whose harness callback never returns (until the test ends) do not
    keep a ninth session's notification from its callback."""
    monkeypatch.setattr(notifications, "DRAIN_TIMEOUT_S", 0.05)  # their cells go on
    hung, delivered = threading.Event(), threading.Event()
    for index in range(8):
        stuck = open_session(notify=lambda *_: hung.wait(TIMEOUT_S))
        assert_output(stuck.exec(f"notify('stuck {index}')"), "Script completed", [])
    healthy = open_session(notify=lambda *_: delivered.set())
    assert_output(healthy.exec("notify('hello')"), "Script completed", [])
    assert delivered.wait(TIMEOUT_S)
    hung.set()


def test_a_flood_of_notifications_reuses_its_delivery_threads(open_session) -> None:
    """A thread per delivery run started 20,000 threads for 20,000 `notify()` calls."""
    seen = threading.local()
    threads: list[int] = []

    def notify(*_: str) -> None:
        if not getattr(seen, "counted", False):
            seen.counted = True
            threads.append(1)

    harness = open_session(notify=notify)
    output = harness.exec("for (let i = 0; i < 2000; i++) notify(`n${i}`)")
    assert_output(output, "Script completed", [])
    # (The host's idle delivery threads, left by earlier tests too, take turns.)
    assert 1 <= len(threads) <= 20, f"{len(threads)} threads delivered 2000 notifications"


@pytest.mark.parametrize(("megabytes", "fits"), [(15, True), (17, False)])
def test_a_huge_image_fits_the_output_limit_or_ends_its_cell_clearly(
    run_cell, megabytes: int, fits: bool
) -> None:
    """The original probe's 15 MB image is under the 16 MiB output limit; 17 MB is not."""
    source = f'image("data:image/png;base64," + "A".repeat({megabytes} * 1000 * 1000));'
    items, end = run_cell(source, timeout=60)
    assert isinstance(end, Finished)
    if fits:
        assert (end.error_text, [item["type"] for item in items]) == (None, ["input_image"])
        assert len(items[0]["image_url"]) > megabytes * 1000 * 1000
    else:
        assert (end.error_text, items) == ("exec cell output limit exceeded", [])
    (alive, _) = run_cell('text("alive")')
    assert alive == [{"type": "input_text", "text": "alive"}]

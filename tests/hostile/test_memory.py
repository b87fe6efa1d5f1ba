"""Hostile probes, family "memory": stored values have a budget per session (item 4)."""

from __future__ import annotations

import pytest

from cellfleet.actors.session import store
from tests.integration.session_support import assert_output


def test_stored_values_beyond_the_sessions_budget_are_not_committed(
    harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "MAX_STORED_BYTES", 1000)
    assert_output(
        harness.exec('store("small", "x".repeat(100)); text("ok")'), "Script completed", ["ok"]
    )
    output = harness.exec('store("big", "x".repeat(2000)); text("tried")')
    assert_output(
        output,
        "Script failed",
        [
            "tried",
            "Script error:\nexec cell's stored values would exceed the session's budget of 0 MiB",
        ],
    )
    loaded = harness.exec('text(String(load("big")), load("small").length)')
    assert_output(loaded, "Script completed", ["undefined"])
    # The session goes on: overwriting a value with a smaller one always fits.
    assert_output(harness.exec('store("small", 1); text(load("small"))'), "Script completed", ["1"])

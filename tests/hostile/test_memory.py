"""Hostile probes, family "memory": stored values have a budget per session (item 4)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from cellfleet.actors.session import store
from cellfleet.broker.events import CellCompleted
from tests.integration.session_support import TIMEOUT_S, assert_output, hold_journal, is_event


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


def test_a_cells_start_does_not_grow_with_the_values_the_session_has_stored(harness) -> None:
    """50 MB stored (JSON text made of quotes, the costliest to embed in a script) used to
    make every later cell run out of memory before its first statement: values stay in
    Python until a cell loads them."""
    for key in range(5):
        stored = harness.exec(f'store("q{key}", \'"\'.repeat(5_000_000)); text("stored")')
        assert_output(stored, "Script completed", ["stored"])
    for _ in range(3):
        assert_output(harness.exec('text("x")'), "Script completed", ["x"])
    loaded = harness.exec('const v = load("q3"); text(v === \'"\'.repeat(5e6))')
    assert_output(loaded, "Script completed", ["true"])


def test_load_hands_over_values_and_keys_larger_than_the_mailbox(harness) -> None:
    """Astral characters straddle the parts a value is handed over in; the key is longer
    than the mailbox; a missing key and the cell's own write answer as before."""
    key = '"k".repeat(300_000)'
    source = (
        'const big = { s: "\\u{1F600}a".repeat(200_000), n: [1, 2.5, null, true] };\n'
        f'store({key}, big); store("plain", 7); text("ok")'
    )
    assert_output(harness.exec(source), "Script completed", ["ok"])
    check = (
        f"const big = load({key});\n"
        f"const again = load({key}); again.n.push(9);\n"
        'text(big.s === "\\u{1F600}a".repeat(200_000));\n'
        f"text(JSON.stringify(load({key}).n));\n"
        'text(String(load("nope")));\n'
        'text(load("plain")); store("plain", 8); text(load("plain"))'
    )
    assert_output(
        harness.exec(check),
        "Script completed",
        ["true", "[1,2.5,null,true]", "undefined", "7", "8"],
    )


def test_two_cells_that_each_fit_cannot_together_go_beyond_the_budget(
    harness, gates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cell 2's commit is held while cell 1 (started before) finishes: cell 1's writes
    are checked against what cell 2 commits, so exactly one of them commits."""
    monkeypatch.setattr(store, "MAX_STORED_BYTES", 1000)
    reached, release = hold_journal(
        monkeypatch, harness.host.journal, "finish", is_event(CellCompleted, "2")
    )
    gated = "await tools.gate({}); store('one', 'x'.repeat(600)); text('one')"
    _, first = harness.session.backend.execute("a", gated, 60_000, None)
    gates.wait_entered()
    quick = "store('two', 'x'.repeat(600)); text('two')"
    _, second = harness.session.backend.execute("b", quick, 60_000, None)
    assert reached.wait(TIMEOUT_S)
    committing = threading.Event()
    original = store.SessionStore.commit

    def commit(self: store.SessionStore, writes: Any, finish: Any) -> Any:
        if "one" in writes:
            committing.set()  # and then waits for the lock that cell 2 holds
        return original(self, writes, finish)

    monkeypatch.setattr(store.SessionStore, "commit", commit)
    gates.open()
    assert committing.wait(TIMEOUT_S)
    release.set()
    outcomes = sorted(
        [answer.result(TIMEOUT_S).error_text or "committed" for answer in (first, second)]
    )
    assert outcomes == [
        "committed",
        "exec cell's stored values would exceed the session's budget of 0 MiB",
    ]
    loaded = harness.exec("text(String([load('one'), load('two')].filter(Boolean).length))")
    assert_output(loaded, "Script completed", ["1"])


def test_a_session_over_its_budget_may_still_shrink(
    harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(The budget was lowered since the values were stored.)"""
    assert_output(harness.exec("store('k', 'x'.repeat(2000))"), "Script completed", [])
    monkeypatch.setattr(store, "MAX_STORED_BYTES", 1000)
    assert_output(harness.exec("store('k', 'x'.repeat(1500))"), "Script completed", [])
    grown = harness.exec("store('k', 'x'.repeat(1600))")
    assert grown.success is False
    assert_output(harness.exec("text(load('k').length)"), "Script completed", ["1500"])


def test_a_cell_storing_thousands_of_keys_commits_them_all(harness) -> None:
    """4,000 keys made Redis's script fail after it had recorded the completion: the
    model read `internal error (ResponseError)` and the stored hash missed the writes."""
    stored = harness.exec("for (let i = 0; i < 5000; i++) store('k' + i, i); text('stored')")
    assert_output(stored, "Script completed", ["stored"])
    loaded = harness.exec("text(load('k0') + load('k4999'))")
    assert_output(loaded, "Script completed", ["4999"])


@pytest.mark.parametrize(
    "writes",
    [
        "store('astral', '\\u{1F600}'.repeat(300))",  # 302 characters, 1,202 bytes
        "for (let i = 0; i < 20; i++) store('k' + i, 1)",  # 60 characters, 20 keys
    ],
    ids=["astral characters", "many small keys"],
)
def test_the_budget_counts_bytes_and_keys_not_characters(
    harness, monkeypatch: pytest.MonkeyPatch, writes: str
) -> None:
    monkeypatch.setattr(store, "MAX_STORED_BYTES", 1000)
    output = harness.exec(writes)
    assert output.success is False
    assert output.items[-1]["text"].endswith("would exceed the session's budget of 0 MiB")

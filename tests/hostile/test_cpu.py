"""Hostile probes, family "CPU": whatever a cell spins on, termination stops it and the
process serves the next cell. (How fast: `cellfleet bench hostile`.)"""

from __future__ import annotations

import pytest

from cellfleet.actors.runtime.protocol import Stopped, YieldRequested
from tests.conftest import texts

BOMBS = {
    "while true": "while (true) {}",
    "for ever": "for (;;) {}",
    "recursion that catches its stack overflow": (
        "function f() { try { f(); } catch { f(); } } f();"
    ),
    "catastrophic regex": '/(a+)+$/.test("a".repeat(64) + "b");',
    # (kept alive by a promise that never settles: timers alone do not keep a cell)
    "endless microtasks": (
        "await new Promise(() => { function loop() { Promise.resolve().then(loop); } loop(); });"
    ),
    "endless await": "await (async () => { for (;;) await null; })();",
    "timers that renew themselves": (
        "await new Promise(() => { function t() { setTimeout(t, 0); } t(); });"
    ),
    "a busy comparator": "new Array(1e6).fill(0).sort(() => { for (;;) {} });",
    "a busy getter": "JSON.stringify({ get x() { for (;;) {} } });",
    "a busy toString": "`${{ toString() { for (;;) {} } }}`;",
    "a busy tool argument": "tools.echo({ get a() { for (;;) {} } });",
    "a busy then": "await { then() { for (;;) {} } };",
}


@pytest.mark.parametrize("bomb", BOMBS.values(), ids=list(BOMBS))
def test_termination_stops_a_spinning_cell(start_cell, run_cell, bomb: str) -> None:
    cell = start_cell(f"text('before');\nyield_control();\n{bomb}")
    cell.wait_for(lambda events: any(isinstance(e, YieldRequested) for e in events))
    cell.terminate()
    assert isinstance(cell.wait(timeout=30), Stopped)
    items, end = run_cell('text("still serving")')
    assert (texts(items), end.error_text) == (["still serving"], None)

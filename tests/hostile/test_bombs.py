"""Hostile probes, family "memory": allocation bombs end their cell with a clear error,
and the process lives on (the heap limit, V8's own range limits)."""

from __future__ import annotations

import pytest

from cellfleet.actors.runtime.protocol import Finished
from tests.conftest import texts

OUT_OF_MEMORY = "exec cell exceeded its memory limit of 256 MiB"
BOMBS = {
    "arrays": ("const a = []; for (;;) a.push(new Array(1e5).fill(1.5));", OUT_OF_MEMORY),
    "objects": ("const a = []; for (;;) a.push({ a: 1, b: [1, 2, 3], c: 'x' });", OUT_OF_MEMORY),
    "a map": ("const m = new Map(); for (let i = 0; ; i++) m.set(i, { i });", OUT_OF_MEMORY),
    "closures": (
        "const keep = []; for (let i = 0; ; i++) { const big = new Array(1000).fill(i);"
        " keep.push(() => big); }",
        OUT_OF_MEMORY,
    ),
    "a string that doubles": (
        'let s = "x"; for (;;) s += s;',
        "RangeError: Invalid string length",
    ),
    "a giant repeat": ('"x".repeat(2 ** 30);', "RangeError: Invalid string length"),
    "a giant array buffer": (
        "new ArrayBuffer(2 ** 31);",
        "RangeError: Array buffer allocation failed",
    ),
    "a giant typed array": (
        "new Float64Array(2 ** 32);",
        "RangeError: Invalid typed array length: 4294967296",
    ),
}


@pytest.mark.parametrize(("bomb", "error"), BOMBS.values(), ids=list(BOMBS))
def test_an_allocation_bomb_ends_its_cell_clearly(run_cell, bomb: str, error: str) -> None:
    _, end = run_cell(bomb, timeout=60)
    assert isinstance(end, Finished)
    assert end.error_text is not None
    assert end.error_text.startswith(error), end.error_text
    items, after = run_cell('text("still serving")')
    assert (texts(items), after.error_text) == (["still serving"], None)


def test_too_many_timers(run_cell) -> None:
    _, end = run_cell("for (;;) setTimeout(() => {}, 1e9);")
    assert isinstance(end, Finished)
    assert end.error_text == "exec cell has too many pending timeouts"

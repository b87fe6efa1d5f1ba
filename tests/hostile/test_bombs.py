"""Hostile probes, family "memory": allocation bombs end their cell with a clear error,
and the process lives on (the heap limit, V8's own range limits)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cellfleet.actors.runtime.pool import ContextPool
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
    # Item 7: JSON.stringify no longer walks any depth outside the heap, for seconds.
    "a deep JSON.stringify": (
        "let o = {}; for (let i = 0; i < 3e6; i++) o = { o }; JSON.stringify(o);",
        "RangeError: Maximum call stack size exceeded",
    ),
    "a deep value stored": (
        "let o = {}; for (let i = 0; i < 3e6; i++) o = { o }; store('deep', o);",
        "RangeError: Maximum call stack size exceeded",
    ),
    "a deep value printed": (
        "let o = []; for (let i = 0; i < 3e6; i++) o = [o]; text(o);",
        "RangeError: Maximum call stack size exceeded",
    ),
    # Item 5: backing stores live outside the heap; the host watches them too.
    "array buffers filled": (
        "const keep = []; for (let i = 0; i < 8; i++) {"
        " const b = new ArrayBuffer(2 ** 28); new Uint8Array(b).fill(1); keep.push(b); }",
        OUT_OF_MEMORY,
    ),
    "array buffers left empty": (
        "const keep = []; for (let i = 0; i < 63; i++) keep.push(new ArrayBuffer(2 ** 28));",
        OUT_OF_MEMORY,
    ),
    "typed arrays": (
        "const keep = []; for (;;) keep.push(new Float64Array(2 ** 22));",
        OUT_OF_MEMORY,
    ),
    "buffers copied by slice": (
        "const a = new Uint8Array(2 ** 26); const keep = []; for (;;) keep.push(a.slice());",
        OUT_OF_MEMORY,
    ),
    "buffers held a little over their limit": (
        "const b = new Uint8Array(600 * 2 ** 20); b.fill(1); for (;;) {}",
        OUT_OF_MEMORY,
    ),
    "a resizable buffer grown": (
        "const b = new ArrayBuffer(1, { maxByteLength: 2 ** 31 }); b.resize(2 ** 30);"
        " new Uint8Array(b).fill(1); for (;;) {}",
        OUT_OF_MEMORY,
    ),
}


@pytest.mark.parametrize(("bomb", "error"), BOMBS.values(), ids=list(BOMBS))
def test_an_allocation_bomb_ends_its_cell_clearly(
    run_cell, pool: ContextPool, bomb: str, error: str
) -> None:
    _, end = run_cell(bomb, timeout=60)
    assert isinstance(end, Finished)
    assert end.error_text is not None
    assert end.error_text.startswith(error), end.error_text
    # Until its isolate is freed, a bomb's buffers (up to the process's 16 GiB of
    # buffer space, taken within one poll) may still fail another cell's allocation.
    assert pool.wait_idle(60)
    items, after = run_cell('text("still serving")')
    assert (texts(items), after.error_text) == (["still serving"], None)


def test_too_many_timers(run_cell) -> None:
    _, end = run_cell("for (;;) setTimeout(() => {}, 1e9);")
    assert isinstance(end, Finished)
    assert end.error_text == "exec cell has too many pending timeouts"


@pytest.mark.parametrize(("mib", "count"), [(8, 256), (48, 50), (64, 10), (100, 3)])
def test_buffers_that_are_let_go_do_not_count(run_cell, mib: int, count: int) -> None:
    """The limit is on what the cell holds, not on what it ever allocated: buffers
    filled and dropped one after the other pass, also when the garbage among them goes
    beyond the limit before V8 collects it (64 MiB x 5 failed)."""
    items, end = run_cell(
        f"let sum = 0; for (let i = 0; i < {count}; i++) {{"
        f" const b = new Uint8Array({mib} * 2 ** 20); b.fill(1); sum += b[i]; }} text(sum)",
        timeout=60,
    )
    assert (texts(items), end.error_text) == ([str(count)], None)


def test_a_buffer_below_the_limit_is_fine(run_cell) -> None:
    items, end = run_cell("const b = new Uint8Array(2 ** 27); b.fill(7); text(b[2 ** 27 - 1])")
    assert (texts(items), end.error_text) == (["7"], None)


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc")
def test_memory_returns_after_the_bombs(run_cell, pool: ContextPool) -> None:
    """What a bomb took (heap, buffers, the stringifier) is given back with its isolate:
    after a first round (the allocator keeps some for later), more rounds add nothing."""

    def explode() -> None:
        for name in ("arrays", "array buffers filled", "typed arrays", "a deep JSON.stringify"):
            _, end = run_cell(BOMBS[name][0], timeout=60)
            assert isinstance(end, Finished)
            assert end.error_text is not None
            assert pool.wait_idle(60)

    explode()
    settled = _rss_mib()
    for _ in range(3):
        explode()
    grown = _rss_mib() - settled
    assert grown < 32, f"RSS grew by {grown:.0f} MiB over three more rounds of bombs"


def test_buffers_held_over_their_limit_by_a_waiting_cell_end_it(run_cell) -> None:
    """Idle (here: waiting for a timer), the host collects at once and counts again."""
    _, end = run_cell(
        "const b = new Uint8Array(600 * 2 ** 20); b.fill(1);"
        " await new Promise((r) => setTimeout(r, 60_000)); text('never')",
        timeout=30,
    )
    assert isinstance(end, Finished)
    assert end.error_text == OUT_OF_MEMORY


def test_a_cell_keeping_buffers_and_using_scratch_ones_is_fine(run_cell) -> None:
    """150 MiB kept and one 48 MiB scratch buffer at a time: V8's count, with the
    scratch buffers not yet swept, went over 256 MiB and ended the cell."""
    items, end = run_cell(
        "const keep = new Uint8Array(150 << 20); keep.fill(2); let s = 0;"
        " for (let i = 0; i < 100; i++) { const t = new Uint8Array(48 << 20); t.fill(1);"
        " s += t[i]; } text(s)",
        timeout=60,
    )
    assert (texts(items), end.error_text) == (["100"], None)


def test_buffers_dropped_before_a_wait_are_collected_not_counted(run_cell) -> None:
    items, end = run_cell(
        "for (let i = 0; i < 6; i++) new Uint8Array(100 << 20).fill(1);"
        " await new Promise((r) => setTimeout(r, 1)); text('went on')",
        timeout=30,
    )
    assert (texts(items), end.error_text) == (["went on"], None)

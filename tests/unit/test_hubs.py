"""Cells in hubs' realms (hubs.py, realms.py): an isolate runs one cell after another,
each in a fresh context of its own, with the output, errors and stack traces it would
have in an isolate of its own; a hub is reused only after a cell that ended cleanly."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cellfleet.actors.runtime import hubs
from cellfleet.actors.runtime import pool as pool_module
from cellfleet.actors.runtime.local import LocalCell
from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.actors.runtime.protocol import (
    CellSpec,
    Finished,
    OutputItem,
    Started,
    Stopped,
    YieldRequested,
)
from cellfleet.actors.runtime.v8 import realms_enabled
from tests.conftest import DEFAULT_TOOLS, runtime_tools

pytestmark = pytest.mark.skipif(not realms_enabled(), reason="no realms here")
_ids = itertools.count(1)


@pytest.fixture
def hub_pool() -> Iterator[ContextPool]:
    """No stock made ahead: each cell takes the hub its previous cell gave back, if any."""
    pool = ContextPool(0)
    yield pool
    pool.close()


@pytest.fixture
def isolate_pool() -> Iterator[ContextPool]:
    pool = ContextPool(0, realms=False)
    yield pool
    pool.close()


def _run(pool: ContextPool, source: str, **spec: Any) -> LocalCell:
    """Run a cell to its end, then let its hub (if any) make its next realm."""
    cell = LocalCell(
        CellSpec(
            cell_id=str(next(_ids)),
            source=source,
            tools=runtime_tools(list(DEFAULT_TOOLS)),
            clock_ms=1_700_000_000_000,
            seed=(1, 2, 3, 4),
            **spec,
        ),
        pool,
        tools=DEFAULT_TOOLS,
    )
    cell.wait()
    assert pool.wait_idle(10)
    return cell


def _answer(cell: LocalCell) -> tuple[list[Any], Finished | Stopped]:
    items = [event.item for event in cell.events if isinstance(event, OutputItem)]
    end = cell.events[-1]
    assert isinstance(end, Finished | Stopped)
    return items, end


def test_a_realm_sees_nothing_of_the_cells_before_it(hub_pool: ContextPool) -> None:
    first = _run(
        hub_pool,
        "globalThis.left = 1; Object.prototype.polluted = 2; Array.prototype.push = null;"
        ' JSON.stringify = () => "forged"; text("first")',
    )
    second = _run(
        hub_pool,
        "text([typeof left, typeof ({}).polluted, typeof [].push, JSON.stringify({a: 1})]"
        '.join(" "))',
    )
    assert first.runtime.in_realm
    assert second.runtime.in_realm
    assert second.runtime.context is first.runtime.context  # the same isolate
    assert _answer(second)[0] == [
        {"type": "input_text", "text": 'undefined undefined function {"a":1}'}
    ]


SOURCES = [
    'text("plain")',
    'function f() { throw new Error("boom"); }\nf();',
    "(() => { null.x })();",
    'const o = { m: function () { throw new Error("m"); } };\no.m();',
    'new (class { constructor() { throw new Error("c"); } })();',
    'class K { static s() { throw new Error("s"); } }\nK.s();',
    'const g = { get v() { throw new Error("get"); } };\ng.v;',
    "[1].map(() => { throw new TypeError('in map'); });",
    'await Promise.resolve();\nthrow new Error("after await");',
    "async function inner() { await null; throw new Error('deep'); }\nawait inner();",
    "(async () => { await null; throw new Error('anon'); })().catch((e) => text(e.stack));",
    "function r() { return r() + 1 }\ntry { r() } catch (e) { text(e.message) }",
    "const c = {}; c.c = c; text(c)",
    "undefinedName + 1",
    "let a = 1;\nlet a = 2;",
    "if (",
    "export const x = 1; text('exported')",
    "return 5",
    "await 1; text(String(this))",
    "text(String(arguments.length))",
    'text(Object.getOwnPropertyNames(globalThis).sort().join(","))',
    'await tools.fail({message: "no"})',
    "const r = await tools.echo({x: [1, 2]}); text(JSON.stringify(r))",
    'setTimeout(() => { throw new Error("in timer") }, 1); await new Promise(() => {})',
    # Code that closes the wrapper early runs after the start, as in a script.
    '}); text("escaped"); (async function () {',
    '}); throw new SyntaxError("thrown"); (async function () {',
    # A lone surrogate, decoded as V8 decodes a script's UTF-8.
    'text("\ud800 and \udfff")',
    "const r = FinalizationRegistry.prototype.register;"
    ' text([r.name, r.length, String(r)].join(" "))',
]


@pytest.mark.parametrize("source", SOURCES)
def test_a_cell_in_a_realm_answers_as_in_an_isolate_of_its_own(
    hub_pool: ContextPool, isolate_pool: ContextPool, source: str
) -> None:
    _run(hub_pool, 'text("a cell before")')  # (so that the cell runs in a used hub)
    in_realm = _run(hub_pool, source)
    alone = _run(isolate_pool, source)
    assert in_realm.runtime.in_realm
    assert not alone.runtime.in_realm
    assert _answer(in_realm) == _answer(alone)


@pytest.mark.parametrize(
    ("source", "error_text"),
    [
        (
            'const p = {};\np.q = function () { throw new Error("q"); };\np.q();',
            "Error: q\n    at p.q (exec_main.mjs:2:27)\n    at exec_main.mjs:3:3",
        ),
        (
            'const arr = [];\narr[0] = function () { throw new Error("z"); };\narr[0]();',
            "Error: z\n    at arr.<computed> (exec_main.mjs:2:30)\n    at exec_main.mjs:3:7",
        ),
    ],
)
def test_a_realm_names_a_function_by_what_it_was_assigned_to(
    hub_pool: ContextPool, source: str, error_text: str
) -> None:
    """As the reference does (its texts here; V8 keeps the name it inferred for a
    function compiled lazily, as a realm's are: an isolate of its own compiles every
    function ahead, `--no-lazy`, and writes `Object.q`, `Array.<anonymous>`)."""
    cell = _run(hub_pool, source)
    assert cell.runtime.in_realm
    assert _answer(cell)[1] == Finished(error_text, {}, False)


@pytest.mark.parametrize(
    "source",
    [
        "text(String(eval('1 + 1')))",
        "text(String(new Function('return 2')()))",
        "Error.prepareStackTrace = (e, frames) => frames.length; text(new Error().stack)",
        "const m = await import('x').catch((e) => e.message); text(String(m))",
    ],
)
def test_code_that_could_tell_a_realm_gets_an_isolate_of_its_own(
    hub_pool: ContextPool, source: str
) -> None:
    assert not hubs.realm_suits(source)
    assert not _run(hub_pool, source).runtime.in_realm


def test_words_that_only_contain_those_names_do_not_count() -> None:
    assert hubs.realm_suits('text("retrieval is important; evaluate the Functions")')
    assert not hubs.realm_suits("globalThis.eval('1')")
    assert not hubs.realm_suits("x = $ => import('m')")


def test_a_terminated_cells_hub_is_freed(hub_pool: ContextPool) -> None:
    cell = LocalCell(
        CellSpec(cell_id="loop", source="yield_control(); for (;;) {}", tools=[], clock_ms=0),
        hub_pool,
    )
    # (its yield is reported at once, its JavaScript going on into the loop)
    cell.wait_for(lambda events: any(isinstance(e, YieldRequested) for e in events))
    cell.terminate()
    assert isinstance(cell.wait(), Stopped)
    assert hub_pool.wait_idle(10)
    context = cell.runtime.context
    assert context.freed.wait(10)
    assert _run(hub_pool, 'text("next")').runtime.context is not context


def test_a_hub_left_holding_much_garbage_is_freed(hub_pool: ContextPool) -> None:
    """A cell must not start with another's garbage counted against its heap limit."""
    big = _run(
        hub_pool, "globalThis.kept = Array.from({length: 2e6}, (_, i) => ({i})); text('big')"
    )
    assert _answer(big)[1] == Finished(None, {}, False)
    assert big.runtime.context.freed.wait(10)
    assert _run(hub_pool, 'text("next")').runtime.context is not big.runtime.context


def test_the_pool_gives_back_what_its_stocked_hubs_hold(hub_pool: ContextPool) -> None:
    """A cell's garbage (too little to free its hub) stays in the hub's heap until V8
    collects it; giving back memory collects it now, and the hub stays in stock."""
    source = "globalThis.kept = Array.from({length: 1e5}, (_, i) => ({i})); text('x')"
    hub = _run(hub_pool, source).runtime.context
    assert hub_pool.give_back_memory() > 1_000_000
    assert hub_pool.give_back_memory() == 0  # (collected once while in stock: below)
    assert _run(hub_pool, 'text("next")').runtime.context is hub


def test_a_warmed_context_given_back_again_and_again_still_runs_as_warmed() -> None:
    """Each collection ages compiled code, and enough of them discard what warming
    compiled: a cell recorded as warmed would overflow its stack at a cold context's
    depth, and replay from a warmed context differently. Stock is collected once."""
    source = "function f(n) { try { return f(n + 1) } catch { text('deep ' + n) } } f(0)"
    depths = []
    for give_backs in (0, 8):
        pool = ContextPool(1)
        try:
            assert pool.wait_ready(1)
            for _ in range(give_backs):
                pool.give_back_memory()
            spec = CellSpec(cell_id=str(next(_ids)), source=source, tools=[], clock_ms=0)
            cell = LocalCell(spec, pool, warmed=True)
            cell.wait()
            assert [e.warmed for e in cell.events if isinstance(e, Started)] == [True]
            depths.append(_answer(cell)[0])
        finally:
            pool.close()
    assert depths[0] == depths[1]


def test_an_idle_pool_gives_back_by_itself_what_a_long_cell_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Idle counts from the last cell's end too: a cell longer than `STOCK_IDLE_S`
    (waiting on its tools, say) leaves its garbage to a give-back after it."""
    monkeypatch.setattr(pool_module, "STOCK_IDLE_S", 0.2)
    freed: queue.SimpleQueue[int] = queue.SimpleQueue()
    give_back = ContextPool.give_back_memory

    def giving_back(self: ContextPool) -> int:
        bytes_freed = give_back(self)
        freed.put(bytes_freed)
        return bytes_freed

    monkeypatch.setattr(ContextPool, "give_back_memory", giving_back)
    pool = ContextPool(1)
    try:
        _run(
            pool,
            "globalThis.kept = Array.from({length: 1e5}, (_, i) => ({i}));"
            " await new Promise((resolve) => setTimeout(resolve, 600)); text('x')",
        )
        while freed.get(timeout=10) < 1_000_000:  # (the filler's, one per idle period)
            pass
    finally:
        pool.close()


def test_a_hub_is_freed_after_its_last_realm(
    hub_pool: ContextPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubs, "MAX_REALMS", 3)
    contexts = [_run(hub_pool, 'text("x")').runtime.context for _ in range(4)]
    assert contexts[0] is contexts[1] is contexts[2] is not contexts[3]
    assert contexts[0].freed.wait(10)


def test_a_cells_stack_is_as_deep_in_every_realm_of_a_hub(hub_pool: ContextPool) -> None:
    """What replay relies on: a cell's recursion overflows at the same depth whichever
    realm of a hub it runs in (the hub's frames under it are compiled afresh for each)."""
    source = (
        "let depth = 0; function down() { depth++; down(); }"
        " try { down(); } catch {} const first = depth; depth = 0;"
        " await tools.echo({}); try { down(); } catch {} text(first + ' ' + depth)"
    )
    cells = [_run(hub_pool, source) for _ in range(60)]
    assert len({cell.runtime.context for cell in cells}) == 1
    assert len({str(_answer(cell)) for cell in cells}) == 1


def test_a_cell_that_registers_a_finalizer_has_its_hub_freed(hub_pool: ContextPool) -> None:
    """V8 may run a finalizer at any later time, in a hub during another cell: whoever
    registers one (under any name) is told of by the prelude, and its isolate is freed."""
    registering = _run(
        hub_pool,
        'const Registry = globalThis["Finaliz" + "ationRegistry"];'
        " globalThis.registry = new Registry(() => { for (;;) {} });"
        " for (let i = 0; i < 1000; i++) registry.register({i}, i);"
        " const r = Registry.prototype.register;"
        ' text([r.name, r.length, String(r)].join(" "))',
    )
    assert registering.runtime.in_realm
    assert _answer(registering) == (
        [{"type": "input_text", "text": "register 2 function register() { [native code] }"}],
        Finished(None, {}, False),
    )
    assert registering.runtime.context.freed.wait(10)
    after = _run(hub_pool, "const junk = Array.from({length: 1e5}, (_, i) => [i]); text('after')")
    assert after.runtime.context is not registering.runtime.context
    assert _answer(after)[1] == Finished(None, {}, False)


def _parked_hub(pool: ContextPool) -> Any:
    """A hub given back by its cell while the stock holds two other realms: its context
    (its next realm waits `RECYCLE_DELAY_S`)."""
    assert pool.wait_ready(2)
    taken = pool.acquire(source='text("x")')
    assert taken.realm
    assert pool.wait_ready(2)  # (the filler made another: two spare realms)
    taken.context.done_cleanly = True  # (as its runtime says of a cell that ended so)
    pool.release(taken.context)
    return taken.context


def test_a_hub_back_while_the_stock_has_spares_makes_its_next_realm_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its realm is not made on its thread right after the cell's answer (it would
    compete with the answer's reader), but a moment later, and it goes back in stock."""
    monkeypatch.setattr(pool_module, "RECYCLE_DELAY_S", 0.5)
    pool = ContextPool(2)
    try:
        hub = _parked_hub(pool)
        assert not pool.wait_idle(0.2)  # (parked: background work still to do)
        assert pool.wait_idle(10)
        taken = [pool.acquire(source='text("x")') for _ in range(3)]
        assert hub in {prepared.context for prepared in taken}
        for prepared in taken:
            pool.release(prepared.context)
    finally:
        pool.close()


def test_a_cell_that_finds_no_stock_gets_a_parked_hubs_realm_made_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a new hub (~3 ms), nor a wait for the parked hub's time."""
    monkeypatch.setattr(pool_module, "RECYCLE_DELAY_S", 3600.0)
    pool, made, refill = ContextPool(2), pool_module.new_hub, threading.Event()
    try:
        hub = _parked_hub(pool)

        def held_new_hub(memory_limit_bytes: int) -> hubs.Hub:  # (the filler's, refilling)
            refill.wait(10)
            return made(memory_limit_bytes)

        monkeypatch.setattr(pool_module, "new_hub", held_new_hub)
        spares = [pool.acquire(source='text("x")') for _ in range(2)]
        assert hub not in {prepared.context for prepared in spares}
        assert pool.acquire(source='text("x")').context is hub
        for prepared in spares:
            pool.release(prepared.context)
        pool.release(hub)
    finally:
        refill.set()
        pool.close()


def test_closing_the_pool_frees_a_parked_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "RECYCLE_DELAY_S", 3600.0)
    pool = ContextPool(2)
    try:
        hub = _parked_hub(pool)
    finally:
        pool.close()
    assert hub.freed.wait(10)

"""The cell runtime against real V8: lifecycle, limits, determinism (spec §2, §4.7)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from cellfleet.actors.runtime import source as source_module
from cellfleet.actors.runtime.local import LocalCell
from cellfleet.actors.runtime.mailbox import INPUT_RESOLVE, SLOT_UNITS, Mailbox
from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.actors.runtime.protocol import (
    CellSpec,
    Finished,
    NotificationSent,
    OutputItem,
    Pending,
    Started,
    Stopped,
    TimerSet,
    ToolCallRequested,
    YieldRequested,
)
from cellfleet.actors.runtime.records import RecordKind
from cellfleet.actors.runtime.runtime import OVERLAPPED_SCAN_CHARS, CellRuntime
from cellfleet.actors.runtime.source import take_script
from cellfleet.broker.contract.tools import JsonValue, ToolKind
from tests.conftest import runtime_tools, texts


def test_output_and_completion(run_cell):
    items, end = run_cell('text("a"); text({b: 1}); image("data:image/png;base64,AAA")')
    assert items == [
        {"type": "input_text", "text": "a"},
        {"type": "input_text", "text": '{"b":1}'},
        {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "high"},
    ]
    assert end == Finished(None, {}, False)


def test_started_precedes_everything(start_cell):
    cell = start_cell('text("x")')
    cell.wait()
    assert isinstance(cell.events[0], Started)


def test_uncaught_error_reports_model_line_numbers(run_cell):
    _, end = run_cell('text("a");\nfunction f() {\n  throw new Error("boom");\n}\nf();')
    assert isinstance(end, Finished)
    assert end.error_text == "Error: boom\n    at f (exec_main.mjs:3:9)\n    at exec_main.mjs:5:1"


def test_helper_frames_are_hidden(run_cell):
    _, end = run_cell("const o = {}; o.o = o; text(o)")
    assert isinstance(end, Finished)
    assert end.error_text is not None
    assert end.error_text.endswith("closes the circle\n    at exec_main.mjs:1:24")
    assert "prelude" not in end.error_text


def test_microtasks_drain_before_completion(run_cell):
    items, _ = run_cell(
        'Promise.resolve().then(() => text("l1")).then(() => text("l2")); text("now")'
    )
    assert texts(items) == ["now", "l1", "l2"]


def test_pending_timer_does_not_keep_cell_alive(run_cell):
    items, end = run_cell('setTimeout(() => text("late"), 0); text("now")')
    assert texts(items) == ["now"]
    assert end.error_text is None  # type: ignore[union-attr]


def test_awaited_timer_advances_clock(run_cell):
    items, _ = run_cell(
        "const t = Date.now(); await new Promise(r => setTimeout(r, 30));"
        " text(Date.now() - t >= 30)"
    )
    assert texts(items) == ["true"]


def test_timer_callback_error_fails_cell(run_cell):
    _, end = run_cell(
        'setTimeout(() => { throw new Error("in timer") }, 1); await new Promise(() => {})'
    )
    assert isinstance(end, Finished)
    assert end.error_text is not None
    assert end.error_text.startswith("Error: in timer\n    at exec_main.mjs:1:")


def test_tool_calls_resolve_and_reject(start_cell):
    cell = start_cell(
        "const r = await tools.echo({x: 1}); text(JSON.stringify(r));"
        " try { await tools.fail({message: 'no'}) } catch (e) { text(typeof e + ':' + e) }"
    )
    cell.wait()
    calls = [e for e in cell.events if isinstance(e, ToolCallRequested)]
    assert calls == [
        ToolCallRequested("tool-1", "echo", ToolKind.FUNCTION, {"x": 1}),
        ToolCallRequested("tool-2", "fail", ToolKind.FUNCTION, {"message": "no"}),
    ]
    assert texts([e.item for e in cell.events if isinstance(e, OutputItem)]) == [
        '{"x":1}',
        "string:no",
    ]


def test_parallel_tool_calls_overlap(run_cell):
    """Both calls are in flight at once: each handler waits for the other to start."""
    both = threading.Barrier(2, timeout=10)

    def meet(value: object) -> object:
        both.wait()  # a sequential second call would never come: BrokenBarrierError
        return value

    items, _ = run_cell(
        "const r = await Promise.all([tools.meet({a: 1}), tools.meet({b: 2})]);"
        " text(JSON.stringify(r))",
        handlers={"meet": meet},
    )
    assert texts(items) == ['[{"a":1},{"b":2}]']


def test_freeform_kind_is_reported(start_cell):
    cell = start_cell(
        'await tools.patch("raw text")',
        handlers={"patch": lambda v: "ok"},
        tools=runtime_tools(["patch"], ToolKind.FREEFORM),
    )
    cell.wait()
    call = next(e for e in cell.events if isinstance(e, ToolCallRequested))
    assert (call.kind, call.input) == (ToolKind.FREEFORM, "raw text")


def test_yield_and_notify_events(start_cell):
    cell = start_cell('text("a"); yield_control(); notify("hey"); text("b")')
    cell.wait()
    kinds = [type(e).__name__ for e in cell.events]
    assert kinds == [
        "Started",
        "OutputItem",
        "YieldRequested",
        "NotificationSent",
        "OutputItem",
        "Finished",
    ]
    assert NotificationSent("hey") in cell.events


def test_store_writes_are_reported_last_write_wins(run_cell):
    _, end = run_cell('store("a", 1); store("b", [2]); store("a", {c: 3})')
    assert isinstance(end, Finished)
    assert end.stored_writes == {"b": "[2]", "a": '{"c":3}'}


def test_stored_snapshot_is_loaded_as_fresh_copies(run_cell):
    items, _ = run_cell(
        'const x = load("k"); x.n = 2; text(JSON.stringify(load("k"))); text(load("none"))',
        stored={"k": '{"n":1}'},
    )
    assert texts(items) == ['{"n":1}', "undefined"]


def test_exit_is_uncatchable_and_succeeds(run_cell):
    items, end = run_cell(
        'store("k", 1); try { text("a"); exit(); } catch (e) { text("caught") }'
        ' finally { text("finally") }'
    )
    assert texts(items) == ["a"]
    assert end == Finished(None, {"k": "1"}, True)


def test_exit_from_promise_reaction_and_timer(run_cell):
    items, end = run_cell('await null; text("x"); exit(); text("no")')
    assert (texts(items), end.error_text) == (["x"], None)  # type: ignore[union-attr]
    items, end = run_cell('setTimeout(() => { text("t"); exit() }, 1); await new Promise(() => {})')
    assert (texts(items), end.error_text) == (["t"], None)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "source",
    ["while (true) {}", 'await null; text("spin"); while (true) {}'],
    ids=["in-task", "in-microtask-checkpoint"],
)
def test_terminate_stops_a_spinning_cell_quickly(start_cell, source):
    cell = start_cell(source)
    cell.wait_for(lambda events: any(isinstance(e, Started) for e in events))
    begun = time.monotonic()
    cell.terminate()
    assert cell.wait(2) == Stopped()
    assert time.monotonic() - begun < 0.1


def test_terminated_cell_keeps_its_output(start_cell):
    cell = start_cell('text("before"); yield_control(); while (true) {}')
    cell.wait_for(lambda events: any(isinstance(e, YieldRequested) for e in events))
    cell.terminate()
    cell.wait()
    assert texts([e.item for e in cell.events if isinstance(e, OutputItem)]) == ["before"]


def test_memory_bomb_fails_cell_and_process_lives_on(pool, run_cell):
    _, end = run_cell("const a = []; while (true) a.push(new Array(1e5).fill(1.5));", timeout=30)
    limit = "exec cell exceeded its memory limit of 256 MiB"
    assert end == Finished(limit, {}, False, by_host=True)
    items, _ = run_cell('text("still alive")')
    assert texts(items) == ["still alive"]


def test_output_flood_is_bounded(run_cell):
    _, end = run_cell(
        'const s = "x".repeat(1 << 20); for (;;) text(s)', timeout=30, output_limit_bytes=8 << 20
    )
    assert isinstance(end, Finished)
    assert end.error_text == "exec cell output limit exceeded"


def test_big_output_crosses_the_log_in_chunks(run_cell):
    items, _ = run_cell('text("y".repeat(3 << 20))', timeout=30)
    assert texts(items) == ["y" * (3 << 20)]


def test_many_items_keep_their_order(run_cell):
    items, _ = run_cell("for (let i = 0; i < 20000; i++) text(i)", timeout=30)
    assert texts(items) == [str(i) for i in range(20000)]


def test_random_and_clock_follow_the_recorded_seed_and_clock(run_cell):
    source = "text(Math.random()); text(Date.now()); text(new Date().toISOString())"
    first, _ = run_cell(source, seed=(7, 8, 9, 10), clock_ms=1_700_000_000_000.0)
    second, _ = run_cell(source, seed=(7, 8, 9, 10), clock_ms=1_700_000_000_000.0)
    other, _ = run_cell(source, seed=(1, 1, 1, 1), clock_ms=1_700_000_000_000.0)
    assert first == second
    assert texts(first)[1:] == ["1700000000000", "2023-11-14T22:13:20.000Z"]
    assert texts(other)[0] != texts(first)[0]


def test_replay_reproduces_outputs_tool_calls_and_writes(pool: ContextPool):
    source = """
      const [a, b] = await Promise.all([tools.echo({n: Math.random()}), tools.sleep({ms: 20})]);
      store("r", a.n);
      await new Promise(r => setTimeout(r, 5));
      text(JSON.stringify([a, b, Date.now()]));
      try { await tools.fail({message: "x"}) } catch (e) { text(e) }
      notify("done " + Math.random());
    """
    spec = CellSpec(
        cell_id="1",
        source=source,
        tools=runtime_tools(["echo", "sleep", "fail"]),
        seed=(3, 1, 4, 1),
        clock_ms=1_000.0,
    )
    from tests.conftest import DEFAULT_TOOLS

    live = LocalCell(spec, pool, tools=DEFAULT_TOOLS)
    live.wait()
    warmed = next(event.warmed for event in live.events if isinstance(event, Started))
    replayed = LocalCell(spec, pool, replay=list(live.inputs), warmed=warmed)
    replayed.wait()
    assert len(live.inputs) == 4
    assert replayed.events == live.events


def test_frontier_mode_reports_pending_tool_calls(pool: ContextPool):
    release = threading.Event()

    def held_echo(value: JsonValue) -> JsonValue:
        release.wait(10)  # answers only once the test has seen the frontier
        return value

    spec = CellSpec(
        cell_id="1", source="const r = await tools.echo(1); text(r)", tools=runtime_tools(["echo"])
    )
    cell = LocalCell(spec, pool, tools={"echo": held_echo})
    cell.control(lambda runtime: runtime.set_frontier_mode(True))
    cell.wait_for(lambda events: any(isinstance(e, Pending) for e in events))
    pending = next(e for e in cell.events if isinstance(e, Pending))
    assert pending.tool_call_ids == ("tool-1",)
    release.set()
    cell.wait_until(lambda: len(cell.inputs) == 1)  # the result is queued, the cell frozen
    cell.control(CellRuntime.resume)
    assert cell.wait() == Finished(None, {}, False)
    assert [e.item["text"] for e in cell.events if isinstance(e, OutputItem)] == ["1"]


def test_syntax_error_and_imports(run_cell):
    assert run_cell("let x = ;")[1].error_text == "SyntaxError: Unexpected token ';'"
    assert run_cell('import x from "y";\ntext(1)')[1].error_text == (
        "Unsupported import in exec: y"
    )
    assert run_cell('import "a";\nimport {b} from "c"')[1].error_text == (
        "Unsupported import in exec: a"
    )
    # a module that does not even parse fails with the parse error, not the import
    assert run_cell('import x from "y";\nlet = ;')[1].error_text.startswith("SyntaxError: ")


def test_timer_set_event_carries_due_clock(start_cell):
    cell = start_cell("setTimeout(() => {}, 250)", clock_ms=5_000.0)
    cell.wait()
    timer = next(e for e in cell.events if isinstance(e, TimerSet))
    assert (timer.timer_id, timer.delay_ms) == (1, 250)
    assert 5_250.0 <= timer.due_clock_ms < 5_251.0


def test_a_cell_ended_by_its_memory_limit_commits_nothing(run_cell):
    """Issue 11, item 4: what it stored on its way to the limit (here 1 MiB values) is
    not committed; a script that fails on its own still commits, as Codex's does."""
    _, end = run_cell(
        'const big = "x".repeat(1 << 20); const keep = [];'
        " for (let i = 0; ; i++) { store(`k${i}`, big); keep.push(big + i); }",
        timeout=30,
    )
    limit = "exec cell exceeded its memory limit of 256 MiB"
    assert end == Finished(limit, {}, False, by_host=True)
    _, failed = run_cell('store("k", 1); throw new Error("boom")')
    assert isinstance(failed, Finished)
    assert failed.stored_writes == {"k": "1"}


def _watch_order(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], threading.Event]:
    """Record when a cell's start script is submitted and when its source is scanned;
    the event is set once V8 handed the owner anything of the cell's."""
    order: list[str] = []
    reported = threading.Event()
    submit, scan = CellRuntime._submit, source_module.module_compile_error

    def watched_submit(self: CellRuntime, script: str, **kwargs: Any) -> None:
        order.append("submit")
        sink, quiescent_sink = self._sink, self._quiescent_sink

        def watched(to: Any) -> Any:
            def watched_sink(message: Any) -> None:
                to(message)
                reported.set()

            return watched_sink

        self._sink = watched(sink)  # type: ignore[method-assign]
        self._quiescent_sink = watched(quiescent_sink)  # type: ignore[method-assign]
        submit(self, script, **kwargs)

    def watched_scan(text: str) -> str | None:
        order.append("scan")
        return scan(text)

    monkeypatch.setattr(CellRuntime, "_submit", watched_submit)
    monkeypatch.setattr(source_module, "module_compile_error", watched_scan)
    return order, reported


def test_a_short_cell_with_a_top_level_return_ends_with_none_of_its_effects(
    start_cell, monkeypatch
):
    """A module would not start: `SyntaxError: Illegal return statement`. A short cell's
    scan runs while V8 already runs it; here the scan waits until V8 handed the owner
    what the cell did (output, a tool call, a stored value), which must be dropped."""
    order, reported = _watch_order(monkeypatch)
    scan = source_module.module_compile_error

    def scan_once_v8_reported(text: str) -> str | None:
        assert reported.wait(10), "V8 reported nothing of the cell before its scan"
        return scan(text)

    monkeypatch.setattr(source_module, "module_compile_error", scan_once_v8_reported)
    called: list[JsonValue] = []
    cell = start_cell(
        'text("early"); tools.echo({}); store("k", 1);\nreturn 1;',
        handlers={"echo": called.append},
    )
    end = cell.wait(30)
    assert end == Finished("SyntaxError: Illegal return statement", {}, False)
    assert [type(event) for event in cell.events] == [Started, Finished]
    assert called == []
    assert order == ["submit", "scan"]


def test_a_long_cell_is_scanned_before_v8_runs_it(run_cell, monkeypatch):
    """Past `OVERLAPPED_SCAN_CHARS` the scan comes first (its JavaScript would run
    unwatched meanwhile): a top-level return means it never runs at all."""
    order, _ = _watch_order(monkeypatch)
    filler = "0;\n" * (OVERLAPPED_SCAN_CHARS // 3 + 1)
    assert run_cell(filler + "return 1;") == (
        [],
        Finished("SyntaxError: Illegal return statement", {}, False),
    )
    assert order == ["scan"]
    order.clear()
    assert texts(run_cell(filler + 'text("ran");')[0]) == ["ran"]
    assert order == ["scan", "submit"]
    order.clear()
    assert texts(run_cell('text("short");')[0]) == ["short"]
    assert order == ["submit", "scan"]


def test_inputs_arrive_whole_through_the_inbox_slots_and_staged(run_cell, monkeypatch):
    """Tool results, errors and timers reach the cell unchanged whichever way their text
    goes: in their inbox slot, or (too long for it) staged first. Both are taken here."""
    ways: list[bool] = []
    leave = Mailbox.leave_input

    def counted(self: Mailbox, *args: Any) -> bool:
        ways.append(leave(self, *args))
        return ways[-1]

    monkeypatch.setattr(Mailbox, "leave_input", counted)
    values = ["plain", 'quotes " and \\ backslash', "\u2028 line sep, 😀 pair", "x" * 5000]
    source = (
        f"const values = {json.dumps(values)};"
        " for (const v of values) text(JSON.stringify(await tools.echo({v})));"
        " text(JSON.stringify(await Promise.all(values.map((v) => tools.echo({v})))));"
        " try { await tools.fail({message: '😀 no \"way\"'}) } catch (e) { text('caught ' + e) }"
        " await new Promise((resolve) => setTimeout(resolve, 1)); text('timer');"
    )
    items, end = run_cell(source)
    assert end == Finished(None, {}, False)
    expected = [json.dumps({"v": v}, separators=(",", ":"), ensure_ascii=False) for v in values]
    assert texts(items) == [
        *expected,
        "[" + ",".join(expected) + "]",
        'caught 😀 no "way"',
        "timer",
    ]
    assert ways.count(False) == 2  # the long value, twice: staged
    assert ways.count(True) == len(ways) - 2 >= 8


def test_how_an_input_came_does_not_change_how_deep_the_cell_can_go(run_cell):
    """Timers due together are given back to back, as a replay gives every input; alone,
    each comes after the last one's quiescent point. The cell's stack is as deep either
    way (a replay must see what the live cell saw)."""
    items, end = run_cell(
        "function depth() { let n = 0; const f = () => { n++; f(); };"
        " try { f(); } catch (e) {} return n; }"
        " const seen = [];"
        " const later = () =>"
        "   new Promise((r) => setTimeout(() => { seen.push(depth()); r(); }, 1));"
        " await Promise.all([later(), later(), later()]); await later();"
        " text(JSON.stringify(seen));"
    )
    assert end == Finished(None, {}, False)
    seen = json.loads(texts(items)[0])
    assert len(seen) == 4
    assert len(set(seen)) == 1, seen


def test_a_terminate_while_v8_reports_a_quiescent_point_keeps_the_output_before_it(
    start_cell, monkeypatch
):
    """The quiescent point's records reach the owner before anything a terminate sends
    after draining the same log (the terminate's drain waits for the marker's)."""
    drained, terminated = threading.Event(), threading.Event()
    drain, terminate = Mailbox.drain_into, CellRuntime.terminate

    def held_after_the_marker(self: Mailbox, consumer: Any, **kwargs: Any) -> None:
        drain(self, consumer, **kwargs)
        if kwargs.get("always") and not drained.is_set():
            drained.set()
            assert terminated.wait(10)  # (the terminate runs between drain and send)

    def terminating(self: CellRuntime) -> None:
        terminate(self)
        terminated.set()

    monkeypatch.setattr(Mailbox, "drain_into", held_after_the_marker)
    monkeypatch.setattr(CellRuntime, "terminate", terminating)
    cell = start_cell("text('A'); text('B'); await new Promise(() => {})")
    assert drained.wait(10)
    cell.terminate()
    end = cell.wait(10)
    assert isinstance(end, Stopped)
    assert texts([e.item for e in cell.events if isinstance(e, OutputItem)]) == ["A", "B"]


def test_a_staged_text_that_fails_ends_the_cell_before_its_input_is_taken(run_cell, monkeypatch):
    """A text too long for its inbox slot is staged by a script of its own. If that
    script fails (the cell's memory limit, say; here its literal does not parse), the
    cell ends with that failure: its `take()` never gives it `undefined` instead."""
    literal = source_module.js_string
    monkeypatch.setattr(
        source_module,
        "js_string",
        lambda text: literal(text)[:-1] if len(text) > SLOT_UNITS else literal(text),
    )
    items, end = run_cell(
        "try { const r = await tools.echo({s: 'x'.repeat(5000)}); text('got ' + typeof r); }"
        " catch (e) { text('caught ' + typeof e); }"
    )
    assert items == []
    assert isinstance(end, Finished)
    assert end.error_text is not None
    assert end.error_text.startswith("SyntaxError"), end.error_text


def test_take_reports_a_staged_text_that_never_came_as_a_defect(pool: ContextPool) -> None:
    """The prelude's own guard: a slot that says its text was staged, with none staged,
    is a defect of the host's (the cell fails loudly), never an input of `undefined`."""
    prepared = pool.acquire()
    try:
        assert not prepared.mailbox.leave_input(0, INPUT_RESOLVE, 1, 1.0, "x" * (SLOT_UNITS + 1))
        prepared.context.eval_sync(take_script(prepared.host_name) + "; 0")
        records: list[list[Any]] = []
        prepared.mailbox.drain_into(records.extend, reset=True)
    finally:
        pool.release(prepared.context)
    assert records == [[RecordKind.DEFECT, "an input's staged text is missing"]]

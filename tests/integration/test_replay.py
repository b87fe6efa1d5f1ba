"""Replay: recorded sessions re-executed from their inputs, and what the report says when
the record and the replay differ (an edited input, a missing input, a time limit)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from cellfleet.actors.replay import Status, replay
from cellfleet.actors.runtime import v8
from cellfleet.actors.runtime.pool import ContextPool, runtime_identity
from cellfleet.broker import events as ev
from cellfleet.broker import trace_file
from cellfleet.broker.tools.registry import ToolCallError
from cellfleet.ops.host import Host
from tests.integration.cli_support import REPO, run_cellfleet

ECHO_CELL = (
    "yield_control();\n"
    "await new Promise((r) => setTimeout(r, 5));\n"
    "const got = await tools.echo({ x: load('k') });\n"
    "text(JSON.stringify(got));\n"
)


def _fail(_: object) -> object:
    raise ToolCallError("nope")


@dataclasses.dataclass
class Recorded:
    session: str
    events: list[ev.AnyEvent]
    entries: list[tuple[str, ev.AnyEvent]]

    def edited(self, change: Callable[[ev.AnyEvent], ev.AnyEvent]) -> list[ev.AnyEvent]:
        return [change(event) for event in self.events]


@pytest.fixture(scope="module")
def recorded(redis_server: object) -> Iterator[Recorded]:
    """One session whose cells use every input and output a cell has."""
    url = redis_server.url  # type: ignore[attr-defined]
    host = Host(url, handlers={"echo": lambda value: value, "fail": _fail})
    try:
        session = host.open_session()
        session.exec("a", "store('k', { n: 1 }); text('one'); notify('hi')")
        session.exec("b", ECHO_CELL)
        session.wait('{"cell_id": "2", "yield_time_ms": 10000}')
        session.exec(
            "c",
            "text(String(Math.random())); text(String(Date.now()));\n"
            "const t = setTimeout(() => text('never'), 50); clearTimeout(t);\n"
            "try { await tools.fail({}) } catch (e) { text(String(e)) }\n"
            "const both = await Promise.all([tools.echo(1), tools.echo([2])]);\n"
            "text(JSON.stringify(both)); text(ALL_TOOLS.map((t) => t.description).join('|'));\n"
            "image('data:image/png;base64,iVBORw0KGgo=');\n"
            "throw new Error('bad')",
        )
        session.exec("d", "text('spin');\nyield_control();\nwhile (true) {}")
        session.wait('{"cell_id": "4", "terminate": true}')
        session.exec("e", "text(new WeakRef({}).deref() ? 'y' : 'n'); text(String(load('k').n))")
        session.exec("f", "syntax error here")
        session.exec("g", "store('k', 2); text('bye'); exit(); text('not shown')")
        session.exec("h", "text(String(load('k'))); text(new Date(0).toString())")
        session.exec(
            "i", "const a = [];\nwhile (true) a.push(new Array(1e5).fill(1.5));"
        )  # ended by the host's memory limit
        session.shutdown()
        entries = list(host.journal.read(session.id))
        yield Recorded(session.id, [event for _, event in entries], entries)
    finally:
        host.close()


def _write(path: Path, session: str, entries: list[tuple[str, ev.AnyEvent]]) -> Path:
    header = trace_file.export_header(session, "test", v8.v8_version())
    with path.open("w", encoding="utf-8") as out:
        trace_file.write_trace(out, header, entries)
    return path


def test_every_cell_of_a_recorded_session_replays_identically(recorded: Recorded) -> None:
    report = replay(recorded.events)
    assert report.identical, report.render()
    assert [cell.cell for cell in report.cells] == [str(n) for n in range(1, 10)]
    assert all(cell.events >= 1 for cell in report.cells)
    notes = {cell.cell: cell.notes for cell in report.cells}
    assert any("WeakRef" in note for note in notes["5"])
    assert any("memory limit" in note for note in notes["9"]), notes["9"]
    assert not notes["1"]
    assert not notes["2"]
    assert report.render().endswith("9 cells replayed (9 identical)")


def test_an_edited_tool_result_is_reported_at_its_cell_event_and_source_line(
    recorded: Recorded,
) -> None:
    def change(event: ev.AnyEvent) -> ev.AnyEvent:
        if isinstance(event, ev.ToolCompleted) and event.cell == "2":
            return dataclasses.replace(event, result={"x": {"n": 2}})
        return event

    report = replay(recorded.edited(change))
    assert [cell.status for cell in report.cells].count(Status.DIVERGED) == 1
    cell = next(cell for cell in report.cells if cell.status is Status.DIVERGED)
    assert cell.cell == "2"
    divergence = cell.divergence
    assert divergence is not None
    own = [
        e for e in recorded.events if e.cell == "2" and (e.seq or isinstance(e, ev.CellAdmitted))
    ]
    recorded_output = own[divergence.position]
    assert isinstance(recorded_output, ev.OutputProduced)
    assert recorded_output.item == {"type": "input_text", "text": '{"x":{"n":1}}'}
    assert divergence.produced == {
        "event": "output_produced",
        "item": {"type": "input_text", "text": '{"x":{"n":2}}'},
    }
    assert divergence.site == (4, 1)  # text(...) on line 4
    rendered = cell.render()
    assert f"cell 2: diverged at event {divergence.position}" in rendered
    assert "    4 | text(JSON.stringify(got));\n      | ^" in rendered


def test_a_missing_input_is_reported_after_the_last_event_produced_again(
    recorded: Recorded,
) -> None:
    """Without its timer's firing, cell 2 waits for ever: the report says the replay
    produced nothing more, after which line."""
    events = [e for e in recorded.events if not (isinstance(e, ev.TimerFired) and e.cell == "2")]
    report = replay(events, cells={"2"})
    (cell,) = report.cells
    assert cell.divergence is not None
    assert cell.divergence.reason == "the replay produced nothing more"
    assert cell.divergence.recorded is not None
    assert cell.divergence.recorded["event"] == "tool_requested"
    assert cell.divergence.produced is None
    assert cell.divergence.after_site == (2, 26)  # the setTimeout, the last event made
    assert "after the event made at exec_main.mjs:2:26" in cell.render()


def test_a_cell_that_cannot_get_there_is_stopped_by_its_time_limit(recorded: Recorded) -> None:
    """Cell 4 spins until terminated; a record that expects one more output of it
    leaves the replay spinning until its time limit."""
    kept = [e for e in recorded.events if not (e.cell == "4" and isinstance(e, ev.CellTerminated))]
    more = ev.OutputProduced(
        session=recorded.session, cell="4", seq=999, item={"type": "input_text", "text": "x"}
    )
    (cell,) = replay([*kept, more], cells={"4"}, time_limit_s=0.3).cells
    assert cell.divergence is not None
    assert cell.divergence.reason == "the replay did not get there within 0.3 s"
    assert cell.divergence.recorded == {"event": "output_produced", "item": more.item}


def test_repeated_events_of_a_retried_append_replay_once(recorded: Recorded) -> None:
    session = [e for e in recorded.events if not e.cell]  # (its tool set among them)
    cell = [e for e in recorded.events if e.cell == "1"]
    repeated = [*cell[:3], *cell[1:3], *cell[3:]]  # (cell, seq) again, as a retry leaves
    report = replay([*session, *repeated])
    assert report.identical, report.render()


def test_a_delivered_outcome_missing_from_the_trace_makes_the_cell_unreplayable(
    recorded: Recorded,
) -> None:
    events = [
        e
        for e in recorded.events
        if not (isinstance(e, ev.ToolCompleted | ev.ToolFailed) and e.cell == "2" and not e.seq)
    ]
    (cell,) = replay(events, cells={"2"}).cells
    assert cell.status is Status.UNREPLAYABLE
    assert cell.problem is not None
    assert "outcome of tool-1" in cell.problem
    assert "cell 2: cannot be replayed: the outcome of tool-1" in cell.render()


def test_a_session_records_its_time_zone_and_locale(recorded: Recorded) -> None:
    opened = recorded.events[0]
    assert isinstance(opened, ev.SessionOpened)
    assert (opened.time_zone, opened.locale) == v8.environment()
    moved = [
        dataclasses.replace(e, time_zone="Asia/Tokyo") if isinstance(e, ev.SessionOpened) else e
        for e in recorded.events
    ]
    report = replay(moved, cells={"1"})
    if v8.environment()[0] != "Asia/Tokyo":
        assert report.notes == (
            f"recorded in time zone Asia/Tokyo, replayed in {v8.environment()[0]}:"
            " Date's local time may differ",
        )


def test_replay_command_exit_status_and_outputs(
    recorded: Recorded, redis_url: str, tmp_path: Path
) -> None:
    trace = _write(tmp_path / "s.jsonl", recorded.session, recorded.entries)
    done = run_cellfleet(["replay", str(trace)], tmp_path, "redis://127.0.0.1:1")  # no Redis
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "cell 1: identical (4 events)"
    by_id = run_cellfleet(
        ["replay", recorded.session, "--cell", "2", "--json"], tmp_path, redis_url
    )
    assert by_id.returncode == 0, by_id.stderr
    data = orjson.loads(by_id.stdout)
    assert data["identical"] is True
    assert [c["cell"] for c in data["cells"]] == ["2"]

    def change(entry: tuple[str, ev.AnyEvent]) -> tuple[str, ev.AnyEvent]:
        entry_id, event = entry
        if isinstance(event, ev.CellAdmitted) and event.cell == "1":
            return entry_id, dataclasses.replace(event, source="text('two')")
        return entry

    edited = _write(tmp_path / "e.jsonl", recorded.session, [change(e) for e in recorded.entries])
    diverged = run_cellfleet(["replay", str(edited), "--json"], tmp_path, redis_url)
    assert diverged.returncode == 1
    cells = json.loads(diverged.stdout)["cells"]
    assert cells[0]["divergence"]["location"] == {
        "file": "exec_main.mjs",
        "line": 1,
        "column": 1,
        "exact": True,
        "source_line": "text('two')",
    }
    for bad, message in (
        (["replay", str(trace), "--cell", "77"], "no cell 77"),
        (["replay", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
        (["replay", str(trace), "--cell", ""], "no cell"),
    ):
        refused = run_cellfleet(bad, tmp_path, redis_url)
        assert refused.returncode == 2, refused
        assert message in refused.stderr
    unknown = run_cellfleet(["replay", "no-such-session"], tmp_path, redis_url)
    assert unknown.returncode == 1
    assert "no events for session no-such-session" in unknown.stderr


def test_replay_command_runs_under_the_recorded_time_zone(redis_url: str, tmp_path: Path) -> None:
    """A session recorded in Tokyo prints Tokyo's local time; `cellfleet replay` in
    another time zone still replays it identically."""
    script = tmp_path / "local.js"
    script.write_text("text(new Date(0).toString()); text((1234.5).toLocaleString())")
    tokyo = {"TZ": "Asia/Tokyo", "LC_ALL": "de_DE.UTF-8"}
    ran = run_cellfleet(["run", str(script)], tmp_path, redis_url, env=tokyo)
    assert ran.returncode == 0, ran.stderr
    assert "GMT+0900" in ran.stdout
    assert "1.234,5" in ran.stdout
    listed = run_cellfleet(["sessions", "--limit", "1", "--json"], tmp_path, redis_url)
    session = orjson.loads(listed.stdout.splitlines()[0])["session"]
    exported = run_cellfleet(["export", session, "-o", "t.jsonl"], tmp_path, redis_url)
    assert exported.returncode == 0, exported.stderr
    utc = {"TZ": "UTC", "LC_ALL": "C.UTF-8"}
    replayed = run_cellfleet(["replay", "t.jsonl"], tmp_path, redis_url, env=utc)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert replayed.stdout.startswith("cell 1: identical")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_output_that_cannot_be_written_is_one_line_and_status_1(
    recorded: Recorded, tmp_path: Path
) -> None:
    trace = _write(tmp_path / "s.jsonl", recorded.session, recorded.entries)
    with Path("/dev/full").open("w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "cellfleet.ops.cli", "replay", str(trace)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr == "cellfleet: cannot write the output: No space left on device\n"


def test_a_trace_from_another_v8_says_so(recorded: Recorded, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.jsonl", recorded.session, recorded.entries)
    with path.open(encoding="utf-8") as lines:
        trace = trace_file.read_trace(lines)
    older = dataclasses.replace(trace, header=dataclasses.replace(trace.header, v8="1.2.3"))
    report = replay(older, cells={"1"})
    assert report.notes == (f"recorded with V8 1.2.3, replayed with V8 {v8.v8_version()}",)
    assert report.render().startswith("note: recorded with V8 1.2.3")


# -- a replayed cell cannot tell, and a record that cannot be is refused -------------------

INVISIBLE = {
    "a builtin's frame in an error's stack": (
        "try { new WeakRef(1) } catch (e) { text(e.stack) }\n"
        "try { new FinalizationRegistry(1) } catch (e) { text(e.stack) }"
    ),
    "traps and accessors on Object.prototype": (
        "let hits = 0;\n"
        "Object.prototype.get = function (t, k, r) { hits++; return Reflect.get(t, k, r) };\n"
        "Object.defineProperty(Object.prototype, 'set',\n"
        "  { get() { hits++; }, configurable: true });\n"
        "WeakRef.name; text('a'); store('k', 1);\n"
        "delete Object.prototype.get; delete Object.prototype.set; text(String(hits))"
    ),
    "the depth of a stack overflow": (
        "function f(n) { try { return f(n + 1) } catch (e) { text('deep ' + n); return n } }\nf(0)"
    ),
    "a stack hook of the cell's": (
        "Error.prepareStackTrace = (e, frames) => frames.length; Error.stackTraceLimit = 3;\n"
        "text(String(new Error('x').stack)); text('after')"
    ),
}


def test_a_replayed_cell_cannot_tell_it_is_replayed(redis_url: str) -> None:
    host = Host(redis_url)
    try:
        session = host.open_session()
        for index, source in enumerate(INVISIBLE.values()):
            session.exec(f"c{index}", source)
        events = [event for _, event in host.journal.read(session.id)]
    finally:
        host.close()
    report = replay(events)
    assert report.identical, report.render()
    notes = report.cells[0].notes
    assert notes == (
        "its source names WeakRef, whose deref() depends on the garbage collector",
        "its source names FinalizationRegistry, whose callbacks depend on the garbage collector",
    )


def _own(recorded: Recorded, cell: str) -> list[ev.AnyEvent]:
    return [e for e in recorded.events if e.cell == cell]


def _later(event: ev.AnyEvent) -> ev.AnyEvent:
    """The event again, as a later event of its cell (not a retried append's repeat)."""
    return dataclasses.replace(event, seq=event.seq + 1000)


def test_inputs_the_cell_cannot_have_had_are_divergences(recorded: Recorded) -> None:
    echo = next(e for e in _own(recorded, "2") if isinstance(e, ev.ToolResultDelivered))
    fired = next(e for e in _own(recorded, "2") if isinstance(e, ev.TimerFired))
    cases = {
        "the outcome of tool-1": lambda e: [e, _later(e)] if e is echo else [e],  # twice
        "the outcome of tool-9": lambda e: (  # (its worker's record too)
            [dataclasses.replace(e, call_id="tool-9")]
            if isinstance(e, ev.ToolResultDelivered | ev.ToolCompleted) and e.cell == "2"
            else [e]
        ),
        "timer 1": lambda e: [e, _later(e)] if e is fired else [e],
        "timer 7": lambda e: [dataclasses.replace(e, timer_id=7)] if e is fired else [e],
    }
    for what, change in cases.items():
        events = [edited for event in recorded.events for edited in change(event)]
        (cell,) = replay(events, cells={"2"}).cells
        assert cell.divergence is not None, what
        assert cell.divergence.reason == (
            f"the record delivers {what}, which the cell does not wait for"
        )


def test_a_record_that_goes_on_after_the_end_or_forges_a_host_ending_diverges(
    recorded: Recorded,
) -> None:
    completed = next(e for e in _own(recorded, "1") if isinstance(e, ev.CellCompleted))
    again = dataclasses.replace(completed, seq=900, error_text="other")
    (cell,) = replay([*recorded.events, again], cells={"1"}).cells
    assert cell.divergence is not None
    assert cell.divergence.reason == "the record goes on after the cell's end"
    forged = [
        dataclasses.replace(e, by_host=True) if e is completed else e for e in recorded.events
    ]
    (cell,) = replay(forged, cells={"1"}).cells  # (it has stored writes and no error)
    assert cell.divergence is not None
    assert cell.divergence.reason.startswith("the record has the host end the cell")


def test_many_cells_stopped_while_allocating_replay_one_after_the_other(
    recorded: Recorded,
) -> None:
    """Each replayed context is gone before the next cell starts: 40 cells stopped by
    their time limit mid-allocation do not pile up their heaps."""
    admitted = next(e for e in _own(recorded, "1") if isinstance(e, ev.CellAdmitted))
    started = next(e for e in _own(recorded, "1") if isinstance(e, ev.CellStarted))
    more = ev.OutputProduced(
        session=recorded.session, seq=2, item={"type": "input_text", "text": "x"}
    )
    source = (
        "const a = [];\n"
        "while (true) { a.push(new Array(1000).fill(1)); if (a.length > 20000) a.length = 0 }"
    )
    events: list[ev.AnyEvent] = [recorded.events[0]]
    for index in range(1, 41):
        cell = str(100 + index)
        events += [
            dataclasses.replace(
                admitted, cell=cell, source=source, stored_version=0, tools_digest=""
            ),
            dataclasses.replace(started, cell=cell),
            dataclasses.replace(more, cell=cell),
        ]
    report = replay(events, time_limit_s=0.05)
    assert len(report.cells) == 40
    assert all(c.divergence and "within 0.05 s" in c.divergence.reason for c in report.cells)


def test_a_time_zone_given_as_a_file_is_recorded_and_replayed(
    redis_url: str, tmp_path: Path
) -> None:
    zone = Path("/usr/share/zoneinfo/Asia/Kolkata")
    if not zone.exists():
        pytest.skip("no tz database here")
    script = tmp_path / "zone.js"
    script.write_text("text(new Date(0).toString())")
    ran = run_cellfleet(["run", str(script)], tmp_path, redis_url, env={"TZ": f":{zone}"})
    assert "GMT+0530" in ran.stdout, ran.stdout + ran.stderr
    listed = run_cellfleet(["sessions", "--limit", "1", "--json"], tmp_path, redis_url)
    session = orjson.loads(listed.stdout.splitlines()[0])["session"]
    replayed = run_cellfleet(["replay", session], tmp_path, redis_url, env={"TZ": "UTC"})
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr


def test_a_long_source_line_is_shown_around_the_column(recorded: Recorded) -> None:
    def change(event: ev.AnyEvent) -> ev.AnyEvent:
        if isinstance(event, ev.CellAdmitted) and event.cell == "1":
            return dataclasses.replace(event, source=" " * 5000 + "text('two')")
        return event

    (cell,) = replay(recorded.edited(change), cells={"1"}).cells
    shown = cell.render().splitlines()
    assert shown[4] == "    1 | …" + " " * 60 + "text('two')"
    assert shown[5] == "      | " + " " * 61 + "^"


def test_a_tool_set_is_recorded_once_per_session_and_named_by_each_admission(
    recorded: Recorded,
) -> None:
    (defined,) = [e for e in recorded.events if isinstance(e, ev.ToolSetDefined)]
    assert [tool["name"] for tool in defined.tools] == ["echo", "fail"]
    admitted = [e for e in recorded.events if isinstance(e, ev.CellAdmitted)]
    assert len(admitted) == 9
    assert all(e.tools == () and e.tools_digest == defined.digest for e in admitted)


def test_a_cell_recorded_under_another_runtime_says_so(recorded: Recorded) -> None:
    here = runtime_identity()
    assert {e.runtime for e in recorded.events if isinstance(e, ev.CellAdmitted)} == {here}

    def change(event: ev.AnyEvent) -> ev.AnyEvent:
        if isinstance(event, ev.CellAdmitted) and event.cell == "1":
            return dataclasses.replace(event, runtime="V8 0.0, prelude 000000000000")
        return event

    report = replay(recorded.edited(change), cells={"1", "2"})
    notes = {cell.cell: cell.notes for cell in report.cells}
    assert notes["1"] == (f"recorded under V8 0.0, prelude 000000000000, replayed under {here}",)
    assert notes["2"] == ()
    assert report.identical


@pytest.mark.parametrize("warmed", [False, True])
def test_a_cell_replays_from_a_context_warmed_as_its_own_was(redis_url: str, warmed: bool) -> None:
    """Warming a context (an idle pool does) changes how deep a recursion gets before it
    overflows: the record says whether the cell's context was, and replay does the same."""
    deep = INVISIBLE["the depth of a stack overflow"]
    host = Host(redis_url, pool_size=2 if warmed else 0)
    try:
        session = host.open_session()
        if warmed:
            assert host.pool.wait_idle()
        session.exec("c", deep)
        events = [event for _, event in host.journal.read(session.id)]
    finally:
        host.close()
    assert [e.warmed for e in events if isinstance(e, ev.CellStarted)] == [warmed]
    for stock in (0, 1):  # the replay's pool: empty (made cold), or stocked and idle
        pool = ContextPool(stock)
        try:
            if stock:
                assert pool.wait_idle()
            report = replay(events, pool=pool)
        finally:
            pool.close()
        assert report.identical, report.render()

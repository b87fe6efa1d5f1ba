"""Portable traces (`cellfleet export`, `cellfleet import`, the refusals of bad files) and
the list of sessions (`cellfleet sessions`)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import orjson
import pytest

from cellfleet.broker import trace_file
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.keys import Keys
from cellfleet.ops.host import Host
from tests.integration.cli_support import run_cellfleet


def _cellfleet(args: list[str], redis_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cellfleet(args, cwd, redis_url)


@pytest.fixture
def recorded(redis_url: str) -> str:
    """A session with output, a yield, a timer, a tool call, a stored value and a
    notification, shut down: its id."""
    host = Host(redis_url, handlers={"echo": lambda value: value})
    try:
        session = host.open_session()
        session.exec("a", "store('k', { n: 1 }); text('one'); notify('hi')")
        session.exec(
            "b",
            "yield_control(); await new Promise((r) => setTimeout(r, 5));"
            " text(JSON.stringify(await tools.echo({ x: load('k') })))",
        )
        session.wait('{"cell_id": "2", "yield_time_ms": 10000}')
        session.shutdown()
        return session.id
    finally:
        host.close()


def test_a_trace_exported_and_imported_holds_the_same_events(
    recorded: str, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "session.jsonl"
    exported = _cellfleet(["export", recorded, "-o", str(out)], redis_url, tmp_path)
    assert exported.returncode == 0, exported.stderr
    header = orjson.loads(out.read_text().splitlines()[0])
    assert header["format"] == "cellfleet-trace"
    assert header["version"] == trace_file.VERSION
    assert header["session"] == recorded
    assert header["v8"].count(".") == 3
    imported = _cellfleet(["import", str(out)], redis_url, tmp_path)
    assert imported.returncode == 0, imported.stderr
    new_id = imported.stdout.strip()
    journal = RedisJournal.from_url(redis_url)
    try:
        original = [event for _, event in journal.read(recorded)]
        copy = [event for _, event in journal.read(new_id)]
        assert new_id != recorded
        assert [e.__class__ for e in copy] == [e.__class__ for e in original]
        assert [(e.cell, e.seq, e.at_ms) for e in copy] == [
            (e.cell, e.seq, e.at_ms) for e in original
        ]
        assert {e.session for e in copy} == {new_id}
        assert journal.newest_sessions(1) == [new_id]  # listed as opened at its import
    finally:
        journal.close()
    # The export to standard output is the same trace.
    printed = _cellfleet(["export", recorded], redis_url, tmp_path)
    assert printed.stdout.splitlines()[1:] == out.read_text().splitlines()[1:]


def _refusal(tmp_path: Path, lines: list[str], redis_url: str, name: str = "t.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(lines))
    run = _cellfleet(["import", str(path)], redis_url, tmp_path)
    assert run.returncode == 2, run.stderr
    [line] = run.stderr.splitlines()
    return line


def test_bad_traces_are_refused_with_the_line_that_is_wrong(
    recorded: str, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "good.jsonl"
    assert _cellfleet(["export", recorded, "-o", str(out)], redis_url, tmp_path).returncode == 0
    good = out.read_text().splitlines(keepends=True)
    header = orjson.loads(good[0])
    events = len(good) - 1
    future = orjson.dumps({**header, "version": trace_file.VERSION + 1}).decode() + "\n"
    swapped = [*good[:2], good[3], good[2], *good[4:]]
    admitted = next(n for n, line in enumerate(good, 1) if '"t":"cell_admitted"' in line)
    one_less = orjson.dumps({**header, "events": events - 1}).decode() + "\n"
    corrupt = [*good[:3], '{"id": "1-0", "fields": {"t": 3}}\n', *good[4:]]
    cases = {
        "truncated": (good[:-1], f"line {events + 1}: the header announces {events} events"),
        "cut mid-line": (
            [*good[:-1], good[-1][:20]],
            f"line {events + 1}: cut off (the file ends in the middle of a line)",
        ),
        "reordered": (swapped, "line 4: event"),
        "a line twice": ([*good[:4], good[3], *good[4:]], "appears twice (a repeated line)"),
        "no opening": ([one_less, *good[2:]], "line 2: the first event is not the session's"),
        "corrupt": (corrupt, "line 4: not an event: its fields are not an object of strings"),
        "not JSON": ([*good[:2], "{oops\n", *good[3:]], "line 3: not JSON"),
        "future version": ([future, *good[1:]], "line 1: trace format version 2 is newer"),
        "not a trace": (['{"hello": 1}\n'], "line 1: not a cellfleet trace"),
        "a time that is no time": (_edit(good, 3, "at", "inf"), "line 3: not a time: 'inf'"),
        "a time that is NaN": (_edit(good, 3, "at", "nan"), "line 3: not a time: 'nan'"),
        "a cell id that is no number": (_edit(good, 3, "c", "²"), "line 3: not a cell id"),
        "a field of the wrong type": (
            _edit_data(good, admitted, "source", 12),
            f"line {admitted}: not a cell_admitted event: its source has the wrong type"
            " (expected str)",
        ),
        "no events": (
            [orjson.dumps({**header, "events": 0}).decode() + "\n"],
            "line 1: the trace has no events",
        ),
        "a version that is a boolean": (
            [orjson.dumps({**header, "version": True}).decode() + "\n", *good[1:]],
            "line 1: the header's version is not a version",
        ),
        "empty": ([], "line 1: not JSON"),
    }
    for name, (lines, expected) in cases.items():
        line = _refusal(tmp_path, lines, redis_url)
        assert line.startswith("cellfleet: "), (name, line)
        assert expected in line, (name, line)
        assert "t.jsonl" in line, (name, line)


def _edit(lines: list[str], number: int, field: str, value: str) -> list[str]:
    """`lines` with the event on line `number` given `field` = `value`."""
    entry = orjson.loads(lines[number - 1])
    entry["fields"][field] = value
    return [*lines[: number - 1], orjson.dumps(entry).decode() + "\n", *lines[number:]]


def _edit_data(lines: list[str], number: int, field: str, value: object) -> list[str]:
    """`lines` with the event on line `number` given data field `field` = `value`."""
    entry = orjson.loads(lines[number - 1])
    data = orjson.loads(entry["fields"]["d"])
    entry["fields"]["d"] = orjson.dumps({**data, field: value}).decode()
    return [*lines[: number - 1], orjson.dumps(entry).decode() + "\n", *lines[number:]]


def test_exporting_a_session_that_has_no_events(redis_url: str, tmp_path: Path) -> None:
    run = _cellfleet(["export", "no-such-session"], redis_url, tmp_path)
    assert (run.returncode, run.stderr.strip()) == (
        1,
        "cellfleet export: no events for session no-such-session",
    )


def test_sessions_are_listed_newest_first(redis_url: str, tmp_path: Path) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    host = Host(redis_url, keys=Keys(prefix))
    try:
        first = host.open_session()
        first.exec("a", "text(1)")
        first.shutdown()
        second = host.open_session()
        second.exec("b", '// @exec: {"yield_time_ms": 10}\nawait new Promise(() => {})')
        listed = run_cellfleet(["--key-prefix", prefix, "sessions", "--json"], tmp_path, redis_url)
        assert listed.returncode == 0, listed.stderr
        rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert [(r["session"], r["cells"], r["live_cells"], r["state"]) for r in rows] == [
            (second.id, 1, 1, "open"),
            (first.id, 1, 0, "shut down"),
        ]
        assert rows[0]["last_activity_ms"] >= rows[0]["opened_ms"] >= rows[1]["opened_ms"]
        limited = run_cellfleet(
            ["--key-prefix", prefix, "sessions", "--limit", "1"], tmp_path, redis_url
        )
        lines = limited.stdout.splitlines()
        assert lines[0].startswith("SESSION")
        assert lines[0].split()[1:] == [
            "OPENED",
            "CELLS",
            "LIVE",
            "STATE",
            "LAST",
            "ACTIVITY",
            "LABEL",
        ]
        assert len(lines) == 2
        assert lines[1].startswith(second.id)
        second.shutdown()
    finally:
        host.close()


def _check_trace_events(trace: dict[str, object]) -> list[dict[str, object]]:
    """The Chrome Trace Event format: each event's phase and fields, timestamps in
    microseconds, begins matched by ends."""
    events = trace["traceEvents"]
    assert isinstance(events, list)
    open_async: dict[tuple[object, object], float] = {}
    for event in events:
        assert event["ph"] in {"M", "X", "i", "b", "e"}, event
        assert isinstance(event["pid"], int), event
        assert isinstance(event["tid"], int), event
        if event["ph"] == "M":
            assert event["name"] in {"process_name", "thread_name"}
            continue
        assert isinstance(event["ts"], int | float), event
        assert event["ts"] >= 0, event
        if event["ph"] == "X":
            assert isinstance(event["dur"], int | float), event
            assert event["dur"] >= 0, event
        elif event["ph"] == "b":
            open_async[(event["cat"], event["id"])] = event["ts"]
        elif event["ph"] == "e":
            began = open_async.pop((event["cat"], event["id"]))
            assert event["ts"] >= began, event
    assert not open_async, f"async slices never ended: {open_async}"
    return events


def test_a_session_is_traced_as_text_and_for_perfetto(
    recorded: str, redis_url: str, tmp_path: Path
) -> None:
    text = run_cellfleet(["trace", recorded], tmp_path, redis_url)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].endswith("session#1 session_opened")
    assert any(" cell 2#" in line and "tool_requested" in line and "echo" in line for line in lines)
    assert lines[-1].endswith("shutdown_finished")
    out = tmp_path / "session.json"
    made = run_cellfleet(
        ["trace", recorded, "--format", "perfetto", "-o", str(out)], tmp_path, redis_url
    )
    assert made.returncode == 0, made.stderr
    events = _check_trace_events(orjson.loads(out.read_bytes()))
    names = {(event["ph"], event["name"]) for event in events}
    assert {("X", "cell 1"), ("X", "cell 2"), ("b", "echo"), ("e", "echo")} <= names
    assert ("X", "yielded") in names
    assert ("i", "notification") in names
    tool = next(e for e in events if e["ph"] == "b")
    assert tool["args"] == {"input": {"x": {"n": 1}}}
    # From an exported file, without Redis.
    exported = tmp_path / "session.jsonl"
    assert (
        run_cellfleet(["export", recorded, "-o", str(exported)], tmp_path, redis_url).returncode
        == 0
    )
    offline = run_cellfleet(
        ["trace", str(exported), "--format", "perfetto"], tmp_path, "redis://127.0.0.1:1/0"
    )
    assert offline.returncode == 0, offline.stderr
    assert orjson.loads(offline.stdout) == orjson.loads(out.read_bytes())
    missing = run_cellfleet(["trace", "./nope.jsonl"], tmp_path, redis_url)
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        "cellfleet: no such file: nope.jsonl",
    )

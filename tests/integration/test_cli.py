"""The command line: `play` transcripts, `run`, `events` (real Redis, real V8)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import orjson
import pytest
import redis

from cellfleet.broker.client import Session
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.tools.registry import ToolRegistry
from cellfleet.ops import cli
from cellfleet.ops.host import Host
from cellfleet.ops.play import PLAY_EXEC_YIELD_TIME_MS, Player, TranscriptError
from cellfleet.ops.redis_server import RedisProcess, free_port
from tests.integration.cli_support import run_cellfleet

REPO = Path(__file__).parents[2]


@pytest.fixture
def host(redis_url: str) -> Iterator[Host]:
    registry = ToolRegistry()

    @registry.function(description="Echo the arguments back.")
    def echo(args):  # type: ignore[no-untyped-def]
        return args

    host = Host(redis_url, handlers=registry.handlers)
    host.registry = registry  # type: ignore[attr-defined]
    yield host
    host.close()


def play(host: Host, *lines: dict[str, object] | str) -> list[dict[str, object]]:
    out = io.StringIO()

    def open_session(name: str, notify: Callable[[str, str, str], None]) -> Session:
        del name
        return host.open_session(
            host.registry.definitions,
            notify=notify,  # type: ignore[attr-defined]
            default_exec_yield_time_ms=PLAY_EXEC_YIELD_TIME_MS,
        )

    Player(open_session, out=out).play(
        line if isinstance(line, str) else orjson.dumps(line).decode() for line in lines
    )
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def exec_line(call_id: str, source: str, **extra: object) -> dict[str, object]:
    return {
        "type": "custom_tool_call",
        "call_id": call_id,
        "name": "exec",
        "input": source,
        **extra,
    }


def wait_line(call_id: str, arguments: dict[str, object], **extra: object) -> dict[str, object]:
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": "wait",
        "arguments": orjson.dumps(arguments).decode(),
        **extra,
    }


def texts(record: dict[str, object]) -> list[str]:
    output = record["output"]
    assert isinstance(output, list)
    return [item["text"] for item in output]


def test_exec_and_wait_outputs_in_order(host):
    records = play(
        host,
        exec_line(
            "c1",
            '// @exec: {"yield_time_ms": 50}\ntext("a"); yield_control();'
            ' await new Promise(r => setTimeout(r, 100)); text("b")',
        ),
        wait_line("w1", {"cell_id": "1", "yield_time_ms": 5000}),
        wait_line("w2", {"cell_id": "1"}),
    )
    assert [r["type"] for r in records] == [
        "custom_tool_call_output",
        "function_call_output",
        "function_call_output",
    ]
    assert records[0]["call_id"] == "c1"
    assert texts(records[0])[0].startswith("Script running with cell ID 1\nWall time ")
    assert texts(records[0])[1:] == ["a"]
    assert texts(records[1])[0].startswith("Script completed\n")
    assert texts(records[1])[1:] == ["b"]
    assert texts(records[2])[1:] == ["Script error:\nexec cell 1 not found"]


def test_notifications_are_written_when_they_happen(host):
    records = play(host, exec_line("c1", 'notify("hello"); text("done")'))
    assert records[0] == {
        "type": "custom_tool_call_output",
        "call_id": "c1",
        "name": "exec",
        "output": "hello",
    }
    assert texts(records[1])[1:] == ["done"]


def test_failures_without_header_are_plain_strings(host):
    records = play(
        host,
        exec_line("c1", '// @exec: {"nope": 1}\ntext(1)'),
        {"type": "function_call", "call_id": "w", "name": "wait", "arguments": "{"},
        {"type": "function_call", "call_id": "x", "name": "exec", "arguments": "{}"},
    )
    assert records[0]["output"] == (
        "exec pragma only supports `yield_time_ms` and `max_output_tokens`; got `nope`"
    )
    assert records[1]["output"].startswith("failed to parse function arguments: ")
    assert records[2]["output"] == "exec expects raw JavaScript source text"


def test_background_calls_meet_one_cell(host):
    records = play(
        host,
        exec_line("c1", '// @exec: {"yield_time_ms": 0}\nawait new Promise(() => {})'),
        wait_line("w1", {"cell_id": "1", "yield_time_ms": 60000}, background=True),
        wait_line("w2", {"cell_id": "1", "yield_time_ms": 60000}),
        wait_line("t", {"cell_id": "1", "terminate": True}),
    )
    by_call = {r["call_id"]: r for r in records}
    assert by_call["w2"]["output"] == "exec cell 1 already has an active observer"
    assert texts(by_call["t"])[0].startswith("Script terminated\n")
    assert texts(by_call["w1"])[0].startswith("Script terminated\n")


def test_sessions_are_separate_and_fresh(host):
    records = play(
        host,
        exec_line("a", 'store("k", 1); text("one")'),
        {"type": "session", "id": "other"},
        exec_line("b", 'text(String(load("k")))'),
    )
    assert texts(records[0])[0].startswith("Script completed\n")
    assert texts(records[1])[1:] == ["undefined"]  # other session, its own cell ids
    assert texts(records[1])[0].startswith("Script completed\n")


def test_malformed_line_names_its_number(host):
    with pytest.raises(TranscriptError, match=r"^line 2: not JSON"):
        play(host, exec_line("a", "text(1)"), "{not json")


def test_run_prints_outputs_and_session_id(redis_url, tmp_path):
    script = tmp_path / "cell.js"
    script.write_text(
        'text("hi"); yield_control(); await new Promise(r => setTimeout(r, 50)); text("bye")'
    )
    env = {**os.environ, "REDIS_URL": redis_url}
    run = subprocess.run(
        [sys.executable, "-m", "cellfleet.ops.cli", "run", str(script), "--yield-time-ms", "10"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    session = lines[0].removeprefix("session ")
    assert "Script running with cell ID 1" in run.stdout
    assert "Script completed" in run.stdout
    assert "hi" in lines
    assert "bye" in lines
    events = subprocess.run(
        [sys.executable, "-m", "cellfleet.ops.cli", "events", session],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    types = [orjson.loads(line)["type"] for line in events.stdout.splitlines()]
    assert types[0] == "session_opened"
    assert types.count("cell_completed") == 1
    assert types[-1] == "shutdown_finished"


def test_a_harness_that_exits_without_shutting_down_ends(redis_url):
    """A harness that crashes with a live session (a cell still waiting) must exit, not
    hang on the session's threads; the log keeps what happened until then."""
    harness = (
        "import sys\n"
        "from cellfleet.ops.host import Host\n"
        f"host = Host({redis_url!r}, pool_size=1)\n"
        "session = host.open_session([])\n"
        "output = session.exec('a', 'text(1); yield_control(); await new Promise(() => {})')\n"
        "print(session.id, output.success, flush=True)\n"
        "raise SystemExit('harness crashed')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", harness],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails the test here
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().endswith("harness crashed")
    session, success = run.stdout.split()
    assert success == "True"
    journal = RedisJournal.from_url(redis_url)
    try:
        types = [event.TYPE for _, event in journal.read(session)]
    finally:
        journal.close()
    assert types[:3] == ["session_opened", "cell_admitted", "cell_started"]
    assert "observation_delivered" in types


def _tools_file(body: str, name: str = "tools.py") -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / name).write_text(body)
        (tmp / "ok.js").write_text("text(1)")
        return ["run", "ok.js", "--tools", name]

    return make


def _file(name: str, content: bytes | None) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        if content is None:
            (tmp / name).mkdir()
        else:
            (tmp / name).write_bytes(content)
        return ["run", name]

    return make


BAD_INPUTS = {
    "missing file": (lambda tmp: ["run", "missing.js"], "cellfleet: no such file: missing.js"),
    "directory": (_file("cells", None), "cellfleet: cannot read cells: Is a directory"),
    "not UTF-8": (
        _file("bad.js", b'text("\xff")'),
        "cellfleet: cannot read bad.js: not UTF-8 text (invalid byte at offset 6)",
    ),
    "tools syntax error": (
        _tools_file("x = 1\nreturn x\n"),
        "cellfleet: bad tools file tools.py: line 2: 'return' outside function",
    ),
    "tools without registry": (
        _tools_file("x = 1\n"),
        "cellfleet: bad tools file tools.py: it defines no ToolRegistry",
    ),
    "tools that raise": (
        _tools_file("def f():\n    return 1 / 0\n\n\nf()\n"),
        "cellfleet: bad tools file tools.py: line 2: ZeroDivisionError: division by zero",
    ),
    "tools not Python": (
        _tools_file("const x = 1;\n", name="tools.js"),
        "cellfleet: bad tools file tools.js: line 1: invalid syntax",
    ),
    "missing tools file": (
        lambda tmp: ["tools", "--tools", "nope.py"],
        "cellfleet: no such file: nope.py",
    ),
    "missing transcript": (
        lambda tmp: ["play", "calls.jsonl"],
        "cellfleet: no such file: calls.jsonl",
    ),
}


_cellfleet = run_cellfleet


@pytest.fixture
def empty_db_url(redis_server: RedisProcess) -> Iterator[str]:
    """A database of the suite's Redis that nothing else uses: it must stay empty."""
    url = f"redis://127.0.0.1:{redis_server.port}/9"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.close()


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2_before_anything_starts(
    case: str, tmp_path: Path, empty_db_url: str
) -> None:
    make_args, line = BAD_INPUTS[case]
    run = _cellfleet(make_args(tmp_path), tmp_path, empty_db_url)
    assert (run.returncode, run.stderr, run.stdout) == (2, line + "\n", "")
    assert redis.Redis.from_url(empty_db_url).dbsize() == 0  # no session was opened


@pytest.mark.parametrize("command", [["run", "ok.js"], ["events", "some-session"]])
def test_unreachable_redis_is_named_in_one_line(command: list[str], tmp_path: Path) -> None:
    (tmp_path / "ok.js").write_text("text(1)")
    port = free_port()  # nothing listens there
    run = _cellfleet(command, tmp_path, f"redis://:secret@127.0.0.1:{port}/0")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (
        f"cellfleet: cannot reach Redis at redis://:***@127.0.0.1:{port}/0: "
        f"Error 111 connecting to 127.0.0.1:{port}. Connection refused.\n"
    )


def test_a_thread_a_tools_file_started_does_not_hold_the_exit(tmp_path: Path) -> None:
    """`cellfleet tools` failing before it serves (Redis unreachable) still ends, though
    its tools file started a thread that never ends (the exit would wait for it)."""
    (tmp_path / "tools.py").write_text(
        "import threading\n"
        "from cellfleet.broker.tools.registry import ToolRegistry\n"
        "tools = ToolRegistry()\n"
        "threading.Thread(target=threading.Event().wait, name='forever').start()\n"
    )
    port = free_port()  # nothing listens there
    run = _cellfleet(["tools", "--tools", "tools.py"], tmp_path, f"redis://127.0.0.1:{port}/0")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.splitlines() == [
        f"cellfleet: cannot reach Redis at redis://127.0.0.1:{port}/0: "
        f"Error 111 connecting to 127.0.0.1:{port}. Connection refused.",
        f"cellfleet: exiting without 1 thread(s) still running after"
        f" {cli.EXIT_SLACK_S:.0f} s: forever",
    ]


def test_a_password_in_the_query_is_not_shown_either(tmp_path: Path) -> None:
    socket = tmp_path / "no.sock"
    run = _cellfleet(["events", "s"], tmp_path, f"unix://{socket}?password=hunter2&db=0")
    assert (run.returncode, run.stdout) == (2, "")
    assert "hunter2" not in run.stderr
    assert run.stderr.startswith(
        f"cellfleet: cannot reach Redis at unix://{socket}?password=***&db=0: "
    )


def test_a_transcript_and_tools_from_pipes_are_read_once(redis_url: str, tmp_path: Path) -> None:
    """`play <(...) --tools <(...)`: files that can be read only once (FIFOs here)."""
    transcript, tools = tmp_path / "calls.jsonl", tmp_path / "tools.py"
    line = orjson.dumps(exec_line("c1", "text(String(await tools.add({a: 2, b: 3})))"))
    contents = {
        transcript: line + b"\n",
        tools: (REPO / "ops" / "examples" / "echo_tools.py").read_bytes(),
    }
    writers = []
    for fifo, content in contents.items():
        os.mkfifo(fifo)
        writer = threading.Thread(target=fifo.write_bytes, args=(content,))  # blocks until read
        writer.start()
        writers.append(writer)
    play = subprocess.run(
        [sys.executable, "-m", "cellfleet.ops.cli", "play", str(transcript), "--tools", str(tools)],
        cwd=tmp_path,
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for fifo in contents:  # a writer nobody read from would block for ever
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    for writer in writers:
        writer.join(10)
    assert play.returncode == 0, play.stderr
    assert texts(orjson.loads(play.stdout))[1:] == ["5"]


def test_a_url_that_is_not_redis_is_refused(tmp_path: Path) -> None:
    run = _cellfleet(["events", "s"], tmp_path, "http://127.0.0.1/0")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (
        "cellfleet: bad Redis URL http://127.0.0.1/0: Redis URL must specify one of the "
        "following schemes (redis://, rediss://, unix://)\n"
    )


def test_version(tmp_path: Path, empty_db_url: str) -> None:
    run = _cellfleet(["--version"], tmp_path, empty_db_url)
    assert (run.returncode, run.stdout, run.stderr) == (
        0,
        f"cellfleet {version('cellfleet')}\n",
        "",
    )


def test_a_lone_surrogate_in_a_transcript_line_is_that_lines_error(host):
    """`\\ud800` in a line's JSON is reported for that line, like any malformed line."""
    bad = '{"type": "custom_tool_call", "call_id": "b", "name": "exec", "input": "\\ud800"}'
    with pytest.raises(TranscriptError, match=r"^line 2: not JSON: "):
        play(host, exec_line("a", "text(1)"), bad)


def test_events_into_a_reader_that_leaves_early_end_quietly(redis_url: str, tmp_path: Path):
    """`cellfleet events S | head -1`: no traceback, no complaint, status 141."""
    script = tmp_path / "cell.js"
    script.write_text("for (let i = 0; i < 3000; i++) text('x'.repeat(100))")  # > a pipe
    run = _cellfleet(["run", str(script)], tmp_path, redis_url)
    assert run.returncode == 0, run.stderr
    session = run.stdout.splitlines()[0].removeprefix("session ")
    returncode, first, stderr = _read_one_line_and_leave(["events", session], redis_url)
    assert orjson.loads(first)["type"] == "session_opened"
    assert (returncode, stderr) == (141, b"")


def test_run_into_a_reader_that_leaves_ends_quietly(redis_url: str, tmp_path: Path):
    """`cellfleet run F | head -1` of a cell that notifies for ever: it printed a
    traceback per notification and never ended."""
    script = tmp_path / "cell.js"
    script.write_text(
        "for (let i = 0; ; i++) {"
        " notify('tick ' + i); await new Promise((r) => setTimeout(r, 5)); }"
    )
    args = ["run", str(script), "--yield-time-ms", "100"]
    returncode, first, stderr = _read_one_line_and_leave(args, redis_url)
    assert first.startswith(b"session ")
    assert (returncode, b"Traceback" in stderr) == (141, False), stderr[-2000:]


def _read_one_line_and_leave(args: list[str], redis_url: str) -> tuple[int, bytes, bytes]:
    """`cellfleet ARGS | head -1`: its status, the line read, and its standard error."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cellfleet.ops.cli", *args],
        env={**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    process.stdout.close()  # as `head -1` does after its line
    _, stderr = process.communicate(timeout=60)
    return process.returncode, first, stderr

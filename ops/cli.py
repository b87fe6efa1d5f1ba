"""The `cellfleet` command line: run, play, events, sessions, trace, replay, export, import,
host, tools, worker, fleet, bench.

Without REDIS_URL every command uses the embedded redis-server (see ops/embedded.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import importlib
import math
import os
import shlex
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import orjson

from cellfleet.actors.replay import replay, use_environment_of
from cellfleet.actors.runtime import allocator
from cellfleet.actors.runtime.pool import DEFAULT_MEMORY_LIMIT_BYTES
from cellfleet.actors.runtime.v8 import v8_version
from cellfleet.broker import trace_file
from cellfleet.broker.client import Session
from cellfleet.broker.contract.render import ToolOutput
from cellfleet.broker.errors import BrokerError, SessionOwnedElsewhereError
from cellfleet.broker.events import AnyEvent
from cellfleet.broker.fleet import FleetClient, NoWorkerError
from cellfleet.broker.fleet.client import DEFAULT_PLACEMENT_TIMEOUT_S
from cellfleet.broker.fleet.registry import WorkerRegistry
from cellfleet.broker.journal import DEFAULT_RETENTION_S, RedisJournal
from cellfleet.broker.keys import DEFAULT_PREFIX, Keys
from cellfleet.broker.leases import DEFAULT_LEASE_MS
from cellfleet.broker.tools.registry import ToolRegistry
from cellfleet.ops.host import Host
from cellfleet.ops.host_server import serve_stdio
from cellfleet.ops.inputs import InputError, load_tools, open_text, reachable_redis, read_text
from cellfleet.ops.play import PLAY_EXEC_YIELD_TIME_MS, Player, TranscriptError
from cellfleet.ops.tools_worker import run_worker
from cellfleet.ops.worker import DEFAULT_CAPACITY, DEFAULT_DRAIN_TIMEOUT_S, run_worker_process
from cellfleet.projections import html, perfetto, timeline
from cellfleet.projections.summary import summarize

Sessions = Host | FleetClient  # what opens the sessions of `run` and `play`
USAGE_ERROR = 2  # the exit status of a bad command line or input, as argparse's
_OUTPUT_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})
READER_GONE = threading.Event()  # standard output's reader left


EXIT_SLACK_S = 5.0  # how long the program's exit waits for threads it did not end itself


def entry() -> None:
    """The `cellfleet` program: `main`, then an exit no thread holds for good (one that
    a tools file started, say, when the command failed before it could serve)."""
    allocator.limit_arenas()  # (before any thread of ours: a long-running process)
    status = 1  # (an exception's, as Python's own exit says)
    try:
        status = main()
    except KeyboardInterrupt:
        status = 130
        raise
    finally:
        _exit_within(EXIT_SLACK_S, status)
    sys.exit(status)


def _exit_within(seconds: float, status: int) -> None:
    """End the process `seconds` from now with `status` if its exit has not ended it by
    then (threads it waits for, its atexit handlers), saying which threads held it."""

    def watch() -> None:
        time.sleep(seconds)  # (a deadline: the process is normally gone before it)
        main = threading.main_thread()  # (in the exit, waiting for the others)
        left = [t.name for t in threading.enumerate() if t is not main and not t.daemon]
        print(
            f"cellfleet: exiting without {len(left)} thread(s) still running after"
            f" {seconds:.0f} s: {', '.join(left) or '(none: its exit handlers)'}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(status)

    threading.Thread(target=watch, name="exit-deadline", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if sys.stdout is None:  # started with standard output closed (`cellfleet ... >&-`)
        print("cellfleet: standard output is closed", file=sys.stderr)
        return USAGE_ERROR
    try:
        status = run_command(args)
        sys.stdout.flush()  # a reader that left is noticed here, not at the exit
        return status
    except InputError as error:
        print(f"cellfleet: {error}", file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:
        # The reader of our output left (`cellfleet events S | head`): end quietly. Not by
        # SIGPIPE's default action, which also killed the process when a Redis
        # connection broke under a write (a restart, a CLIENT KILL).
        _reader_left()
        return 141
    except OSError as error:
        if error.errno not in _OUTPUT_ERRORS:
            raise
        # Standard output cannot take more (`> /dev/full`, a full disk): say so, once.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"cellfleet: cannot write the output: {error.strerror}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cellfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cellfleet {version('cellfleet')}")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="embedded Redis data directory (default: per-user)",
    )
    parser.add_argument(
        "--key-prefix",
        default=os.environ.get("CELLFLEET_KEY_PREFIX", DEFAULT_PREFIX),
        help="prefix of every Redis key (default: $CELLFLEET_KEY_PREFIX or cf); processes "
        "with different prefixes share a Redis without seeing each other",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a JavaScript file as one exec, then wait")
    run.add_argument("file", type=Path)
    run.add_argument(
        "--yield-time-ms",
        type=_positive(int),
        default=PLAY_EXEC_YIELD_TIME_MS,
        help="how long the exec, then each wait, waits before it answers",
    )
    run.add_argument("--tools", type=Path, help="a Python file defining a ToolRegistry")
    _fleet_switch(run)

    play = commands.add_parser("play", help="play a JSON Lines transcript of exec/wait calls")
    play.add_argument("transcript", type=Path)
    play.add_argument("--tools", type=Path, help="a Python file defining a ToolRegistry")
    _fleet_switch(play)

    events = commands.add_parser("events", help="print a session's events as JSON Lines")
    events.add_argument("session")

    sessions = commands.add_parser("sessions", help="list sessions, newest first")
    sessions.add_argument("--limit", type=_positive(int), default=20, help="(at most 10000)")
    sessions.add_argument("--json", action="store_true", help="one JSON object per session")

    trace = commands.add_parser("trace", help="a session's timeline, to read or for Perfetto")
    trace.add_argument("source", help="a session id, or a trace file (read without Redis)")
    trace.add_argument("--format", choices=["text", "perfetto", "html"], default="text")
    trace.add_argument("-o", "--output", type=Path, help="the file to write (default: stdout)")

    replay = commands.add_parser(
        "replay", help="re-execute a session's cells from their recorded inputs and compare"
    )
    replay.add_argument("source", help="a session id, or a trace file (read without Redis)")
    replay.add_argument("--cell", help="replay only this cell (by id)")
    replay.add_argument("--json", action="store_true", help="the report as one JSON object")
    replay.add_argument(
        "--time-limit-s",
        type=_positive(float),
        default=None,
        help="per cell (default: 10 s plus twice its recorded duration)",
    )

    export = commands.add_parser("export", help="write a session's trace (JSON Lines)")
    export.add_argument("session")
    export.add_argument("-o", "--output", type=Path, help="the trace file (default: stdout)")

    import_ = commands.add_parser("import", help="load a trace as a new session")
    import_.add_argument("trace", type=Path)

    host = commands.add_parser(
        "host", help="Codex's code-mode host protocol over stdio (how Codex starts its host)"
    )
    host.add_argument("--listen", default="stdio", help="only stdio (the default) for now")
    host.add_argument(
        "--memory-limit-mib",
        type=_positive(int),
        default=DEFAULT_MEMORY_LIMIT_BYTES >> 20,
        help="each cell's heap (Codex's own host sets none; default %(default)s)",
    )
    host.add_argument(
        "--install-next-to",
        type=Path,
        metavar="CODEX",
        help="make a folder where this `codex` binary runs its code mode on cellfleet",
    )
    host.add_argument(
        "--into", type=Path, default=None, help="that folder (default: ./codex-on-cellfleet)"
    )
    _fleet_switch(host)

    tools = commands.add_parser("tools", help="run a tool-dispatch worker process")
    tools.add_argument(
        "--tools", type=Path, required=True, help="a Python file defining a ToolRegistry"
    )
    tools.add_argument("--concurrency", type=_positive(int), default=8, help="calls run at once")
    tools.add_argument(
        "--lease-s",
        type=_positive(float),
        default=5.0,
        help="a call idle this long in a dead worker is taken over",
    )
    tools.add_argument("--max-deliveries", type=_positive(int), default=3)
    tools.add_argument(
        "--stop-grace-s",
        type=_positive(float),
        default=30.0,
        help="on SIGTERM, running calls get this long to finish before the worker exits",
    )

    _fleet_commands(commands)

    _bench_commands(commands)

    return parser


def _bench_commands(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmarks (ops/bench/)")
    bench.add_argument(
        "suite",
        choices=[
            "runtime",
            "exec",
            "tools",
            "hostile",
            "replay",
            "host",
            "fleet",
            "durability",
            "chaos",
            "throughput",
        ],
    )
    bench.add_argument(
        "--soak", type=_positive(int), default=None, help="(fleet) N short sessions, then memory"
    )
    bench.add_argument(
        "--kills", type=_positive(int), default=None, help="(chaos) workers to SIGKILL (100)"
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--samples", type=_positive(int), default=None)


def _fleet_commands(commands: Any) -> None:
    worker = commands.add_parser("worker", help="run a cell worker of the fleet")
    worker.add_argument("--tools", type=Path, help="a Python file defining a ToolRegistry")
    worker.add_argument(
        "--capacity", type=_positive(int), default=DEFAULT_CAPACITY, help="sessions at most"
    )
    worker.add_argument(
        "--drain-timeout-s",
        type=_positive(float),
        default=DEFAULT_DRAIN_TIMEOUT_S,
        help="on SIGTERM, how long busy sessions get to finish their cells",
    )
    worker.add_argument(
        "--lease-ms",
        type=_positive(int),
        default=DEFAULT_LEASE_MS,
        help="a session of a worker that stopped renewing waits this long for another",
    )

    worker.add_argument(
        "--retention-s",
        type=_positive(int),
        default=DEFAULT_RETENTION_S,
        help="a finished session's keys expire this much later (default: 7 days)",
    )

    fleet = commands.add_parser("fleet", help="the live cell workers, their load and leases")
    fleet.add_argument("--json", action="store_true", help="one JSON object per worker")


def _without_tools() -> dict[str, Callable[[argparse.Namespace, Keys], int]]:
    """The commands that take no tools file."""
    logs = dict.fromkeys(("events", "export", "import", "sessions"), run_log_command)
    return {
        "trace": show_trace,
        "replay": replay_session,
        "host": run_host,
        "fleet": show_fleet,
        **logs,
    }


def _fleet_switch(command: argparse.ArgumentParser) -> None:
    setting = os.environ.get("CELLFLEET_FLEET", "").strip().lower()
    command.add_argument(
        "--fleet",
        action=argparse.BooleanOptionalAction,
        default=setting not in ("", "0", "false", "no", "off"),
        help="run the cells on the fleet's `cellfleet worker`s (default: in this process; "
        "$CELLFLEET_FLEET=1 sets it)",
    )


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` above 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
        return value

    return parse


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command; every input is checked before anything starts."""
    if args.command == "bench":
        return run_bench(
            args.suite, as_json=args.json, samples=args.samples, soak=args.soak, kills=args.kills
        )
    keys = Keys(args.key_prefix)
    command = _without_tools().get(args.command)
    if command is not None:
        return command(args, keys)
    registry = load_tools(args.tools)
    if args.command == "tools":
        url = reachable_redis(args.data_dir)
        run_worker(
            url,
            registry,
            concurrency=args.concurrency,
            lease_s=args.lease_s,
            max_deliveries=args.max_deliveries,
            stop_grace_s=args.stop_grace_s,
            keys=keys,
        )
        return 0
    if args.command == "worker":
        run_worker_process(
            reachable_redis(args.data_dir),
            registry,
            capacity=args.capacity,
            drain_timeout_s=args.drain_timeout_s,
            lease_ms=args.lease_ms,
            retention_s=args.retention_s,
            keys=keys,
        )
        return 0
    return run_or_play(args, registry, keys)


def run_or_play(args: argparse.Namespace, registry: ToolRegistry, keys: Keys) -> int:
    with contextlib.ExitStack() as stack:
        if args.command == "run":
            source = read_text(args.file)
        else:
            transcript = stack.enter_context(open_text(args.transcript))
        host = _sessions(args, registry, keys)
        stack.callback(host.close)
        try:
            if args.command == "run":
                return run_file(host, registry, source, args.yield_time_ms)
            return play_transcript(host, registry, transcript, args.transcript)
        except (NoWorkerError, SessionOwnedElsewhereError) as error:
            print(f"cellfleet {args.command}: {error}", file=sys.stderr)
            return 1


def _sessions(args: argparse.Namespace, registry: ToolRegistry, keys: Keys) -> Sessions:
    """Where `run` and `play` open their sessions: in this process, or on the fleet."""
    url = reachable_redis(args.data_dir)
    if args.fleet:
        placement_timeout_s = _placement_timeout_s()
        return FleetClient(url, tools=registry, keys=keys, placement_timeout_s=placement_timeout_s)
    return Host(url, tools=registry, keys=keys)


def _placement_timeout_s() -> float:
    """How long a fleet client waits for a worker with room ($CELLFLEET_PLACEMENT_TIMEOUT_S)."""
    timeout = os.environ.get("CELLFLEET_PLACEMENT_TIMEOUT_S", "")
    try:
        placement_timeout_s = float(timeout) if timeout else DEFAULT_PLACEMENT_TIMEOUT_S
    except ValueError:
        placement_timeout_s = -1.0
    if not 0 < placement_timeout_s < math.inf:
        raise InputError(f"CELLFLEET_PLACEMENT_TIMEOUT_S must be seconds above 0, not {timeout!r}")
    return placement_timeout_s


def run_file(host: Sessions, registry: ToolRegistry, source: str, yield_time_ms: int) -> int:
    """Run `source` as one `exec`, `wait` until the cell ends, print what the model sees."""
    session = host.open_session(
        registry.definitions,
        default_exec_yield_time_ms=yield_time_ms,
        notify=_print_notification,
    )
    print(f"session {session.id}")
    output = session.exec("call-1", source)
    _print_output(output)
    while output.running_cell_id is not None:
        if READER_GONE.is_set():
            raise BrokenPipeError
        arguments = {"cell_id": output.running_cell_id, "yield_time_ms": yield_time_ms}
        output = session.wait(orjson.dumps(arguments).decode())
        _print_output(output)
    return 0 if output.success else 1


def _print_notification(call_id: str, cell_id: str, text: str) -> None:
    try:
        print(f"[notify {call_id} cell {cell_id}] {text}", flush=True)
    except BrokenPipeError:  # (on a delivery thread: the main thread ends the run)
        _reader_left()


def _reader_left() -> None:
    """Standard output's reader left (`cellfleet run F | head`): what is still written
    goes nowhere, quietly, and the command ends with status 141."""
    if not READER_GONE.is_set():
        READER_GONE.set()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _print_output(output: ToolOutput) -> None:
    for item in output.items:
        print(item["text"] if item["type"] == "input_text" else orjson.dumps(item).decode())
    print()


def play_transcript(host: Sessions, registry: ToolRegistry, transcript: IO[str], path: Path) -> int:
    def open_session(name: str, notify: Callable[[str, str, str], None]) -> Session:
        del name  # every run uses fresh sessions
        return host.open_session(
            registry.definitions, notify=notify, default_exec_yield_time_ms=PLAY_EXEC_YIELD_TIME_MS
        )

    player = Player(open_session)
    try:
        player.play(transcript)
    except UnicodeDecodeError as error:  # a pipe, checked as it is read
        print(f"cellfleet play: {path}: not UTF-8 text ({error.reason})", file=sys.stderr)
        return 2
    except TranscriptError as error:
        print(f"cellfleet play: {path}: {error}", file=sys.stderr)
        return 2
    return 0


def print_events(journal: RedisJournal, session: str) -> int:
    found = False
    for entry_id, event in journal.read(session):
        found = True
        record: dict[str, Any] = {"id": entry_id, "type": event.TYPE}
        record.update(dataclasses.asdict(event))
        print(orjson.dumps(record).decode())
    if not found:
        print(f"cellfleet events: no events for session {session}", file=sys.stderr)
        return 1
    return 0


def run_log_command(args: argparse.Namespace, keys: Keys) -> int:
    """The commands that read or write sessions' logs, and nothing else."""
    trace = read_trace_file(args.trace) if args.command == "import" else None  # checked first
    journal = RedisJournal.from_url(reachable_redis(args.data_dir), keys)
    if trace is not None:
        return import_trace(journal, trace)
    if args.command == "export":
        return export_trace(journal, args.session, args.output)
    if args.command == "sessions":
        return list_sessions(journal, args.limit, as_json=args.json)
    return print_events(journal, args.session)


def list_sessions(journal: RedisJournal, limit: int, *, as_json: bool) -> int:
    """The sessions opened last, newest first (each one's log is read)."""
    summaries = [
        summarize(session, (event for _, event in journal.read(session)))
        for session in journal.newest_sessions(min(limit, 10_000))
    ]
    if as_json:
        for summary in summaries:
            print(orjson.dumps(dataclasses.asdict(summary)).decode())
        return 0
    print(
        f"{'SESSION':32}  {'OPENED':20}  {'CELLS':>5}  {'LIVE':>4}  {'STATE':13}"
        f"  {'LAST ACTIVITY':20}  LABEL"
    )
    for s in summaries:
        print(
            f"{s.session:32}  {_when(s.opened_ms):20}  {s.cells:>5}  {s.live_cells:>4}"
            f"  {s.state:13}  {_when(s.last_activity_ms):20}  {s.label}".rstrip()
        )
    return 0


def _when(at_ms: float | None) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((at_ms or math.nan) / 1000))
    except (OverflowError, ValueError, OSError):  # none, or not a time a calendar has
        return "-"


def show_trace(args: argparse.Namespace, keys: Keys) -> int:
    """`cellfleet trace`: a session's events (from Redis, or a trace file) as a timeline."""
    loaded = read_session(args.source, args, keys)
    if loaded is None:
        return 1
    session, events = loaded
    if args.format == "perfetto":
        text = orjson.dumps(perfetto.render(session, events)).decode() + "\n"
    elif args.format == "html":
        text = html.render(session, events)
    else:
        text = timeline.render(timeline.fold(events))
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot write {args.output}: {error.strerror}") from None
    return 0


def read_session(
    source: str, args: argparse.Namespace, keys: Keys
) -> tuple[str, list[AnyEvent]] | None:
    """A session's id and events: from a trace file (a path, or "-"), else from Redis
    (None, said on stderr, when it has no events)."""
    path = Path("/dev/stdin" if source == "-" else source)
    if path.exists() or "/" in source or source.endswith(".jsonl"):
        recorded = read_trace_file(path)  # (a missing file is said so, as for import)
        return recorded.header.session, [event for _, event in recorded.entries]
    journal = RedisJournal.from_url(reachable_redis(args.data_dir), keys)
    try:
        events = [event for _, event in journal.read(source)]
    finally:
        journal.close()
    if not events:
        print(f"cellfleet {args.command}: no events for session {source}", file=sys.stderr)
        return None
    return source, events


def replay_session(args: argparse.Namespace, keys: Keys) -> int:
    """`cellfleet replay`: 0 when every cell replays identically, 1 otherwise."""
    loaded = read_session(args.source, args, keys)
    if loaded is None:
        return 1
    _, events = loaded
    if args.cell is not None and not (args.cell and any(e.cell == args.cell for e in events)):
        raise InputError(f"{args.source}: no cell {args.cell}")
    use_environment_of(events)  # (V8 has not started yet: it reads them at its start)
    cells = None if args.cell is None else {args.cell}
    report = replay(events, cells=cells, time_limit_s=args.time_limit_s)
    print(report.to_json() if args.json else report.render())
    return 0 if report.identical else 1


def run_host(args: argparse.Namespace, keys: Keys) -> int:
    """`cellfleet host`: serve Codex's host protocol on stdin/stdout, or install it."""
    if args.install_next_to is not None:
        folder = args.into or Path("codex-on-cellfleet")
        return install_next_to(args.install_next_to, folder, fleet=args.fleet)
    if args.listen != "stdio":
        raise InputError(
            f"--listen {args.listen}: only stdio is served (JSON frames; start Codex with"
            " --disable code_mode_host_grpc, which makes it start its host with no arguments)"
        )
    url = reachable_redis(args.data_dir)  # (checked before the first frame is read)
    limit = args.memory_limit_mib << 20
    if args.fleet:
        placement_timeout_s = _placement_timeout_s()
        return serve_stdio(
            lambda: FleetClient(url, keys=keys, placement_timeout_s=placement_timeout_s), limit
        )
    return serve_stdio(lambda: Host(url, workers=0, keys=keys, memory_limit_bytes=limit))


def install_next_to(codex: Path, folder: Path, *, fleet: bool = False) -> int:
    """A folder holding a hard link of `codex` and, beside it, the `codex-code-mode-host`
    it starts (Codex looks next to its own executable, symlinks resolved); `fleet`: that
    host runs the cells on the fleet's workers."""
    if not codex.is_file():
        raise InputError(f"{codex}: no such file (the path of the codex binary)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        linked = folder / "codex"
        if linked.exists():
            linked.unlink()
        try:
            os.link(codex.resolve(), linked)
        except OSError:  # another file system: a copy works as well
            shutil.copy2(codex.resolve(), linked)
        launcher = folder / "codex-code-mode-host"
        launcher.write_text(
            "#!/bin/sh\n# Codex's code-mode host, served by cellfleet (REDIS_URL, else the"
            " embedded Redis).\n"
            f"exec {shlex.quote(sys.executable)} -m cellfleet.ops.cli host"
            f'{" --fleet" if fleet else ""} "$@"\n'
        )
        launcher.chmod(0o755)
    except OSError as error:
        raise InputError(f"cannot install into {folder}: {error.strerror}") from None
    where = shlex.quote(str(folder.resolve()))
    print(f"Codex in {where} now runs its code mode on cellfleet:")
    print(f"  {where}/codex --enable code_mode --disable code_mode_host_grpc")
    return 0


def export_trace(journal: RedisJournal, session: str, output: Path | None) -> int:
    entries = list(journal.read(session))
    if not entries:
        print(f"cellfleet export: no events for session {session}", file=sys.stderr)
        return 1
    header = trace_file.export_header(session, version("cellfleet"), v8_version())
    if output is None:
        trace_file.write_trace(sys.stdout, header, entries)
        return 0
    try:
        with output.open("w", encoding="utf-8") as out:
            trace_file.write_trace(out, header, entries)
    except OSError as error:
        raise InputError(f"cannot write {output}: {error.strerror}") from None
    print(f"{len(entries)} events of session {session} written to {output}", file=sys.stderr)
    return 0


def read_trace_file(path: Path) -> trace_file.Trace:
    """A trace file, checked whole; a bad one is an input error naming its line."""
    with open_text(path) as lines:
        try:
            return trace_file.read_trace(lines)
        except UnicodeDecodeError as error:
            raise InputError(f"{path}: not UTF-8 text ({error.reason})") from None
        except trace_file.TraceError as error:
            raise InputError(f"{path}: {error}") from None


def import_trace(journal: RedisJournal, trace: trace_file.Trace) -> int:
    session = uuid.uuid4().hex
    events = list(trace_file.renamed(trace.entries, session))
    try:
        journal.import_events(events, time.time() * 1000)  # listed as opened now
    except BrokerError as error:  # nothing of it is kept
        print(f"cellfleet import: {error}", file=sys.stderr)
        return 1
    print(session)
    print(
        f"{len(trace.entries)} events of session {trace.header.session} imported as {session}",
        file=sys.stderr,
    )
    return 0


def run_bench(
    suite: str,
    *,
    as_json: bool,
    samples: int | None,
    soak: int | None = None,
    kills: int | None = None,
) -> int:
    # Imported on demand: the benchmarks are not part of the other commands.
    module: Any = importlib.import_module(f"cellfleet.ops.bench.{suite}")
    least, why = getattr(module, "MIN_SAMPLES", (1, "a benchmark needs a sample"))
    if samples is not None and samples < least:
        problem = f"--samples must be at least {least}: {why}"
        print(f"cellfleet bench {suite}: {problem}", file=sys.stderr)
        return 2
    options: dict[str, int] = {"soak": soak} if soak else {}
    if kills:
        options["kills"] = kills
    report = module.run(samples, **options) if samples else module.run(**options)
    print(orjson.dumps(report).decode() if as_json else module.table(report))
    return 0


def show_fleet(args: argparse.Namespace, keys: Keys) -> int:
    """The live cell workers: load, draining, and each session's lease time left."""
    journal = RedisJournal.from_url(reachable_redis(args.data_dir), keys)
    try:
        registry = WorkerRegistry(journal.client, keys)
        workers = sorted(registry.live(), key=lambda w: w.worker)
        for info in workers:
            sessions = registry.sessions_of(info.worker)
            pipe = journal.client.pipeline(transaction=False)
            for session in sessions:
                pipe.pttl(keys.session(session).lease)
            leases = dict(zip(sessions, pipe.execute(), strict=True))
            row = {
                **dataclasses.asdict(info),
                "beat_age_ms": round(time.time() * 1000 - info.beat_ms),
                "lease_left_ms": leases,
            }
            if args.json:
                print(orjson.dumps(row).decode())
                continue
            state = "draining" if info.draining else "serving"
            print(
                f"{info.worker}  {state}  {info.sessions}/{info.capacity} sessions  "
                f"pid {info.pid} on {info.host}  beat {row['beat_age_ms']} ms ago"
            )
            for session, left in leases.items():
                print(f"  {session}  lease {left} ms left")
        if not workers and not args.json:
            print("no live cell worker: start one with `cellfleet worker`")
        return 0
    finally:
        journal.close()


if __name__ == "__main__":
    entry()

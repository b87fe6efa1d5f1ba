"""The chaos run (issue 14): cell workers SIGKILLed at random while sessions run.

`run_chaos` starts `workers` cell worker processes and one tool worker process
(`chaos_tools.py`) on one Redis, under a key prefix of its own, and drives `sessions`
sessions through a fleet client, each a thread running random programs back to back
(nested tools, parallel calls, timers, yields then waits, store/load, notify,
terminate). Meanwhile a random cell worker is SIGKILLed about every `kill_every_s` and
a new one started, `kills` times; each session finishes its program in hand after the
last kill. Then the same programs run again, in the same order, in fresh sessions with
no kill, and what the model saw is compared step by step (wall times aside).

The report counts what the kills cost: outputs lost or duplicated, notifications lost
or duplicated, steps answered differently, tool handlers completed more than once per
idempotency key, cells whose recovery diverged, and broken log invariants (one terminal
event per cell; fencing tokens only increase; a (cell, seq) names one event). Takeover
times come from the log: from a kill to the next opening of each session the killed
worker served.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellfleet.broker import events as ev
from cellfleet.broker.client import Session
from cellfleet.broker.fleet import FleetClient
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.keys import Keys
from cellfleet.broker.redis.connect import connect_redis
from cellfleet.broker.tools.registry import load_tools_file
from cellfleet.ops.chaos_tools import RUNS_ENV
from cellfleet.ops.processes import stop_processes, worker_ready

TOOLS_FILE = Path(__file__).with_name("chaos_tools.py")
PRAGMA = '// @exec: {"yield_time_ms": 120000}\n'  # an exec answers when its cell yields or ends
WAIT = '{{"cell_id": "{cell}", "yield_time_ms": 120000}}'
_WALL_TIME = re.compile(r"Wall time [0-9.]+ seconds")
MIN_PROGRAMS = 3  # per session, however soon the kills are over


@dataclass(frozen=True, slots=True)
class Program:
    """One cell: its source, and what the session does once its exec answered."""

    source: str
    then: str = ""  # "wait" (until it ends) or "terminate"


PROGRAMS = (
    Program('text("plain")'),
    Program('await new Promise((resolve) => setTimeout(resolve, 150)); text("timer")'),
    Program("text(JSON.stringify(await tools.echo({n: 1})))"),
    Program(
        "const all = await Promise.all([tools.echo({a: 1}), tools.slow({b: 2}), "
        "tools.echo({c: 3})]);\ntext(JSON.stringify(all))"
    ),
    Program('const n = (load("n") ?? 0) + 1;\nstore("n", n);\ntext("n=" + n)'),
    Program(
        'text("before");\nyield_control();\n'
        'await new Promise((resolve) => setTimeout(resolve, 300));\ntext("after")',
        then="wait",
    ),
    Program(
        'text("forever");\nyield_control();\n'
        "await new Promise((resolve) => setTimeout(resolve, 600000))",
        then="terminate",
    ),
    Program('notify("heads up");\ntext("notified")'),
    Program("text(JSON.stringify(await tools.slow({s: 1})))"),
)


@dataclass
class ChaosReport:
    kills: int = 0
    takeovers: int = 0
    takeover_s: list[float] = field(default_factory=list)
    # Those during which no other worker was killed (a double fault: the worker that
    # was taking the session over may be the one killed next).
    single_takeover_s: list[float] = field(default_factory=list)
    cells: int = 0
    cells_recovered: int = 0
    lost_outputs: int = 0
    duplicated_outputs: int = 0
    lost_notifications: int = 0
    duplicated_notifications: int = 0
    different_steps: list[str] = field(default_factory=list)
    rerun_tools: int = 0
    divergences: list[str] = field(default_factory=list)
    broken_invariants: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def figures(self) -> dict[str, Any]:
        times, single = sorted(self.takeover_s), sorted(self.single_takeover_s)
        return {
            "kills": self.kills,
            "takeovers": self.takeovers,
            "takeover_p50_s": _quantile(times, 0.5),
            "takeover_p99_s": _quantile(times, 0.99),
            "single_fault_takeovers": len(single),
            "single_fault_takeover_p50_s": _quantile(single, 0.5),
            "single_fault_takeover_p99_s": _quantile(single, 0.99),
            "cells": self.cells,
            "cells_recovered": self.cells_recovered,
            "lost_outputs": self.lost_outputs,
            "duplicated_outputs": self.duplicated_outputs,
            "lost_notifications": self.lost_notifications,
            "duplicated_notifications": self.duplicated_notifications,
            "different_steps": len(self.different_steps),
            "rerun_tools": self.rerun_tools,
            "divergences": len(self.divergences),
            "broken_invariants": len(self.broken_invariants),
            "elapsed_s": round(self.elapsed_s, 1),
        }

    @property
    def clean(self) -> bool:
        """Nothing lost, repeated, answered differently, re-run, diverged or broken."""
        figures = self.figures()
        return not any(
            figures[name]
            for name in (
                "lost_outputs",
                "duplicated_outputs",
                "lost_notifications",
                "duplicated_notifications",
                "different_steps",
                "rerun_tools",
                "divergences",
                "broken_invariants",
            )
        )

    def problems(self) -> list[str]:
        return [*self.different_steps, *self.divergences, *self.broken_invariants]


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


# -- the processes ---------------------------------------------------------------------


class _Processes:
    """The cell workers (killed and replaced) and the tool worker of one run."""

    def __init__(self, redis_url: str, keys: Keys, lease_ms: int, runs: Path) -> None:
        self._env = {**os.environ, "REDIS_URL": redis_url, RUNS_ENV: str(runs)}
        self._prefix = ["--key-prefix", keys.prefix]
        self._lease_ms = lease_ms
        self._lock = threading.Lock()
        self.workers: dict[str, subprocess.Popen[bytes]] = {}  # serving, by worker id
        self._started: list[subprocess.Popen[bytes]] = []  # every one, for `stop`
        cli = [sys.executable, "-m", "cellfleet.ops.cli", *self._prefix]
        self._cli = cli
        self.tools = subprocess.Popen(
            [*cli, "tools", "--tools", str(TOOLS_FILE), "--concurrency", "32"],
            env=self._env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_worker(self) -> str:
        process = subprocess.Popen(
            [*self._cli, "worker", "--lease-ms", str(self._lease_ms)],
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        with self._lock:
            self._started.append(process)
        worker = worker_ready(process)
        with self._lock:
            self.workers[worker] = process
        return worker

    def serving(self) -> list[str]:
        with self._lock:
            return sorted(self.workers)

    def kill(self, worker: str) -> None:
        with self._lock:
            process = self.workers.pop(worker)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        with self._lock:
            processes = [*self._started, self.tools]
        stop_processes(processes)


# -- the sessions ----------------------------------------------------------------------


@dataclass
class _Transcript:
    programs: list[int] = field(default_factory=list)
    answers: list[list[str]] = field(default_factory=list)  # per step: its text items
    notifications: list[str] = field(default_factory=list)


def _texts(output: Any) -> list[str]:
    return [_WALL_TIME.sub("Wall time", str(item.get("text", ""))) for item in output.items]


def _run_program(session: Session, program: Program, transcript: _Transcript) -> None:
    step = len(transcript.answers)
    answer = session.exec(f"call-{step}", PRAGMA + program.source)
    transcript.answers.append(_texts(answer))
    cell = answer.running_cell_id
    if cell is None or not program.then:
        return
    if program.then == "terminate":
        transcript.answers.append(_texts(session.terminate(cell)))
        return
    while cell is not None:
        output = session.wait(WAIT.format(cell=cell))
        transcript.answers.append(_texts(output))
        cell = output.running_cell_id


def _drive(
    open_session: Callable[[Callable[..., None]], Session],
    transcript: _Transcript,
    choose: Callable[[], int] | None,
    more: Callable[[], bool],
) -> None:
    """Run programs in one session: chosen at random while `more()` says so (at least
    `MIN_PROGRAMS`), or those of `transcript.programs` again (`choose` None)."""
    notified = transcript.notifications
    session = open_session(lambda _call, cell, text: notified.append(f"{cell}:{text}"))
    try:
        if choose is None:
            replay = _Transcript(notifications=notified)
            for index in transcript.programs:
                _run_program(session, PROGRAMS[index], replay)
            transcript.answers = replay.answers
            return
        while len(transcript.programs) < MIN_PROGRAMS or more():
            index = choose()
            transcript.programs.append(index)
            _run_program(session, PROGRAMS[index], transcript)
    finally:
        session.shutdown()


def _run_sessions(
    client: FleetClient,
    transcripts: list[_Transcript],
    rng: random.Random | None,
    more: Callable[[], bool],
) -> list[Session]:
    sessions: list[Session] = []
    lock = threading.Lock()

    def open_session(notify: Callable[..., None]) -> Session:
        session = client.open_session(notify=notify)
        with lock:
            sessions.append(session)
        return session

    threads = []
    for transcript in transcripts:
        choose = None
        if rng is not None:
            seeded = random.Random(rng.random())
            choose = lambda seeded=seeded: seeded.randrange(len(PROGRAMS))  # noqa: E731
        thread = threading.Thread(target=_drive, args=(open_session, transcript, choose, more))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return sessions


# -- the run ---------------------------------------------------------------------------


def run_chaos(
    redis_url: str,
    *,
    sessions: int = 20,
    workers: int = 3,
    kills: int = 20,
    kill_every_s: float = 1.0,
    lease_ms: int = 2000,
    seed: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ChaosReport:
    began = time.monotonic()
    rng = random.Random(seed)
    keys = Keys(f"chaos{uuid.uuid4().hex[:8]}")
    report = ChaosReport()
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch) / "runs"
        processes = _Processes(redis_url, keys, lease_ms, runs)
        client = FleetClient(
            redis_url, keys=keys, tools=load_tools_file(TOOLS_FILE), tool_workers=0
        )
        try:
            for _ in range(workers):
                processes.start_worker()
            kills_at: list[tuple[float, str, set[str]]] = []
            done = threading.Event()
            killer = threading.Thread(
                target=_kill_now_and_then,
                args=(processes, client, rng),
                kwargs={
                    "kills": kills,
                    "every_s": kill_every_s,
                    "kills_at": kills_at,
                    "done": done,
                    "progress": progress,
                },
            )
            chaos = [_Transcript() for _ in range(sessions)]
            killer.start()
            chaotic = _run_sessions(client, chaos, rng, lambda: not done.is_set())
            killer.join()
            progress(f"{len(kills_at)} kills done; the same programs again, without kills")
            calm = [_Transcript(programs=list(t.programs)) for t in chaos]
            _run_sessions(client, calm, None, lambda: False)
            report.kills = len(kills_at)
            _compare(chaos, calm, report)
            journal = RedisJournal(client.client, keys)
            _read_logs(journal, [s.id for s in chaotic], kills_at, report)
            report.rerun_tools = sum(n - 1 for n in Counter(_lines(runs)).values() if n > 1)
        finally:
            client.close()
            processes.stop()
            _forget(redis_url, keys)
    report.elapsed_s = time.monotonic() - began
    return report


def _kill_now_and_then(
    processes: _Processes,
    client: FleetClient,
    rng: random.Random,
    *,
    kills: int,
    every_s: float,
    kills_at: list[tuple[float, str, set[str]]],
    done: threading.Event,
    progress: Callable[[str], None],
) -> None:
    """SIGKILL a random cell worker about every `every_s`, then start another (in the
    background: the next kill does not wait for it, unless it would kill the last one
    serving)."""
    starting: list[threading.Thread] = []
    try:
        for number in range(1, kills + 1):
            time.sleep(rng.uniform(0.5 * every_s, 1.5 * every_s))
            if len(processes.serving()) < 2:
                for thread in starting:
                    thread.join()
                starting.clear()
            victim = rng.choice(processes.serving())
            members = client.client.smembers(client.keys.worker_sessions(victim))
            served = {_text(member) for member in members}
            kills_at.append((time.time() * 1000, victim, served))
            processes.kill(victim)
            starting.append(threading.Thread(target=processes.start_worker, daemon=True))
            starting[-1].start()
            progress(f"kill {number}/{kills}: worker {victim} ({len(served)} sessions)")
    finally:
        done.set()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _compare(chaos: list[_Transcript], calm: list[_Transcript], report: ChaosReport) -> None:
    for number, (seen, expected) in enumerate(zip(chaos, calm, strict=True)):
        for step, (got, want) in enumerate(zip(seen.answers, expected.answers, strict=False)):
            if got != want:
                report.different_steps.append(f"session {number} step {step}: {got} != {want}")
        if len(seen.answers) != len(expected.answers):
            counts = f"{len(seen.answers)} steps, {len(expected.answers)} without kills"
            report.different_steps.append(f"session {number}: {counts}")
        got_items = Counter(item for answer in seen.answers for item in answer[1:])
        want_items = Counter(item for answer in expected.answers for item in answer[1:])
        report.lost_outputs += sum((want_items - got_items).values())
        report.duplicated_outputs += sum((got_items - want_items).values())
        got_notes, want_notes = Counter(seen.notifications), Counter(expected.notifications)
        report.lost_notifications += sum((want_notes - got_notes).values())
        report.duplicated_notifications += sum((got_notes - want_notes).values())


def _read_logs(
    journal: RedisJournal,
    sessions: list[str],
    kills_at: list[tuple[float, str, set[str]]],
    report: ChaosReport,
) -> None:
    for session in sessions:
        events = [event for _, event in journal.read(session)]
        opened = [e.at_ms for e in events if isinstance(e, ev.SessionOpened)]
        report.takeovers += max(0, len(opened) - 1)
        for killed_ms, _, served in kills_at:
            if session in served:
                after = [at for at in opened if at >= killed_ms]
                if after:
                    took = (after[0] - killed_ms) / 1000
                    report.takeover_s.append(took)
                    if not any(killed_ms < other < after[0] for other, _, _ in kills_at):
                        report.single_takeover_s.append(took)
        _check_log(session, events, report)


def _own_events(session: str, events: list[ev.AnyEvent], report: ChaosReport) -> list[Any]:
    """The events numbered by their writers, each once (a retried append repeats one);
    a (cell, seq) that names two different events breaks an invariant."""
    seen: dict[tuple[str, int], str] = {}
    own = []
    for event in events:
        if isinstance(event, ev.ToolCompleted | ev.ToolFailed | ev.ToolAttemptFailed) and (
            event.seq == 0
        ):
            continue  # a tool worker's: not numbered by the cell
        key = (event.cell, event.seq)
        if key in seen:
            if seen[key] != event.TYPE:
                report.broken_invariants.append(f"{session}: {key} names two events")
            continue
        seen[key] = event.TYPE
        own.append(event)
    return own


def _check_log(session: str, events: list[ev.AnyEvent], report: ChaosReport) -> None:
    terminal: Counter[str] = Counter()
    token = 0
    for event in _own_events(session, events, report):
        if isinstance(event, ev.CellAdmitted):
            report.cells += 1
        elif isinstance(event, ev.CellCompleted | ev.CellTerminated):
            terminal[event.cell] += 1
        elif isinstance(event, ev.CellRecovered):
            if event.problem is None:
                report.cells_recovered += 1
            else:
                report.divergences.append(f"{session} cell {event.cell}: {event.problem}")
        elif not event.cell:
            if event.seq >> 32 < token:
                report.broken_invariants.append(f"{session}: a fencing token went down")
            token = max(token, event.seq >> 32)
    for cell, count in terminal.items():
        if count > 1:
            report.broken_invariants.append(f"{session} cell {cell}: {count} terminal events")


def _forget(redis_url: str, keys: Keys) -> None:
    """Delete the run's keys (a run leaves nothing behind on a shared Redis)."""
    client = connect_redis(redis_url)
    try:
        for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()

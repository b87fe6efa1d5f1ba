"""Record the replay regression corpus: real sessions, one trace file per scenario.

Developer tool, run by hand from a checkout (never in CI):

    .venv/bin/python -m cellfleet.ops.replay_corpus             # every scenario
    .venv/bin/python -m cellfleet.ops.replay_corpus -k timers    # names containing "timers"

It starts a private redis-server in a temporary directory and one `Host` whose in-process
tool worker serves the deterministic tools of `corpus_scenarios.py`, runs every scenario
there (its own, then each session-level case of the reference corpus,
`tests/reference/recorded.json`, as `ref_<case>`) in a fresh session, shuts the session
down and writes its events as a portable trace (`cellfleet export`'s format) to
`tests/replay_corpus/<scenario>.trace.jsonl`. A full run also deletes the trace files of
scenarios that no longer exist. Rerunning it rewrites every file: session ids are the
scenario's names, but stream ids, times, seeds and the cells' clocks are new each time.

A reference case whose answers differ from those recorded from Codex's host is still
written (the trace is what cellfleet did) but named at the end, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson

from cellfleet.actors.runtime.v8 import v8_version
from cellfleet.broker import trace_file
from cellfleet.broker.client import Session
from cellfleet.broker.contract.responses import (
    CellAnswer,
    ObserveMode,
    Pending,
    Result,
    Terminated,
    Yielded,
)
from cellfleet.broker.contract.tools import ToolDefinition, ToolKind
from cellfleet.broker.events import CellAdmitted, CellClosed, CellCompleted, CellTerminated
from cellfleet.ops.corpus_scenarios import SCENARIOS, Scenario, corpus_tools
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import start_redis

REPO = Path(__file__).resolve().parents[1]  # (ops/ is linked as cellfleet/ops)
CORPUS_DIR = REPO / "tests" / "replay_corpus"
REFERENCE = REPO / "tests" / "reference" / "recorded.json"
SUFFIX = ".trace.jsonl"
CORPUS_ENVIRONMENT = {"TZ": "UTC", "LC_ALL": "C.UTF-8"}  # what V8 reads: see `main`
ANSWER_TIMEOUT_S = 30.0
REFERENCE_TOOLS = ("echo", "fail", "sleep")  # the behaviours `corpus_tools` serves


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording one scenario gave: its file, and how its cells and answers went."""

    path: Path
    events: int
    cells: int
    unclosed: list[str]  # cells without a terminal event or without their close
    answers: list[str]  # per step: the answer's kind (and error text)
    differences: list[str]  # reference cases: steps whose answer differs from Codex's


# -- the reference corpus -----------------------------------------------------------------


def reference_scenarios(path: Path) -> tuple[list[Scenario], list[tuple[str, str]]]:
    """The reference corpus's session-level cases as scenarios, and (name, reason) for
    each one that cannot be recorded. A case is session-level unless it is a single
    `execute` answered with one `Result` (those are runtime-level: one cell, no session)."""
    recorded = orjson.loads(path.read_bytes())
    scenarios: list[Scenario] = []
    skipped: list[tuple[str, str]] = []
    for case in recorded["cases"]:
        program = case["program"]
        kinds = [response["kind"] for response in case["responses"]]
        if len(program) == 1 and program[0]["op"] == "execute" and kinds == ["Result"]:
            continue
        name = f"ref_{case['name']}"
        reason = _unrecordable(case)
        if reason:
            skipped.append((name, reason))
            continue
        tools = [reference_tool(tool) for tool in case["tools"]]
        summary = f"reference corpus §{case['section']}: {case['note'] or case['name']}"
        scenarios.append(Scenario(name, summary, program, tools, case["responses"]))
    return scenarios, skipped


def reference_tool(tool: dict[str, Any]) -> ToolDefinition:
    """A nested tool of a reference corpus case (`recorded.json`), as a harness has it."""
    return ToolDefinition(
        name=tool["raw_name"],
        namespace=tool["namespace"],
        description=tool["description"],
        kind=ToolKind(tool["kind"]),
        input_schema=tool["input_schema"],
    )


def _unrecordable(case: dict[str, Any]) -> str | None:
    if case["host_stdout_garbage"]:
        return "the reference host wrote outside its protocol: its answers are not a yardstick"
    if not any(step["op"] == "execute" for step in case["program"]):
        return "no cell: its only step addresses an unknown cell, so nothing is replayable"
    for tool in case["tools"]:
        if tool["behavior"] not in REFERENCE_TOOLS or tool["raw_name"] != tool["behavior"]:
            return f"tool {tool['raw_name']!r} ({tool['behavior']}) has no handler here"
    return None


# -- running a scenario ---------------------------------------------------------------


def run_steps(session: Session, scenario: Scenario) -> list[tuple[str, CellAnswer | str]]:
    """Run the scenario's steps; per step the cell it addressed and its answer (or the
    text of the error it raised)."""
    backend = session.backend
    cells: list[str] = []
    answers: list[tuple[str, CellAnswer | str]] = []
    for step in scenario.steps:
        mode = ObserveMode(step.get("mode", ObserveMode.YIELD))
        if step["op"] == "execute":
            cell, future = backend.execute(
                f"call-{len(cells) + 1}",
                step["source"],
                step["yield_time_ms"],
                step.get("max_output_tokens"),
                mode,
            )
            cells.append(cell)
        else:
            cell = step.get("cell_id") or cells[step.get("cell", len(cells) - 1)]
            if step["op"] == "wait":
                future = backend.observe(cell, mode, step["yield_time_ms"])
            else:
                future = backend.terminate(cell)
        try:
            answers.append((cell, future.result(ANSWER_TIMEOUT_S)))
        except Exception as error:  # a lifecycle failure is an answer too (`exec` shows it)
            answers.append((cell, f"{type(error).__name__}: {error}"))
    return answers


def record(host: Host, scenario: Scenario, out_dir: Path) -> Recorded:
    """Run `scenario` in a new session, shut it down and write its trace."""
    session = host.open_session(scenario.tools, session_id=f"corpus-{scenario.name}")
    try:
        answers = run_steps(session, scenario)
    finally:
        session.shutdown()
    entries = list(host.journal.read(session.id))
    path = out_dir / f"{scenario.name}{SUFFIX}"
    header = trace_file.export_header(session.id, version("cellfleet"), v8_version())
    with path.open("w", encoding="utf-8") as out:
        trace_file.write_trace(out, header, entries)
    with path.open(encoding="utf-8") as lines:
        events = [event for _, event in trace_file.read_trace(lines).entries]
    cells = [e.cell for e in events if isinstance(e, CellAdmitted)]
    ended = {e.cell for e in events if isinstance(e, CellCompleted | CellTerminated)}
    closed = {e.cell for e in events if isinstance(e, CellClosed)}
    return Recorded(
        path=path,
        events=len(events),
        cells=len(cells),
        unclosed=[cell for cell in cells if cell not in ended or cell not in closed],
        answers=[_describe(answer) for _, answer in answers],
        differences=_differences(scenario, answers),
    )


def _describe(answer: CellAnswer | str) -> str:
    if isinstance(answer, str):
        return f"error ({answer})"
    kind = type(answer).__name__
    if isinstance(answer, Result) and answer.error_text is not None:
        return f"{kind} (failed)"
    return kind


def _differences(scenario: Scenario, answers: list[tuple[str, CellAnswer | str]]) -> list[str]:
    """The steps whose answer is not the one recorded from Codex's host."""
    if scenario.expected is None:
        return []
    found = []
    for index, ((cell, answer), expected) in enumerate(
        zip(answers, scenario.expected, strict=True)
    ):
        got = _as_reference(scenario.steps[index]["op"], cell, answer)
        want = {key: expected[key] for key in got}
        if got != want:
            found.append(f"step {index + 1}: got {got}, Codex answered {want}")
    return found


def _as_reference(op: str, cell: str, answer: CellAnswer | str) -> dict[str, Any]:
    """An answer in the shape of `recorded.json`'s responses."""
    if isinstance(answer, str):
        return {"kind": "error", "error_text": answer}
    kinds = {Yielded: "Yielded", Result: "Result", Terminated: "Terminated", Pending: "Pending"}
    error = answer.error_text if isinstance(answer, Result) else None
    return {
        "kind": kinds[type(answer)],
        "cell_id": answer.cell_id,
        "items": answer.content_items,
        "error_text": error,
        "missing": op != "execute" and error == f"exec cell {cell} not found",
    }


# -- the command ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cellfleet.ops.replay_corpus", description=__doc__.splitlines()[0]
    )
    parser.add_argument("-o", "--out", type=Path, default=CORPUS_DIR, help="(%(default)s)")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="(%(default)s)")
    parser.add_argument("-k", dest="only", help="record only scenarios whose name contains this")
    args = parser.parse_args(argv)
    # One time zone and locale for every recording (V8 reads them once, when it starts):
    # the corpus replays identically in CI whatever the machine's are.
    os.environ.update(CORPUS_ENVIRONMENT)
    if not args.reference.is_file():
        print(f"replay_corpus: no reference corpus at {args.reference} (a checkout is needed)")
        return 2
    references, skipped = reference_scenarios(args.reference)
    scenarios = [s for s in [*SCENARIOS, *references] if not args.only or args.only in s.name]
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    results = _record_all(scenarios, args.out)
    for name, reason in skipped:
        if not args.only or args.only in name:
            print(f"skipped {name}: {reason}")
    if not args.only:  # a full run: what it did not write is stale
        written = {result.path for result in results}
        for stale in sorted(set(args.out.glob(f"*{SUFFIX}")) - written):
            stale.unlink()
            print(f"deleted {stale.name} (no such scenario)")
    return _report(results, time.monotonic() - began)


def _record_all(scenarios: list[Scenario], out_dir: Path) -> list[Recorded]:
    with tempfile.TemporaryDirectory(prefix="cellfleet-corpus-") as data_dir:
        server = start_redis(Path(data_dir), append_only=False)
        try:
            host = Host(server.url, tools=corpus_tools())
            try:
                results = []
                for scenario in scenarios:
                    result = record(host, scenario, out_dir)
                    print(
                        f"{result.path.name}: {result.cells} cells, {result.events} events,"
                        f" {result.path.stat().st_size} bytes; {', '.join(result.answers)}"
                    )
                    results.append(result)
                return results
            finally:
                host.close()
        finally:
            server.stop()


def _report(results: list[Recorded], seconds: float) -> int:
    size = sum(result.path.stat().st_size for result in results)
    cells = sum(result.cells for result in results)
    print(f"{len(results)} traces, {cells} cells, {size} bytes, in {seconds:.1f} s")
    status = 0
    for result in results:
        if result.unclosed:
            print(f"{result.path.name}: cells {result.unclosed} did not end and close")
            status = 1
        for difference in result.differences:
            print(f"{result.path.name}: differs from the reference: {difference}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

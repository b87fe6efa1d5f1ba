"""The nested tools of the recovery tests, in a file of their own: a killed child process
and the test process that takes its session over load the same file, so that their
tool calls go to the same workers (the registry's fingerprint sees its text)."""

from __future__ import annotations

import os
import threading

import orjson

from cellfleet.broker.contract.tools import JsonValue
from cellfleet.broker.tools.registry import ToolRegistry

RUNS: list[JsonValue] = []  # every input `echo` ran with, in this process
RUNS_FILE = "RECOVERY_RUNS_FILE"  # and where each process appends them, if set
GATE: list[threading.Event] = []  # (a test's: [started, go]: each run says so, then waits)


def echo(value: JsonValue) -> JsonValue:
    if GATE:
        started, go = GATE
        started.set()
        go.wait(60)
    RUNS.append(value)
    path = os.environ.get(RUNS_FILE)
    if path:
        with open(path, "ab") as runs:
            runs.write(orjson.dumps(value) + b"\n")
    return value


HANDLERS = {"echo": echo}
tools = ToolRegistry.from_handlers(HANDLERS)  # (for `cellfleet tools --tools` this file)
LOCAL = ToolRegistry()  # the same `echo`, run by the process that runs the cell
LOCAL.function(name="echo", input_schema={"type": "object"}, local=True)(echo)

"""The nested tools of the chaos run (`ops/chaos.py`), served by a `cellfleet tools`
process of their own: each handler notes the call it completes (its idempotency key)
in the file `CELLFLEET_CHAOS_RUNS` names, so the run can count handlers that ran twice."""

from __future__ import annotations

import os
import time

from cellfleet.broker.tools.registry import ToolContext, ToolRegistry

RUNS_ENV = "CELLFLEET_CHAOS_RUNS"
tools = ToolRegistry()


def _ran(context: ToolContext) -> None:
    path = os.environ.get(RUNS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as runs:  # (one short line: one write)
            runs.write(context.idempotency_key + "\n")


@tools.function(description="Echo the arguments back.", input_schema={"type": "object"})
def echo(args: dict[str, object], context: ToolContext) -> dict[str, object]:
    _ran(context)
    return args


@tools.function(description="Echo the arguments back later.", input_schema={"type": "object"})
def slow(args: dict[str, object], context: ToolContext) -> dict[str, object]:
    time.sleep(0.3)
    _ran(context)
    return args

"""The corpus's tool behaviours (see cases.py): how a test answers the reference's tools."""

from __future__ import annotations

from collections.abc import Callable

from cellfleet.broker.contract.tools import JsonValue
from cellfleet.broker.tools.invocation import ToolCallError
from cellfleet.ops.corpus_scenarios import echo, fail, sleep  # (the recorder serves them too)

Handler = Callable[[JsonValue], JsonValue]


def handler_for(behavior: str, raw_name: str) -> Handler:
    """The handler for a corpus tool's `behavior`."""
    if behavior == "missing":

        def missing(value: JsonValue) -> JsonValue:
            raise ToolCallError(f"no handler registered for tool `{raw_name}`")

        return missing
    return {"echo": echo, "fail": fail, "sleep": sleep}[behavior]

"""The corpus's tool behaviours (see cases.py): how a test answers the reference's tools."""

from __future__ import annotations

import threading
from collections.abc import Callable

from cellfleet.broker.contract.tools import JsonValue
from cellfleet.broker.tools.invocation import ToolCallError

Handler = Callable[[JsonValue], JsonValue]


def echo(value: JsonValue) -> JsonValue:
    return value


def fail(value: JsonValue) -> JsonValue:
    """`input.message`, else a non-empty string input, else `tool failed`."""
    message = value.get("message") if isinstance(value, dict) else None
    if message:
        raise ToolCallError(str(message))
    if isinstance(value, str) and value:
        raise ToolCallError(value)
    raise ToolCallError("tool failed")


def sleep(value: JsonValue) -> JsonValue:
    ms = value.get("ms", 100) if isinstance(value, dict) else 100
    assert isinstance(ms, int | float)
    threading.Event().wait(ms / 1000)  # what this tool does: take `ms` to answer
    return {"slept_ms": ms}


def handler_for(behavior: str, raw_name: str) -> Handler:
    """The handler for a corpus tool's `behavior`."""
    if behavior == "missing":

        def missing(value: JsonValue) -> JsonValue:
            raise ToolCallError(f"no handler registered for tool `{raw_name}`")

        return missing
    return {"echo": echo, "fail": fail, "sleep": sleep}[behavior]

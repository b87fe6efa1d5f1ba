"""Example tools file: `cellfleet run cell.js --tools ops/examples/echo_tools.py`."""

from __future__ import annotations

from cellfleet.broker.tools.registry import ToolCallError, ToolRegistry

tools = ToolRegistry()


@tools.function(description="Echo the arguments back.", input_schema={"type": "object"})
def echo(args: dict[str, object]) -> dict[str, object]:
    return args


@tools.function(description="Add two numbers.")
def add(a: float, b: float = 0) -> float:
    return a + b


@tools.function(description="Fail with the given message.")
def fail(message: str) -> None:
    raise ToolCallError(message)

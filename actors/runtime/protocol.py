"""What a cell runtime reports and what it is started with (the cell actor's view).

Events are reported in the order the cell produced them. Together with the cell's
source, seed and the inputs it was given (tool results, tool errors, timer firings,
each with its clock reading), they are a pure function of the cell: replaying the same
inputs into a fresh runtime yields the same events.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import orjson

from cellfleet.broker.contract.responses import ContentItem
from cellfleet.broker.contract.tools import JsonValue, ToolKind


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeTool:
    """A nested tool as the runtime installs it: `tools[name]` and an `ALL_TOOLS` entry."""

    name: str  # the JS global name
    description: str
    kind: ToolKind = ToolKind.FUNCTION


def tools_payload(tools: Sequence[RuntimeTool]) -> list[str]:
    """How a tool set travels into V8: global names alternating with descriptions."""
    return [part for tool in tools for part in (tool.name, tool.description)]


@functools.lru_cache(maxsize=8)
def tools_literal(tools: tuple[RuntimeTool, ...]) -> str:
    """A tool set installed ahead of a cell, as the prelude takes it: its payload's JSON
    text as a JavaScript string literal, or `null` (the same few sets, context after
    context)."""
    return orjson.dumps(orjson.dumps(tools_payload(tools)).decode()).decode() if tools else "null"


@dataclass(frozen=True, slots=True, kw_only=True)
class CellSpec:
    """Everything a cell starts from; recorded when the cell is admitted."""

    cell_id: str
    source: str
    tools: Sequence[RuntimeTool] = ()
    seed: tuple[int, int, int, int] = (1, 2, 3, 4)
    clock_ms: float = 0.0
    stored: Mapping[str, str] = field(default_factory=dict)  # key -> JSON text
    output_limit_bytes: int = 16 * 1024 * 1024
    timer_limit: int = 10_000
    # Replay only: the prelude reports where in the source each record was made
    # (`CellRuntime.site`) and which nondeterministic features the cell used.
    record_sites: bool = False


# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """Globals are installed; user code is about to run (yield timers start here).
    `warmed`: its context's start and output paths had run (`pool.warm`)."""

    warmed: bool = True


@dataclass(frozen=True, slots=True)
class OutputItem:
    item: ContentItem


@dataclass(frozen=True, slots=True)
class YieldRequested:
    """`yield_control()` was called."""


@dataclass(frozen=True, slots=True)
class ToolCallRequested:
    call_id: str  # "tool-1", "tool-2", ... per cell
    name: str  # JS global name
    kind: ToolKind
    input: JsonValue  # None when called without an argument
    problem: str | None = None  # why the input could not be read: the call fails


@dataclass(frozen=True, slots=True)
class NotificationSent:
    text: str


@dataclass(frozen=True, slots=True)
class TimerSet:
    timer_id: int
    delay_ms: int
    due_clock_ms: float  # the earliest clock reading the firing may carry


@dataclass(frozen=True, slots=True)
class TimerCleared:
    timer_id: int


@dataclass(frozen=True, slots=True)
class Pending:
    """Nothing is runnable (frontier mode only); tool calls issued since the last one."""

    tool_call_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Finished:
    """The cell ended on its own: the module settled, a timer threw, or `exit()`."""

    error_text: str | None
    stored_writes: Mapping[str, str]  # key -> JSON text, last write per key
    exited: bool = False
    by_host: bool = False  # a limit of the host's ended it (`CellRuntime.fail`)


@dataclass(frozen=True, slots=True)
class Stopped:
    """The runtime was terminated; nothing more will be reported."""


RuntimeEvent: TypeAlias = (
    Started
    | OutputItem
    | YieldRequested
    | ToolCallRequested
    | NotificationSent
    | TimerSet
    | TimerCleared
    | Pending
    | Finished
    | Stopped
)

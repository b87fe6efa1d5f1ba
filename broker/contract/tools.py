"""Nested tool definitions: what a harness hands to code mode (spec §3.1).

These records are the single description of a nested tool. The tool inventory
(`broker.contract.inventory`) derives code-mode names, JS globals and the model-facing
declarations from them; the runtime installs `tools.*` and `ALL_TOOLS` from the
inventory; tool workers dispatch on the same records, so what the model is told and
what runs cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None


class ToolKind(StrEnum):
    """How a nested tool takes its input: a JSON object or a raw string."""

    FUNCTION = "function"
    FREEFORM = "freeform"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolDefinition:
    """One nested tool as the harness knows it (Codex `ToolDefinition`).

    `name` and `namespace` are the harness's own identity of the tool; the
    code-mode name and the JS global name are derived from them (spec §3.1).
    `deferred` tools are callable and listed in `ALL_TOOLS` but left out of the
    `exec` description (spec §1.3, section 2).
    """

    name: str
    namespace: str | None = None
    description: str = ""
    kind: ToolKind = ToolKind.FUNCTION
    input_schema: JsonValue = None
    output_schema: JsonValue = None
    deferred: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceInfo:
    """Display name and description of a tool namespace (MCP server, app, ...)."""

    name: str
    display_name: str | None = None
    description: str = ""

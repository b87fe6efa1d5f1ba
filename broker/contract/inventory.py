"""The nested-tool inventory of a code-mode session: names, JS globals, `ALL_TOOLS` (spec §3.1).

From the harness's `ToolDefinition`s this derives, once, everything the model and the
runtime see of a nested tool:

* the code-mode name (`code_mode_name`: namespace joined to the tool name, Codex's
  `code_mode_name_for_tool_name`) and the JS global (`normalize_identifier`);
* the augmented description (spec §1.3.1): the namespace description, the tool's own
  description and an `exec tool declaration` with the TypeScript signature;
* the order (sorted by code-mode name) and the first-wins rule for tools whose names
  collide, as names or after normalization (later ones are reported in `skipped`).

`exec` and `wait` are never nested tools. Deferred tools are in the inventory (callable,
listed in `ALL_TOOLS`); only the `exec` description leaves them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from cellfleet.broker.contract.rust.text import rust_trim
from cellfleet.broker.contract.tools import JsonValue, NamespaceInfo, ToolDefinition, ToolKind
from cellfleet.broker.contract.typescript import (
    normalize_identifier,
    render_json_schema_to_typescript,
)

__all__ = [
    "DEFAULT_FUNCTION_NAMESPACE",
    "PUBLIC_TOOL_NAME",
    "WAIT_TOOL_NAME",
    "InventoryEntry",
    "SkippedTool",
    "ToolInventory",
    "augmented_description",
    "build_inventory",
    "code_mode_name",
    "is_code_mode_nested_tool",
    "is_mcp_shaped",
    "mcp_structured_content_schema",
    "namespace_display_name",
    "normalize_identifier",
    "tool_declaration",
]

PUBLIC_TOOL_NAME: Final = "exec"
WAIT_TOOL_NAME: Final = "wait"
DEFAULT_FUNCTION_NAMESPACE: Final = "functions"

_NO_NAMESPACES: Final[Mapping[str, NamespaceInfo]] = MappingProxyType({})


def is_code_mode_nested_tool(name: str) -> bool:
    """Whether a tool named `name` can be a nested tool (anything but `exec` and `wait`)."""
    return name not in (PUBLIC_TOOL_NAME, WAIT_TOOL_NAME)


def _is_default_namespace(namespace: str | None) -> bool:
    return namespace is None or namespace in ("", DEFAULT_FUNCTION_NAMESPACE)


def code_mode_name(name: str, namespace: str | None) -> str:
    """`code_mode_name_for_tool_name`: how a (namespace, name) pair is named in code mode.

    Default namespace (none, empty, `functions`) → the bare name; a namespace ending in
    `_`, or a name starting with `_`, is joined directly; otherwise joined with `__`.
    """
    if namespace is None or _is_default_namespace(namespace):
        return name
    if namespace.endswith("_") or name.startswith("_"):
        return f"{namespace}{name}"
    return f"{namespace}__{name}"


def mcp_structured_content_schema(output_schema: JsonValue) -> tuple[bool, JsonValue]:
    """`(is MCP-shaped, structuredContent schema)` of an output schema (spec §1.3.2).

    MCP-shaped: `properties` has `content` (array of objects), `isError` (boolean) and
    `_meta` (object). A missing `structuredContent` is the schema `true`.
    """
    properties = output_schema.get("properties") if isinstance(output_schema, dict) else None
    if not isinstance(properties, dict):
        return False, None
    content, is_error, meta = (properties.get(key) for key in ("content", "isError", "_meta"))
    items = content.get("items") if isinstance(content, dict) else None
    shaped = (
        _has_type(content, "array")
        and _has_type(items, "object")
        and _has_type(is_error, "boolean")
        and _has_type(meta, "object")
    )
    if not shaped:
        return False, None
    return True, properties.get("structuredContent", True)


def _has_type(schema: JsonValue, schema_type: str) -> bool:
    return isinstance(schema, dict) and schema.get("type") == schema_type


def is_mcp_shaped(output_schema: JsonValue) -> bool:
    """Whether an output schema is an MCP `CallToolResult` schema (spec §1.3.2)."""
    return mcp_structured_content_schema(output_schema)[0]


def tool_declaration(definition: ToolDefinition) -> str:
    """`declare const tools: { NAME(PARAM: INPUT): Promise<OUTPUT>; };` for one tool."""
    if definition.kind is ToolKind.FREEFORM:
        parameter, input_type = "input", "string"
    else:
        parameter = "args"
        schema = definition.input_schema
        input_type = "unknown" if schema is None else render_json_schema_to_typescript(schema)
    shaped, structured = mcp_structured_content_schema(definition.output_schema)
    if shaped:
        structured_type = render_json_schema_to_typescript(structured)
        output_type = (
            "CallToolResult"
            if structured_type == "unknown"
            else f"CallToolResult<{structured_type}>"
        )
    elif definition.output_schema is None:
        output_type = "unknown"
    else:
        output_type = render_json_schema_to_typescript(definition.output_schema)
    name = normalize_identifier(code_mode_name(definition.name, definition.namespace))
    return f"declare const tools: {{ {name}({parameter}: {input_type}): Promise<{output_type}>; }};"


def augmented_description(definition: ToolDefinition, *, description: str | None = None) -> str:
    """The tool's description with its TypeScript declaration appended (spec §1.3.1).

    `description` replaces `definition.description` (the inventory passes the text with
    the namespace description prepended).
    """
    text = definition.description if description is None else description
    fence = "```"
    return f"{text}\n\nexec tool declaration:\n{fence}ts\n{tool_declaration(definition)}\n{fence}"


def namespace_display_name(info: NamespaceInfo) -> str:
    """The name a namespace is shown under (its display name, else its name)."""
    return info.display_name or info.name


@dataclass(frozen=True, slots=True, kw_only=True)
class InventoryEntry:
    """One nested tool as code mode exposes it."""

    definition: ToolDefinition
    code_mode_name: str
    global_name: str
    description: str  # augmented, namespace description included: `ALL_TOOLS[i].description`

    @property
    def deferred(self) -> bool:
        """Callable and in `ALL_TOOLS`, but left out of the `exec` description."""
        return self.definition.deferred


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedTool:
    """A tool left out of code mode because an earlier tool took its (normalized) name."""

    definition: ToolDefinition
    code_mode_name: str
    global_name: str
    kept_code_mode_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolInventory:
    """The nested tools of a session, sorted by code-mode name."""

    entries: tuple[InventoryEntry, ...] = ()
    skipped: tuple[SkippedTool, ...] = ()
    namespaces: Mapping[str, NamespaceInfo] = field(default_factory=lambda: _NO_NAMESPACES)
    by_global_name: Mapping[str, InventoryEntry] = field(init=False)

    def __post_init__(self) -> None:
        index = {entry.global_name: entry for entry in self.entries}
        object.__setattr__(self, "by_global_name", MappingProxyType(index))

    def all_tools(self) -> list[dict[str, str]]:
        """The JS `ALL_TOOLS` array: `{name, description}` per tool, deferred ones too."""
        return [{"name": e.global_name, "description": e.description} for e in self.entries]

    def records(self) -> tuple[dict[str, str | None], ...]:
        """The tools as a cell's admission records them (`CellAdmitted.tools`)."""
        return tuple(
            {
                "name": e.definition.name,
                "namespace": e.definition.namespace,
                "global_name": e.global_name,
                "kind": str(e.definition.kind),
                "description": e.description,  # `ALL_TOOLS` shows it: replay needs it
            }
            for e in self.entries
        )

    def enabled(self) -> tuple[InventoryEntry, ...]:
        """The tools documented in the `exec` description (not deferred)."""
        return tuple(entry for entry in self.entries if not entry.deferred)

    def deferred(self) -> tuple[InventoryEntry, ...]:
        """The deferred tools."""
        return tuple(entry for entry in self.entries if entry.deferred)

    def namespace_of(self, definition: ToolDefinition) -> NamespaceInfo | None:
        """The namespace record of a namespaced tool, if the harness described it."""
        return _namespace_info(definition, self.namespaces)


def _namespace_info(
    definition: ToolDefinition, namespaces: Mapping[str, NamespaceInfo]
) -> NamespaceInfo | None:
    namespace = definition.namespace
    if namespace is None or _is_default_namespace(namespace):
        return None
    return namespaces.get(namespace)


def _description_with_namespace(
    definition: ToolDefinition, namespaces: Mapping[str, NamespaceInfo]
) -> str:
    """`{namespace description}\n\n{description}` for described namespaces (trimmed)."""
    info = _namespace_info(definition, namespaces)
    namespace_text = rust_trim(info.description) if info is not None else ""
    if not namespace_text:
        return definition.description
    return f"{namespace_text}\n\n{definition.description}"


def build_inventory(
    tools: Sequence[ToolDefinition],
    namespaces: Mapping[str, NamespaceInfo] = _NO_NAMESPACES,
) -> ToolInventory:
    """Derive the inventory from the harness's tools, in registration order.

    The first tool to claim a JS global wins; later tools with the same code-mode name or
    the same normalized name are skipped. `exec` / `wait` are dropped.
    """
    winners: dict[str, InventoryEntry] = {}
    skipped: list[SkippedTool] = []
    for definition in tools:
        name = code_mode_name(definition.name, definition.namespace)
        if not is_code_mode_nested_tool(name):
            continue
        global_name = normalize_identifier(name)
        kept = winners.get(global_name)
        if kept is not None:
            skipped.append(
                SkippedTool(
                    definition=definition,
                    code_mode_name=name,
                    global_name=global_name,
                    kept_code_mode_name=kept.code_mode_name,
                )
            )
            continue
        description = _description_with_namespace(definition, namespaces)
        winners[global_name] = InventoryEntry(
            definition=definition,
            code_mode_name=name,
            global_name=global_name,
            description=augmented_description(definition, description=description),
        )
    entries = sorted(winners.values(), key=lambda entry: entry.code_mode_name)
    return ToolInventory(
        entries=tuple(entries),
        skipped=tuple(skipped),
        namespaces=MappingProxyType(dict(namespaces)),
    )

"""Tool inventory: code-mode names, JS globals, declarations, `ALL_TOOLS` (spec §3.1, §1.3.1)."""

from __future__ import annotations

from typing import Any

import pytest

from cellfleet.broker.contract.inventory import (
    augmented_description,
    build_inventory,
    code_mode_name,
    is_code_mode_nested_tool,
    is_mcp_shaped,
    mcp_structured_content_schema,
    normalize_identifier,
    tool_declaration,
)
from cellfleet.broker.contract.tools import NamespaceInfo, ToolDefinition, ToolKind

FENCE = "```"


def mcp_output_schema(structured_content: Any = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "content": {"type": "array", "items": {"type": "object"}},
        "isError": {"type": "boolean"},
        "_meta": {"type": "object"},
    }
    if structured_content is not None:
        properties["structuredContent"] = structured_content
    return {"type": "object", "properties": properties, "required": ["content"]}


EMPTY_OBJECT = {"type": "object", "properties": {}, "additionalProperties": False}


@pytest.mark.parametrize(
    ("name", "namespace", "expected"),
    [
        ("echo", None, "echo"),
        ("echo", "", "echo"),
        ("echo", "functions", "echo"),
        ("echo", "mcp__rmcp__", "mcp__rmcp__echo"),
        ("hidden_dynamic_tool", "codex_app", "codex_app__hidden_dynamic_tool"),
        ("apply_patch", "editor", "editor__apply_patch"),
        ("_private", "ns", "ns_private"),
        ("x", "ns_", "ns_x"),
    ],
)
def test_code_mode_name(name: str, namespace: str | None, expected: str) -> None:
    assert code_mode_name(name, namespace) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mcp__ologs__get_profile", "mcp__ologs__get_profile"),
        ("hidden-dynamic-tool", "hidden_dynamic_tool"),
        ("mcp__rmcp__echo-tool", "mcp__rmcp__echo_tool"),
        ("1abc", "_abc"),
        ("a1$", "a1$"),
        ("$x", "$x"),
        ("", "_"),
        ("a.b c", "a_b_c"),
        ("café", "caf_"),
        ("١", "_"),  # non-ASCII digits are not identifier characters
    ],
)
def test_normalize_identifier(name: str, expected: str) -> None:
    assert normalize_identifier(name) == expected


def test_exec_and_wait_are_never_nested() -> None:
    assert not is_code_mode_nested_tool("exec")
    assert not is_code_mode_nested_tool("wait")
    assert is_code_mode_nested_tool("exec_command")


def test_mcp_shaped_output_schema() -> None:
    assert is_mcp_shaped(mcp_output_schema())
    assert mcp_structured_content_schema(mcp_output_schema()) == (True, True)
    assert mcp_structured_content_schema(mcp_output_schema({"type": "string"})) == (
        True,
        {"type": "string"},
    )
    broken: list[Any] = [None, True, {"properties": []}, {"type": "object"}]
    for key, bad in [
        ("content", {"type": "string"}),
        ("content", {"type": "array"}),
        ("content", {"type": "array", "items": {"type": "string"}}),
        ("isError", {"type": "string"}),
        ("_meta", None),
    ]:
        schema = mcp_output_schema()
        if bad is None:
            del schema["properties"][key]
        else:
            schema["properties"][key] = bad
        broken.append(schema)
    for schema in broken:
        assert not is_mcp_shaped(schema)


def test_codex_declaration_example() -> None:
    definition = ToolDefinition(
        name="hidden_dynamic_tool",
        description="Test tool",
        input_schema={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
        },
    )
    assert augmented_description(definition) == (
        "Test tool\n\nexec tool declaration:\n"
        f"{FENCE}ts\n"
        "declare const tools: { hidden_dynamic_tool(args: { city: string; }): "
        "Promise<{ ok: boolean; }>; };\n"
        f"{FENCE}"
    )


def test_codex_multi_line_declaration_example() -> None:
    definition = ToolDefinition(
        name="weather_tool",
        description="Weather tool",
        input_schema={
            "type": "object",
            "properties": {
                "weather": {
                    "type": "array",
                    "description": "look up weather for a given list of locations",
                    "items": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                        "required": ["location"],
                    },
                }
            },
            "required": ["weather"],
        },
        output_schema={
            "type": "object",
            "properties": {
                "forecast": {"type": "string", "description": "human readable weather forecast"}
            },
            "required": ["forecast"],
        },
    )
    assert tool_declaration(definition) == (
        "declare const tools: { weather_tool(args: {\n"
        "  // look up weather for a given list of locations\n"
        "  weather: Array<{ location: string; }>;\n"
        "}): Promise<{\n"
        "  // human readable weather forecast\n"
        "  forecast: string;\n"
        "}>; };"
    )


@pytest.mark.parametrize(
    ("definition", "declaration"),
    [
        (
            ToolDefinition(
                name="apply_patch", kind=ToolKind.FREEFORM, input_schema={"type": "object"}
            ),
            "apply_patch(input: string): Promise<unknown>;",
        ),
        (ToolDefinition(name="plain"), "plain(args: unknown): Promise<unknown>;"),
        (
            ToolDefinition(
                name="alpha",
                namespace="mcp__sample__",
                input_schema=EMPTY_OBJECT,
                output_schema=mcp_output_schema(EMPTY_OBJECT),
            ),
            "mcp__sample__alpha(args: {}): Promise<CallToolResult<{}>>;",
        ),
        (
            ToolDefinition(
                name="echo",
                namespace="mcp__rmcp__",
                input_schema={
                    "type": "object",
                    "properties": {"message": {"type": "string"}, "env_var": {"type": "string"}},
                    "required": ["message"],
                },
                output_schema=mcp_output_schema(
                    {
                        "type": "object",
                        "properties": {
                            "echo": {"type": "string"},
                            "env": {"type": ["string", "null"]},
                        },
                        "required": ["echo", "env"],
                    }
                ),
            ),
            "mcp__rmcp__echo(args: { env_var?: string; message: string; }): "
            "Promise<CallToolResult<{ echo: string; env: string | null; }>>;",
        ),
        (
            ToolDefinition(name="bare_mcp", output_schema=mcp_output_schema()),
            "bare_mcp(args: unknown): Promise<CallToolResult>;",
        ),
        (
            ToolDefinition(name="unknown_mcp", output_schema=mcp_output_schema({"type": "date"})),
            "unknown_mcp(args: unknown): Promise<CallToolResult>;",
        ),
        (
            ToolDefinition(name="dash-name", namespace="ns", output_schema={"type": "string"}),
            "ns__dash_name(args: unknown): Promise<string>;",
        ),
    ],
)
def test_declarations(definition: ToolDefinition, declaration: str) -> None:
    assert tool_declaration(definition) == f"declare const tools: {{ {declaration} }};"


def test_inventory_is_sorted_filtered_and_indexed() -> None:
    tools = [
        ToolDefinition(name="zeta", description="Z"),
        ToolDefinition(name="exec", description="never nested"),
        ToolDefinition(name="alpha", namespace="mcp__b__", description="A"),
        ToolDefinition(name="wait"),
        ToolDefinition(name="beta", description="B", deferred=True),
    ]
    inventory = build_inventory(tools)
    assert [entry.code_mode_name for entry in inventory.entries] == [
        "beta",
        "mcp__b__alpha",
        "zeta",
    ]
    assert [entry.global_name for entry in inventory.enabled()] == ["mcp__b__alpha", "zeta"]
    assert [entry.global_name for entry in inventory.deferred()] == ["beta"]
    assert inventory.by_global_name["zeta"].definition is tools[0]
    assert set(inventory.by_global_name) == {"beta", "mcp__b__alpha", "zeta"}
    assert inventory.skipped == ()


def test_all_tools_includes_deferred_tools_with_augmented_descriptions() -> None:
    inventory = build_inventory(
        [ToolDefinition(name="later", description="Later tool", deferred=True)]
    )
    assert inventory.all_tools() == [
        {
            "name": "later",
            "description": "Later tool\n\nexec tool declaration:\n"
            f"{FENCE}ts\ndeclare const tools: {{ later(args: unknown): Promise<unknown>; }};\n"
            f"{FENCE}",
        }
    ]


def test_view_image_example_from_the_spec() -> None:
    view_image = ToolDefinition(
        name="view_image",
        description="View a local image file.",
        input_schema={
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Local filesystem path to an image file."}
            },
            "required": ["path"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {"image_url": {"type": "string"}, "detail": {"type": "string"}},
            "required": ["image_url", "detail"],
        },
    )
    [entry] = build_inventory([view_image]).all_tools()
    assert entry == {
        "name": "view_image",
        "description": "View a local image file.\n\nexec tool declaration:\n"
        f"{FENCE}ts\ndeclare const tools: {{ view_image(args: {{\n"
        "  // Local filesystem path to an image file.\n  path: string;\n"
        "}): Promise<{ detail: string; image_url: string; }>; };\n"
        f"{FENCE}",
    }


def test_namespace_description_is_prepended_trimmed() -> None:
    namespaces = {
        "mcp__docs__": NamespaceInfo(
            name="mcp__docs__", display_name="Docs", description="  Docs server.\n"
        ),
        "mcp__quiet__": NamespaceInfo(name="mcp__quiet__", description="   "),
    }
    inventory = build_inventory(
        [
            ToolDefinition(name="search", namespace="mcp__docs__", description="Search docs."),
            ToolDefinition(name="ping", namespace="mcp__quiet__", description="Ping."),
            ToolDefinition(name="solo", description="Solo."),
        ],
        namespaces,
    )
    descriptions = {entry["name"]: entry["description"] for entry in inventory.all_tools()}
    assert descriptions["mcp__docs__search"].startswith("Docs server.\n\nSearch docs.\n\nexec tool")
    assert descriptions["mcp__quiet__ping"].startswith("Ping.\n\nexec tool declaration:\n")
    assert descriptions["solo"].startswith("Solo.\n\nexec tool declaration:\n")


def test_normalized_name_collisions_first_registered_wins() -> None:
    first = ToolDefinition(name="hidden_dynamic_tool", description="first")
    second = ToolDefinition(name="hidden-dynamic-tool", description="second")
    duplicate = ToolDefinition(name="hidden_dynamic_tool", description="duplicate")
    inventory = build_inventory([first, second, duplicate])
    assert [entry.definition for entry in inventory.entries] == [first]
    assert [(skip.code_mode_name, skip.global_name, skip.kept_code_mode_name)
            for skip in inventory.skipped] == [
        ("hidden-dynamic-tool", "hidden_dynamic_tool", "hidden_dynamic_tool"),
        ("hidden_dynamic_tool", "hidden_dynamic_tool", "hidden_dynamic_tool"),
    ]  # fmt: skip
    # Registration order decides, not the name: the dashed tool wins when it comes first.
    inventory = build_inventory([second, first])
    assert [entry.definition for entry in inventory.entries] == [second]
    assert inventory.entries[0].global_name == "hidden_dynamic_tool"
    assert inventory.by_global_name["hidden_dynamic_tool"].code_mode_name == "hidden-dynamic-tool"


def test_namespaced_and_plain_tools_can_collide() -> None:
    plain = ToolDefinition(name="ns__x")
    namespaced = ToolDefinition(name="x", namespace="ns")
    inventory = build_inventory([namespaced, plain])
    assert [entry.definition for entry in inventory.entries] == [namespaced]
    assert [skip.definition for skip in inventory.skipped] == [plain]

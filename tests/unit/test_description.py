"""The `exec` and `wait` descriptions (spec §1.3, §1.2): Codex's texts, sections, order."""

from __future__ import annotations

from typing import Any

import pytest

from cellfleet.broker.contract.description import (
    DEFERRED_NESTED_TOOLS_GUIDANCE,
    EXEC_DESCRIPTION_TEMPLATE,
    LEGACY_IMAGE_HELPER_DESCRIPTION,
    MCP_TYPESCRIPT_PREAMBLE,
    UNIFIED_IMAGE_HELPER_DESCRIPTION,
    WAIT_DESCRIPTION_TEMPLATE,
    build_exec_tool_description,
    build_wait_tool_description,
    wait_tool_description,
)
from cellfleet.broker.contract.inventory import ToolInventory, build_inventory
from cellfleet.broker.contract.tools import NamespaceInfo, ToolDefinition

FENCE = "```"
EMPTY_OBJECT = {"type": "object", "properties": {}, "additionalProperties": False}


def mcp_output_schema(structured_content: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "content": {"type": "array", "items": {"type": "object"}},
            "structuredContent": structured_content,
            "isError": {"type": "boolean"},
            "_meta": {"type": "object"},
        },
        "required": ["content"],
        "additionalProperties": False,
    }


def describe(
    inventory: ToolInventory,
    *,
    code_mode_only: bool = True,
    default_exec_yield_time_ms: int = 10_000,
    **options: bool,
) -> str:
    """The description as the spec writes it (its texts predate Codex 0.169.0's: the
    `image()` line with detail controls, no tool-availability note), unless `options`
    say otherwise."""
    return build_exec_tool_description(
        inventory,
        default_exec_yield_time_ms=default_exec_yield_time_ms,
        code_mode_only=code_mode_only,
        **{"unified_image_budget": False, "tool_availability_note": False, **options},
    )


EXPECTED_HELPER_LINES = [
    "- Global helpers:",
    "- `exit()`: Immediately ends the current script successfully (like an early return from "
    "the top level).",
    "- `text(value: string | number | boolean | undefined | null)`: Appends a text item. "
    "Non-string values are stringified with `JSON.stringify(...)` when possible.",
    '- `image(imageUrlOrItem: string | { image_url: string; detail?: "auto" | "low" | "high" | '
    '"original" | null } | ImageContent, detail?: "auto" | "low" | "high" | "original" | null)`: '
    "Appends an image item. `image_url` should be a base64-encoded `data:` URL. To forward an "
    "MCP tool image, pass an individual `ImageContent` block from `result.content`, for example "
    "`image(result.content[0])`. MCP image blocks may request detail with `_meta: { "
    '"codex/imageDetail": "original" }`. When provided, the second `detail` argument overrides '
    "any detail embedded in the first argument.",
    "- `audio(audioUrlOrItem: string | { audio_url: string } | AudioContent)`: Appends an audio "
    "item. `audio_url` should be a base64-encoded `data:` URL. To forward an MCP tool audio "
    "block, pass an individual `AudioContent` block from `result.content`, for example "
    "`audio(result.content[0])`.",
    "- `generatedImage(result: { image_url: string; output_hint?: string })`: Appends an "
    "image-generation result and its optional output hint. HTTP(S) URLs are not supported.",
    "- `store(key: string, value: any)`: stores a serializable value under a string key for "
    "later `exec` calls in the same session.",
    "- `load(key: string)`: returns the stored value for a string key, or `undefined` if it is "
    "missing.",
    "- `notify(value: string | number | boolean | undefined | null)`: immediately injects an "
    "extra `custom_tool_call_output` for the current `exec` call. Values are stringified like "
    "`text(...)`.",
    "- `setTimeout(callback: () => void, delayMs?: number)`: schedules a callback to run later "
    "and returns a timeout id. Pending timeouts do not keep `exec` alive by themselves; await "
    "an explicit promise if you need to wait for one.",
    "- `clearTimeout(timeoutId?: number)`: cancels a timeout created by `setTimeout`.",
    "- `ALL_TOOLS`: metadata for the enabled nested tools as `{ name, description }` entries.",
    "- `yield_control()`: yields the accumulated output to the model immediately while the "
    "script keeps running.",
]


def test_base_template_text() -> None:
    lines = EXEC_DESCRIPTION_TEMPLATE.split("\n")
    assert lines[:11] == [
        "Run JavaScript code to orchestrate/compose tool calls",
        "- Evaluates the provided JavaScript code in a fresh V8 isolate as an async module.",
        "- All nested tools are available on the global `tools` object, for example "
        "`await tools.exec_command(...)`. Tool names are exposed as normalized JavaScript "
        "identifiers, for example `await tools.mcp__ologs__get_profile(...)`.",
        "- Nested tool methods take either a string or an object as their input argument.",
        "- Nested tools return either an object or a string, based on the description.",
        "- Runs raw JavaScript -- no Node, no file system, no network access, no console.",
        "- Accepts raw JavaScript source text, not JSON, quoted strings, or markdown code fences.",
        "- You may optionally start the tool input with a first-line pragma like "
        '`// @exec: {"yield_time_ms": 10000, "max_output_tokens": 1000}`.',
        "- `yield_time_ms` asks `exec` to yield early if the script is still running. "
        "Defaults to 10000 ms.",
        "- `max_output_tokens` sets the token budget for direct `exec` results. "
        "Defaults to 10000 tokens.",
        "- When the JS code is fully evaluated, the isolate's lifetime ends and unawaited "
        "promises are silently discarded.",
    ]
    assert lines[11] == ""
    assert lines[12:] == EXPECTED_HELPER_LINES


def test_default_mode_is_the_template_with_the_effective_default() -> None:
    description = describe(
        build_inventory([]), code_mode_only=False, default_exec_yield_time_ms=30_000
    )
    assert description == EXEC_DESCRIPTION_TEMPLATE.replace(
        "Defaults to 10000 ms.", "Defaults to 30000 ms."
    )
    assert "Defaults to 30000 ms." in description
    assert "Defaults to 10000 ms." not in description
    assert "Defaults to 10000 tokens." in description


def test_current_reference_helpers_are_not_mentioned() -> None:
    description = describe(build_inventory([]))
    for helper in ("as_settled", "stream_settled", "content("):
        assert helper not in description


def test_unified_image_budget_hides_detail_controls() -> None:
    description = describe(build_inventory([]), code_mode_only=False, unified_image_budget=True)
    assert (
        "- `image(imageUrlOrItem: string | { image_url: string } | ImageContent)`: Appends an "
        "image item. `image_url` should be a base64-encoded `data:` URL. To forward an MCP tool "
        "image, pass an individual `ImageContent` block from `result.content`, for example "
        "`image(result.content[0])`.\n- `audio(" in description
    )
    assert "codex/imageDetail" not in description
    assert "detail?:" not in description


def test_deferred_guidance_needs_a_deferred_tool_and_tool_search() -> None:
    deferred = build_inventory(
        [ToolDefinition(name="deferred_tool", description="D", deferred=True)]
    )
    description = describe(deferred, code_mode_only=False)
    assert description == EXEC_DESCRIPTION_TEMPLATE + "\n\n" + DEFERRED_NESTED_TOOLS_GUIDANCE
    assert DEFERRED_NESTED_TOOLS_GUIDANCE == (
        "Some deferred nested tools may be omitted from this description. They are still "
        "available on the global `tools` object and listed in `ALL_TOOLS`.\n"
        "To find one, filter `ALL_TOOLS` by `name` and `description`."
    )
    assert "Some deferred nested tools may be omitted" not in describe(
        deferred, code_mode_only=False, deferred_tools_supported=False
    )
    plain = build_inventory([ToolDefinition(name="plain")])
    assert "Some deferred nested tools may be omitted" not in describe(plain)


def test_default_mode_never_lists_tools() -> None:
    inventory = build_inventory([ToolDefinition(name="foo", description="bar")])
    assert describe(inventory, code_mode_only=False) == EXEC_DESCRIPTION_TEMPLATE


def test_code_mode_only_lists_nested_tools() -> None:
    inventory = build_inventory([ToolDefinition(name="foo", description="bar")])
    assert describe(inventory) == (
        EXEC_DESCRIPTION_TEMPLATE
        + "\n\n### `foo`\nbar\n\nexec tool declaration:\n"
        + f"{FENCE}ts\ndeclare const tools: {{ foo(args: unknown): Promise<unknown>; }};\n{FENCE}"
    )


def test_heading_shows_the_raw_name_when_normalization_changed_it() -> None:
    inventory = build_inventory([ToolDefinition(name="hidden-dynamic-tool", description="d")])
    assert "\n\n### `hidden_dynamic_tool` (`hidden-dynamic-tool`)\nd\n\n" in describe(inventory)


def sample_tool(name: str, description: str) -> ToolDefinition:
    return ToolDefinition(
        name=name,
        namespace="mcp__sample__",
        description=description,
        input_schema=EMPTY_OBJECT,
        output_schema=mcp_output_schema(EMPTY_OBJECT),
    )


def test_shared_mcp_types_once_and_namespace_heading_once() -> None:
    namespaces = {
        "mcp__sample__": NamespaceInfo(
            name="mcp__sample__",
            display_name="mcp__sample",
            description=" Shared namespace guidance. ",
        )
    }
    inventory = build_inventory(
        [sample_tool("beta", "Second tool"), sample_tool("alpha", "First tool")], namespaces
    )
    description = describe(inventory)
    shared = f"Shared MCP Types:\n{FENCE}ts\n{MCP_TYPESCRIPT_PREAMBLE}\n{FENCE}"
    assert description.count("Shared MCP Types:") == 1
    assert description.count("type CallToolResult<TStructured = { [key: string]: unknown }>") == 1
    assert description == (
        f"{EXEC_DESCRIPTION_TEMPLATE}\n\n{shared}\n\n"
        "## mcp__sample\nShared namespace guidance.\n\n"
        "### `mcp__sample__alpha`\nFirst tool\n\nexec tool declaration:\n"
        f"{FENCE}ts\ndeclare const tools: {{ mcp__sample__alpha(args: {{}}): "
        f"Promise<CallToolResult<{{}}>>; }};\n{FENCE}\n\n"
        "### `mcp__sample__beta`\nSecond tool\n\nexec tool declaration:\n"
        f"{FENCE}ts\ndeclare const tools: {{ mcp__sample__beta(args: {{}}): "
        f"Promise<CallToolResult<{{}}>>; }};\n{FENCE}"
    )
    # The per-tool sections carry the tool's own description; ALL_TOOLS carries the
    # namespace text too.
    assert inventory.all_tools()[0]["description"].startswith(
        "Shared namespace guidance.\n\nFirst tool\n\nexec tool declaration:"
    )


def test_empty_namespace_description_gives_no_heading() -> None:
    namespaces = {"mcp__sample__": NamespaceInfo(name="mcp__sample__", description="")}
    inventory = build_inventory([sample_tool("alpha", "First tool")], namespaces)
    description = describe(inventory)
    assert "\n## " not in description
    assert f"{FENCE}\n\n### `mcp__sample__alpha`\nFirst tool" in description


def test_deferred_mcp_tool_brings_shared_types_but_is_not_listed() -> None:
    deferred = sample_tool("alpha", "Deferred tool")
    inventory = build_inventory([ToolDefinition(**{**_fields(deferred), "deferred": True})])
    description = describe(inventory)
    assert "Some deferred nested tools may be omitted" in description
    assert "Shared MCP Types:" in description
    assert "### `mcp__sample__alpha`" not in description
    assert "Shared MCP Types:" not in describe(inventory, deferred_tools_supported=False)


def _fields(definition: ToolDefinition) -> dict[str, Any]:
    return {name: getattr(definition, name) for name in definition.__dataclass_fields__}


def test_sections_are_ordered_by_namespace_then_tool_name() -> None:
    namespaces = {
        "ns_b__": NamespaceInfo(name="ns_b__", display_name="Bravo", description="B tools."),
        "ns_a__": NamespaceInfo(name="ns_a__", display_name="Zulu", description="Z tools."),
        "ns_c__": NamespaceInfo(name="ns_c__", display_name="Bravo", description="More B."),
    }
    inventory = build_inventory(
        [
            ToolDefinition(name="two", namespace="ns_b__", description="b2"),
            ToolDefinition(name="one", namespace="ns_a__", description="z1"),
            ToolDefinition(name="zz_plain", description="p2"),
            ToolDefinition(name="one", namespace="ns_b__", description="b1"),
            ToolDefinition(name="aa_plain", description="p1"),
            ToolDefinition(name="three", namespace="ns_c__", description="c3"),
            ToolDefinition(name="x", namespace="unknown_ns__", description="u"),
        ],
        namespaces,
    )
    description = describe(inventory)
    headings = [line for line in description.split("\n") if line.startswith("#")]
    assert headings == [
        "### `aa_plain`",
        "### `unknown_ns__x`",
        "### `zz_plain`",
        "## Bravo",
        "### `ns_b__one`",
        "### `ns_c__three`",  # same display name: no new heading
        "### `ns_b__two`",
        "## Zulu",
        "### `ns_a__one`",
    ]
    assert "## Bravo\nB tools.\n\n### `ns_b__one`\nb1\n" in description


@pytest.mark.parametrize("code_mode_only", [True, False])
def test_exec_description_starts_with_the_first_line(code_mode_only: bool) -> None:
    assert describe(build_inventory([]), code_mode_only=code_mode_only).startswith(
        "Run JavaScript code to orchestrate/compose tool calls\n- Evaluates"
    )


def test_wait_descriptions() -> None:
    assert build_wait_tool_description() == WAIT_DESCRIPTION_TEMPLATE
    assert wait_tool_description() == (
        "Waits on a yielded `exec` cell and returns new output or completion.\n"
        "- Use `wait` only after `exec` returns `Script running with cell ID ...`.\n"
        "- `cell_id` identifies the running `exec` cell to resume.\n"
        "- `yield_time_ms` controls how long to wait for more output before yielding again. "
        "Defaults to 10000 ms.\n"
        "- `max_tokens` limits how much new output this wait call returns. "
        "Defaults to 10000 tokens.\n"
        "- `terminate: true` stops the running cell; false or omitted waits for output.\n"
        "- `wait` returns only the new output since the last yield, or the final completion or "
        "termination result for that cell.\n"
        "- If the cell is still running, `wait` may yield again with the same `cell_id`.\n"
        "- If the cell has already finished, `wait` returns the completed result and closes the "
        "cell."
    )


def test_the_default_is_codex_0169s_text() -> None:
    """What the real Codex CLI 0.169.0 sends its model (tests/host/test_codex_cli.py checks
    it against the binary): the `image()` line without detail controls, and a last
    paragraph to the deferred-tools guidance."""
    inventory = build_inventory(
        [ToolDefinition(name="shown"), ToolDefinition(name="hidden", deferred=True)]
    )
    text = build_exec_tool_description(
        inventory, default_exec_yield_time_ms=30_000, code_mode_only=False
    )
    assert UNIFIED_IMAGE_HELPER_DESCRIPTION in text
    assert LEGACY_IMAGE_HELPER_DESCRIPTION not in text
    assert text.endswith(
        "To find one, filter `ALL_TOOLS` by `name` and `description`.\n\n"
        "Tool availability can change between calls."
    )
    older = build_exec_tool_description(
        inventory,
        default_exec_yield_time_ms=30_000,
        code_mode_only=False,
        unified_image_budget=False,
        tool_availability_note=False,
    )
    assert LEGACY_IMAGE_HELPER_DESCRIPTION in older
    assert older.endswith("To find one, filter `ALL_TOOLS` by `name` and `description`.")

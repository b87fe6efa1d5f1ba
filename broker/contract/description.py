"""The model-visible descriptions of the `exec` and `wait` tools (spec §1.3, §1.2).

The templates are Codex's own texts, verbatim (`code-mode-protocol/src/description.rs`,
upstream `main`, August 2026): they are the contract the model was trained against. The
`exec` description is built like `build_exec_tool_description`:

1. the base template, with the effective default yield time and, under the unified image
   budget, the `image()` helper without detail controls;
2. the deferred-tools guidance, when deferred tools exist and the model has tool search;
3. in `code_mode_only` mode only: the shared MCP types (once, if any tool has an
   MCP-shaped output schema) and one section per non-deferred tool, grouped under
   `## {namespace}` headings.
"""

from __future__ import annotations

from typing import Final

from cellfleet.broker.contract.inventory import (
    PUBLIC_TOOL_NAME,
    InventoryEntry,
    ToolInventory,
    augmented_description,
    is_mcp_shaped,
    namespace_display_name,
)
from cellfleet.broker.contract.rust.text import rust_trim

__all__ = [
    "DEFERRED_NESTED_TOOLS_GUIDANCE",
    "EXEC_DESCRIPTION_TEMPLATE",
    "MCP_TYPESCRIPT_PREAMBLE",
    "WAIT_DESCRIPTION_TEMPLATE",
    "build_exec_tool_description",
    "build_wait_tool_description",
    "wait_tool_description",
]

DEFERRED_NESTED_TOOLS_GUIDANCE: Final = (
    "Some deferred nested tools may be omitted from this description. They are still "
    "available on the global `tools` object and listed in `ALL_TOOLS`.\n"
    "To find one, filter `ALL_TOOLS` by `name` and `description`."
)

LEGACY_IMAGE_HELPER_DESCRIPTION: Final = (
    '`image(imageUrlOrItem: string | { image_url: string; detail?: "auto" | "low" | "high" '
    '| "original" | null } | ImageContent, detail?: "auto" | "low" | "high" | "original" | '
    "null)`: Appends an image item. `image_url` should be a base64-encoded `data:` URL. To "
    "forward an MCP tool image, pass an individual `ImageContent` block from "
    "`result.content`, for example `image(result.content[0])`. MCP image blocks may request "
    'detail with `_meta: { "codex/imageDetail": "original" }`. When provided, the second '
    "`detail` argument overrides any detail embedded in the first argument."
)

# Codex 0.169.0 ends the deferred-tools guidance with this paragraph (checked against the
# description the real CLI sends its model; tests/host/test_codex_cli.py).
TOOL_AVAILABILITY_NOTE: Final = "Tool availability can change between calls."

UNIFIED_IMAGE_HELPER_DESCRIPTION: Final = (
    "`image(imageUrlOrItem: string | { image_url: string } | ImageContent)`: Appends an "
    "image item. `image_url` should be a base64-encoded `data:` URL. To forward an MCP tool "
    "image, pass an individual `ImageContent` block from `result.content`, for example "
    "`image(result.content[0])`."
)

EXEC_DESCRIPTION_TEMPLATE: Final = f"""\
Run JavaScript code to orchestrate/compose tool calls
- Evaluates the provided JavaScript code in a fresh V8 isolate as an async module.
- All nested tools are available on the global `tools` object, for example \
`await tools.exec_command(...)`. Tool names are exposed as normalized JavaScript \
identifiers, for example `await tools.mcp__ologs__get_profile(...)`.
- Nested tool methods take either a string or an object as their input argument.
- Nested tools return either an object or a string, based on the description.
- Runs raw JavaScript -- no Node, no file system, no network access, no console.
- Accepts raw JavaScript source text, not JSON, quoted strings, or markdown code fences.
- You may optionally start the tool input with a first-line pragma like \
`// @exec: {{"yield_time_ms": 10000, "max_output_tokens": 1000}}`.
- `yield_time_ms` asks `exec` to yield early if the script is still running. Defaults to \
10000 ms.
- `max_output_tokens` sets the token budget for direct `exec` results. Defaults to 10000 \
tokens.
- When the JS code is fully evaluated, the isolate's lifetime ends and unawaited promises \
are silently discarded.

- Global helpers:
- `exit()`: Immediately ends the current script successfully (like an early return from \
the top level).
- `text(value: string | number | boolean | undefined | null)`: Appends a text item. \
Non-string values are stringified with `JSON.stringify(...)` when possible.
- {LEGACY_IMAGE_HELPER_DESCRIPTION}
- `audio(audioUrlOrItem: string | {{ audio_url: string }} | AudioContent)`: Appends an \
audio item. `audio_url` should be a base64-encoded `data:` URL. To forward an MCP tool \
audio block, pass an individual `AudioContent` block from `result.content`, for example \
`audio(result.content[0])`.
- `generatedImage(result: {{ image_url: string; output_hint?: string }})`: Appends an \
image-generation result and its optional output hint. HTTP(S) URLs are not supported.
- `store(key: string, value: any)`: stores a serializable value under a string key for \
later `exec` calls in the same session.
- `load(key: string)`: returns the stored value for a string key, or `undefined` if it is \
missing.
- `notify(value: string | number | boolean | undefined | null)`: immediately injects an \
extra `custom_tool_call_output` for the current `exec` call. Values are stringified like \
`text(...)`.
- `setTimeout(callback: () => void, delayMs?: number)`: schedules a callback to run later \
and returns a timeout id. Pending timeouts do not keep `exec` alive by themselves; await an \
explicit promise if you need to wait for one.
- `clearTimeout(timeoutId?: number)`: cancels a timeout created by `setTimeout`.
- `ALL_TOOLS`: metadata for the enabled nested tools as `{{ name, description }}` entries.
- `yield_control()`: yields the accumulated output to the model immediately while the \
script keeps running."""

WAIT_DESCRIPTION_TEMPLATE: Final = """\
- Use `wait` only after `exec` returns `Script running with cell ID ...`.
- `cell_id` identifies the running `exec` cell to resume.
- `yield_time_ms` controls how long to wait for more output before yielding again. \
Defaults to 10000 ms.
- `max_tokens` limits how much new output this wait call returns. Defaults to 10000 tokens.
- `terminate: true` stops the running cell; false or omitted waits for output.
- `wait` returns only the new output since the last yield, or the final completion or \
termination result for that cell.
- If the cell is still running, `wait` may yield again with the same `cell_id`.
- If the cell has already finished, `wait` returns the completed result and closes the \
cell."""

# Based on https://modelcontextprotocol.io/specification/draft/schema#calltoolresult
MCP_TYPESCRIPT_PREAMBLE: Final = """\
type Role = "user" | "assistant";
type MetaObject = Record<string, unknown>;
type Annotations = {
  audience?: Role[];
  priority?: number;
  lastModified?: string;
};
type Icon = {
  src: string;
  mimeType?: string;
  sizes?: string[];
  theme?: "light" | "dark";
};
type TextResourceContents = {
  uri: string;
  mimeType?: string;
  _meta?: MetaObject;
  text: string;
};
type BlobResourceContents = {
  uri: string;
  mimeType?: string;
  _meta?: MetaObject;
  blob: string;
};
type TextContent = {
  type: "text";
  text: string;
  annotations?: Annotations;
  _meta?: MetaObject;
};
type ImageContent = {
  type: "image";
  data: string;
  mimeType: string;
  annotations?: Annotations;
  _meta?: MetaObject;
};
type AudioContent = {
  type: "audio";
  data: string;
  mimeType: string;
  annotations?: Annotations;
  _meta?: MetaObject;
};
type ResourceLink = {
  icons?: Icon[];
  name: string;
  title?: string;
  uri: string;
  description?: string;
  mimeType?: string;
  annotations?: Annotations;
  size?: number;
  _meta?: MetaObject;
  type: "resource_link";
};
type EmbeddedResource = {
  type: "resource";
  resource: TextResourceContents | BlobResourceContents;
  annotations?: Annotations;
  _meta?: MetaObject;
};
type ContentBlock =
  | TextContent
  | ImageContent
  | AudioContent
  | ResourceLink
  | EmbeddedResource;
type CallToolResult<TStructured = { [key: string]: unknown }> = {
  _meta?: MetaObject;
  content: ContentBlock[];
  isError?: boolean;
  structuredContent?: TStructured;
  [key: string]: unknown;
};"""

_FENCE: Final = "```"


def build_exec_tool_description(
    inventory: ToolInventory,
    *,
    default_exec_yield_time_ms: int,
    code_mode_only: bool,
    deferred_tools_supported: bool = True,
    unified_image_budget: bool = True,
    tool_availability_note: bool = True,
) -> str:
    """The `exec` tool's description for this inventory (spec §1.3), as Codex 0.169.0
    writes it by default; `unified_image_budget=False` and `tool_availability_note=False`
    give the earlier texts (the `image()` line with detail controls; the deferred-tools
    guidance without its last paragraph)."""
    base = EXEC_DESCRIPTION_TEMPLATE.replace(
        "Defaults to 10000 ms.", f"Defaults to {default_exec_yield_time_ms} ms."
    )
    if unified_image_budget:
        base = base.replace(LEGACY_IMAGE_HELPER_DESCRIPTION, UNIFIED_IMAGE_HELPER_DESCRIPTION)
    sections = [base]
    enabled = inventory.enabled()
    deferred = inventory.deferred() if deferred_tools_supported else ()
    if deferred:
        sections.append(DEFERRED_NESTED_TOOLS_GUIDANCE)
        if tool_availability_note:
            sections.append(TOOL_AVAILABILITY_NOTE)
    if not code_mode_only:
        return "\n\n".join(sections)
    if any(is_mcp_shaped(entry.definition.output_schema) for entry in (*enabled, *deferred)):
        sections.append(f"Shared MCP Types:\n{_FENCE}ts\n{MCP_TYPESCRIPT_PREAMBLE}\n{_FENCE}")
    if enabled:
        sections.append(_nested_tool_reference(inventory, enabled))
    return "\n\n".join(sections)


def _nested_tool_reference(inventory: ToolInventory, enabled: tuple[InventoryEntry, ...]) -> str:
    """One section per tool, in namespace / tool name order, with namespace headings."""

    def sort_key(entry: InventoryEntry) -> tuple[int, str, str, str]:
        info = inventory.namespace_of(entry.definition)
        namespace = "" if info is None else namespace_display_name(info)
        return (0 if info is None else 1, namespace, entry.definition.name, entry.code_mode_name)

    sections: list[str] = []
    current_namespace: str | None = None
    for entry in sorted(enabled, key=sort_key):
        info = inventory.namespace_of(entry.definition)
        next_namespace = None if info is None else namespace_display_name(info)
        if next_namespace != current_namespace:
            namespace_text = "" if info is None else rust_trim(info.description)
            if namespace_text:
                sections.append(f"## {next_namespace}\n{namespace_text}")
            current_namespace = next_namespace
        heading = _tool_heading(entry.global_name, entry.code_mode_name)
        # The exec prompt shows the tool's own description: the namespace text is in the
        # heading above, unlike `ALL_TOOLS`, which carries it in every entry.
        nested_description = rust_trim(augmented_description(entry.definition))
        sections.append(f"{heading}\n{nested_description}" if nested_description else heading)
    return "\n\n".join(sections)


def _tool_heading(global_name: str, raw_name: str) -> str:
    if global_name == raw_name:
        return f"### `{global_name}`"
    return f"### `{global_name}` (`{raw_name}`)"


def build_wait_tool_description() -> str:
    """The `wait` template (Codex's `build_wait_tool_description`)."""
    return WAIT_DESCRIPTION_TEMPLATE


def wait_tool_description() -> str:
    """The full `wait` tool description: a summary line, then the template."""
    return (
        f"Waits on a yielded `{PUBLIC_TOOL_NAME}` cell and returns new output or completion.\n"
        f"{rust_trim(WAIT_DESCRIPTION_TEMPLATE)}"
    )

"""The Responses-API tool specs of `exec` and `wait` (spec §1.1, §1.2).

Shapes as Codex serializes them: `exec` is a custom (freeform) tool whose input is
constrained by a Lark grammar (`create_code_mode_tool`), `wait` a non-strict function tool
(`create_wait_tool`, properties in sorted order as Codex's `BTreeMap` emits them).
"""

from __future__ import annotations

from typing import Final

from cellfleet.broker.contract.description import wait_tool_description
from cellfleet.broker.contract.inventory import PUBLIC_TOOL_NAME, WAIT_TOOL_NAME
from cellfleet.broker.contract.tools import JsonValue

__all__ = ["CODE_MODE_FREEFORM_GRAMMAR", "exec_tool_spec", "wait_tool_spec"]

# Verbatim, including the leading and trailing newline of Codex's raw string literal.
CODE_MODE_FREEFORM_GRAMMAR: Final = r"""
start: pragma_source | plain_source
pragma_source: PRAGMA_LINE NEWLINE SOURCE
plain_source: SOURCE

PRAGMA_LINE: /[ \t]*\/\/ @exec:[^\r\n]*/
NEWLINE: /\r?\n/
SOURCE: /[\s\S]+/
"""


def exec_tool_spec(description: str) -> dict[str, JsonValue]:
    """The `exec` custom tool (`{"type": "custom", ...}`) with the given description."""
    return {
        "type": "custom",
        "name": PUBLIC_TOOL_NAME,
        "description": description,
        "format": {"type": "grammar", "syntax": "lark", "definition": CODE_MODE_FREEFORM_GRAMMAR},
    }


def _property(schema_type: str, description: str) -> dict[str, JsonValue]:
    return {"type": schema_type, "description": description}


def wait_tool_spec() -> dict[str, JsonValue]:
    """The `wait` function tool (`strict: false`, `cell_id` required, nothing else allowed)."""
    properties: dict[str, JsonValue] = {
        "cell_id": _property("string", "Identifier of the running exec cell."),
        "max_tokens": _property(
            "number", "Output token budget for this wait call. Defaults to 10000 tokens."
        ),
        "terminate": _property(
            "boolean", "True stops the running exec cell; false or omitted waits for output."
        ),
        "yield_time_ms": _property(
            "number", "Wait before yielding more output. Defaults to 10000 ms."
        ),
    }
    return {
        "type": "function",
        "name": WAIT_TOOL_NAME,
        "description": wait_tool_description(),
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": ["cell_id"],
            "additionalProperties": False,
        },
    }

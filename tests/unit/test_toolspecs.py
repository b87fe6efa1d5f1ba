"""Responses-API specs of `exec` (custom tool + Lark grammar) and `wait` (spec §1.1, §1.2)."""

from __future__ import annotations

import re

from cellfleet.broker.contract.description import wait_tool_description
from cellfleet.broker.contract.tool_specs import (
    CODE_MODE_FREEFORM_GRAMMAR,
    exec_tool_spec,
    wait_tool_spec,
)


def test_grammar_is_codex_text_verbatim() -> None:
    assert CODE_MODE_FREEFORM_GRAMMAR == (
        "\n"
        "start: pragma_source | plain_source\n"
        "pragma_source: PRAGMA_LINE NEWLINE SOURCE\n"
        "plain_source: SOURCE\n"
        "\n"
        "PRAGMA_LINE: /[ \\t]*\\/\\/ @exec:[^\\r\\n]*/\n"
        "NEWLINE: /\\r?\\n/\n"
        "SOURCE: /[\\s\\S]+/\n"
    )


def test_exec_spec_shape() -> None:
    assert exec_tool_spec("the description") == {
        "type": "custom",
        "name": "exec",
        "description": "the description",
        "format": {"type": "grammar", "syntax": "lark", "definition": CODE_MODE_FREEFORM_GRAMMAR},
    }


def test_grammar_terminals_accept_what_the_parser_accepts() -> None:
    pragma_line = re.compile(r"[ \t]*\/\/ @exec:[^\r\n]*")
    assert pragma_line.fullmatch('  // @exec: {"yield_time_ms": 5}')
    assert not pragma_line.fullmatch("//@exec: {}")


def test_wait_spec_is_exact() -> None:
    assert wait_tool_spec() == {
        "type": "function",
        "name": "wait",
        "description": wait_tool_description(),
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {
                "cell_id": {
                    "type": "string",
                    "description": "Identifier of the running exec cell.",
                },
                "max_tokens": {
                    "type": "number",
                    "description": "Output token budget for this wait call. "
                    "Defaults to 10000 tokens.",
                },
                "terminate": {
                    "type": "boolean",
                    "description": "True stops the running exec cell; "
                    "false or omitted waits for output.",
                },
                "yield_time_ms": {
                    "type": "number",
                    "description": "Wait before yielding more output. Defaults to 10000 ms.",
                },
            },
            "required": ["cell_id"],
            "additionalProperties": False,
        },
    }


def test_wait_spec_key_order_matches_codex_serialization() -> None:
    spec = wait_tool_spec()
    assert list(spec) == ["type", "name", "description", "strict", "parameters"]
    parameters = spec["parameters"]
    assert isinstance(parameters, dict)
    assert list(parameters) == ["type", "properties", "required", "additionalProperties"]
    properties = parameters["properties"]
    assert isinstance(properties, dict)
    assert list(properties) == ["cell_id", "max_tokens", "terminate", "yield_time_ms"]


def test_a_session_gives_the_specs_for_its_own_tools() -> None:
    """What a harness hands the model, from the session it opened (no Redis needed)."""
    from cellfleet.broker.client import Session
    from cellfleet.broker.contract.inventory import build_inventory
    from cellfleet.broker.contract.tools import ToolDefinition

    inventory = build_inventory(
        [ToolDefinition(name="lookup", description="Find a word.", input_schema={"type": "object"})]
    )
    session = Session(_NoBackend(), inventory=inventory, default_exec_yield_time_ms=30_000)
    exec_spec, wait_spec = session.tool_specs()
    assert (exec_spec["name"], wait_spec) == ("exec", wait_tool_spec())
    description = exec_spec["description"]
    assert isinstance(description, str)
    assert "Defaults to 30000 ms." in description
    assert "lookup" in description  # code_mode_only: the nested tools are declared
    mixed = session.tool_specs(code_mode_only=False)[0]["description"]
    assert isinstance(mixed, str)
    assert "lookup" not in mixed


class _NoBackend:
    session_id = "s"

    def shutdown(self, timeout: float = 0) -> None:
        return None

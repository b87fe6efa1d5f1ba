"""The tool registration API: definitions, schemas from type hints, invocation."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Literal

import pytest

from cellfleet.broker.contract.tools import ToolKind
from cellfleet.broker.tools.registry import RetryPolicy, ToolCallError, ToolContext, ToolRegistry


def test_function_tool_schema_from_type_hints() -> None:
    tools = ToolRegistry()

    @tools.function(namespace="mcp__math__")
    def add(
        a: float, b: int = 0, mode: Literal["fast", "exact"] = "fast", tags: list[str] | None = None
    ) -> float:
        """Add two numbers."""
        return a + b

    (definition,) = tools.definitions
    assert definition.name == "add"
    assert definition.namespace == "mcp__math__"
    assert definition.description == "Add two numbers."
    assert definition.kind is ToolKind.FUNCTION
    assert definition.input_schema == {
        "type": "object",
        "properties": {
            "a": {"type": "number"},
            "b": {"type": "integer"},
            "mode": {"enum": ["fast", "exact"]},
            "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        },
        "additionalProperties": False,
        "required": ["a"],
    }
    spec = tools.spec("add")
    assert spec is not None
    assert spec.invoke({"a": 1.5, "b": 2}, ToolContext(idempotency_key="k")) == 3.5


def test_explicit_schema_and_args_object() -> None:
    tools = ToolRegistry()
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}

    @tools.function(description="Search.", input_schema=schema)
    def search(args: dict[str, str]) -> dict[str, str]:
        return {"echo": args["q"]}

    spec = tools.spec("search")
    assert spec is not None
    assert spec.definition.input_schema == schema
    assert spec.invoke({"q": "x"}, ToolContext(idempotency_key="k")) == {"echo": "x"}
    with pytest.raises(KeyError):  # no input: the handler gets an empty object
        spec.invoke(None, ToolContext(idempotency_key="k"))


def test_context_and_async_handlers() -> None:
    tools = ToolRegistry()
    seen: list[str] = []

    @tools.function()
    async def remember(note: str, ctx: ToolContext) -> str:
        seen.append(ctx.idempotency_key)
        return note.upper()

    spec = tools.spec("remember")
    assert spec is not None
    assert spec.definition.input_schema == {
        "type": "object",
        "properties": {"note": {"type": "string"}},
        "additionalProperties": False,
        "required": ["note"],
    }
    assert spec.invoke({"note": "hi"}, ToolContext(idempotency_key="s/1/tool-1")) == "HI"
    assert seen == ["s/1/tool-1"]


def test_freeform_tool_gets_the_raw_string() -> None:
    tools = ToolRegistry()

    @tools.freeform(description="Apply a patch.", retry=RetryPolicy(attempts=3))
    def apply_patch(patch: str) -> str:
        return f"applied {len(patch)}"

    spec = tools.spec("apply_patch")
    assert spec is not None
    assert spec.definition.kind is ToolKind.FREEFORM
    assert spec.definition.input_schema is None
    assert spec.retry.attempts == 3
    assert spec.invoke("abc", ToolContext(idempotency_key="k")) == "applied 3"


def test_bad_keyword_arguments_are_a_tool_error() -> None:
    tools = ToolRegistry()

    @tools.function()
    def greet(name: str) -> str:
        return f"hi {name}"

    spec = tools.spec("greet")
    assert spec is not None
    with pytest.raises(ToolCallError, match="invalid arguments"):
        spec.invoke({"nom": "x"}, ToolContext(idempotency_key="k"))
    with pytest.raises(ToolCallError, match="must be a JSON object"):
        spec.invoke([1], ToolContext(idempotency_key="k"))


def test_duplicate_names_are_refused() -> None:
    tools = ToolRegistry()
    tools.function(name="x")(lambda args: args)
    with pytest.raises(ValueError, match="registered twice"):
        tools.function(name="x")(lambda args: args)


def _fingerprint_in_a_process(hash_seed: str, source: str) -> str:
    program = (
        "from cellfleet.broker.tools.registry import ToolRegistry\n"
        f"{source}\nprint(registry.fingerprint)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, check=True, text=True
    )
    return done.stdout.strip()


def test_the_fingerprint_tells_handlers_apart_and_is_stable_across_processes() -> None:
    """Calls are routed by the fingerprint: two hosts whose tools look alike but run
    different code must not share workers; two processes loading the same tools file must
    (string hashing, and so set constants' order, differs between processes)."""
    same_definition = "registry = ToolRegistry.from_handlers({{'echo': lambda value: {body}}})"
    mine = same_definition.format(body="value if value in {'a', 'b', 'c', 'd'} else None")
    theirs = same_definition.format(body="None")
    assert _fingerprint_in_a_process("1", mine) == _fingerprint_in_a_process("2", mine)
    assert _fingerprint_in_a_process("1", mine) != _fingerprint_in_a_process("1", theirs)

    registry = ToolRegistry.from_handlers({"echo": lambda value: value})
    assert (
        registry.fingerprint
        == ToolRegistry.from_handlers({"echo": lambda value: value}).fingerprint
    )

"""Decoding an execute's tool list: Codex sends the same list with every execute, and a
list decoded before is looked up by its JSON text (`messages._tools`); what it decodes
to, and how a bad list fails, must not depend on that."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cellfleet.broker.contract.tools import ToolKind
from cellfleet.broker.host_protocol import messages
from cellfleet.broker.host_protocol.messages import (
    DecodeError,
    Execute,
    OperationRequest,
    WireTool,
    decode_message,
    parse,
)


def _tool(name: str, description: str = "d", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tool_name": {"name": name, "namespace": None},
        "description": description,
        "kind": "function",
        "input_schema": {"type": "object"},
        "output_schema": None,
        **extra,
    }


def _tools_of(tools: Any, *, parsed: bool = True) -> tuple[WireTool, ...]:
    body = {"tool_call_id": "c", "enabled_tools": tools, "source": "1", "yield_time_ms": 5}
    frame = {"type": "operation/request", "id": 1, "request": {
        "method": "session/execute", "sessionId": "s", "request": body}}  # fmt: skip
    message = decode_message(parse(orjson.dumps(frame)) if parsed else frame)
    assert isinstance(message, OperationRequest)
    assert isinstance(message.request, Execute)
    return message.request.tools


def test_the_same_tool_list_decodes_the_same_every_time() -> None:
    tools = [_tool("a"), _tool("b", "second")]
    expected = (
        WireTool("a", "a", None, "d", ToolKind.FUNCTION),
        WireTool("b", "b", None, "second", ToolKind.FUNCTION),
    )
    assert _tools_of(tools) == expected
    assert _tools_of(tools) == expected


def test_a_list_that_differs_in_one_tool_is_decoded_anew() -> None:
    assert _tools_of([_tool("a"), _tool("b")])[1].description == "d"
    assert _tools_of([_tool("a"), _tool("b", "changed")])[1].description == "changed"
    assert _tools_of([_tool("a")]) == (WireTool("a", "a", None, "d", ToolKind.FUNCTION),)


def test_a_bad_tool_list_fails_the_same_way_every_time() -> None:
    bad = [_tool("a"), _tool("b", extra=1)]
    expected = (
        "unknown field `extra`, expected one of `name`, `tool_name`, `description`, `kind`,"
        " `input_schema`, `output_schema`"
    )
    for _ in range(2):  # (a failure is not remembered: it is checked again)
        with pytest.raises(DecodeError) as raised:
            _tools_of(bad)
        assert str(raised.value) == expected
    with pytest.raises(DecodeError, match="invalid type: map, expected a sequence"):
        _tools_of({"name": "a"})


def test_a_tool_list_orjson_cannot_write_back_is_still_checked() -> None:
    """A value orjson cannot write back as JSON text (an integer beyond 64 bits, which
    a frame cannot hold: orjson reads one as a float) is checked as it is."""
    with pytest.raises(DecodeError, match="invalid type: integer `18446744073709551616`"):
        _tools_of([2**64], parsed=False)


def test_a_key_twice_is_refused_even_beside_an_escaped_quote() -> None:
    """The cheap check counts `":` in the frame against the keys orjson writes back; an
    escaped quote before a colon in a string (`\\u0022:`) made the counts agree."""
    with pytest.raises(DecodeError, match="duplicate field `a`"):
        parse(rb'{"a":1,"a":2,"b":"\u0022: "}')
    assert parse(rb'{"a":1,"b":"\u0022: "}') == {"a": 1, "b": '": '}


def test_a_long_tool_list_is_checked_each_time_not_kept() -> None:
    """A list longer than `MAX_CACHED_TOOLS_BYTES` is not kept (16 frames of up to 64 MiB
    must not pin a gigabyte); it decodes the same."""
    schema = {"type": "object", "description": "x" * messages.MAX_CACHED_TOOLS_BYTES}
    tools = [_tool("a", input_schema=schema)]
    messages._tools_in.cache_clear()
    assert _tools_of(tools) == (WireTool("a", "a", None, "d", ToolKind.FUNCTION),)
    assert messages._tools_in.cache_info().currsize == 0
    assert _tools_of([_tool("a")]) == (WireTool("a", "a", None, "d", ToolKind.FUNCTION),)
    assert messages._tools_in.cache_info().currsize == 1

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


# -- `read_message`: a frame whose tool list was read before reads only the rest ---------


def _execute_frame(tools_text: bytes, *, body_extra: bytes = b"", request_id: int = 1) -> bytes:
    """An execute frame as Codex writes it (compact), with `tools_text` as its list."""
    return (
        b'{"type":"operation/request","id":%d,"request":{"method":"session/execute",'
        b'"sessionId":"s","request":{"tool_call_id":"c%d",%s"enabled_tools":%s,'
        b'"source":"text(1)","yield_time_ms":5,"max_output_tokens":null}}}'
    ) % (request_id, request_id, body_extra, tools_text)


def _read_whole(frame: bytes) -> Any:
    try:
        return decode_message(parse(frame))
    except DecodeError as error:
        return f"DecodeError: {error}"


def _read(frame: bytes) -> Any:
    try:
        return messages.read_message(frame)
    except DecodeError as error:
        return f"DecodeError: {error}"


@pytest.fixture
def fresh_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messages, "_TOOL_LISTS", messages._ToolLists())


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every text `parse` reads."""
    seen: list[bytes] = []
    real = messages.parse

    def spying(payload: bytes) -> Any:
        seen.append(payload)
        return real(payload)

    monkeypatch.setattr(messages, "parse", spying)
    return seen


LIST = orjson.dumps([_tool("a"), _tool("b", "second", input_schema={"type": "object", "p": [1]})])


@pytest.mark.usefixtures("fresh_lists")
def test_a_known_tool_list_is_not_read_again(parsed: list[bytes]) -> None:
    first, second = _execute_frame(LIST), _execute_frame(LIST, request_id=2)
    assert _read(first) == _read_whole(first)
    assert parsed == [first]
    parsed.clear()
    read = messages.read_message(second)
    assert len(parsed) == 1
    assert LIST not in parsed[0]
    assert len(parsed[0]) < len(second) - len(LIST) + 100
    assert read == _read_whole(second)
    assert isinstance(read, OperationRequest)
    assert isinstance(read.request, Execute)
    assert read.request.tool_call_id == "c2"
    assert read.request.tools[1].description == "second"


@pytest.mark.usefixtures("fresh_lists")
@pytest.mark.parametrize(
    "frame",
    [
        # a key twice beside the known list, before and after it
        _execute_frame(LIST, body_extra=b'"source":"x",'),
        _execute_frame(LIST).replace(b'"yield_time_ms":5', b'"yield_time_ms":5,"source":"y"'),
        _execute_frame(LIST, body_extra=b'"enabled_tools":[],'),
        # the known list as the value of another key that ends in `enabled_tools`
        # (its quote escaped), before the execute's own
        _execute_frame(LIST, body_extra=b'"x\\"enabled_tools":' + LIST + b","),
        # the known list inside an unknown field, before the execute's own
        _execute_frame(LIST, body_extra=b'"x":{"enabled_tools":' + LIST + b"},"),
        # the known list's text followed by more of a list: not the list it was
        _execute_frame(LIST[:-1] + b',{"name":"c"}]'),
        # the known list, a key twice inside one of its tools
        _execute_frame(LIST.replace(b'"kind":"function"', b'"kind":"function","kind":"x"', 1)),
        # the rest of the frame not JSON, or nested too deep
        _execute_frame(LIST)[:-1],
        _execute_frame(LIST, body_extra=b'"x":' + b"[" * 200 + b"]" * 200 + b","),
        # not an execute
        _execute_frame(LIST).replace(b"session/execute", b"session/wait"),
        _execute_frame(LIST).replace(b"operation/request", b"operation/cancel"),
        _execute_frame(LIST).replace(b'"type":"operation/request",', b""),
        b'{"type":"delegate/response","id":1,"result":{"enabled_tools":' + LIST + b"}}",
        b'["enabled_tools":' + LIST + b"]",
    ],
)
def test_a_frame_with_a_known_list_reads_as_the_whole_frame_does(frame: bytes) -> None:
    """Whatever surrounds a known list's text, the message (or the exact error) is the
    one the frame read whole gives."""
    _read(_execute_frame(LIST))  # (now known)
    assert _read(frame) == _read_whole(frame)


@pytest.mark.usefixtures("fresh_lists")
def test_only_a_compact_list_is_kept_and_only_the_last_few() -> None:
    spaced = _execute_frame(LIST.replace(b'":', b'": '))
    assert _read(spaced) == _read_whole(spaced)
    assert list(messages._TOOL_LISTS._known) == []
    lists = [orjson.dumps([_tool(f"t{n}")]) for n in range(messages.KNOWN_TOOL_LISTS + 1)]
    for text in lists:
        _read(_execute_frame(text))
    assert list(messages._TOOL_LISTS._known) == lists[1:]
    _read(_execute_frame(lists[1]))  # (used again: kept the longest)
    _read(_execute_frame(lists[0]))
    assert list(messages._TOOL_LISTS._known) == [*lists[3:], lists[1], lists[0]]
    big = orjson.dumps([_tool("a", "x" * messages.MAX_CACHED_TOOLS_BYTES)])
    _read(_execute_frame(big))
    assert big not in messages._TOOL_LISTS._known

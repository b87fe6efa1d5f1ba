"""The client's messages of Codex's host protocol v1, decoded as strictly as the reference
decodes them (serde with `deny_unknown_fields`): an unknown field or variant, a missing
field or a value of the wrong type is a `DecodeError`, whose text follows serde's.

Casing is the protocol's own: envelopes and session requests camelCase, the execute and
wait payloads and tool definitions snake_case (`../shared/spec/host-protocol.md`).
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from cellfleet.broker.contract.tools import JsonValue, ToolKind

I32 = (-(2**31), 2**31 - 1)
I64 = (-(2**63), 2**63 - 1)
U64 = (0, 2**64 - 1)


class DecodeError(ValueError):
    """A frame the host cannot decode: the connection ends (the reference exits 1)."""


@dataclass(frozen=True, slots=True)
class Hello:
    supported_versions: list[int]
    required_capabilities: list[str]
    optional_capabilities: list[str]


@dataclass(frozen=True, slots=True)
class WireTool:
    name: str  # the JS global name
    tool_name: str  # the harness's name of it, and its namespace
    namespace: str | None
    description: str
    kind: ToolKind


@dataclass(frozen=True, slots=True)
class Open:
    session_id: str
    max_yield_time_ms: int | None = None
    max_heap_size_bytes: int | None = None
    server_truncation: bool = False


@dataclass(frozen=True, slots=True)
class Execute:
    session_id: str
    tool_call_id: str
    tools: tuple[WireTool, ...]
    source: str
    yield_time_ms: int | None
    max_output_tokens: int | None


@dataclass(frozen=True, slots=True)
class Wait:
    session_id: str
    cell_id: str
    yield_time_ms: int


@dataclass(frozen=True, slots=True)
class Terminate:
    session_id: str
    cell_id: str
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Shutdown:
    session_id: str


Request = Open | Execute | Wait | Terminate | Shutdown


@dataclass(frozen=True, slots=True)
class OperationRequest:
    id: int
    request: Request


@dataclass(frozen=True, slots=True)
class Cancel:
    id: int


@dataclass(frozen=True, slots=True)
class Yield:
    id: int


@dataclass(frozen=True, slots=True)
class DelegateResponse:
    id: int
    ok: bool
    value: JsonValue = None  # a tool's result (ok)
    message: str = ""  # the error (not ok)
    delivered: bool = False  # ok, as the answer to a notification


ClientMessage = Hello | OperationRequest | Cancel | Yield | DelegateResponse


MAX_DEPTH = 127  # serde_json refuses a 128th level (its recursion limit)
_TOO_DEEP = b"\n" + b" " * (2 * MAX_DEPTH)  # (in orjson's 2-space indentation)
_SPACED_KEY_END = re.compile(rb'"\s+:')  # (not compact: judged the slow way)
_SPACE_THEN_COLON = (b" :", b"\t:", b"\n:", b"\r:")  # (what `_SPACED_KEY_END` needs)
MAX_CACHED_TOOLS_BYTES = 256 * 1024  # a longer tool list is checked each time


def parse(payload: bytes) -> Any:
    """The frame's JSON, as strictly as serde_json reads it: no NaN, no lone surrogate
    (orjson refuses both), no key twice in an object, at most `MAX_DEPTH` levels.

    The last two are first judged cheaply (a frame with Codex's 128 tools is on every
    execute's path): orjson writes the parsed value back indented, which has as many
    keys as the frame unless one came twice (or the frame is not compact), and no line
    indented `MAX_DEPTH` levels unless it is (nearly) too deep. Only then is the frame
    read again, slowly, to be sure and to name the problem."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise DecodeError(str(error)) from None
    if b"{" not in payload:  # (no object: no key to repeat, nothing deep enough)
        return data
    try:
        shown = orjson.dumps(data, option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError:  # (too deep for orjson as well)
        raise DecodeError("recursion limit exceeded") from None
    if (
        payload.count(b'":') != shown.count(b'": ')
        or b"\\u" in payload  # (an escaped quote in a string can make the counts agree)
        or _TOO_DEEP in shown
        or (
            any(pair in payload for pair in _SPACE_THEN_COLON)
            and _SPACED_KEY_END.search(payload) is not None
        )
    ):
        try:
            _depth(json.loads(payload, object_pairs_hook=_Checked))
        except (ValueError, RecursionError) as error:  # (DecodeError is a ValueError)
            raise DecodeError(str(error)) from None
    return data


class _Checked(dict[str, Any]):
    """An object of the slow, exact read: no key twice; knows how deep it nests."""

    depth: int

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        deepest = 0
        for key, value in pairs:
            if key in self:
                raise DecodeError(f"duplicate field `{key}`")
            self[key] = value
            deepest = max(deepest, _depth(value))
        self.depth = deepest + 1
        if self.depth > MAX_DEPTH:
            raise DecodeError("recursion limit exceeded")


def _depth(value: Any) -> int:
    """How deep a value of the exact read nests (its objects know theirs; each array is
    looked into once, by its container)."""
    if isinstance(value, _Checked):
        return value.depth
    if not isinstance(value, list):
        return 0
    depth = 1 + max((_depth(item) for item in value), default=0)
    if depth > MAX_DEPTH:
        raise DecodeError("recursion limit exceeded")
    return depth


def decode_hello(data: Any) -> Hello | None:
    """The hello, or None if the first message is another (the host rejects it)."""
    fields = _struct(data, tag="type")
    if fields.get("type") != "connection/hello":
        _variant(fields.get("type"), _MESSAGE_TYPES)
        return None
    _known(fields, ("supportedVersions", "requiredCapabilities", "optionalCapabilities"), "type")
    return Hello(
        _list(_required(fields, "supportedVersions"), lambda v: _integer(v, U64, "u32")),
        _list(_required(fields, "requiredCapabilities"), _string),
        _list(_required(fields, "optionalCapabilities"), _string),
    )


_MESSAGE_TYPES = (
    "connection/hello",
    "operation/request",
    "operation/cancel",
    "operation/yield",
    "delegate/response",
)
_METHODS = (
    "session/open",
    "session/execute",
    "session/wait",
    "session/terminate",
    "session/shutdown",
)


def decode_message(data: Any) -> ClientMessage:
    """A message after the hello."""
    fields = _struct(data, tag="type")
    kind = _variant(fields.get("type"), _MESSAGE_TYPES)
    if kind == "connection/hello":
        return decode_hello(data) or Hello([], [], [])
    if kind == "operation/request":
        _known(fields, ("id", "request"), "type")
        return OperationRequest(_id(fields), _request(_required(fields, "request")))
    if kind in ("operation/cancel", "operation/yield"):
        _known(fields, ("id",), "type")
        return (Cancel if kind == "operation/cancel" else Yield)(_id(fields))
    _known(fields, ("id", "result"), "type")
    return _delegate_response(_id(fields), _required(fields, "result"))


def _request(data: Any) -> Request:
    fields = _struct(data, tag="method")
    method = _variant(fields.get("method"), _METHODS)
    if method == "session/open":
        _known(fields, ("sessionId", "cellExecutionLimits", "outputTruncation"), "method")
        limits = _struct(fields.get("cellExecutionLimits") or {})
        _known(limits, ("maxYieldTimeMs", "maxHeapSizeBytes"))
        truncation = fields.get("outputTruncation")
        if truncation is not None:
            _variant(truncation, ("client", "server"))
        return Open(
            _session(fields),
            _optional(limits.get("maxYieldTimeMs"), lambda v: _integer(v, U64, "u64")),
            _optional(limits.get("maxHeapSizeBytes"), lambda v: _integer(v, U64, "u64")),
            truncation == "server",
        )
    if method == "session/execute":
        _known(fields, ("sessionId", "request"), "method")
        body = _struct(_required(fields, "request"))
        _known(body, ("tool_call_id", "enabled_tools", "source", "yield_time_ms",
                      "max_output_tokens"))  # fmt: skip
        return Execute(
            _session(fields),
            _string(_required(body, "tool_call_id")),
            _tools(_required(body, "enabled_tools")),
            _string(_required(body, "source")),
            _optional(body.get("yield_time_ms"), lambda v: _integer(v, U64, "u64")),
            _optional(body.get("max_output_tokens"), lambda v: _integer(v, I32, "i32")),
        )
    if method == "session/wait":
        _known(fields, ("sessionId", "request"), "method")
        body = _struct(_required(fields, "request"))
        _known(body, ("cell_id", "yield_time_ms"))
        return Wait(
            _session(fields),
            _string(_required(body, "cell_id")),
            _integer(_required(body, "yield_time_ms"), U64, "u64"),
        )
    if method == "session/terminate":
        _known(fields, ("sessionId", "cellId", "maxOutputTokens"), "method")
        return Terminate(
            _session(fields),
            _string(_required(fields, "cellId")),
            _optional(fields.get("maxOutputTokens"), lambda v: _integer(v, U64, "usize")),
        )
    _known(fields, ("sessionId",), "method")
    return Shutdown(_session(fields))


def _tools(value: Any) -> tuple[WireTool, ...]:
    """An execute's tools. Codex sends its whole tool list with every execute (128
    tools: about 1 ms to check here), nearly always the same list: a list decoded
    before is looked up by its JSON text instead."""
    if isinstance(value, _KnownTools):  # (`read_message` found it in the frame)
        return value.tools
    try:  # (not a list, an integer orjson cannot write, or too long to keep: as it is)
        text = orjson.dumps(value) if isinstance(value, list) else b""
    except orjson.JSONEncodeError:
        text = b""
    if not text or len(text) > MAX_CACHED_TOOLS_BYTES:  # (16 must not hold a gigabyte)
        return tuple(_list(value, _tool))
    return _tools_in(text)


@functools.lru_cache(maxsize=16)
def _tools_in(text: bytes) -> tuple[WireTool, ...]:
    """The tools in the JSON text of a list (a list that fails raises each time)."""
    return tuple(_tool(item) for item in orjson.loads(text))


def _tool(data: Any) -> WireTool:
    fields = _struct(data)
    _known(fields, ("name", "tool_name", "description", "kind", "input_schema", "output_schema"))
    name = _struct(_required(fields, "tool_name"))
    _known(name, ("name", "namespace"))
    return WireTool(
        name=_string(_required(fields, "name")),
        tool_name=_string(_required(name, "name")),
        namespace=_optional(name.get("namespace"), _string),
        description=_string(_required(fields, "description")),
        kind=ToolKind(_variant(_required(fields, "kind"), ("function", "freeform"))),
    )


def _delegate_response(delegate_id: int, data: Any) -> DelegateResponse:
    fields = _struct(data, tag="status")
    status = _variant(fields.get("status"), ("ok", "error"))
    if status == "error":
        _known(fields, ("message",), "status")
        return DelegateResponse(delegate_id, False, message=_string(_required(fields, "message")))
    _known(fields, ("value",), "status")
    value = _struct(_required(fields, "value"), tag="type")
    kind = _variant(value.get("type"), ("tool/result", "notification/delivered"))
    if kind == "notification/delivered":
        _known(value, (), "type")
        return DelegateResponse(delegate_id, True, delivered=True)
    _known(value, ("result",), "type")
    return DelegateResponse(delegate_id, True, _required(value, "result"))


# -- serde-like checks -------------------------------------------------------------------


def _struct(data: Any, *, tag: str | None = None) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DecodeError(f"invalid type: {_kind(data)}, expected struct")
    if tag is not None and tag not in data:
        raise DecodeError(f"missing field `{tag}`")
    return data


def _known(fields: dict[str, Any], names: Sequence[str], tag: str | None = None) -> None:
    """Every field is one of `names` (or the enum's `tag`)."""
    for key in fields:
        if key != tag and key not in names:
            raise DecodeError(f"unknown field `{key}`, {_expected(names)}")


def _expected(names: Sequence[str]) -> str:
    if not names:
        return "there are no fields"
    quoted = [f"`{name}`" for name in names]
    if len(quoted) == 1:
        return f"expected {quoted[0]}"
    if len(quoted) == 2:
        return f"expected {quoted[0]} or {quoted[1]}"
    return "expected one of " + ", ".join(quoted)


def _required(fields: dict[str, Any], name: str) -> Any:
    if name not in fields:
        raise DecodeError(f"missing field `{name}`")
    return fields[name]


def _variant(value: Any, names: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"invalid type: {_kind(value)}, expected variant identifier")
    if value not in names:
        raise DecodeError(f"unknown variant `{value}`, {_expected(names)}")
    return value


def _session(fields: dict[str, Any]) -> str:
    session = _string(_required(fields, "sessionId"))
    if not session:
        raise DecodeError("identifier must not be empty")
    return session


def _id(fields: dict[str, Any]) -> int:
    return _integer(_required(fields, "id"), I64, "i64")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"invalid type: {_kind(value)}, expected a string")
    return value


def _integer(value: Any, bounds: tuple[int, int], name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"invalid type: {_kind(value)}, expected {name}")
    if not bounds[0] <= value <= bounds[1]:
        raise DecodeError(f"invalid value: integer `{value}`, expected {name}")
    return value


def _optional(value: Any, convert: Any) -> Any:
    return None if value is None else convert(value)


def _list(value: Any, convert: Any) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError(f"invalid type: {_kind(value)}, expected a sequence")
    return [convert(item) for item in value]


def _kind(value: Any) -> str:
    """How serde names an unexpected JSON value."""
    if value is None or isinstance(value, list | dict):
        return "null" if value is None else ("sequence" if isinstance(value, list) else "map")
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, str):
        return f'string "{value}"'
    return f"{'integer' if isinstance(value, int) else 'floating point'} `{value}`"


def read_message(payload: bytes) -> ClientMessage:
    """`decode_message(parse(payload))`, for a message after the hello. An execute whose
    tool list is one read before, byte for byte, has only the rest of its frame read."""
    known = _TOOL_LISTS.read(payload)
    if known is not None:
        return known
    data = parse(payload)
    message = decode_message(data)
    _TOOL_LISTS.learn(payload, data, message)
    return message


_TOOLS_KEY = b'"enabled_tools":'
# What stands in for a known tool list while the rest of its frame is read: a string no
# client can send on purpose (random, per process).
_STAND_IN = f"cellfleet-known-tools-{secrets.token_hex(16)}"
_STAND_IN_JSON = orjson.dumps(_STAND_IN)
KNOWN_TOOL_LISTS = 4


@dataclass(frozen=True, slots=True)
class _KnownTools:
    tools: tuple[WireTool, ...]


class _ToolLists:
    """The last few execute tool lists read, as the JSON text orjson writes of them (the
    compact form Codex's serde_json sends), with their decoded tools.

    Codex sends its whole tool list with every execute: at 128 tools, reading the frame
    as strictly as serde does takes about 0.35 ms here, nearly all of it the list. A
    frame that holds a known list's text where its `enabled_tools` value begins has that
    text replaced with a stand-in string, and the rest is read as strictly as ever; the
    stand-in must then be exactly the execute's `enabled_tools` (else the frame is read
    whole). The known text is orjson's own writing of a list that was once the
    `enabled_tools` of a frame read whole: no key twice, nested no deeper than then, at
    the same depth. Anything unusual is read the whole way, with its exact errors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: OrderedDict[bytes, tuple[WireTool, ...]] = OrderedDict()

    def read(self, payload: bytes) -> ClientMessage | None:
        """The frame's message, if it holds a known list (None: read it whole)."""
        start = payload.find(_TOOLS_KEY) + len(_TOOLS_KEY)
        if start < len(_TOOLS_KEY):
            return None
        with self._lock:
            found = next(
                (
                    item
                    for item in reversed(self._known.items())
                    if payload.startswith(item[0], start)
                ),
                None,
            )
            if found is not None:
                self._known.move_to_end(found[0])  # (the last used are kept)
        if found is None:
            return None
        text, tools = found
        try:
            data = parse(payload[:start] + _STAND_IN_JSON + payload[start + len(text) :])
        except DecodeError:
            return None
        body = _execute_body(data)
        if body is None or body.get("enabled_tools") != _STAND_IN:
            return None
        body["enabled_tools"] = _KnownTools(tools)
        try:
            return decode_message(data)
        except DecodeError:  # (its exact text comes from the whole frame)
            return None

    def learn(self, payload: bytes, data: Any, message: ClientMessage) -> None:
        """Keep the tool list of an execute read whole, if the frame holds it compact."""
        if not (isinstance(message, OperationRequest) and isinstance(message.request, Execute)):
            return
        body = _execute_body(data)
        assert body is not None  # (it decoded as an execute)
        text = orjson.dumps(body["enabled_tools"])
        start = payload.find(_TOOLS_KEY) + len(_TOOLS_KEY)
        if len(text) > MAX_CACHED_TOOLS_BYTES or not payload.startswith(text, start):
            return
        with self._lock:
            self._known[text] = message.request.tools
            self._known.move_to_end(text)
            while len(self._known) > KNOWN_TOOL_LISTS:
                self._known.popitem(last=False)


def _execute_body(data: Any) -> dict[str, Any] | None:
    """The `request` of an execute's `request` (None if `data` is not an execute)."""
    envelope = data.get("request") if isinstance(data, dict) else None
    if not isinstance(envelope, dict) or envelope.get("method") != "session/execute":
        return None
    body = envelope.get("request")
    return body if isinstance(body, dict) else None


_TOOL_LISTS = _ToolLists()

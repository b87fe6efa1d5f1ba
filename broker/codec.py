"""The one place that knows how records are stored: events, tool calls, tool replies.

An event's stream entry has the fields
  `v`  schema version (decimal)      `t`  event type       `c`  cell id ("" if none)
  `q`  writer sequence (decimal)     `at` wall clock, ms   `d`  the other fields, JSON
The cell id is a field of its own so that a reader can pick a cell's events without
decoding the rest. Tuples and enums come back as such, so a decoded event equals the
original.

A nested tool call's entry on the calls stream has the fields `session`, `cell`,
`call_id`, `name`, `raw_name`, `kind`, `input` (JSON) and `reply` (the stream its host
reads replies from). A reply is one JSON object: `key` (the call's idempotency key),
`call_id`, `clock_ms`, and `result` or `error`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections import abc
from collections.abc import Callable, Collection, Mapping
from enum import Enum
from typing import Any

import orjson

from cellfleet.broker.contract.tools import JsonValue, ToolKind
from cellfleet.broker.events import EVENT_TYPES, AnyEvent
from cellfleet.broker.tools.invocation import ToolInvocation, ToolOutcome, ToolReply

SCHEMA_VERSION = 1
_ENVELOPE = frozenset({"session", "cell", "seq", "at_ms"})


class DecodeError(ValueError):
    """A stream entry is not an event this version can read."""


_DATA_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.name not in _ENVELOPE)
    for cls in EVENT_TYPES.values()
}


def _restorer(hint: Any) -> Callable[[Any], Any] | None:
    """How a field's JSON value becomes its typed value again, if it needs to."""
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint
    if typing.get_origin(hint) is tuple:
        return tuple
    return None


# Per event type: the data fields whose JSON value is converted back (enums, tuples).
_RESTORERS: dict[type[Any], dict[str, Callable[[Any], Any]]] = {
    cls: {
        name: restore
        for name, hint in typing.get_type_hints(cls).items()
        if name in _DATA_FIELDS[cls] and (restore := _restorer(hint)) is not None
    }
    for cls in EVENT_TYPES.values()
}


_HINTS: dict[type[Any], dict[str, Any]] = {
    cls: typing.get_type_hints(cls) for cls in EVENT_TYPES.values()
}
_VERSION = b"%d" % SCHEMA_VERSION


def well_formed(text: str) -> str:
    """A text the log and the wire can hold: a lone surrogate (a handler's message made
    from undecodable bytes, say) becomes U+FFFD, as in what JavaScript writes
    (mailbox.loads). Such a text could not be recorded: its cell waited for ever."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def encode_flat(event: AnyEvent) -> list[bytes]:
    """Stream fields for `event` as XADD takes them: name, value, name, value, …

    (The journal's hot path: a short cell appends six events in one script call.)
    """
    data = {name: getattr(event, name) for name in _DATA_FIELDS[type(event)]}
    return [
        b"v",
        _VERSION,
        b"t",
        event.TYPE.encode(),
        b"c",
        event.cell.encode(),
        b"q",
        b"%d" % event.seq,
        b"at",
        repr(event.at_ms).encode(),
        b"d",
        orjson.dumps(data),
    ]


def encode(event: AnyEvent) -> dict[str, bytes]:
    """Stream fields for `event`, by name."""
    flat = encode_flat(event)
    return {name.decode(): value for name, value in zip(flat[::2], flat[1::2], strict=True)}


def decode(session: str, fields: Mapping[bytes, bytes] | Mapping[str, Any]) -> AnyEvent:
    """The event stored in a stream entry of `session`'s stream."""
    try:
        get = _getter(fields)
        version = int(get(b"v"))
        if version > SCHEMA_VERSION:
            raise DecodeError(f"event schema version {version} is newer than {SCHEMA_VERSION}")
        cls = EVENT_TYPES[get(b"t").decode()]
        cell, seq, at_ms = get(b"c").decode(), int(get(b"q")), float(get(b"at"))
        data = orjson.loads(get(b"d"))
        fields_ = _DATA_FIELDS[cls]
        kwargs = {name: value for name, value in data.items() if name in fields_}
        for name, restore in _RESTORERS[cls].items():
            if name in kwargs:
                kwargs[name] = restore(kwargs[name])
        return cls(session=session, cell=cell, seq=seq, at_ms=at_ms, **kwargs)
    except DecodeError:
        raise
    except (KeyError, ValueError, TypeError) as error:
        raise DecodeError(f"not a cellfleet event: {error!r}") from error


def sieve(
    cells: Collection[str] | None, kinds: Collection[str], mentioning: str | None
) -> Callable[[Mapping[Any, Any]], bool] | None:
    """Which stream entries to decode: those of `cells`, or of an event type in `kinds`,
    whose data holds the JSON string `mentioning` (None: any cell, any data); None
    keeps every entry."""
    if cells is None and mentioning is None:
        return None
    wanted = None if cells is None else {cell.encode() for cell in cells}
    kept_types = {kind.encode() for kind in kinds}
    text = None if mentioning is None else orjson.dumps(mentioning)  # (as the data spells it)

    def keep(fields: Mapping[Any, Any]) -> bool:
        get = _getter(fields)
        return (wanted is None or get(b"c") in wanted or get(b"t") in kept_types) and (
            text is None or text in get(b"d")
        )

    return keep


def type_problem(event: AnyEvent) -> str | None:
    """Which field of a decoded event does not hold its type, or None. The log holds
    what cellfleet wrote; a trace file may hold anything (`trace_file` asks)."""
    hints = _HINTS[type(event)]
    for name in _DATA_FIELDS[type(event)]:
        if not _holds(hints[name], getattr(event, name)):
            return f"its {name} has the wrong type (expected {_describe(hints[name])})"
    return None


def _holds(hint: Any, value: Any) -> bool:  # noqa: PLR0911 - one case per kind of type
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is JsonValue:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_holds(arg, value) for arg in args)
    if hint is type(None):
        return value is None
    if isinstance(hint, type) and issubclass(hint, Enum):
        return isinstance(value, hint)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint in (int, str, bool):
        return isinstance(value, hint) and (hint is bool or not isinstance(value, bool))
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_holds(args[0], item) for item in value)
        return len(value) == len(args) and all(map(_holds, args, value))
    if origin in (dict, Mapping, abc.Mapping):
        key, item = args
        return isinstance(value, dict) and all(
            _holds(key, k) and _holds(item, v) for k, v in value.items()
        )
    return True  # (a type this check does not know: taken as it is)


def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("collections.abc.", "")
    if typing.get_origin(hint) is None or len(text) > 40:  # (JSON values spell out long)
        return getattr(typing.get_origin(hint) or hint, "__name__", text)
    return text


def _getter(fields: Mapping[Any, Any]) -> Callable[[bytes], bytes]:
    """Field `name`'s value as bytes, from fields named by bytes or by text. Fields as
    Redis gives them are read directly (a wrapper cost a third of a log's read)."""
    if b"t" in fields:
        return fields.__getitem__

    def get(name: bytes) -> bytes:
        value = fields[name] if name in fields else fields[name.decode()]
        return value if isinstance(value, bytes) else str(value).encode()

    return get


# -- nested tool calls ------------------------------------------------------------------


def json_problem(value: Any) -> str | None:
    """Why `value` cannot be stored and handed to JavaScript as JSON, or None if it can.

    Integers must be ones JavaScript holds exactly (up to 2^53 - 1 in size).
    """
    try:
        orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except (TypeError, orjson.JSONEncodeError) as error:
        return str(error)
    return None


def encode_tool_call(invocation: ToolInvocation, reply_to: str) -> list[bytes | str]:
    """The fields of a call's entry on the calls stream, as XADD takes them."""
    namespace = [] if invocation.namespace is None else ["namespace", invocation.namespace]
    return [
        "session",
        invocation.session,
        "cell",
        invocation.cell,
        "call_id",
        invocation.call_id,
        "name",
        invocation.name,
        "raw_name",
        invocation.raw_name,
        "kind",
        str(invocation.kind),
        "input",
        orjson.dumps(invocation.input),
        "reply",
        reply_to,
        *namespace,
    ]


def decode_tool_call(fields: Mapping[bytes, bytes]) -> tuple[ToolInvocation, str]:
    """The call in an entry of the calls stream, and the stream to reply to."""
    try:
        text = {name.decode(): value.decode() for name, value in fields.items()}
        invocation = ToolInvocation(
            session=text["session"],
            cell=text["cell"],
            call_id=text["call_id"],
            name=text["name"],
            raw_name=text["raw_name"],
            kind=ToolKind(text["kind"]),
            input=orjson.loads(fields[b"input"]),
            namespace=text.get("namespace"),
        )
        return invocation, text["reply"]
    except (KeyError, ValueError) as error:
        raise DecodeError(f"not a cellfleet tool call: {error!r}") from error


def encode_tool_reply(reply: ToolReply) -> bytes:
    """A reply as JSON: what the host is sent and the call's record keeps."""
    outcome = reply.outcome
    data: dict[str, Any] = {
        "key": reply.key,
        "call_id": outcome.call_id,
        "clock_ms": outcome.clock_ms,
    }
    if outcome.error is None:
        data["result"] = outcome.result
    else:
        data["error"] = outcome.error
    return orjson.dumps(data)


def decode_tool_reply(data: bytes) -> ToolReply:
    """A reply `encode_tool_reply` wrote; its outcome is recorded in the log already."""
    try:
        reply = orjson.loads(data)
        outcome = ToolOutcome(
            reply["call_id"],
            result=reply.get("result"),
            error=reply.get("error"),
            clock_ms=reply["clock_ms"],
            recorded=True,
        )
        return ToolReply(reply["key"], outcome)
    except (KeyError, TypeError, ValueError) as error:
        raise DecodeError(f"not a cellfleet tool reply: {error!r}") from error

"""The one place that knows how events are stored: stream fields with orjson data.

A stream entry has the fields
  `v`  schema version (decimal)      `t`  event type       `c`  cell id ("" if none)
  `q`  writer sequence (decimal)     `at` wall clock, ms   `d`  the other fields, JSON
The cell id is a field of its own so that a reader can pick a cell's events without
decoding the rest. Tuples and enums come back as such, so a decoded event equals the original.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import orjson

from cellfleet.broker.events import EVENT_TYPES, AnyEvent

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


_VERSION = b"%d" % SCHEMA_VERSION


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
    get = _getter(fields)
    try:
        version = int(get("v"))
        if version > SCHEMA_VERSION:
            raise DecodeError(f"event schema version {version} is newer than {SCHEMA_VERSION}")
        cls = EVENT_TYPES[get("t")]
        data = orjson.loads(get("d"))
        fields_ = _DATA_FIELDS[cls]
        kwargs = {name: value for name, value in data.items() if name in fields_}
        for name, restore in _RESTORERS[cls].items():
            if name in kwargs:
                kwargs[name] = restore(kwargs[name])
        return cls(
            session=session, cell=get("c"), seq=int(get("q")), at_ms=float(get("at")), **kwargs
        )
    except DecodeError:
        raise
    except (KeyError, ValueError, TypeError) as error:
        raise DecodeError(f"not a cellfleet event: {error!r}") from error


def _getter(fields: Mapping[Any, Any]) -> Any:
    def get(name: str) -> str:
        value = fields[name.encode()] if name.encode() in fields else fields[name]
        return value.decode() if isinstance(value, bytes) else str(value)

    return get

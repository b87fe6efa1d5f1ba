"""The records a cell's JavaScript writes to its log (actors/runtime/prelude.js).

A record is a JSON array whose first element is its kind. The prelude's `RECORD`
table and `RecordKind` are the one definition of the kinds on each side;
tests/unit/test_records.py checks that they agree.

| kind          | record                           | what it is                                    |
| ------------- | -------------------------------- | --------------------------------------------- |
| `ITEM`        | `["i", item]`                    | a content item, in model-facing shape         |
| `YIELD`       | `["y"]`                          | `yield_control()`                             |
| `TOOL`        | `["t", seq, name, inputJson]`    | a nested tool call (input as JSON text)       |
| `NOTIFY`      | `["n", text]`                    | `notify()`                                    |
| `STORE`       | `["s", key, jsonText]`           | a `store()` write                             |
| `TIMER_SET`   | `["ts", id, delayMs, clock]`     | `setTimeout()`                                |
| `TIMER_CLEAR` | `["tc", id]`                     | `clearTimeout()`                              |
| `DONE`        | `["d", errorText or null]`       | the module settled, or a timer callback threw |
| `EXIT`        | `["x"]`                          | `exit()`                                      |
| `DEFECT`      | `["b", message]`                 | a defect inside the prelude (never expected)  |
| `SITE`        | `["at", line, column]`           | replay only: where the next record was made   |
| `FINALIZER`   | `["f"]`                          | the cell registered a finalizer (once)        |

`SITE` is written only when a cell is replayed (`CellSpec.record_sites`); a live cell
that writes one has got around its prelude.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import orjson


class RecordKind(StrEnum):
    ITEM = "i"
    YIELD = "y"
    TOOL = "t"
    NOTIFY = "n"
    STORE = "s"
    TIMER_SET = "ts"
    TIMER_CLEAR = "tc"
    DONE = "d"
    EXIT = "x"
    DEFECT = "b"
    SITE = "at"
    FINALIZER = "f"


REPLAY_ONLY = frozenset({RecordKind.SITE})


_DETAILS = frozenset({"auto", "low", "high", "original"})
_KINDS = frozenset(kind.value for kind in RecordKind)


def record_problem(record: Any) -> str | None:
    """What is wrong with a record the runtime read, or None if it has a known shape.

    The prelude writes only records of the shapes above; anything else means the cell
    found a way around it, and the runtime must not pass it on.
    """
    if not isinstance(record, list) or not record or record[0] not in _KINDS:
        return "unknown record"
    kind, args = RecordKind(record[0]), record[1:]
    expected = _ARGS[kind]
    if len(args) != len(expected):
        return f"{kind.name} record with {len(args)} fields"
    for value, check in zip(args, expected, strict=True):
        if not check(value):
            return f"bad {kind.name} record"
    return None


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _json_text(value: Any) -> bool:
    """JSON text as `JSON.parse` takes it (a stored value: else every later `load()` of
    it in the session would throw). orjson first; the standard library for what orjson
    refuses and JavaScript does not: a lone surrogate's escape, a number past a double."""
    if not isinstance(value, str):
        return False
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        try:
            json.loads(value, parse_constant=_not_json)
        except ValueError:
            return False
    return True


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _data_url(value: Any) -> bool:
    return isinstance(value, str) and value[:5].lower() == "data:"


def _item(value: Any) -> bool:
    """A content item in the shapes `text()`, `image()` and `audio()` make."""
    if not isinstance(value, dict):
        return False
    kind = value.get("type")
    if kind == "input_text":
        return value.keys() == {"type", "text"} and isinstance(value["text"], str)
    if kind == "input_image":
        return (
            value.keys() == {"type", "image_url", "detail"}
            and _data_url(value["image_url"])
            and value["detail"] in _DETAILS
        )
    if kind == "input_audio":
        return value.keys() == {"type", "audio_url"} and _data_url(value["audio_url"])
    return False


_ARGS: dict[RecordKind, tuple[Callable[[Any], bool], ...]] = {
    RecordKind.ITEM: (_item,),
    RecordKind.YIELD: (),
    RecordKind.TOOL: (_integer, _text, _text),
    RecordKind.NOTIFY: (_text,),
    RecordKind.STORE: (_text, _json_text),
    RecordKind.TIMER_SET: (_integer, _number, _number),
    RecordKind.TIMER_CLEAR: (_integer,),
    RecordKind.DONE: (_text_or_none,),
    RecordKind.EXIT: (),
    RecordKind.DEFECT: (_text,),
    RecordKind.SITE: (_integer, _integer),
    RecordKind.FINALIZER: (),
}

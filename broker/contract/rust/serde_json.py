"""A serde_json-compatible JSON reader and writer: same values, same error texts.

Codex parses the `exec` pragma and the `wait` arguments with Rust's `serde_json` and shows
the model serde_json's error messages verbatim (spec §1.1, §1.2). This module reproduces
serde_json 1.0.14x (default features) for what code mode needs:

* `parse_value(text)` — `serde_json::from_str::<Value>(text)`;
* `from_str_struct(text, name, fields)` — `serde_json::from_str::<T>(text)` for a
  `#[derive(Deserialize)]` struct without `deny_unknown_fields` (object or array form,
  defaults, duplicate and missing fields, unknown fields skipped);
* `value_unexpected(value)` / `visit_unsigned` — the texts of `serde_json::from_value`'s
  (position-less) type errors;
* `to_string(value)` / `quote(text)` — `serde_json::to_string`.

Value model: objects are `dict` (keys iterate in `BTreeMap` order, i.e. sorted, where
it matters), integers that serde_json keeps as `u64` / `i64` are `int`, everything it
parses as `f64` is `float` (so `-0`, `1.0` and integers beyond `u64` are floats, as in
Rust). The token layer (numbers, strings, positions) is `broker.contract.rust.serde_json_lex`.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn, TypeVar

from cellfleet.broker.contract.rust.serde_json_lex import (
    EOF_LIST,
    EOF_OBJECT,
    EOF_VALUE,
    EXPECTED_COLON,
    EXPECTED_LIST_COMMA_OR_END,
    EXPECTED_OBJECT_COMMA_OR_END,
    EXPECTED_VALUE,
    KEY_MUST_BE_A_STRING,
    QUOTE,
    TRAILING_CHARACTERS,
    TRAILING_COMMA,
    U64_MAX,
    Lexer,
    SerdeJsonError,
    is_digit,
)
from cellfleet.broker.contract.rust.text import rust_debug_str, ryu_format
from cellfleet.broker.contract.tools import JsonValue

__all__ = [
    "U64_MAX",
    "Deserializer",
    "SerdeJsonError",
    "StructField",
    "from_str_struct",
    "number_unexpected",
    "parse_value",
    "quote",
    "read_bool",
    "read_option",
    "read_string",
    "read_u64",
    "to_string",
    "value_unexpected",
    "visit_unsigned",
]

_T = TypeVar("_T")


def number_unexpected(number: int | float) -> str:
    """serde_json's `Unexpected` text for a parsed number."""
    if isinstance(number, float):
        return f"floating point `{ryu_format(number)}`"
    return f"integer `{number}`"


def value_unexpected(value: JsonValue) -> str:
    """How serde_json's `Value` deserializer names `value` in an `invalid type` error."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int | float):
        return number_unexpected(value)
    if isinstance(value, str):
        return f"string {rust_debug_str(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def invalid_type(unexpected: str, expected: str) -> SerdeJsonError:
    """serde's `Error::invalid_type` as serde_json formats it (no position yet)."""
    return SerdeJsonError(f"invalid type: {unexpected}, expected {expected}")


def invalid_value(unexpected: str, expected: str) -> SerdeJsonError:
    """serde's `Error::invalid_value` as serde_json formats it (no position yet)."""
    return SerdeJsonError(f"invalid value: {unexpected}, expected {expected}")


def visit_unsigned(number: int | float, expected: str) -> int:
    """The `u64` / `usize` visitors: accept non-negative integers only."""
    if isinstance(number, float):
        raise invalid_type(number_unexpected(number), expected)
    if number < 0:
        raise invalid_value(number_unexpected(number), expected)
    return number


class Deserializer(Lexer):
    """serde_json's `Deserializer` over a `str`: containers, values and type errors."""

    def next_element_start(self, first: bool) -> bool:
        """`SeqAccess::next_element_seed` up to the element: `False` at `]`."""
        byte = self.parse_whitespace()
        if byte == ord("]"):
            return False
        if byte == ord(",") and not first:
            self.eat()
            byte = self.parse_whitespace()
        elif byte is None:
            raise self.peek_error(EOF_LIST)
        elif not first:
            raise self.peek_error(EXPECTED_LIST_COMMA_OR_END)
        if byte == ord("]"):
            raise self.peek_error(TRAILING_COMMA)
        if byte is None:
            raise self.peek_error(EOF_VALUE)
        return True

    def next_key(self, first: bool) -> str | None:
        """`MapAccess::next_key_seed` for a string key: `None` at `}`."""
        byte = self.parse_whitespace()
        if byte == ord("}"):
            return None
        if byte == ord(",") and not first:
            self.eat()
            byte = self.parse_whitespace()
        elif byte is None:
            raise self.peek_error(EOF_OBJECT)
        elif not first:
            raise self.peek_error(EXPECTED_OBJECT_COMMA_OR_END)
        if byte == QUOTE:
            self.eat()
            return self.parse_str()
        if byte == ord("}"):
            raise self.peek_error(TRAILING_COMMA)
        if byte is None:
            raise self.peek_error(EOF_VALUE)
        raise self.peek_error(KEY_MUST_BE_A_STRING)

    def parse_object_colon(self) -> None:
        """Consume the `:` between a key and its value."""
        byte = self.parse_whitespace()
        if byte == ord(":"):
            self.eat()
        elif byte is None:
            raise self.peek_error(EOF_OBJECT)
        else:
            raise self.peek_error(EXPECTED_COLON)

    def end_seq(self) -> None:
        """Consume the `]` that ends an array visit."""
        byte = self.parse_whitespace()
        if byte == ord("]"):
            self.eat()
            return
        if byte == ord(","):
            self.eat()
            if self.parse_whitespace() == ord("]"):
                raise self.peek_error(TRAILING_COMMA)
            raise self.peek_error(TRAILING_CHARACTERS)
        if byte is None:
            raise self.peek_error(EOF_LIST)
        raise self.peek_error(TRAILING_CHARACTERS)

    def end_map(self) -> None:
        """Consume the `}` that ends an object visit."""
        byte = self.parse_whitespace()
        if byte == ord("}"):
            self.eat()
            return
        if byte == ord(","):
            raise self.peek_error(TRAILING_COMMA)
        if byte is None:
            raise self.peek_error(EOF_OBJECT)
        raise self.peek_error(TRAILING_CHARACTERS)

    def visit_container(self, visit: Callable[[], _T], end: Callable[[], None]) -> _T:
        """`check_recursion!` + visit + `end_seq`/`end_map`; the visit's error wins."""
        self.enter()
        self.eat()
        try:
            result = visit()
        except SerdeJsonError as err:
            self.remaining_depth += 1
            with contextlib.suppress(SerdeJsonError):
                end()  # runs in Rust too (its side effects move the error position)
            raise err from None
        self.remaining_depth += 1
        end()
        return result

    # ------------------------------------------------------------------ values

    def deserialize_any(self) -> JsonValue:  # noqa: PLR0911 - one return per JSON value kind
        """`Value::deserialize`: any JSON value."""
        byte = self.parse_whitespace()
        if byte is None:
            raise self.peek_error(EOF_VALUE)
        if byte == ord("n"):
            self.eat()
            self.parse_ident(b"ull")
            return None
        if byte == ord("t"):
            self.eat()
            self.parse_ident(b"rue")
            return True
        if byte == ord("f"):
            self.eat()
            self.parse_ident(b"alse")
            return False
        if byte == ord("-"):
            self.eat()
            return self.parse_integer(positive=False)
        if is_digit(byte):
            return self.parse_integer(positive=True)
        if byte == QUOTE:
            self.eat()
            return self.parse_str()
        if byte == ord("["):
            return self.visit_container(self._visit_array, self.end_seq)
        if byte == ord("{"):
            return self.visit_container(self._visit_object, self.end_map)
        raise self.peek_error(EXPECTED_VALUE)

    def _visit_array(self) -> list[JsonValue]:
        items: list[JsonValue] = []
        while self.next_element_start(first=not items):
            items.append(self.deserialize_any())
        return items

    def _visit_object(self) -> dict[str, JsonValue]:
        entries: dict[str, JsonValue] = {}
        first = True
        while (key := self.next_key(first)) is not None:
            first = False
            self.parse_object_colon()
            entries[key] = self.deserialize_any()  # a repeated key keeps the last value
        return entries

    def ignore_value(self) -> None:
        """`Deserializer::ignore_value` (`IgnoredAny`): validate and skip one value.

        A faithful port of serde_json's iterative skipper, including where its messages
        differ from a real parse (`[1,]` is "expected value", `1e` is "invalid number").
        """
        frames: list[int] = []
        enclosing: int | None = None
        while True:
            opened = self._ignore_scalar_or_open(frames, enclosing)
            if opened is not None:
                frame, accept_comma = opened, False
            elif enclosing is not None:
                frame, accept_comma = enclosing, True
            elif frames:
                frame, accept_comma = frames.pop(), True
            else:
                return
            enclosing = None
            closed = self._ignore_close(frames, frame, accept_comma)
            if closed is None:
                return
            if closed == ord("{"):
                byte = self.parse_whitespace()
                if byte is None:
                    raise self.peek_error(EOF_OBJECT)
                if byte != QUOTE:
                    raise self.peek_error(KEY_MUST_BE_A_STRING)
                self.eat()
                self.ignore_str()
                self.parse_object_colon()
            enclosing = closed

    def _ignore_scalar_or_open(self, frames: list[int], enclosing: int | None) -> int | None:
        """Skip a scalar (`None`) or open a container (its opening byte)."""
        byte = self.parse_whitespace()
        if byte is None:
            raise self.peek_error(EOF_VALUE)
        if byte in b"ntf":
            self.eat()
            self.parse_ident({ord("n"): b"ull", ord("t"): b"rue"}.get(byte, b"alse"))
        elif byte == ord("-"):
            self.eat()
            self.ignore_integer()
        elif is_digit(byte):
            self.ignore_integer()
        elif byte == QUOTE:
            self.eat()
            self.ignore_str()
        elif byte in b"[{":
            if enclosing is not None:
                frames.append(enclosing)
            self.eat()
            return byte
        else:
            raise self.peek_error(EXPECTED_VALUE)
        return None

    def _ignore_close(self, frames: list[int], frame: int, accept_comma: bool) -> int | None:
        """After a value: consume a `,` or closing brackets; the frame to go on in."""
        while True:
            byte = self.parse_whitespace()
            if byte == ord(",") and accept_comma:
                self.eat()
                return frame
            is_list = frame == ord("[")
            if byte is None:
                raise self.peek_error(EOF_LIST if is_list else EOF_OBJECT)
            if byte != (ord("]") if is_list else ord("}")):
                if accept_comma:
                    raise self.peek_error(
                        EXPECTED_LIST_COMMA_OR_END if is_list else EXPECTED_OBJECT_COMMA_OR_END
                    )
                return frame
            self.eat()
            if not frames:
                return None
            frame, accept_comma = frames.pop(), True

    def peek_invalid_type(self, expected: str) -> SerdeJsonError:
        """`Deserializer::peek_invalid_type`: name the value that is there instead."""
        byte = self.peek_or_null()
        try:
            unexpected = self._peek_unexpected(byte)
        except SerdeJsonError as err:
            return err
        if unexpected is None:
            return self.fix(self.peek_error(EXPECTED_VALUE))
        return self.fix(invalid_type(unexpected, expected))

    def _peek_unexpected(self, byte: int) -> str | None:
        """Consume the value at `byte` and describe it (`None`: no value starts there)."""
        idents = {ord("n"): (b"ull", "null"), ord("t"): (b"rue", "boolean `true`"),
                  ord("f"): (b"alse", "boolean `false`")}  # fmt: skip
        containers = {ord("["): "sequence", ord("{"): "map"}
        if byte in idents:
            rest, text = idents[byte]
            self.eat()
            self.parse_ident(rest)
            return text
        if byte in containers:
            return containers[byte]  # not consumed: the error points at the bracket
        if byte == QUOTE:
            self.eat()
            return f"string {rust_debug_str(self.parse_str())}"
        positive = byte != ord("-")
        if not positive:
            self.eat()
        elif not is_digit(byte):
            return None
        return number_unexpected(self.parse_integer(positive=positive))


# ---------------------------------------------------------------------- typed reads


def read_string(reader: Deserializer) -> str:
    """`String::deserialize` (`deserialize_str`, expecting "a string")."""
    byte = reader.parse_whitespace()
    if byte is None:
        raise reader.peek_error(EOF_VALUE)
    if byte != QUOTE:
        raise reader.peek_invalid_type("a string")
    reader.eat()
    return reader.parse_str()


def read_u64(reader: Deserializer, expected: str = "u64") -> int:
    """`u64::deserialize` / `usize::deserialize` (`deserialize_number`)."""
    byte = reader.parse_whitespace()
    if byte is None:
        raise reader.peek_error(EOF_VALUE)
    if byte == ord("-"):
        reader.eat()
        number = reader.parse_integer(positive=False)
    elif is_digit(byte):
        number = reader.parse_integer(positive=True)
    else:
        raise reader.peek_invalid_type(expected)
    try:
        return visit_unsigned(number, expected)
    except SerdeJsonError as err:
        raise reader.fix(err) from None


def read_bool(reader: Deserializer) -> bool:
    """`bool::deserialize` (`deserialize_bool`, expecting "a boolean")."""
    byte = reader.parse_whitespace()
    if byte is None:
        raise reader.peek_error(EOF_VALUE)
    if byte == ord("t"):
        reader.eat()
        reader.parse_ident(b"rue")
        return True
    if byte == ord("f"):
        reader.eat()
        reader.parse_ident(b"alse")
        return False
    raise reader.peek_invalid_type("a boolean")


def read_option(reader: Deserializer, inner: Callable[[Deserializer], _T]) -> _T | None:
    """`Option<T>::deserialize` (`deserialize_option`): `null` is `None`."""
    if reader.parse_whitespace() == ord("n"):
        reader.eat()
        reader.parse_ident(b"ull")
        return None
    return inner(reader)


@dataclass(frozen=True, slots=True)
class StructField:
    """One field of a derived struct: its JSON name, reader and `#[serde(default)]`."""

    name: str
    read: Callable[[Deserializer], object]
    default: Callable[[], object] | None = None


def _missing_field(name: str) -> SerdeJsonError:
    return SerdeJsonError(f"missing field `{name}`")


def _visit_struct_map(reader: Deserializer, fields: Sequence[StructField]) -> dict[str, object]:
    by_name = {field.name: field for field in fields}
    values: dict[str, object] = {}
    first = True
    while (key := reader.next_key(first)) is not None:
        first = False
        field = by_name.get(key)
        if field is not None and field.name in values:
            raise SerdeJsonError(f"duplicate field `{field.name}`")
        reader.parse_object_colon()
        if field is None:
            reader.ignore_value()
        else:
            values[field.name] = field.read(reader)
    for field in fields:
        if field.name not in values:
            if field.default is None:
                raise _missing_field(field.name)
            values[field.name] = field.default()
    return values


def _visit_struct_seq(
    reader: Deserializer, struct_name: str, fields: Sequence[StructField]
) -> dict[str, object]:
    values: dict[str, object] = {}
    count = len(fields)
    expecting = f"struct {struct_name} with {count} element{'' if count == 1 else 's'}"
    for position, field in enumerate(fields):
        if reader.next_element_start(first=position == 0):
            values[field.name] = field.read(reader)
        elif field.default is not None:
            values[field.name] = field.default()
        else:
            raise SerdeJsonError(f"invalid length {position}, expected {expecting}")
    return values


def from_str_struct(
    text: str, struct_name: str, fields: Sequence[StructField]
) -> dict[str, object]:
    """`serde_json::from_str::<Struct>(text)` for a plain `#[derive(Deserialize)]` struct."""
    reader = Deserializer(text)
    byte = reader.parse_whitespace()
    if byte is None:
        raise reader.peek_error(EOF_VALUE)
    try:
        if byte == ord("["):
            values = reader.visit_container(
                lambda: _visit_struct_seq(reader, struct_name, fields), reader.end_seq
            )
        elif byte == ord("{"):
            values = reader.visit_container(
                lambda: _visit_struct_map(reader, fields), reader.end_map
            )
        else:
            raise reader.peek_invalid_type(f"struct {struct_name}")
    except SerdeJsonError as err:
        raise reader.fix(err) from None
    reader.end()
    return values


def parse_value(text: str) -> JsonValue:
    """`serde_json::from_str::<serde_json::Value>(text)`; raises `SerdeJsonError`."""
    reader = Deserializer(text)
    value = reader.deserialize_any()
    reader.end()
    return value


def _expect_never(value: object) -> NoReturn:  # pragma: no cover - typing helper
    """Fail loudly on a value outside the JSON model."""
    raise TypeError(f"not a JSON value: {value!r}")


# ---------------------------------------------------------------------- writing

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
            "\t": "\\t"}  # fmt: skip
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_I64_MIN: Final = -(1 << 63)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def quote(text: str) -> str:
    """`serde_json::to_string(&text)`: a JSON string literal, non-ASCII kept as is."""
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, text) + '"'


def to_string(value: JsonValue) -> str:  # noqa: PLR0911 - one return per JSON value kind
    """`serde_json::to_string(&value)`: compact, object keys in sorted order."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if _I64_MIN <= value <= U64_MAX:
            return str(value)
        return ryu_format(float(value))
    if isinstance(value, float):
        return ryu_format(value) if math.isfinite(value) else "null"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, list):
        return "[" + ",".join(to_string(item) for item in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ",".join(f"{quote(key)}:{to_string(value[key])}" for key in sorted(value)) + "}"
        )
    _expect_never(value)

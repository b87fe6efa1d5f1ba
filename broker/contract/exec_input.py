"""Parse the `exec` tool input: raw JavaScript with an optional first-line pragma (spec §1.1).

A port of Codex's `parse_exec_source` (`code-mode-protocol/src/description.rs`). The
pragma line `// @exec: {"yield_time_ms": 10000, "max_output_tokens": 1000}` is parsed the
way Codex parses it: `serde_json::from_str::<Value>` on the trimmed text after the prefix,
a key check in the `Value` map's (sorted, `BTreeMap`) key order, then
`serde_json::from_value` into `Option<u64>` / `Option<usize>` fields, whose errors carry
no position. Every `PragmaError` message is the exact text the model sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cellfleet.broker.contract.rust.serde_json import (
    SerdeJsonError,
    parse_value,
    value_unexpected,
    visit_unsigned,
)
from cellfleet.broker.contract.rust.text import rust_trim, rust_trim_start
from cellfleet.broker.contract.texts import (
    EMPTY_SOURCE_ERROR,
    EXEC_NON_CUSTOM_PAYLOAD_ERROR,
    FIELD_TYPE_ERROR,
    INVALID_JSON_ERROR,
    MISSING_SOURCE_ERROR,
    NOT_AN_OBJECT_ERROR,
    UNKNOWN_FIELD_ERROR,
    UNSAFE_INTEGER_ERROR,
)
from cellfleet.broker.contract.tools import JsonValue

__all__ = [
    "CODE_MODE_PRAGMA_PREFIX",
    "EXEC_NON_CUSTOM_PAYLOAD_ERROR",
    "MAX_JS_SAFE_INTEGER",
    "ExecSource",
    "PragmaError",
    "parse_exec_source",
]

CODE_MODE_PRAGMA_PREFIX: Final = "// @exec:"
MAX_JS_SAFE_INTEGER: Final = (1 << 53) - 1


# Field name -> the Rust type's name in serde's "expected ..." texts. Listed in the
# order `from_value` visits them: the `Value` map iterates its keys sorted.
_FIELD_TYPES: Final = {"max_output_tokens": "usize", "yield_time_ms": "u64"}


class PragmaError(ValueError):
    """The `exec` input was rejected; `str(error)` is the model-visible message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ExecSource:
    """The JavaScript to run and the pragma's options (`None` when not given)."""

    code: str
    yield_time_ms: int | None = None
    max_output_tokens: int | None = None


def parse_exec_source(text: str) -> ExecSource:
    """Split `exec` input into code and pragma options; raise `PragmaError` when invalid."""
    if not rust_trim(text):
        raise PragmaError(EMPTY_SOURCE_ERROR)
    first_line, newline, rest = text.partition("\n")
    trimmed = rust_trim_start(first_line)
    if not trimmed.startswith(CODE_MODE_PRAGMA_PREFIX):
        return ExecSource(code=text)
    if not newline or not rust_trim(rest):
        raise PragmaError(MISSING_SOURCE_ERROR)
    directive = rust_trim(trimmed.removeprefix(CODE_MODE_PRAGMA_PREFIX))
    if not directive:
        raise PragmaError(NOT_AN_OBJECT_ERROR)
    try:
        value = parse_value(directive)
    except SerdeJsonError as err:
        raise PragmaError(INVALID_JSON_ERROR.format(error=err)) from None
    if not isinstance(value, dict):
        raise PragmaError(NOT_AN_OBJECT_ERROR)
    for key in sorted(value):
        if key not in _FIELD_TYPES:
            raise PragmaError(UNKNOWN_FIELD_ERROR.format(key=key))
    options = {name: _option_from_value(value.get(name), rust_type) for name, rust_type in
               _FIELD_TYPES.items()}  # fmt: skip
    for name in ("yield_time_ms", "max_output_tokens"):
        option = options[name]
        if option is not None and option > MAX_JS_SAFE_INTEGER:
            raise PragmaError(UNSAFE_INTEGER_ERROR.format(field=name))
    return ExecSource(
        code=rest,
        yield_time_ms=options["yield_time_ms"],
        max_output_tokens=options["max_output_tokens"],
    )


def _option_from_value(value: JsonValue, rust_type: str) -> int | None:
    """`Option<u64>` / `Option<usize>` from a `Value` (`serde_json::from_value`)."""
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SerdeJsonError(f"invalid type: {value_unexpected(value)}, expected {rust_type}")
        return visit_unsigned(value, rust_type)
    except SerdeJsonError as err:
        raise PragmaError(FIELD_TYPE_ERROR.format(error=err)) from None

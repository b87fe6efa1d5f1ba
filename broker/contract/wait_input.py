"""Parse the `wait` tool's JSON arguments (spec §1.2).

Codex deserializes them with `serde_json::from_str` into

    #[derive(Deserialize)]
    struct ExecWaitArgs {
        cell_id: String,
        #[serde(default = "default_wait_yield_time_ms")] yield_time_ms: u64,
        #[serde(default)] max_tokens: Option<usize>,
        #[serde(default)] terminate: bool,
    }

(no `deny_unknown_fields`: other keys are skipped) and answers a failure with
`failed to parse function arguments: {serde error}`; `contract.rust.serde_json`
reproduces the serde texts and positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, cast

from cellfleet.broker.contract.rust.serde_json import (
    Deserializer,
    SerdeJsonError,
    StructField,
    from_str_struct,
    read_bool,
    read_option,
    read_string,
    read_u64,
)
from cellfleet.broker.contract.texts import WAIT_NON_FUNCTION_PAYLOAD_ERROR, WAIT_PARSE_ERROR

__all__ = [
    "DEFAULT_WAIT_YIELD_TIME_MS",
    "WAIT_NON_FUNCTION_PAYLOAD_ERROR",
    "WaitArguments",
    "WaitArgumentsError",
    "parse_wait_arguments",
]

DEFAULT_WAIT_YIELD_TIME_MS: Final = 10_000


class WaitArgumentsError(ValueError):
    """The `wait` arguments were rejected; `str(error)` is the model-visible message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitArguments:
    """Parsed `wait` arguments; `max_tokens=None` means the 10 000-token default."""

    cell_id: str
    yield_time_ms: int = DEFAULT_WAIT_YIELD_TIME_MS
    max_tokens: int | None = None
    terminate: bool = False


def _read_max_tokens(reader: Deserializer) -> int | None:
    return read_option(reader, lambda inner: read_u64(inner, "usize"))


_FIELDS: Final = (
    StructField("cell_id", read_string),
    StructField("yield_time_ms", read_u64, lambda: DEFAULT_WAIT_YIELD_TIME_MS),
    StructField("max_tokens", _read_max_tokens, lambda: None),
    StructField("terminate", read_bool, lambda: False),
)


def parse_wait_arguments(arguments: str) -> WaitArguments:
    """Deserialize `wait` arguments; raise `WaitArgumentsError` with Codex's message."""
    try:
        values = from_str_struct(arguments, "ExecWaitArgs", _FIELDS)
    except SerdeJsonError as err:
        raise WaitArgumentsError(WAIT_PARSE_ERROR.format(error=err)) from None
    # The field readers above fix each value's type.
    return WaitArguments(
        cell_id=cast(str, values["cell_id"]),
        yield_time_ms=cast(int, values["yield_time_ms"]),
        max_tokens=cast(int | None, values["max_tokens"]),
        terminate=cast(bool, values["terminate"]),
    )

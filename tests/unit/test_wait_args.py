"""`wait` argument parsing (spec §1.2): Codex's `ExecWaitArgs` and serde_json's texts."""

from __future__ import annotations

import pytest

from cellfleet.broker.contract.wait_input import (
    DEFAULT_WAIT_YIELD_TIME_MS,
    WAIT_NON_FUNCTION_PAYLOAD_ERROR,
    WaitArguments,
    WaitArgumentsError,
    parse_wait_arguments,
)

PREFIX = "failed to parse function arguments: "


def error_of(arguments: str) -> str:
    with pytest.raises(WaitArgumentsError) as caught:
        parse_wait_arguments(arguments)
    return str(caught.value)


def test_constants() -> None:
    assert WAIT_NON_FUNCTION_PAYLOAD_ERROR == "wait expects JSON arguments"
    assert DEFAULT_WAIT_YIELD_TIME_MS == 10_000


def test_defaults() -> None:
    assert parse_wait_arguments('{"cell_id": "1"}') == WaitArguments(
        cell_id="1", yield_time_ms=10_000, max_tokens=None, terminate=False
    )


def test_all_fields() -> None:
    arguments = '{"cell_id":"c9","yield_time_ms":250,"max_tokens":42,"terminate":true}'
    assert parse_wait_arguments(arguments) == WaitArguments(
        cell_id="c9", yield_time_ms=250, max_tokens=42, terminate=True
    )


def test_null_max_tokens_is_the_default_and_u64_max_is_accepted() -> None:
    parsed = parse_wait_arguments(
        '{"cell_id":"1","max_tokens":null,"yield_time_ms":18446744073709551615}'
    )
    assert parsed.max_tokens is None
    assert parsed.yield_time_ms == 18446744073709551615


def test_unknown_fields_are_skipped_but_must_be_valid_json() -> None:
    parsed = parse_wait_arguments('{"cell_id":"1","foo":{"bar":[1,2.5e3,{"x":null}]},"t":true}')
    assert parsed == WaitArguments(cell_id="1")
    assert error_of('{"cell_id":"1","foo":[1,]}') == PREFIX + "expected value at line 1 column 25"


def test_escaped_field_names_match() -> None:
    assert parse_wait_arguments('{"cell\\u005fid":"x"}').cell_id == "x"


def test_array_form_of_the_struct() -> None:
    assert parse_wait_arguments('["7"]') == WaitArguments(cell_id="7")
    assert parse_wait_arguments('["7", 5, null, true]') == WaitArguments(
        cell_id="7", yield_time_ms=5, terminate=True
    )


@pytest.mark.parametrize(
    ("arguments", "serde_error"),
    [
        ('{"cell_id":5}', "invalid type: integer `5`, expected a string at line 1 column 12"),
        ('{"cell_id":null}', "invalid type: null, expected a string at line 1 column 15"),
        ('{"cell_id":[1]}', "invalid type: sequence, expected a string at line 1 column 11"),
        ('{"cell_id":true}', "invalid type: boolean `true`, expected a string at line 1 column 15"),
        ("{}", "missing field `cell_id` at line 1 column 2"),
        ('{"terminate":true}', "missing field `cell_id` at line 1 column 18"),
        ('{"cell_id":"1","cell_id":"2"}', "duplicate field `cell_id` at line 1 column 24"),
        (
            '{"cell_id":"1","yield_time_ms":-1}',
            "invalid value: integer `-1`, expected u64 at line 1 column 33",
        ),
        (
            '{"cell_id":"1","yield_time_ms":1.5}',
            "invalid type: floating point `1.5`, expected u64 at line 1 column 34",
        ),
        (
            '{"cell_id":"1","yield_time_ms":1e3}',
            "invalid type: floating point `1000.0`, expected u64 at line 1 column 34",
        ),
        (
            '{"cell_id":"1","yield_time_ms":"10"}',
            'invalid type: string "10", expected u64 at line 1 column 35',
        ),
        (
            '{"cell_id":"1","yield_time_ms":null}',
            "invalid type: null, expected u64 at line 1 column 35",
        ),
        (
            '{"cell_id":"1","max_tokens":-3}',
            "invalid value: integer `-3`, expected usize at line 1 column 30",
        ),
        (
            '{"cell_id":"1","terminate":1}',
            "invalid type: integer `1`, expected a boolean at line 1 column 28",
        ),
        (
            '{"cell_id":"1","terminate":"yes"}',
            'invalid type: string "yes", expected a boolean at line 1 column 32',
        ),
        ("[]", "invalid length 0, expected struct ExecWaitArgs with 4 elements at line 1 column 2"),
        ('["7", 5, null, true, 1]', "trailing characters at line 1 column 22"),
        ('"x"', 'invalid type: string "x", expected struct ExecWaitArgs at line 1 column 3'),
        ("5", "invalid type: integer `5`, expected struct ExecWaitArgs at line 1 column 1"),
        ("null", "invalid type: null, expected struct ExecWaitArgs at line 1 column 4"),
        ("", "EOF while parsing a value at line 1 column 0"),
        ('{"cell_id":"1"} x', "trailing characters at line 1 column 17"),
        ('{"cell_id":"1",}', "trailing comma at line 1 column 16"),
        ('{"cell_id":"1"', "EOF while parsing an object at line 1 column 14"),
        (
            '{\n  "cell_id": 5\n}',
            "invalid type: integer `5`, expected a string at line 2 column 14",
        ),
    ],
)
def test_parse_errors(arguments: str, serde_error: str) -> None:
    assert error_of(arguments) == PREFIX + serde_error

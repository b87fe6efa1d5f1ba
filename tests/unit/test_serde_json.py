"""The serde_json-compatible reader/writer and the Rust text helpers behind the texts."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cellfleet.broker.contract.rust.serde_json import SerdeJsonError, parse_value, quote, to_string
from cellfleet.broker.contract.rust.text import (
    rust_debug_str,
    rust_lines,
    rust_trim,
    rust_trim_start,
    ryu_format,
)
from cellfleet.broker.contract.wait_input import WaitArgumentsError, parse_wait_arguments


def parse_error(text: str) -> str:
    with pytest.raises(SerdeJsonError) as caught:
        parse_value(text)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (
            ' {"a": [1, -2, 3.5, true, false, null, "s"]} ',
            {"a": [1, -2, 3.5, True, False, None, "s"]},
        ),
        ("18446744073709551615", 18446744073709551615),
        ("-9223372036854775808", -9223372036854775808),
        ("0.1e1", 1.0),
        ("1E+2", 100.0),
        ("1e-400", 0.0),
        ("123456789012345678901234567890", 1.2345678901234568e29),
        ("0.12345678901234567890123", 0.12345678901234568),
        ('"\\u00e9\\ud83d\\ude00\\n\\/\\b"', "é😀\n/\b"),
        ('{"k": 1, "k": 2}', {"k": 2}),
        ("[[[]]]", [[[]]]),
    ],
)
def test_parse_values(text: str, value: Any) -> None:
    assert parse_value(text) == value


def test_number_kinds_follow_serde_json() -> None:
    negative_zero = parse_value("-0")
    assert isinstance(negative_zero, float)
    assert math.copysign(1.0, negative_zero) == -1.0
    assert isinstance(parse_value("18446744073709551616"), float)  # beyond u64
    assert isinstance(parse_value("-9223372036854775809"), float)  # below i64
    assert isinstance(parse_value("1.0"), float)
    assert isinstance(parse_value("7"), int)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "EOF while parsing a value at line 1 column 0"),
        ("   ", "EOF while parsing a value at line 1 column 3"),
        ("x", "expected value at line 1 column 1"),
        ("{x", "key must be a string at line 1 column 2"),
        ("[}", "expected value at line 1 column 2"),
        ('{"a":1', "EOF while parsing an object at line 1 column 6"),
        ("[1", "EOF while parsing a list at line 1 column 2"),
        ("[1 2]", "expected `,` or `]` at line 1 column 4"),
        ("[1,]", "trailing comma at line 1 column 4"),
        ('{"a":1,}', "trailing comma at line 1 column 8"),
        ('"abc', "EOF while parsing a string at line 1 column 4"),
        ('"a\\x"', "invalid escape at line 1 column 4"),
        ('"\\u12"', "EOF while parsing a string at line 1 column 6"),
        ('"\\u12G4"', "invalid escape at line 1 column 7"),
        ('"\\ud800"', "unexpected end of hex escape at line 1 column 8"),
        ('"\\udc00"', "lone leading surrogate in hex escape at line 1 column 7"),
        ('"\\ud800\\u0041"', "lone leading surrogate in hex escape at line 1 column 13"),
        (
            '"a\x01"',
            "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 3",
        ),
        (
            '"a\nb"',
            "control character (\\u0000-\\u001F) found while parsing a string at line 2 column 0",
        ),
        ("01", "invalid number at line 1 column 2"),
        ("-", "EOF while parsing a value at line 1 column 1"),
        ("-x", "invalid number at line 1 column 2"),
        ("1.", "EOF while parsing a value at line 1 column 2"),
        ("1.e5", "invalid number at line 1 column 3"),
        ("1e", "EOF while parsing a value at line 1 column 2"),
        ("1e+", "EOF while parsing a value at line 1 column 3"),
        ("1e400", "number out of range at line 1 column 5"),
        ("nul", "EOF while parsing a value at line 1 column 3"),
        ("nulx", "expected ident at line 1 column 4"),
        ("[1] x", "trailing characters at line 1 column 5"),
        ('"é" x', "trailing characters at line 1 column 6"),
        ('\n\n  {"a":\n x}', "expected value at line 4 column 2"),
        ("[" * 127 + "]" * 127, None),
        ("[" * 128, "recursion limit exceeded at line 1 column 128"),
    ],
)
def test_syntax_errors(text: str, error: str | None) -> None:
    if error is None:
        parse_value(text)
    else:
        assert parse_error(text) == error


def test_skipped_values_are_checked_laxly_like_serde_json() -> None:
    # An unknown field is skipped with `IgnoredAny`, which does not range-check numbers
    # and reports a truncated exponent as an invalid number.
    assert parse_wait_arguments('{"cell_id":"1","x":1e999}').cell_id == "1"
    with pytest.raises(WaitArgumentsError) as caught:
        parse_wait_arguments('{"cell_id":"1","x":1e')
    assert (
        str(caught.value)
        == "failed to parse function arguments: invalid number at line 1 column 21"
    )
    with pytest.raises(WaitArgumentsError) as caught:
        parse_wait_arguments('{"cell_id":"1","x":{"a" 1}}')
    assert (
        str(caught.value) == "failed to parse function arguments: expected `:` at line 1 column 25"
    )


def test_to_string_is_compact_sorted_and_escaped() -> None:
    value = {"b": [1, 2.0, -0.0, 1e20, 0.5], "a": None, "c": True, "d": 'é\n\x1f"\\/\x7f'}
    assert to_string(value) == (
        '{"a":null,"b":[1,2.0,-0.0,1e20,0.5],"c":true,"d":"é\\n\\u001f\\"\\\\/\x7f"}'
    )
    assert to_string(float("nan")) == "null"
    assert to_string(2**70) == "1.1805916207174113e21"
    assert quote("tab\there") == '"tab\\there"'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1.0"),
        (0.1, "0.1"),
        (1.5, "1.5"),
        (-2.5, "-2.5"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1e15, "1000000000000000.0"),
        (1234567890123456.0, "1234567890123456.0"),
        (1e16, "1e16"),
        (1.8446744073709552e19, "1.8446744073709552e19"),
        (123e20, "1.23e22"),
        (0.001, "0.001"),
        (1e-5, "0.00001"),
        (1e-6, "1e-6"),
        (1.5e-7, "1.5e-7"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e308"),
        (math.inf, "inf"),
    ],
)
def test_ryu_format(value: float, text: str) -> None:
    assert ryu_format(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", '"plain"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\t\r\n\0", '"\\t\\r\\n\\0"'),
        ("\x1b\x7f", '"\\u{1b}\\u{7f}"'),
        ("it's é", '"it\'s é"'),
        ("e\u0301", '"e\\u{301}"'),  # combining mark (Grapheme_Extend)
        ("\u200b\u00a0", '"\\u{200b}\\u{a0}"'),  # format char, non-ASCII space
    ],
)
def test_rust_debug_str(value: str, text: str) -> None:
    assert rust_debug_str(value) == text


def test_rust_trim_and_lines() -> None:
    assert rust_trim("\u3000 x \x85\n") == "x"
    assert rust_trim("\x1cx\x1c") == "\x1cx\x1c"
    assert rust_trim_start("  x  ") == "x  "
    assert rust_lines("") == []
    assert rust_lines("\n") == [""]
    assert rust_lines("a\r\nb\n") == ["a", "b"]
    assert rust_lines("a\n\nb\r") == ["a", "", "b\r"]

"""`exec` input parsing: every rule of spec §1.1 with its exact model-visible text."""

from __future__ import annotations

import pytest

from cellfleet.broker.contract.exec_input import (
    CODE_MODE_PRAGMA_PREFIX,
    EXEC_NON_CUSTOM_PAYLOAD_ERROR,
    MAX_JS_SAFE_INTEGER,
    ExecSource,
    PragmaError,
    parse_exec_source,
)

EMPTY = (
    "exec expects raw JavaScript source text (non-empty). Provide JS only, optionally with "
    'first-line `// @exec: {"yield_time_ms": 10000, "max_output_tokens": 1000}`.'
)
NO_SOURCE = "exec pragma must be followed by JavaScript source on subsequent lines"
NOT_OBJECT = (
    "exec pragma must be a JSON object with supported fields `yield_time_ms` and "
    "`max_output_tokens`"
)
INVALID_JSON = (
    "exec pragma must be valid JSON with supported fields `yield_time_ms` and `max_output_tokens`: "
)
BAD_FIELD = (
    "exec pragma fields `yield_time_ms` and `max_output_tokens` must be non-negative safe "
    "integers: "
)


def error_of(text: str) -> str:
    with pytest.raises(PragmaError) as caught:
        parse_exec_source(text)
    assert caught.value.message == str(caught.value)
    return str(caught.value)


def test_constants() -> None:
    assert CODE_MODE_PRAGMA_PREFIX == "// @exec:"
    assert EXEC_NON_CUSTOM_PAYLOAD_ERROR == "exec expects raw JavaScript source text"
    assert MAX_JS_SAFE_INTEGER == 9007199254740991


# ---------------------------------------------------------------- rule 1: empty input


@pytest.mark.parametrize("text", ["", " ", "\n", "  \t\r\n  ", "\u3000\u00a0\u2028"])
def test_rule1_empty_or_whitespace_only(text: str) -> None:
    assert error_of(text) == EMPTY


def test_rule1_whitespace_is_rusts_not_pythons() -> None:
    # U+001C is whitespace for Python's str.strip but not for Rust's str::trim.
    assert parse_exec_source("\x1c") == ExecSource(code="\x1c")


# ---------------------------------------------------------------- rule 2: no pragma


@pytest.mark.parametrize(
    "text",
    [
        "text('hi')",
        "//@exec: {}\ntext(1)",  # no space after `//`
        'text(1)\n// @exec: {"yield_time_ms": 5}\ntext(2)',  # pragma not on line 1
        "/* // @exec: {} */\ntext(1)",
        "  text(1)  \n",
    ],
)
def test_rule2_without_prefix_the_whole_input_is_code(text: str) -> None:
    assert parse_exec_source(text) == ExecSource(code=text, yield_time_ms=None)


# ---------------------------------------------------------------- rule 3: source required


@pytest.mark.parametrize(
    "text",
    [
        '// @exec: {"yield_time_ms": 10}',
        '// @exec: {"yield_time_ms": 10}\n',
        '// @exec: {"yield_time_ms": 10}\n   \n\t',
        "// @exec: not json at all",  # checked before the JSON
        "// @exec:",
    ],
)
def test_rule3_pragma_needs_source_after_it(text: str) -> None:
    assert error_of(text) == NO_SOURCE


# ---------------------------------------------------------------- rule 4 and 6: not an object


@pytest.mark.parametrize(
    "text",
    [
        "// @exec:\ntext(1)",
        "// @exec:    \t\ntext(1)",
        "// @exec: [1]\ntext(1)",
        "// @exec: 5\ntext(1)",
        '// @exec: "x"\ntext(1)',
        "// @exec: null\ntext(1)",
        "// @exec: true\ntext(1)",
    ],
)
def test_rules_4_and_6_not_a_json_object(text: str) -> None:
    assert error_of(text) == NOT_OBJECT


# ---------------------------------------------------------------- rule 5: invalid JSON


@pytest.mark.parametrize(
    ("directive", "serde_error"),
    [
        ("[,]", "expected value at line 1 column 2"),
        ("{", "EOF while parsing an object at line 1 column 1"),
        ('{"abcd": 1', "EOF while parsing an object at line 1 column 10"),
        ('{"yield_time_ms": 10,}', "trailing comma at line 1 column 22"),
        ('{"yield_time_ms": 10} x', "trailing characters at line 1 column 23"),
        ("yield_time_ms=10", "expected value at line 1 column 1"),
        ("{yield_time_ms: 10}", "key must be a string at line 1 column 2"),
        ('{"yield_time_ms" 10}', "expected `:` at line 1 column 18"),
        ('{"yield_time_ms": 10 "max_output_tokens": 1}', "expected `,` or `}` at line 1 column 22"),
        ('{"yield_time_ms": 01}', "invalid number at line 1 column 20"),
        ('{"yield_time_ms": 1e999}', "number out of range at line 1 column 23"),
        ('{"yield_time_ms": tru}', "expected ident at line 1 column 22"),
        ('{"a\\q": 1}', "invalid escape at line 1 column 5"),
        ('{"é": }', "expected value at line 1 column 8"),  # columns count bytes
    ],
)
def test_rule5_invalid_json_reports_serde_json_error(directive: str, serde_error: str) -> None:
    assert error_of(f"// @exec: {directive}\ntext(1)") == INVALID_JSON + serde_error


# ---------------------------------------------------------------- rule 7: unknown keys


@pytest.mark.parametrize(
    ("directive", "key"),
    [
        ('{"timeout": 5}', "timeout"),
        ('{"yield_time_ms": 1, "extra": 2}', "extra"),
        ('{"zeta": 1, "alpha": 2}', "alpha"),  # the Value map iterates keys sorted
        ('{"yield_time_ms": "not checked yet", "zzz": 1}', "zzz"),
        ('{"a`b": null}', "a`b"),
        ('{"": 0}', ""),
    ],
)
def test_rule7_only_the_two_fields(directive: str, key: str) -> None:
    expected = f"exec pragma only supports `yield_time_ms` and `max_output_tokens`; got `{key}`"
    assert error_of(f"// @exec: {directive}\ntext(1)") == expected


# ---------------------------------------------------------------- rule 8: field types


@pytest.mark.parametrize(
    ("directive", "serde_error"),
    [
        ('{"yield_time_ms": "x"}', 'invalid type: string "x", expected u64'),
        ('{"yield_time_ms": -1}', "invalid value: integer `-1`, expected u64"),
        ('{"yield_time_ms": 1.5}', "invalid type: floating point `1.5`, expected u64"),
        ('{"yield_time_ms": 1e3}', "invalid type: floating point `1000.0`, expected u64"),
        ('{"yield_time_ms": 10.0}', "invalid type: floating point `10.0`, expected u64"),
        ('{"yield_time_ms": -0}', "invalid type: floating point `-0.0`, expected u64"),
        (
            '{"yield_time_ms": 18446744073709551616}',
            "invalid type: floating point `1.8446744073709552e19`, expected u64",
        ),
        ('{"yield_time_ms": true}', "invalid type: boolean `true`, expected u64"),
        ('{"yield_time_ms": []}', "invalid type: sequence, expected u64"),
        ('{"yield_time_ms": {}}', "invalid type: map, expected u64"),
        ('{"yield_time_ms": "a\\"b\\n"}', 'invalid type: string "a\\"b\\n", expected u64'),
        ('{"max_output_tokens": "x"}', 'invalid type: string "x", expected usize'),
        ('{"max_output_tokens": -5}', "invalid value: integer `-5`, expected usize"),
        # Both wrong: `max_output_tokens` sorts first, so its error is the one reported.
        (
            '{"yield_time_ms": "a", "max_output_tokens": "b"}',
            'invalid type: string "b", expected usize',
        ),
    ],
)
def test_rule8_fields_must_be_non_negative_integers(directive: str, serde_error: str) -> None:
    # serde_json::from_value errors carry no "at line … column …".
    assert error_of(f"// @exec: {directive}\ntext(1)") == BAD_FIELD + serde_error


def test_rule8_null_means_absent() -> None:
    parsed = parse_exec_source('// @exec: {"yield_time_ms": null, "max_output_tokens": null}\nx')
    assert parsed == ExecSource(code="x", yield_time_ms=None, max_output_tokens=None)


# ---------------------------------------------------------------- rule 9: safe integers


def test_rule9_largest_safe_integer_is_accepted() -> None:
    text = '// @exec: {"yield_time_ms": 9007199254740991, "max_output_tokens": 9007199254740991}\nx'
    parsed = parse_exec_source(text)
    assert parsed.yield_time_ms == MAX_JS_SAFE_INTEGER
    assert parsed.max_output_tokens == MAX_JS_SAFE_INTEGER


@pytest.mark.parametrize(
    ("directive", "field"),
    [
        ('{"yield_time_ms": 9007199254740992}', "yield_time_ms"),
        ('{"max_output_tokens": 9007199254740992}', "max_output_tokens"),
        ('{"yield_time_ms": 18446744073709551615}', "yield_time_ms"),
        # yield_time_ms is checked first.
        (
            '{"max_output_tokens": 9007199254740992, "yield_time_ms": 9007199254740992}',
            "yield_time_ms",
        ),
    ],
)
def test_rule9_unsafe_integers(directive: str, field: str) -> None:
    expected = f"exec pragma field `{field}` must be a non-negative safe integer"
    assert error_of(f"// @exec: {directive}\nx") == expected


# ---------------------------------------------------------------- rule 10: the code


def test_rule10_code_is_everything_after_the_first_newline() -> None:
    text = '// @exec: {"yield_time_ms": 10000, "max_output_tokens": 1000}\n\n  text(1)\ntext(2)\n'
    assert parse_exec_source(text) == ExecSource(
        code="\n  text(1)\ntext(2)\n", yield_time_ms=10000, max_output_tokens=1000
    )


def test_rule10_crlf_and_leading_whitespace() -> None:
    assert parse_exec_source(" \t// @exec: {}\r\ntext(1)") == ExecSource(code="text(1)")
    assert parse_exec_source('// @exec:{"yield_time_ms":0}  \nx') == ExecSource(
        code="x", yield_time_ms=0
    )


def test_rule10_repeated_key_keeps_the_last_value() -> None:
    parsed = parse_exec_source('// @exec: {"yield_time_ms": "x", "yield_time_ms": 7}\nx')
    assert parsed.yield_time_ms == 7


def test_codex_unit_test_cases() -> None:
    assert parse_exec_source("text('hi')") == ExecSource(code="text('hi')")
    assert parse_exec_source("// @exec: {\"yield_time_ms\": 10}\ntext('hi')") == ExecSource(
        code="text('hi')", yield_time_ms=10
    )

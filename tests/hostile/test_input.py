"""Hostile probes, family "malformed input": what a model (or a broken harness) may send
as `exec` and `wait` input. Each gets a plain, one-line failure with the spec's text
(the exact texts are unit-tested), nothing runs, and the session goes on."""

from __future__ import annotations

import pytest

from tests.integration.session_support import assert_output

EXEC_INPUTS = {
    "empty": ("", "exec expects raw JavaScript source text (non-empty)."),
    "only a pragma": ('// @exec: {"yield_time_ms": 10}', "exec pragma must be followed"),
    "a pragma that is not JSON": ("// @exec: {yield}\ntext(1)", "exec pragma must be valid JSON"),
    "a pragma that is an array": ("// @exec: [1]\ntext(1)", "exec pragma must be a JSON object"),
    "a pragma with another field": (
        '// @exec: {"shell": "rm -rf /"}\ntext(1)',
        "exec pragma only supports `yield_time_ms` and `max_output_tokens`; got `shell`",
    ),
    "a negative yield": ('// @exec: {"yield_time_ms": -1}\ntext(1)', "exec pragma fields"),
    "an unsafe integer": (
        '// @exec: {"max_output_tokens": 9007199254740993}\ntext(1)',
        "exec pragma field",
    ),
    "a fractional yield": ('// @exec: {"yield_time_ms": 1.5}\ntext(1)', "exec pragma fields"),
    "a huge pragma number": ('// @exec: {"yield_time_ms": 1e400}\ntext(1)', "exec pragma"),
}

WAIT_INPUTS = {
    "nothing": ("", "failed to parse function arguments: "),
    "half an object": ("{", "failed to parse function arguments: "),
    "an array": ("[]", "failed to parse function arguments: "),
    "a number as cell id": ('{"cell_id": 1}', "failed to parse function arguments: "),
    "no cell id": ("{}", "failed to parse function arguments: missing field `cell_id`"),
    "a negative yield": (
        '{"cell_id": "1", "yield_time_ms": -1}',
        "failed to parse function arguments: ",
    ),
    "a string for terminate": (
        '{"cell_id": "1", "terminate": "yes"}',
        "failed to parse function arguments: ",
    ),
    "a huge number": (
        '{"cell_id": "1", "max_tokens": 1e400}',
        "failed to parse function arguments: ",
    ),
    "deep nesting": ('{"cell_id": ' + "[" * 100_000, "failed to parse function arguments: "),
    "a lone surrogate": ('{"cell_id": "\\ud800"}', "failed to parse function arguments: "),
}


@pytest.mark.parametrize(("source", "text"), EXEC_INPUTS.values(), ids=list(EXEC_INPUTS))
def test_bad_exec_input_is_a_plain_failure(harness, source: str, text: str) -> None:
    output = harness.exec(source)
    assert (output.plain, output.success, len(output.items)) == (True, False, 1)
    assert output.items[0]["text"].startswith(text), output.items[0]["text"]
    assert "Traceback" not in output.items[0]["text"]
    assert harness.events() == [] or all(e.cell == "" for e in harness.events())  # ran nothing
    assert_output(harness.exec("text('fine')"), "Script completed", ["fine"])


@pytest.mark.parametrize(("arguments", "text"), WAIT_INPUTS.values(), ids=list(WAIT_INPUTS))
def test_bad_wait_input_is_a_plain_failure(harness, arguments: str, text: str) -> None:
    output = harness.session.wait(arguments)
    assert (output.plain, output.success, len(output.items)) == (True, False, 1)
    assert output.items[0]["text"].startswith(text), output.items[0]["text"]
    assert_output(harness.exec("text('fine')"), "Script completed", ["fine"])


def test_waiting_on_a_cell_that_never_was(harness) -> None:
    output = harness.session.wait('{"cell_id": "../../etc/passwd"}')
    assert_output(output, "Script failed", ["Script error:\nexec cell ../../etc/passwd not found"])

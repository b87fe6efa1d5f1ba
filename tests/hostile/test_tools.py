"""Hostile probes, family "tools": what a cell may do with nested tools. Each call gets
an answer or a clear error, nothing hangs, and the log stays consistent (every test's
log is checked when its session shuts down)."""

from __future__ import annotations

from tests.integration.session_support import assert_output


def test_calls_beyond_the_in_flight_limit_fail_at_once(harness) -> None:
    output = harness.exec(
        "const calls = Array.from({length: 300}, () => tools.sleep({ms: 50}));\n"
        "const settled = await Promise.allSettled(calls);\n"
        "const refused = settled.filter((s) => s.status === 'rejected');\n"
        "text(`${refused.length} ${settled.length - refused.length} ${refused[0].reason}`);"
    )
    assert_output(
        output,
        "Script completed",
        ["44 256 too many nested tool calls in flight in this session (limit 256)"],
    )


def test_a_big_result_arrives_whole(harness) -> None:
    output = harness.exec(
        'const big = "x".repeat(5 << 20); const back = await tools.echo({big});'
        " text(back.big.length === big.length)"
    )
    assert_output(output, "Script completed", ["true"])


def test_arguments_that_are_no_json_fail_in_the_cell(harness) -> None:
    output = harness.exec(
        "const cyclic = {}; cyclic.self = cyclic;\n"
        "for (const bad of [{n: 1n}, cyclic]) {\n"
        "  try { await tools.echo(bad); text('sent'); }\n"
        "  catch (e) { text(String(e).split(':')[0]); }\n"
        "}"
    )
    assert_output(output, "Script completed", ["TypeError", "TypeError"])


def test_calls_left_behind_by_a_finished_cell_are_cancelled(harness) -> None:
    output = harness.exec("for (let i = 0; i < 20; i++) tools.sleep({ms: 5000}); text('gone');")
    assert_output(output, "Script completed", ["gone"])
    cancelled = [e for e in harness.cell_events("1") if type(e).__name__ == "ToolCancelled"]
    assert len(cancelled) == 20
    assert_output(harness.exec("text('next')"), "Script completed", ["next"])


def test_a_tool_that_is_not_there_is_a_type_error(harness) -> None:
    output = harness.exec(
        "try { await tools.rm_rf({}); } catch (e) { text(e.constructor.name); }\n"
        "text(`${typeof tools.exec} ${typeof ALL_TOOLS}`);"
    )
    assert_output(output, "Script completed", ["TypeError", "undefined object"])


def test_a_tool_input_too_deep_to_store_fails_that_call_only(harness) -> None:
    output = harness.exec(
        "let deep = 1; for (let i = 0; i < 300; i++) deep = [deep];\n"
        "try { await tools.echo({deep}); } catch (e) { text(String(e).split(':')[0]); }\n"
        "text(JSON.stringify(await tools.echo({fine: 1})));"
    )
    assert_output(output, "Script completed", ["tool `echo` cannot take this input", '{"fine":1}'])

"""Scenarios of Codex's host protocol, played against the reference host and against
`cellfleet host` (`wire.run_scenario`); `recorded.json` holds the reference's frames.

Each step waits for the frames it depends on before the next is sent, so that the order
of frames does not depend on timing.
"""

from __future__ import annotations

import json
from typing import Any

from tests.host.wire import HELLO

Step = list[Any]


def op(request_id: int, method: str, **fields: Any) -> dict[str, Any]:
    return {"type": "operation/request", "id": request_id, "request": {"method": method, **fields}}


def tool(name: str, kind: str = "function", namespace: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "tool_name": {"name": name, "namespace": namespace},
        "description": f"the {name} tool",
        "kind": kind,
        "input_schema": None,
        "output_schema": None,
    }


TOOLS = [tool("echo"), tool("fail"), tool("hold"), tool("free", "freeform")]


def execute(
    request_id: int,
    source: str,
    *,
    session: str = "s1",
    yield_ms: int | None = 5000,
    max_tokens: int | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> Step:
    body = {
        "tool_call_id": f"call-{request_id}",
        "enabled_tools": TOOLS if tools is None else tools,
        "source": source,
        "yield_time_ms": yield_ms,
        "max_output_tokens": max_tokens,
    }
    return ["send", op(request_id, "session/execute", sessionId=session, request=body)]


def wait(request_id: int, cell: str, yield_ms: int = 5000, session: str = "s1") -> Step:
    body = {"cell_id": cell, "yield_time_ms": yield_ms}
    return ["send", op(request_id, "session/wait", sessionId=session, request=body)]


def terminate(request_id: int, cell: str, session: str = "s1", **extra: Any) -> Step:
    return ["send", op(request_id, "session/terminate", sessionId=session, cellId=cell, **extra)]


def answered(request_id: int, frame: str = "operation/response") -> Step:
    return ["until", {"type": frame, "id": request_id}]


def closed(cell: str, session: str = "s1") -> Step:
    return ["until", {"type": "cell/closed", "sessionId": session, "cellId": cell}]


def start(session: str = "s1", **open_fields: Any) -> list[Step]:
    return [
        ["send", HELLO],
        ["until", {"type": "connection/ready"}],
        ["send", op(1, "session/open", sessionId=session, **open_fields)],
        answered(1),
    ]


def run_cell(request_id: int, source: str, cell: str, **options: Any) -> list[Step]:
    """Execute `source` as cell `cell` and wait until it closed."""
    return [
        execute(request_id, source, **options),
        answered(request_id, "execute/initialResponse"),
        closed(cell),
    ]


def raw(payload: bytes) -> Step:
    return ["raw", (len(payload).to_bytes(4, "little") + payload).hex()]


def _deep_delegate_answer(levels: int, *, array: bool = False) -> bytes:
    """An answer to a delegate request nobody made (ignored), whose frame nests `levels`
    deep: its own three objects, then the tool's result (objects, or empty arrays)."""
    inner = levels - 3
    result = b"[" * inner + b"]" * inner if array else b'{"a":' * inner + b"1" + b"}" * inner
    value = b'{"type":"tool/result","result":' + result + b"}"
    return b'{"type":"delegate/response","id":99,"result":{"status":"ok","value":' + value + b"}}"


SCENARIOS: dict[str, list[Step]] = {
    # -- the handshake ------------------------------------------------------------------
    "hello_ready": [["send", HELLO], ["until", {"type": "connection/ready"}]],
    "hello_some_capabilities": [
        ["send", {**HELLO, "optionalCapabilities": ["yield-observation", "dual-websocket-v1"]}],
        ["until", {"type": "connection/ready"}],
    ],
    "hello_required_missing": [
        ["send", {**HELLO, "requiredCapabilities": ["dual-websocket-v1"]}],
        ["until", {"type": "connection/rejected"}],
    ],
    "hello_no_version": [
        ["send", {**HELLO, "supportedVersions": [2]}],
        ["until", {"type": "connection/rejected"}],
    ],
    "hello_not_first": [
        ["send", op(1, "session/open", sessionId="s1")],
        ["until", {"type": "connection/rejected"}],
    ],
    "hello_unknown_field": [["send", {**HELLO, "extra": 1}]],
    "hello_second": [*start(), ["send", HELLO]],
    # -- sessions -----------------------------------------------------------------------
    "open_twice_and_reuse": [
        *start(),
        ["send", op(2, "session/open", sessionId="s1")],
        answered(2),
        ["send", op(3, "session/shutdown", sessionId="s1")],
        answered(3),
        ["send", op(4, "session/open", sessionId="s1")],
        answered(4),
        ["send", op(5, "session/shutdown", sessionId="s1")],
        answered(5),
    ],
    "unknown_session": [
        *start(),
        execute(2, "text(1)", session="nope"),
        answered(2),
        wait(3, "1", session="nope"),
        answered(3),
    ],
    "two_sessions_number_their_own_cells": [
        *start(),
        ["send", op(2, "session/open", sessionId="s2")],
        answered(2),
        *run_cell(3, "store('k', 1); text('s1')", "1"),
        execute(4, "text(String(load('k')))", session="s2"),
        answered(4, "execute/initialResponse"),
        closed("1", "s2"),
        *run_cell(5, "text(String(load('k')))", "2"),
    ],
    # -- cells --------------------------------------------------------------------------
    "execute_text_and_image": [
        *start(),
        *run_cell(
            2,
            "text('hello'); text({a: 1}); image('data:image/png;base64,iVBORw0KGgo=');"
            " image({image_url: 'data:image/png;base64,AA==', detail: 'low'})",
            "1",
        ),
    ],
    "execute_errors": [
        *start(),
        *run_cell(2, "text('before'); throw new Error('boom')", "1"),
        *run_cell(3, "syntax error here", "2"),
        *run_cell(4, "await Promise.reject('plain')", "3"),
        *run_cell(5, "exit(); text('never')", "4"),
    ],
    "yield_then_wait": [
        *start(),
        execute(
            2, "text('a'); yield_control(); await new Promise((r) => setTimeout(r, 50)); text('b')"
        ),
        answered(2, "execute/initialResponse"),
        wait(3, "1"),
        answered(3),
        closed("1"),
        wait(4, "1"),
        answered(4),
    ],
    "spin_then_terminate": [
        *start(),
        execute(2, "text('spin'); while (true) {}", yield_ms=100),
        answered(2, "execute/initialResponse"),
        terminate(3, "1"),
        answered(3),
        closed("1"),
        terminate(4, "1"),
        answered(4),
    ],
    "missing_cells": [*start(), wait(2, "42"), answered(2), terminate(3, "7"), answered(3)],
    "busy_observer": [
        *start(),
        execute(2, "yield_control(); await new Promise((r) => setTimeout(r, 300)); text('end')"),
        answered(2, "execute/initialResponse"),
        wait(3, "1"),
        wait(4, "1"),
        answered(4),
        answered(3),
        closed("1"),
    ],
    "stored_values_across_cells": [
        *start(),
        *run_cell(2, "store('k', {n: 1}); store('gone', 1)", "1"),
        *run_cell(3, "text(JSON.stringify(load('k'))); store('k', 2); throw new Error('x')", "2"),
        *run_cell(4, "text(JSON.stringify([load('k'), load('none')]))", "3"),
    ],
    # -- nested tools -------------------------------------------------------------------
    "tools_echo_and_fail": [
        *start(),
        *run_cell(
            2,
            "text(JSON.stringify(await tools.echo({x: 1})));\n"
            "try { await tools.fail({}) } catch (e) { text(String(e)) }\n"
            "text(JSON.stringify(await Promise.all([tools.echo({a: 1}), tools.echo({b: 2})])));\n"
            "text(await tools.free('raw text'));\n"
            "text(String(await tools.echo()));",
            "1",
        ),
        *run_cell(3, "await tools.fail({})", "2"),
        *run_cell(4, "text(JSON.stringify(ALL_TOOLS)); text(Object.keys(tools).join())", "3"),
    ],
    "tools_namespaced": [
        *start(),
        *run_cell(
            2,
            "text(JSON.stringify(await tools.echo({via: 'namespace'})))",
            "1",
            tools=[tool("echo", namespace="files")],
        ),
    ],
    "tool_withdrawn_when_cell_ends": [
        *start(),
        *run_cell(2, "tools.hold({}); text('done')", "1"),
    ],
    "tool_withdrawn_when_terminated": [
        *start(),
        execute(2, "text('waiting'); await tools.hold({})", yield_ms=200),
        answered(2, "execute/initialResponse"),
        terminate(3, "1"),
        answered(3),
        closed("1"),
    ],
    "tool_input_refused": [
        *start(),
        *run_cell(
            2,
            "try { await tools.free({not: 'a string'}) } catch (e) { text(String(e)) }\n"
            "try { await tools.echo('not an object') } catch (e) { text(String(e)) }",
            "1",
        ),
    ],
    # -- notifications ------------------------------------------------------------------
    "notifications": [
        *start(),
        *run_cell(2, "notify('first'); text('between'); notify('second')", "1"),
    ],
    # -- cancel and yield operations ----------------------------------------------------
    "cancel_a_wait": [
        *start(),
        execute(2, "yield_control(); await new Promise((r) => setTimeout(r, 400)); text('end')"),
        answered(2, "execute/initialResponse"),
        wait(3, "1"),
        ["send", {"type": "operation/cancel", "id": 3}],
        answered(3),
        wait(4, "1"),
        answered(4),
        closed("1"),
        ["send", {"type": "operation/cancel", "id": 99}],
    ],
    "cancel_an_execute_runs_on": [
        *start(),
        execute(2, "await new Promise((r) => setTimeout(r, 200)); text('ran')"),
        answered(2),
        ["send", {"type": "operation/cancel", "id": 2}],
        answered(2, "execute/initialResponse"),
        closed("1"),
    ],
    "yield_an_observation": [
        *start(),
        execute(
            2,
            "text('a'); notify('a is out'); await new Promise((r) => setTimeout(r, 300));"
            " text('b')",
        ),
        answered(2),
        ["until", {"type": "delegate/request", "request": {"type": "notification/send"}}],
        ["send", {"type": "operation/yield", "id": 2}],
        answered(2, "execute/initialResponse"),
        wait(3, "1"),
        answered(3),
        closed("1"),
        ["send", {"type": "operation/yield", "id": 77}],
    ],
    # -- limits and output shaping ------------------------------------------------------
    "max_yield_time_limit": [
        *start(cellExecutionLimits={"maxYieldTimeMs": 100}),
        execute(2, "text('spin'); while (true) {}", yield_ms=5000),
        answered(2, "execute/initialResponse"),
        terminate(3, "1"),
        answered(3),
        closed("1"),
    ],
    "server_truncation": [
        *start(outputTruncation="server"),
        *run_cell(2, "text('x'.repeat(200)); text('y'.repeat(200))", "1", max_tokens=10),
        *run_cell(3, "text('partial'); throw new Error('boom')", "2"),
        wait(4, "9"),
        answered(4),
        execute(
            5,
            "text('z'.repeat(100)); yield_control(); text('w'.repeat(100));"
            " notify('w is out'); await new Promise(() => {})",
        ),
        answered(5, "execute/initialResponse"),
        ["until", {"type": "delegate/request", "request": {"type": "notification/send"}}],
        terminate(6, "3", maxOutputTokens=5),
        answered(6),
        closed("3"),
    ],
    "client_truncation_ignores_max_tokens": [
        *start(outputTruncation="client"),
        *run_cell(2, "text('x'.repeat(200)); throw new Error('boom')", "1", max_tokens=10),
    ],
    "negative_max_tokens": [*start(), execute(2, "text(1)", max_tokens=-1), answered(2)],
    # -- shutdown -----------------------------------------------------------------------
    "shutdown_with_a_live_cell": [
        *start(),
        execute(2, "text('live'); yield_control(); await new Promise(() => {})"),
        answered(2, "execute/initialResponse"),
        ["send", op(3, "session/shutdown", sessionId="s1")],
        answered(3),
        execute(4, "text(1)"),
        answered(4),
    ],
    # -- found by a hostile review --------------------------------------------------------
    "tool_names_made_identifiers": [
        *start(),
        *run_cell(
            2,
            "text(JSON.stringify(ALL_TOOLS.map((t) => t.name))); text(Object.keys(tools).join())",
            "1",
            tools=[tool("my-tool"), tool("1x"), tool("a.b"), tool("ünï"), tool("__proto__")],
        ),
    ],
    "tool_answered_as_a_notification": [
        *start(),
        *run_cell(2, "await tools.confused({})", "1", tools=[tool("confused")]),
    ],
    "terminate_max_tokens_beyond_i32": [
        *start(outputTruncation="server"),
        execute(2, "text('x'.repeat(100)); yield_control(); await new Promise(() => {})"),
        answered(2, "execute/initialResponse"),
        terminate(3, "1", maxOutputTokens=2**31),
        answered(3),
        closed("1"),
    ],
    "shutdown_twice": [
        *start(),
        ["send", op(2, "session/shutdown", sessionId="s1")],
        ["send", op(3, "session/shutdown", sessionId="s1")],
        answered(2),
        answered(3),
    ],
    "tool_call_first_thing": [
        *start(),
        *run_cell(2, "text(JSON.stringify(await tools.echo({first: true})))", "1"),
    ],
    "duplicate_key": [
        *start(),
        raw(
            b'{"type":"operation/request","id":2,"id":3,"request":{"method":"session/open","sessionId":"s2"}}'
        ),
    ],
    "empty_session_id": [*start(), ["send", op(2, "session/open", sessionId="")]],
    "tool_result_without_result": [
        *start(),
        execute(2, "await tools.bare({})", tools=[tool("bare")]),
        ["until", {"type": "delegate/request"}],
    ],
    "nesting_too_deep": [
        *start(),
        raw(
            b'{"type":"operation/request","id":2,"request":{"method":"session/open","sessionId":"s2","cellExecutionLimits":'
            + b'{"a":' * 130
            + b"1"
            + b"}" * 131
            + b"}"
        ),
    ],
    # serde_json's recursion limit: a frame 127 levels deep is read, 128 is fatal
    "nesting_127_levels_is_read": [
        *start(),
        raw(_deep_delegate_answer(127)),
        ["send", op(3, "session/open", sessionId="s3")],
        answered(3),
    ],
    "nesting_128_levels_is_fatal": [*start(), raw(_deep_delegate_answer(128))],
    "nesting_127_levels_of_arrays_is_read": [
        *start(),
        raw(_deep_delegate_answer(127, array=True)),
        ["send", op(3, "session/open", sessionId="s3")],
        answered(3),
    ],
    "nesting_128_levels_of_arrays_is_fatal": [
        *start(),
        raw(_deep_delegate_answer(128, array=True)),
    ],
    # -- frames the host cannot decode --------------------------------------------------
    "bad_json": [*start(), raw(b"{oops")],
    "unknown_field": [*start(), ["send", {**op(2, "session/open", sessionId="s2"), "x": 1}]],
    "unknown_method": [*start(), ["send", op(2, "session/foo", sessionId="s1")]],
    "duplicate_request_id": [*start(), ["send", op(1, "session/open", sessionId="s2")]],
    "wait_without_yield_time": [
        *start(),
        ["send", op(2, "session/wait", sessionId="s1", request={"cell_id": "1"})],
    ],
    "frame_too_long": [*start(), ["raw", (2**31).to_bytes(4, "little").hex()]],
}


def load_recorded(path: Any) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        data: dict[str, Any] = json.load(file)
    return data

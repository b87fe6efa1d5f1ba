"""The replay corpus's own scenarios and the deterministic tools they call.

Each scenario is one session: a list of steps as in the reference corpus
(`tests/reference/cases.py`): `{"op": "execute", "source": JS, "yield_time_ms": N}`,
`{"op": "wait", "yield_time_ms": N}`, `{"op": "terminate"}` (both address the last
executed cell, or `"cell": i`, the i-th execute of the scenario). An execute may also
carry `"max_output_tokens"`, and any step `"mode": "pending"` (the library API's
`execute_to_pending` / `wait_to_pending`). `replay_corpus.py` runs them.

The tools answer from their input alone (`sleep` takes the time it is asked for), so
what a cell receives depends on nothing but what it sent.
"""

from __future__ import annotations

import base64
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cellfleet.broker.contract.tools import JsonValue, ToolDefinition
from cellfleet.broker.tools.registry import (
    RetryableToolError,
    RetryPolicy,
    ToolCallError,
    ToolContext,
    ToolRegistry,
)

Step = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One recorded session: `steps` run in order against the session's cells.

    `tools`: the session's nested tools (default: every tool of `corpus_tools`);
    `expected`: the answers recorded from Codex's host, for a reference corpus case.
    """

    name: str
    summary: str
    steps: Sequence[Step]
    tools: Sequence[ToolDefinition] | None = None
    expected: Sequence[Mapping[str, Any]] | None = None


# -- tools ------------------------------------------------------------------------------


def echo(value: JsonValue) -> JsonValue:
    """The reference corpus's `echo`: its input unchanged."""
    return value


def fail(value: JsonValue) -> JsonValue:
    """The reference corpus's `fail`: `input.message`, a non-empty string input, or
    `tool failed`."""
    message = value.get("message") if isinstance(value, dict) else None
    if message:
        raise ToolCallError(str(message))
    if isinstance(value, str) and value:
        raise ToolCallError(value)
    raise ToolCallError("tool failed")


def sleep(value: JsonValue) -> JsonValue:
    """The reference corpus's `sleep`: answers `{"slept_ms": ms}` after `ms` (100)."""
    ms = value.get("ms", 100) if isinstance(value, dict) else 100
    if not isinstance(ms, int | float):
        raise ToolCallError("ms must be a number")
    threading.Event().wait(ms / 1000)  # what this tool does: take `ms` to answer
    return {"slept_ms": ms}


_TABLE: dict[str, JsonValue] = {
    "alpha": {"id": 1, "tags": ["a", "first"]},
    "beta": {"id": 2, "tags": []},
}
_FILES = {"a.txt": "contents of a.txt\n", "b.txt": ""}
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
    "rkJggg=="
)


def corpus_tools() -> ToolRegistry:
    """Every tool the scenarios call: the reference corpus's `echo`, `fail` and `sleep`,
    and function, freeform, namespaced, failing and retried tools of the corpus's own."""
    registry = ToolRegistry.from_handlers({"echo": echo, "fail": fail, "sleep": sleep})

    @registry.function(description="Add two numbers.")
    def add(a: float, b: float = 0) -> float:
        return a + b

    @registry.function(description="A record by key.")
    def lookup(key: str) -> JsonValue:
        if key not in _TABLE:
            raise ToolCallError(f"no record {key}")
        return _TABLE[key]

    @registry.function(name="read", namespace="files", description="Read a file.")
    def read(path: str) -> str:
        if path not in _FILES:
            raise ToolCallError(f"{path}: no such file")
        return _FILES[path]

    @registry.freeform(description="The input, in capitals.")
    def shout(text: str) -> str:
        return text.upper()

    @registry.function(description="Raises a Python exception.", input_schema={"type": "object"})
    def crash(args: JsonValue) -> JsonValue:
        raise RuntimeError(f"the handler crashed on {args}")

    @registry.function(description="Returns a value that is not JSON.")
    def not_json() -> Any:
        return {1, 2}

    @registry.function(
        description="Fails its first attempt (retryable), then succeeds.",
        retry=RetryPolicy(attempts=3, initial_backoff_s=0.01),
    )
    def flaky(value: int, ctx: ToolContext) -> JsonValue:
        if ctx.attempt == 1:
            raise RetryableToolError("a transient failure")
        return {"value": value, "attempt": ctx.attempt}

    @registry.function(description="An MCP-shaped result.", input_schema={"type": "object"})
    def mcp_picture(args: JsonValue) -> JsonValue:
        del args
        return {
            "content": [
                {"type": "text", "text": "one pixel"},
                {"type": "image", "data": PNG_B64, "mimeType": "image/png"},
            ],
            "isError": False,
        }

    return registry


# -- steps ------------------------------------------------------------------------------


def ex(source: str, yield_time_ms: int = 5_000, **extra: Any) -> Step:
    return {"op": "execute", "source": source, "yield_time_ms": yield_time_ms, **extra}


def wait(yield_time_ms: int = 5_000, **extra: Any) -> Step:
    return {"op": "wait", "yield_time_ms": yield_time_ms, **extra}


def term(**extra: Any) -> Step:
    return {"op": "terminate", **extra}


def uses(*names: str) -> list[ToolDefinition]:
    """The definitions of the corpus tools named (a session offers only what it calls)."""
    found = {d.name: d for d in corpus_tools().definitions}
    return [found[name] for name in names]


def _wav(frames: int, rate: int = 8000) -> str:
    """A mono 16-bit PCM WAV of `frames` frames of silence, base64."""
    data = b"\x00\x00" * frames
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return base64.b64encode(b"RIFF" + struct.pack("<I", len(body)) + body).decode()


PNG_URL = "data:image/png;base64," + PNG_B64
WAV_URL_25MS = "data:audio/wav;base64," + _wav(200)
WAV_URL_10MS = "data:audio/wav;base64," + _wav(80)

SPIN = "while (true) {}"
FOREVER = "await new Promise(() => {});"
SETTLE = "await new Promise((resolve) => setTimeout(resolve, {ms}));"

# -- scenarios --------------------------------------------------------------------------

OUTPUTS = Scenario(
    "outputs",
    "text, image, audio, generatedImage and content items; a cell with max_output_tokens",
    [
        ex('text("hello"); text(""); text(42); text({ a: 1, b: [1, 2] }); text(null);'),
        ex(
            f'image("{PNG_URL}"); image("{PNG_URL}", "low");\n'
            f'image({{ image_url: "{PNG_URL}", detail: "original" }});\n'
            f'image({{ type: "image", data: "{PNG_B64}", mimeType: "image/png" }});'
        ),
        ex(f'audio("{WAV_URL_25MS}"); audio("{WAV_URL_10MS}"); text("after audio");'),
        ex(
            f'generatedImage({{ image_url: "{PNG_URL}", output_hint: "a generated pixel" }});\n'
            'content([{ type: "text", text: "from content" },'
            f' {{ type: "image", data: "{PNG_B64}", mimeType: "image/png" }}]);\n'
            "content((await tools.mcp_picture({})).content);"
        ),
        ex('text("x".repeat(400)); text("the end");', max_output_tokens=20),
    ],
    uses("mcp_picture"),
)

TOOLS_FUNCTION = Scenario(
    "tools_function",
    "function tools: results used, chained, namespaced, without input; ALL_TOOLS",
    [
        ex(
            "const r = await tools.echo({ x: 1, nested: { y: [true, null] } });\n"
            "text(JSON.stringify(r));\n"
            "text(String(await tools.add({ a: 2, b: 3 })));"
        ),
        ex(
            'const rec = await tools.lookup({ key: "alpha" });\n'
            "const sum = await tools.add({ a: rec.id, b: rec.tags.length });\n"
            'text(`sum ${sum}`); text(await tools.files__read({ path: "a.txt" }));\n'
            "text(JSON.stringify(await tools.echo()));"
        ),
        ex('text(ALL_TOOLS.map((t) => t.name).join(","));'),
    ],
    uses("add", "echo", "lookup", "read"),
)

TOOLS_FREEFORM = Scenario(
    "tools_freeform",
    "a freeform tool: a string input, and an object input it refuses",
    [
        ex('text(await tools.shout("hello, freeform"));'),
        ex(
            'try { await tools.shout({ not: "a string" }); }\n'
            'catch (e) { text("refused: " + e); }\n'
            'text(await tools.shout("multi\\nline\\n"));'
        ),
    ],
    uses("shout"),
)

TOOLS_FAILURES = Scenario(
    "tools_failures",
    "failing tools (caught and uncaught), a crashing handler, a non-JSON result, "
    "bad arguments (one refused before dispatch), a retried tool, an unknown tool",
    [
        ex('try { await tools.fail({ message: "nope" }); } catch (e) { text("caught: " + e); }'),
        ex('try { await tools.crash({ n: 1 }); } catch (e) { text("caught: " + e); }'),
        ex('try { await tools.not_json(); } catch (e) { text("caught: " + e); }'),
        ex(
            'try { await tools.add({ a: "two" }); } catch (e) { text("caught: " + e); }\n'
            'try { await tools.echo("not an object"); } catch (e) { text("refused: " + e); }'
        ),
        ex("text(JSON.stringify(await tools.flaky({ value: 7 })));"),
        ex('text("before"); await tools.fail({ message: "uncaught" }); text("unreachable");'),
        ex(
            "try { tools.nope(); } catch (e) { text(String(e)); }\n"
            'await tools.lookup({ key: "z" });'
        ),
    ],
    uses("add", "crash", "echo", "fail", "flaky", "lookup", "not_json"),
)

TOOLS_PARALLEL = Scenario(
    "tools_parallel",
    "concurrent calls: Promise.all, allSettled, race (the loser cancelled at the end), "
    "as_settled, stream_settled",
    [
        ex(
            "const rs = await Promise.all([tools.sleep({ ms: 120 }), tools.echo({ i: 1 }),\n"
            "  tools.sleep({ ms: 30 }), tools.add({ a: 1, b: 1 })]);\n"
            "text(JSON.stringify(rs));"
        ),
        ex(
            "const s = await Promise.allSettled([tools.echo({ i: 2 }), tools.fail({}),\n"
            '  tools.shout("x")]);\n'
            "text(JSON.stringify(s));\n"
            "const first = await Promise.race([tools.sleep({ ms: 3000 }),\n"
            "  tools.sleep({ ms: 20 })]);\n"
            "text(JSON.stringify(first));"
        ),
        ex(
            "for await (const r of as_settled([tools.sleep({ ms: 150 }), tools.echo({ i: 3 }),\n"
            '  tools.fail("bad"), 42])) { text(JSON.stringify(r)); }\n'
            "await stream_settled([tools.sleep({ ms: 60 }), tools.sleep({ ms: 10 })],\n"
            "  (r) => text(`streamed ${r.index}`));"
        ),
    ],
    uses("add", "echo", "fail", "shout", "sleep"),
)

TOOLS_AFTER_YIELD = Scenario(
    "tools_after_yield",
    "tool results that arrive after a yield: yield_control, an exec that times out, "
    "a call made after the yield",
    [
        ex(
            'const p = tools.sleep({ ms: 200 }); text("asked"); yield_control();\n'
            "text(JSON.stringify(await p));"
        ),
        wait(),
        ex('text("start"); const r = await tools.sleep({ ms: 400 }); text(JSON.stringify(r));', 50),
        wait(),
        ex(
            'yield_control(); const r = await tools.echo({ after: "yield" });\n'
            "text(JSON.stringify(r));"
        ),
        wait(),
    ],
    uses("echo", "sleep"),
)

TIMERS = Scenario(
    "timers",
    "setTimeout chains, clearTimeout, timer order, an interval made of timeouts "
    "(setInterval does not exist), a timer after a yield, a timer left pending",
    [
        ex(
            'await new Promise((resolve) => setTimeout(() => { text("t1");\n'
            '  setTimeout(() => { text("t2"); resolve(); }, 10); }, 10));'
        ),
        ex(
            'const id = setTimeout(() => text("never"), 20); clearTimeout(id);\n'
            'setTimeout(() => text("30 ms"), 30); setTimeout(() => text("10 ms"), 10);\n'
            'setTimeout(() => text("0 ms"), 0); Promise.resolve().then(() => text("microtask"));\n'
            + SETTLE.format(ms=60)
            + '\ntext("cleared " + id);'
        ),
        ex(
            "text(typeof setInterval); let n = 0;\n"
            "await new Promise((resolve) => { const tick = () => { n += 1; text(`tick ${n}`);\n"
            "  if (n < 3) setTimeout(tick, 5); else resolve(); }; setTimeout(tick, 5); });"
        ),
        ex(
            "yield_control(); await new Promise((r) => setTimeout(r, 30));\n"
            'text("after the timer");'
        ),
        wait(),
        ex('setTimeout(() => text("too late"), 60000); text("done, a timer still set");'),
    ],
    [],
)

YIELD_WAIT = Scenario(
    "yield_wait",
    "yield_control then wait, two yields observed, an exec and a wait that time out, "
    "an error after a yield",
    [
        ex('text("before"); yield_control(); text("after");'),
        wait(),
        ex(
            'text("a"); yield_control(); await tools.sleep({ ms: 50 }); text("b");\n'
            'yield_control(); await tools.sleep({ ms: 50 }); text("c");'
        ),
        wait(),
        wait(),
        ex(
            'for (let i = 0; i < 3; i += 1) { await tools.sleep({ ms: 150 }); text("step " + i); }',
            50,
        ),
        wait(200),
        wait(),
        ex('text("going"); yield_control(); throw new Error("failed after the yield");'),
        wait(),
    ],
    uses("sleep"),
)

TERMINATE_YIELDED = Scenario(
    "terminate_yielded",
    "wait {terminate: true} on yielded cells: one awaiting forever, one with a pending "
    "tool call, stored write and notification, one with a pending timer",
    [
        ex('text("waiting"); yield_control(); ' + FOREVER),
        term(),
        ex(
            'const p = tools.sleep({ ms: 5000 }); store("lost", 1); notify("working");\n'
            "yield_control(); await p;"
        ),
        term(),
        ex('setTimeout(() => text("never"), 5000); text("timer set"); yield_control(); ' + FOREVER),
        term(),
        ex('text(JSON.stringify({ lost: load("lost") ?? "not stored" }));'),
    ],
    uses("sleep"),
)

TERMINATE_SPINNING = Scenario(
    "terminate_spinning",
    "termination of cells that never stop running: a busy loop past the exec's yield "
    "time, a busy loop after a yield; the session goes on",
    [
        ex('text("spinning"); ' + SPIN, 200),
        term(),
        ex('text("yielding"); yield_control(); ' + SPIN),
        term(),
        ex('text("still alive");'),
    ],
    [],
)

STORED_VALUES = Scenario(
    "stored_values",
    "store and load across cells: overwrites, last write wins, a cell that fails after "
    "storing (committed), refused values, JSON degradation",
    [
        ex('store("a", 1); store("obj", { x: [1, 2] }); store("s", "text");'),
        ex('text(JSON.stringify([load("a"), load("obj"), load("s"), load("missing")]));'),
        ex('store("a", 2); store("a", 3); store("obj", { x: "new" });'),
        ex('text(String(load("a"))); store("b", "before the throw"); throw new Error("after");'),
        ex(
            'try { store("bad", undefined); } catch (e) { text(String(e)); }\n'
            'store("date", new Date(0)); store("nan", NaN); store(7, "seven");'
        ),
        ex(
            'const o = load("obj"); o.x = "changed locally";\n'
            'text(JSON.stringify({ a: load("a"), b: load("b"), obj: load("obj"),\n'
            '  date: load("date"), nan: load("nan"), seven: load("7") }));'
        ),
    ],
    [],
)

NOTIFICATIONS = Scenario(
    "notifications",
    "notify: texts and values, before and after a yield, in a timer callback, a refused empty text",
    [
        ex('notify("one"); notify({ n: 2 }); text("after notifying");'),
        ex(
            'notify("before the yield"); yield_control(); notify("after the yield");\n'
            + SETTLE.format(ms=10)
            + '\nnotify("after a timer"); text("end");'
        ),
        wait(),
        ex('await new Promise((r) => setTimeout(() => { notify("in a timer"); r(); }, 5));'),
        ex('try { notify("   "); } catch (e) { text(String(e)); }'),
    ],
    [],
)

ERRORS = Scenario(
    "errors",
    "failing cells: a thrown Error, a syntax error, a rejected promise, a thrown string, "
    "a TypeError, an unawaited rejection, a throw in a timer, a static import, exit()",
    [
        ex('text("before"); throw new Error("boom");'),
        ex("const = 1;"),
        ex('text("awaiting"); await Promise.reject(new Error("rejected"));'),
        ex('throw "a plain string";'),
        ex("const o = null; text(o.x);"),
        ex('Promise.reject(new Error("unawaited")); text("still completes");'),
        ex(
            'setTimeout(() => { throw new Error("in a timer"); }, 5);\n'
            + SETTLE.format(ms=20)
            + '\ntext("after the timer");'
        ),
        ex('import fs from "fs";\ntext("unreachable");'),
        ex('text("a"); store("exit", true); exit(); text("b");'),
    ],
    [],
)

RANDOM_AND_DATE = Scenario(
    "random_and_date",
    "Math.random (seeded per cell) and Date (the recorded clock), before and after "
    "timers and tool results",
    [
        ex("text(JSON.stringify([Math.random(), Math.random(), Math.random()]));"),
        ex(
            "const t0 = Date.now(); text(String(t0)); text(new Date().toISOString());\n"
            + SETTLE.format(ms=25)
            + "\ntext(`waited ${Date.now() - t0 >= 25}`); text(String(Date.now()));"
        ),
        ex(
            "const before = Math.random(); await tools.sleep({ ms: 20 });\n"
            "text(JSON.stringify({ before, after: Math.random(), now: Date.now(),\n"
            "  date: typeof Date(), year: new Date(2020, 1, 2).getFullYear() }));"
        ),
    ],
    uses("sleep"),
)

INTERLEAVED = Scenario(
    "interleaved_cells",
    "two live cells: the first yields on a slow tool, the second stores and completes, "
    "the first finishes from its own snapshot",
    [
        ex(
            'store("k", "first"); const r = await tools.sleep({ ms: 300 });\n'
            'text(JSON.stringify([r, load("k")]));',
            50,
        ),
        ex('text(String(load("k"))); store("k", "second");'),
        wait(cell=0),
        ex('text(String(load("k")));'),
    ],
    uses("sleep"),
)

PENDING_MODE = Scenario(
    "pending_mode",
    "the library API: execute_to_pending and wait_to_pending around tool calls",
    [
        ex(
            'const a = await tools.sleep({ ms: 50 }); text("first " + a.slept_ms);\n'
            'const b = await tools.echo({ n: 2 }); text("second " + b.n);',
            0,
            mode="pending",
        ),
        wait(0, mode="pending"),
        wait(0, mode="pending"),
        wait(),
    ],
    uses("echo", "sleep"),
)

SHUTDOWN_LIVE = Scenario(
    "shutdown_live_cell",
    "a session shut down while a cell is yielded with a tool call outstanding",
    [
        ex('text("ok"); store("kept", 1);'),
        ex('text("left running"); const p = tools.sleep({ ms: 5000 }); yield_control(); await p;'),
    ],
    uses("sleep"),
)

SCENARIOS: list[Scenario] = [
    OUTPUTS,
    TOOLS_FUNCTION,
    TOOLS_FREEFORM,
    TOOLS_FAILURES,
    TOOLS_PARALLEL,
    TOOLS_AFTER_YIELD,
    TIMERS,
    YIELD_WAIT,
    TERMINATE_YIELDED,
    TERMINATE_SPINNING,
    STORED_VALUES,
    NOTIFICATIONS,
    ERRORS,
    RANDOM_AND_DATE,
    INTERLEAVED,
    PENDING_MODE,
    SHUTDOWN_LIVE,
]

"""`cellfleet bench host`: Codex's host protocol, `cellfleet host` next to Codex's own
`codex-code-mode-host` measured in the same run (its rows are left out when the binary
is not at hand: `$CODEX_HOST_BIN`, or `../shared/reference/fetch-codex-host`'s cache).

* `warm_exec`: from writing a `session/execute` of `text("bench");` to reading its
  `execute/initialResponse`, with 0, 32 and 128 nested tools in the request; each
  sample after the previous cell closed. The frame is encoded before the clock starts:
  this client's JSON encoder (about 0.3 ms for 128 tools here, in Python) is not
  the host's time.
* `tool_roundtrip`: one nested tool call, from the cell's side: a cell awaits `echo`
  calls one after another, answered by the client at once; the time from one
  `delegate/request` to the next.

The two hosts run side by side and take turns, in blocks of `BLOCK` samples (cell by
cell for the round trips), so that the machine's drift, which moves figures here by
20-30% within a minute, falls on both alike. Each turn begins `SWITCH_PAUSE_S` after
the other host's last answer, so that its background work (ours refills its context
pool and disposes of the used context some milliseconds after each cell) is done, and
its first `SETTLE` samples are not counted. Frames are written compact, as Codex
writes them.

Targets: `cellfleet host` at most 0.5x the reference's warm exec p50, and at most 2.0x
its tool round trip. cellfleet's host runs on its own redis-server in a temporary
directory (every event of its cells is written there).
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from cellfleet.broker.host_protocol.answers import GRANTED
from cellfleet.ops.redis_server import start_redis

SAMPLES = 200
WARMUP = 20
TOOL_COUNTS = (0, 32, 128)
TOOL_CALLS = 200
TOOL_CELLS = 2  # the round trips are measured in this many cells, the hosts taking turns
BLOCK = 25
SETTLE = 3
SWITCH_PAUSE_S = 0.05
WARM_TARGET = 0.5
TOOL_TARGET = 2.0
# Codex 0.169.0's hello: it offers the capabilities `cellfleet host` grants.
HELLO = {
    "type": "connection/hello",
    "supportedVersions": [1],
    "requiredCapabilities": [],
    "optionalCapabilities": list(GRANTED),
}
REFERENCE_CACHE = Path(os.environ.get("CELLFLEET_REFERENCE_CACHE", "~/.cache/cellfleet-reference"))


def reference_binary() -> str | None:
    explicit = os.environ.get("CODEX_HOST_BIN")
    if explicit:
        return explicit
    found = sorted(REFERENCE_CACHE.expanduser().glob("codex-*/codex-code-mode-host"))
    return str(found[-1]) if found else None


def _tool(index: int) -> dict[str, Any]:
    name = "echo" if index == 0 else f"tool_{index}"
    return {
        "name": name,
        "tool_name": {"name": name, "namespace": None},
        "description": f"Nested tool number {index}.",
        "kind": "function",
        "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}},
        "output_schema": None,
    }


class _Client:
    """One connection to a host process; frames in order, delegate calls answered."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self._ids = iter(range(1, 10**9))
        self.send(HELLO)
        self.read()
        self.request({"method": "session/open", "sessionId": "bench"})

    def send(self, message: Any) -> None:
        self.write(_frame(message))

    def write(self, frame: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(frame)
        self.process.stdin.flush()

    def read(self) -> Any:
        assert self.process.stdout is not None
        head = self.process.stdout.read(4)
        if len(head) < 4:
            raise RuntimeError("the host ended")
        return json.loads(self.process.stdout.read(struct.unpack("<I", head)[0]))

    def request(self, request: dict[str, Any]) -> int:
        request_id, frame = self.request_frame(request)
        self.write(frame)
        return request_id

    def request_frame(self, request: dict[str, Any]) -> tuple[int, bytes]:
        """A request's id and its frame, to `write` later."""
        request_id = next(self._ids)
        frame = _frame({"type": "operation/request", "id": request_id, "request": request})
        return request_id, frame

    def execute_frame(self, source: str, tools: list[dict[str, Any]]) -> tuple[int, bytes]:
        body = {"tool_call_id": "b", "enabled_tools": tools, "source": source,
                "yield_time_ms": 30_000, "max_output_tokens": None}  # fmt: skip
        request = {"method": "session/execute", "sessionId": "bench", "request": body}
        return self.request_frame(request)

    def execute(self, source: str, tools: list[dict[str, Any]]) -> int:
        request_id, frame = self.execute_frame(source, tools)
        self.write(frame)
        return request_id

    def until(self, kind: str, request_id: int | None = None) -> Any:
        while True:
            frame = self.read()
            if frame.get("type") == "delegate/request":
                self._answer(frame)
            if frame.get("type") == kind and request_id in (None, frame.get("id")):
                return frame

    def _answer(self, frame: Any) -> None:
        value: dict[str, Any] = {"type": "notification/delivered"}
        if frame["request"]["type"] == "tool/invoke":
            value = {"type": "tool/result", "result": frame["request"]["invocation"]["input"]}
        result = {"status": "ok", "value": value}
        self.send({"type": "delegate/response", "id": frame["id"], "result": result})

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


def _frame(message: Any) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()  # (compact, as Codex's)
    return struct.pack("<I", len(payload)) + payload


def warm_exec(client: _Client, definitions: list[dict[str, Any]]) -> float:
    """One sample: an exec's time to its initial response (then its cell closes)."""
    request_id, frame = client.execute_frame('text("bench");', definitions)
    began = time.perf_counter()  # (encoding the frame is the client's work, not timed)
    client.write(frame)
    client.until("execute/initialResponse", request_id)
    elapsed = time.perf_counter() - began
    client.until("cell/closed")
    return elapsed


def tool_roundtrip(client: _Client, calls: int) -> list[float]:
    """One cell's `calls` round trips, back to back."""
    source = f"for (let i = 0; i < {calls}; i++) await tools.echo({{x: 'a'}});"
    request_id = client.execute(source, [_tool(0)])
    stamps = []
    while True:
        frame = client.read()
        if frame.get("type") == "delegate/request":
            stamps.append(time.perf_counter())
            client._answer(frame)
        elif frame.get("type") == "execute/initialResponse" and frame["id"] == request_id:
            break
    client.until("cell/closed")
    return [later - earlier for earlier, later in itertools.pairwise(stamps)]


def _summary(name: str, host: str, tools: int, samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "name": name,
        "host": host,
        "tools": tools,
        "samples": len(samples),
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p95_us": round(ordered[(len(ordered) - 1) * 95 // 100] * 1e6, 1),
    }


def _measure(clients: dict[str, _Client], samples: int) -> list[Any]:
    """Every row for every host, the hosts taking turns."""
    rows = []
    for tools in TOOL_COUNTS:
        definitions = [_tool(index) for index in range(tools)]
        times: dict[str, list[float]] = {host: [] for host in clients}
        for client in clients.values():
            for _ in range(WARMUP):
                warm_exec(client, definitions)
        for block in range(-(-samples // BLOCK)):
            for host, client in clients.items():
                time.sleep(SWITCH_PAUSE_S)  # (the other host's background work ends)
                for index in range(SETTLE + min(BLOCK, samples - block * BLOCK)):
                    elapsed = warm_exec(client, definitions)
                    if index >= SETTLE:
                        times[host].append(elapsed)
        rows += [_summary("warm_exec", host, tools, times[host]) for host in clients]
    gaps: dict[str, list[float]] = {host: [] for host in clients}
    for _ in range(TOOL_CELLS):  # (a cell of n calls: n - 1 gaps)
        for host, client in clients.items():
            time.sleep(SWITCH_PAUSE_S)
            gaps[host] += tool_roundtrip(client, SETTLE + 1 + TOOL_CALLS // TOOL_CELLS)[SETTLE:]
    rows += [_summary("tool_roundtrip", host, 1, gaps[host]) for host in clients]
    return rows


def run(samples: int = SAMPLES) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        server = start_redis(Path(scratch))
        stack.callback(server.stop)
        env = {**os.environ, "REDIS_URL": server.url}
        commands = {"cellfleet": ([sys.executable, "-m", "cellfleet.ops.cli", "host"], env)}
        reference = reference_binary()
        if reference is not None:
            commands["reference"] = ([reference], dict(os.environ))
        clients = {}
        for host, (command, host_env) in commands.items():
            clients[host] = client = _Client(command, host_env)
            stack.callback(client.close)
        rows = _measure(clients, samples)
    return {"rows": rows, "targets": {"warm_exec": WARM_TARGET, "tool_roundtrip": TOOL_TARGET}}


def table(report: dict[str, Any]) -> str:
    lines = [
        "| measure | tools | cellfleet p50 µs | p95 µs | reference p50 µs | p95 µs | ratio p50 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = {(r["name"], r["tools"], r["host"]): r for r in report["rows"]}
    verdicts = []
    for name, tools, _ in [key for key in rows if key[2] == "cellfleet"]:
        ours, theirs = rows[(name, tools, "cellfleet")], rows.get((name, tools, "reference"))
        ratio = "-" if theirs is None else f"{ours['p50_us'] / theirs['p50_us']:.2f}"
        lines.append(
            f"| {name} | {tools} | {ours['p50_us']} | {ours['p95_us']} |"
            f" {theirs['p50_us'] if theirs else '-'} | {theirs['p95_us'] if theirs else '-'} |"
            f" {ratio} |"
        )
        if theirs is not None:
            target = report["targets"][name]
            met = ours["p50_us"] / theirs["p50_us"] <= target
            verdicts.append(f"{name} ({tools} tools): target at most {target}x: "
                            f"{'met' if met else 'NOT met'}")  # fmt: skip
    if not verdicts:
        verdicts.append("no reference host here: ratios not measured")
    return "\n".join([*lines, "", *verdicts])

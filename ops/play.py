"""`cellfleet play`: run a JSON Lines transcript of exec/wait calls, write the outputs.

Input lines:
  {"type": "custom_tool_call", "call_id": …, "name": "exec", "input": "<raw JS>"}
  {"type": "function_call", "call_id": …, "name": "wait", "arguments": "<JSON>"}
  {"type": "session", "id": …}   later calls go to that session ("default" first)
  {"type": "sleep", "ms": …}
A call line may carry "background": true: it starts and the next line is read at once;
its output line is written when it arrives. Otherwise a call's output line is written
before the next line is read. Notifications are written when they happen.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

import orjson

from cellfleet.broker.client import Session
from cellfleet.broker.contract.render import ToolOutput, failure_output
from cellfleet.broker.contract.texts import (
    EXEC_NON_CUSTOM_PAYLOAD_ERROR,
    WAIT_NON_FUNCTION_PAYLOAD_ERROR,
)

PLAY_EXEC_YIELD_TIME_MS = 30_000  # Codex's product default


class TranscriptError(ValueError):
    """A malformed transcript line."""

    def __init__(self, line_number: int, detail: str) -> None:
        super().__init__(f"line {line_number}: {detail}")


class Player:
    """Plays one transcript; sessions are opened lazily by name, fresh for every run."""

    def __init__(
        self,
        open_session: Callable[[str, Callable[[str, str, str], None]], Session],
        out: IO[str] = sys.stdout,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._open_session = open_session
        self._out = out
        self._write_lock = threading.Lock()
        self._reader_left = False  # a notification found standard output closed
        self._sessions: dict[str, Session] = {}
        self._current = "default"
        self._background: list[Future[None]] = []
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="play")
        self._sleep = sleep or threading.Event().wait

    def play(self, lines: Iterable[str]) -> None:
        try:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    self._line(number, line)
            for future in self._background:
                future.result()
        finally:
            self.close()

    def close(self) -> None:
        for session in self._sessions.values():
            session.shutdown()
        self._sessions.clear()
        self._pool.shutdown(wait=True)

    def write(self, record: dict[str, Any]) -> None:
        with self._write_lock:
            self._out.write(orjson.dumps(record).decode() + "\n")
            self._out.flush()

    def _line(self, number: int, line: str) -> None:
        if self._reader_left:
            raise BrokenPipeError
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise TranscriptError(number, f"not JSON: {error}") from None
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise TranscriptError(number, 'expected an object with a string "type"')
        kind = item["type"]
        if kind == "session":
            self._current = _string(item, "id", number)
        elif kind == "sleep":
            ms = item.get("ms")
            if not isinstance(ms, int | float) or ms < 0:
                raise TranscriptError(number, '"ms" must be a non-negative number')
            self._sleep(ms / 1000)
        elif kind in ("custom_tool_call", "function_call"):
            self._call(number, item)
        else:
            raise TranscriptError(number, f"unknown line type {kind!r}")

    def _call(self, number: int, item: dict[str, Any]) -> None:
        call_id = _string(item, "call_id", number)
        name = _string(item, "name", number)
        custom = item["type"] == "custom_tool_call"
        payload = _string(item, "input" if custom else "arguments", number)
        if name not in ("exec", "wait"):
            raise TranscriptError(number, f"unknown tool {name!r} (expected exec or wait)")
        session = self._session(self._current)
        output_type = "custom_tool_call_output" if custom else "function_call_output"

        def run() -> None:
            if name == "exec":
                output = (
                    session.exec(call_id, payload)
                    if custom
                    else failure_output(EXEC_NON_CUSTOM_PAYLOAD_ERROR)
                )
            else:
                output = (
                    session.wait(payload)
                    if not custom
                    else failure_output(WAIT_NON_FUNCTION_PAYLOAD_ERROR)
                )
            self.write({"type": output_type, "call_id": call_id, "output": _output(output)})

        if item.get("background") is True:
            self._background.append(self._pool.submit(run))
        else:
            run()

    def _session(self, name: str) -> Session:
        if name not in self._sessions:
            self._sessions[name] = self._open_session(name, self._notify)
        return self._sessions[name]

    def _notify(self, call_id: str, cell_id: str, text: str) -> None:
        del cell_id
        record = {"type": "custom_tool_call_output", "call_id": call_id, "name": "exec"}
        try:
            self.write({**record, "output": text})
        except BrokenPipeError:  # (a delivery thread) the reader left: the next line says so
            self._reader_left = True


def _output(output: ToolOutput) -> Any:
    return output.text if output.plain else output.items


def _string(item: dict[str, Any], key: str, number: int) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise TranscriptError(number, f'"{key}" must be a string')
    return value

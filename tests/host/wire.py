"""A scripted client of Codex's code-mode host protocol, for any host binary: it sends a
scenario's frames, waits for the frames each step expects, answers the host's delegate
requests by a fixed policy, and records every frame the host wrote.

Delegate policy (by the invoked tool's name): `echo` and `free` answer their input,
`fail` fails with "nope", `hold` is never answered (the host must withdraw it),
`confused` is answered as a notification, `bare` with a result that lacks `result`;
notifications are acknowledged at once.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from cellfleet.ops.bench.host import HELLO

STEP_TIMEOUT_S = 15.0
__all__ = ["HELLO", "WireClient", "run_scenario"]


def frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


def matches(value: Any, pattern: Any) -> bool:
    """`pattern` is `value`, or (for objects) a subset of it, recursively."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and matches(value[key], sub) for key, sub in pattern.items()
        )
    return bool(value == pattern)


class WireClient:
    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.frames: list[Any] = []
        self._seen = 0  # frames a step already waited past
        self._changed = threading.Condition()
        self._write_lock = threading.Lock()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def send(self, message: Any) -> None:
        payload = message if isinstance(message, bytes) else json.dumps(message).encode()
        self._write(frame(payload))

    def send_raw(self, data: bytes) -> None:
        self._write(data)

    def _write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        with self._write_lock:
            try:
                self.process.stdin.write(data)
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # the host is gone: what it wrote says why

    def until(self, pattern: Any, timeout: float = STEP_TIMEOUT_S) -> None:
        """Wait for a frame matching `pattern` among those after the last one waited for."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(self._seen, len(self.frames)):
                    if matches(self.frames[index], pattern):
                        self._seen = index + 1
                        return
                remaining = deadline - time.monotonic()
                if self._ended or remaining <= 0:
                    raise AssertionError(f"no frame {pattern} in {self.frames[self._seen :]}")
                self._changed.wait(remaining)

    def close(self, timeout: float = STEP_TIMEOUT_S) -> tuple[list[Any], str, int]:
        """Close the host's input; its frames, standard error and exit status."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self._reader.join(timeout)
        assert self.process.stderr is not None
        return self.frames, self.process.stderr.read().decode(errors="replace"), status

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            head = stream.read(4)
            if len(head) < 4:
                break
            (length,) = struct.unpack("<I", head)
            message = json.loads(stream.read(length))
            self._answer(message)
            with self._changed:
                self.frames.append(message)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _answer(self, message: Any) -> None:
        if message.get("type") != "delegate/request":
            return
        request, answer = message["request"], None
        if request["type"] == "notification/send":
            answer = {"status": "ok", "value": {"type": "notification/delivered"}}
        else:
            invocation = request["invocation"]
            name = invocation["tool_name"]["name"]
            if name in ("echo", "free"):
                result = invocation["input"]
                answer = {"status": "ok", "value": {"type": "tool/result", "result": result}}
            elif name == "fail":
                answer = {"status": "error", "message": "nope"}
            elif name == "confused":  # answers a tool call as if it were a notification
                answer = {"status": "ok", "value": {"type": "notification/delivered"}}
            elif name == "bare":  # a tool result without its `result`
                answer = {"status": "ok", "value": {"type": "tool/result"}}
        if answer is not None:
            self.send({"type": "delegate/response", "id": message["id"], "result": answer})


_DURATION = re.compile(r'"(code_mode_host_duration_ns|result_buffered_for_ns)": ?\d+')


def normalized(frames: list[Any]) -> list[Any]:
    """Frames with their measured durations zeroed (they differ run to run)."""
    text = _DURATION.sub(lambda m: f'"{m[1]}": 0', json.dumps(frames))
    return list(json.loads(text))


def run_scenario(
    command: Sequence[str], steps: list[Any], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Play `steps` against the host `command`: its frames (normalized) and exit status.

    A step is `["send", message]`, `["raw", hex bytes]` or `["until", pattern]`.
    """
    client = WireClient(command, env)
    try:
        for kind, argument in steps:
            if kind == "send":
                client.send(argument)
            elif kind == "raw":
                client.send_raw(bytes.fromhex(argument))
            else:
                client.until(argument)
    finally:
        frames, errors, status = client.close()
    return {"frames": normalized(frames), "status": status, "stderr_head": errors.split("\n")[0]}

"""`HostServer` in this process, over pipes: `cell/closed` comes after the answers
asked for the cell, even when the cell closes before the thread that asked has written
them (the race is forced by holding that thread until the session saw the cell close);
once closed from another thread (Ctrl-C), no frame more is handled; a cell's end, which
waits for the client's answers to its notifications, never runs on the thread that reads
them; a notification started while the connection closes waits for no answer."""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cellfleet.actors.cell import actor as cell_actor
from cellfleet.actors.cell.effects import Effects
from cellfleet.actors.cell.log import CellLog
from cellfleet.actors.runtime.runtime import RuntimeMessage
from cellfleet.actors.session.actor import ActorSessionBackend, SessionActor
from cellfleet.ops import host_server
from cellfleet.ops.bench.host import HELLO
from cellfleet.ops.host import Host
from cellfleet.ops.host_server import HostServer

WAIT_S = 10.0


class _Pipes:
    """A client's ends of a `HostServer` served on a thread of its own."""

    def __init__(self, host: Host) -> None:
        to_host, self._to_host = os.pipe()
        self._from_host, from_host = os.pipe()
        reader = os.fdopen(to_host, "rb", buffering=0)
        writer = os.fdopen(from_host, "wb", buffering=0)
        self.server = HostServer(host, reader, writer, sys.stderr)
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        self._ids = iter(range(1, 10**6))

    def send(self, message: Any) -> None:
        payload = json.dumps(message).encode()
        os.write(self._to_host, struct.pack("<I", len(payload)) + payload)

    def read(self) -> Any:
        size = struct.unpack("<I", self._read_exactly(4))[0]
        return json.loads(self._read_exactly(size))

    def _read_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = os.read(self._from_host, count - len(data))
            assert chunk, "the host ended"
            data += chunk
        return data

    def request(self, method: str, **fields: Any) -> int:
        request_id = next(self._ids)
        request = {"method": method, "sessionId": "s", **fields}
        self.send({"type": "operation/request", "id": request_id, "request": request})
        return request_id

    def frames_until_closed(self) -> list[tuple[str, Any]]:
        frames = []
        while True:
            frame = self.read()
            frames.append((frame["type"], frame.get("id")))
            if frame["type"] == "cell/closed":
                return frames

    def pending_output(self) -> bytes:
        os.set_blocking(self._from_host, False)
        try:
            return os.read(self._from_host, 1 << 16)
        except BlockingIOError:
            return b""
        finally:
            os.set_blocking(self._from_host, True)

    def close(self) -> None:
        os.close(self._to_host)
        self.thread.join(WAIT_S)
        os.close(self._from_host)


@pytest.fixture
def pipes(redis_url: str) -> Iterator[_Pipes]:
    host = Host(redis_url, workers=0)
    client = _Pipes(host)
    client.send(HELLO)
    client.read()
    client.request("session/open")
    client.read()
    yield client
    client.close()
    host.close()


@pytest.fixture
def closed_first(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make `ActorSessionBackend.<method>` return only once its session handled a
    `cell_closed` (the asking thread then writes its answer after the cell closed)."""
    closed = threading.Event()
    cell_closed = SessionActor.cell_closed

    def closing(self: SessionActor, *args: Any, **kwargs: Any) -> None:
        cell_closed(self, *args, **kwargs)
        closed.set()

    monkeypatch.setattr(SessionActor, "cell_closed", closing)

    def hold(method: str) -> None:
        original = getattr(ActorSessionBackend, method)

        def held(self: ActorSessionBackend, *args: Any, **kwargs: Any) -> Any:
            closed.clear()
            result = original(self, *args, **kwargs)
            assert closed.wait(WAIT_S), "the cell did not close"
            return result

        monkeypatch.setattr(ActorSessionBackend, method, held)

    return hold


def _execute(pipes: _Pipes, source: str, tools: list[Any] | None = None) -> int:
    body = {"tool_call_id": "c", "enabled_tools": tools or [], "source": source,
            "yield_time_ms": 30_000, "max_output_tokens": None}  # fmt: skip
    return pipes.request("session/execute", request=body)


def test_a_cell_that_closes_before_its_execute_returned(
    pipes: _Pipes, closed_first: Callable[[str], None]
) -> None:
    closed_first("execute")
    request_id = _execute(pipes, 'text("quick");')
    assert pipes.frames_until_closed() == [
        ("operation/response", request_id),  # execution/started
        ("execute/initialResponse", request_id),
        ("cell/closed", None),
    ]


@pytest.mark.parametrize("method", ["observe", "terminate"])
def test_a_cell_that_closes_before_a_wait_or_terminate_returned(
    pipes: _Pipes, closed_first: Callable[[str], None], method: str
) -> None:
    executed = _execute(pipes, "yield_control(); await new Promise((r) => setTimeout(r, 50));")
    assert [pipes.read()["type"] for _ in range(2)] == [
        "operation/response",
        "execute/initialResponse",
    ]
    closed_first(method)
    if method == "observe":
        asked = pipes.request("session/wait", request={"cell_id": "1", "yield_time_ms": 30_000})
    else:
        asked = pipes.request("session/terminate", cellId="1")
    assert executed != asked
    assert pipes.frames_until_closed() == [("operation/response", asked), ("cell/closed", None)]


def test_after_close_no_frame_is_handled(pipes: _Pipes) -> None:
    """(As at Ctrl-C: the main thread closes the connection while the reading thread
    waits for a frame.)"""
    pipes.server.close()
    pipes.request("session/open", sessionId="later")
    pipes.thread.join(WAIT_S)
    assert not pipes.thread.is_alive()  # (it read the frame, and stopped there)
    assert pipes.pending_output() == b""
    assert "later" not in pipes.server._used_sessions


ECHO = {"name": "echo", "tool_name": {"name": "echo", "namespace": None}, "description": "",
        "kind": "function", "input_schema": None, "output_schema": None}  # fmt: skip


def _answered_until_closed(pipes: _Pipes, request_id: int) -> list[str]:
    """Answer the cell's delegate requests until it closes (it must complete without an
    error); what they asked for: a tool call's type, a notification's text."""
    asked = []
    while (frame := pipes.read())["type"] != "cell/closed":
        if frame["type"] == "delegate/request":
            request = frame["request"]
            asked.append(request.get("text") or request["type"])
            value = {"type": "notification/delivered"}
            if request["type"] == "tool/invoke":
                value = {"type": "tool/result", "result": "done"}
            result = {"status": "ok", "value": value}
            pipes.send({"type": "delegate/response", "id": frame["id"], "result": result})
        elif frame["type"] == "execute/initialResponse":
            assert frame["id"] == request_id
            assert frame["result"]["value"]["Result"]["error_text"] is None
    return asked


def test_a_cell_s_end_waits_for_its_notifications_off_the_reading_thread(
    pipes: _Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool's answer is handled on the reading thread, with what JavaScript reports
    while the answer's write waits; but not the cell's end, which waits for the client to
    answer the cell's notifications, answers only that thread reads. (Forced: the
    write waits until JavaScript, notifications and end included, has reported.)"""
    reported, armed = threading.Event(), threading.Event()
    waited: list[bool] = []
    notified_on: list[str] = []
    ended_on: list[str] = []
    tool_done, flush, notify = Effects.tool_done, CellLog.flush, Effects.notify
    tell_self, on_finished = cell_actor.CellActor.tell_self, cell_actor.CellActor._on_finished

    def doing(self: Effects, *args: Any) -> None:
        reported.clear()
        armed.set()
        tool_done(self, *args)

    def flushing(self: CellLog) -> None:
        if armed.is_set() and threading.current_thread() is pipes.thread:
            armed.clear()
            waited.append(reported.wait(WAIT_S))
        flush(self)

    def notifying(self: Effects, text: str) -> None:
        notified_on.append(threading.current_thread().name)
        notify(self, text)

    def telling(self: cell_actor.CellActor, message: Any) -> None:
        tell_self(self, message)
        if isinstance(message, RuntimeMessage):
            reported.set()

    def ending(self: cell_actor.CellActor, *args: Any) -> None:
        ended_on.append(threading.current_thread().name)
        on_finished(self, *args)

    monkeypatch.setattr(Effects, "tool_done", doing)
    monkeypatch.setattr(cell_actor, "ADMIT_WITHIN_S", 3600.0)  # (the cell idle meanwhile)
    monkeypatch.setattr(CellLog, "flush", flushing)
    monkeypatch.setattr(Effects, "notify", notifying)
    monkeypatch.setattr(cell_actor.CellActor, "tell_self", telling)
    monkeypatch.setattr(cell_actor.CellActor, "_on_finished", ending)
    request_id = _execute(pipes, 'await tools.echo({}); notify("a"); notify("b");', [ECHO])
    assert _answered_until_closed(pipes, request_id) == ["tool/invoke", "a", "b"]
    assert waited == [True]
    assert notified_on == [pipes.thread.name] * 2  # (JavaScript's last report: drained)
    assert ended_on
    assert pipes.thread.name not in ended_on


def test_a_notification_started_while_the_connection_closes_waits_for_no_answer(
    pipes: _Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(The client is gone: nobody would acknowledge it. Forced: a session's shutdown,
    on the way out, starts one.)"""
    monkeypatch.setattr(host_server, "NOTIFICATION_TIMEOUT_S", 3600.0)
    server = pipes.server
    session = server._sessions["s"].session
    shutdown = session.shutdown
    notified: list[str] = []

    def notifying_shutdown(*args: Any, **kwargs: Any) -> None:
        server._notify("s", "c", "1", "late")
        notified.append("returned")
        shutdown(*args, **kwargs)

    monkeypatch.setattr(session, "shutdown", notifying_shutdown)
    closing = threading.Thread(target=server.close)
    closing.start()
    closing.join(WAIT_S)
    assert not closing.is_alive()
    assert notified == ["returned"]
    assert pipes.pending_output() == b""  # (no frame for it either)

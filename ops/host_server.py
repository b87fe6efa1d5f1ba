"""`cellfleet host`: Codex's code-mode host protocol v1 over stdio, on cellfleet sessions.

Codex (0.169.0) starts `codex-code-mode-host` next to its own binary and speaks length-
prefixed JSON frames with it (`../shared/spec/host-protocol.md`). This module is that
host: each protocol session is a cellfleet session (every lifecycle event in Redis), its
cells get the tools each execute names, and their nested tool calls and notifications
go back to the client as delegate requests (the client is the tool worker).

The cells run in this process (a `Host`), or on the fleet's workers (a `FleetClient`:
`cellfleet host --fleet`), where a worker that dies loses none of them. On the fleet, a
session's worker sends its nested calls here through the client's answers stream, in
order with the cells' answers (so the client sees the frames in the same order), and
the client's answer goes back to the session's owner, which records it
(`_FleetDelegates`).

Threads: the reader (`serve`) decodes frames and starts operations; answers are written
from whichever thread settles them (cell actors, the session shutdown), one whole frame
at a time (`FrameWriter`). Only frames go to standard output: anything else written to
file descriptor 1 lands on standard error.

A frame the host cannot decode ends the connection as the reference ends it: one
`Error: ...` on standard error and exit status 1, without a frame.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TextIO, cast

from cellfleet.actors.session.actor import CellTools
from cellfleet.broker.client import DEFAULT_EXEC_YIELD_TIME_MS, Session, SessionBackend
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.responses import CellAnswer, ObserveMode, Pending
from cellfleet.broker.contract.typescript import normalize_identifier
from cellfleet.broker.errors import BrokerError
from cellfleet.broker.fleet import FleetClient
from cellfleet.broker.fleet.client import FleetSessionBackend
from cellfleet.broker.host_protocol import answers, messages
from cellfleet.broker.host_protocol.frames import FrameError, FrameWriter, read_frame
from cellfleet.broker.host_protocol.messages import DecodeError
from cellfleet.broker.tools.delegate import DelegateDispatcher, Send
from cellfleet.broker.tools.invocation import ToolInvocation
from cellfleet.ops.host import Host

REMEMBERED_REQUEST_IDS = 4096  # finished ids that still count as used
# Answers to the fleet's calls kept for a worker that took a session over and asks again.
ANSWERS_KEPT = 4096
CLOSE_WAIT_S = 10.0  # how long Ctrl-C waits for the frame being handled
NOTIFICATION_TIMEOUT_S = 60.0  # a client that never acknowledges holds a thread no longer
RANGE_ERROR = "invalid code-mode execute request: out of range integral type conversion attempted"


class FatalError(Exception):
    """The connection cannot go on (the reference exits with status 1)."""


class _Backend(SessionBackend, Protocol):
    """A session's backend as this server drives it (in this process or on the fleet):
    a cell may have its own tools, and an observation may be answered early."""

    def execute(
        self,
        call_id: str,
        source: str,
        yield_time_ms: int,
        max_output_tokens: int | None,
        mode: ObserveMode = ...,
        *,
        tools: CellTools | None = None,
    ) -> tuple[str, Future[CellAnswer]]: ...

    def yield_now(self, cell_id: str) -> None: ...


class _Delegates(Protocol):
    """Where the client's answers to nested calls go (`DelegateDispatcher`, or on the
    fleet `_FleetDelegates`)."""

    def answer(self, delegate_id: int, result: Any, error: str | None) -> bool: ...

    def fail_all(self, error: str) -> None: ...


@dataclass
class _Asked:
    """A call out to the client: who asked for it last (a worker that took its session
    over asks again), under which of its numbers, and the call's key."""

    backend: FleetSessionBackend
    delegate: int  # the worker's number of the call
    key: str  # its idempotency key

    @property
    def worker_key(self) -> tuple[str, int]:
        return (self.backend.session_id, self.delegate)


class _FleetDelegates:
    """The nested calls of cells that run on the fleet (`ClientTools`): a call that a
    session's worker asks for gets a delegate id of this connection and goes to the
    client (`send`); the client's answer goes back to the session's owner, which records
    it. A worker that took the session over asks again for the calls it still needs:
    one still out to the client is not sent twice, and one the client answered already
    is answered from memory (`ANSWERS_KEPT`), so the client runs each call once."""

    def __init__(
        self, send: Send, withdrawn: Callable[[int], None], ids: itertools.count[int]
    ) -> None:
        self._send = send
        self._withdrawn = withdrawn  # tell the client a call is no longer needed
        self._ids = ids  # shared with the connection's other requests to the client
        self._lock = threading.Lock()
        self._asked: dict[int, _Asked] = {}  # by the client's id of the call
        self._by_key: dict[str, int] = {}  # a call's key -> the client's id of it
        self._by_worker: dict[tuple[str, int], int] = {}  # (session, worker's number) -> id
        self._answers: OrderedDict[str, tuple[Any, str | None]] = OrderedDict()  # by key
        self._gone: str | None = None  # the client left: calls fail with this

    def ask(self, backend: FleetSessionBackend, delegate: int, call: ToolInvocation) -> None:
        key = call.idempotency_key
        fresh, delegate_id = False, 0
        with self._lock:
            answered = (None, self._gone) if self._gone is not None else self._answers.get(key)
            if answered is None:
                out = self._by_key.get(key)
                if out is None:  # a new call
                    delegate_id = self._by_key[key] = next(self._ids)
                    fresh = True
                else:  # out already: a worker that took the session over asks again
                    delegate_id = out
                    self._by_worker.pop(self._asked[delegate_id].worker_key, None)
                asked = self._asked[delegate_id] = _Asked(backend, delegate, key)
                self._by_worker[asked.worker_key] = delegate_id
        if answered is not None:
            backend.answer_tool(delegate, key, *answered)
        elif fresh:
            self._send(delegate_id, call)

    def withdrawn(self, backend: FleetSessionBackend, delegate: int) -> None:
        with self._lock:
            delegate_id = self._by_worker.pop((backend.session_id, delegate), None)
            if delegate_id is not None:
                self._by_key.pop(self._asked.pop(delegate_id).key, None)
        if delegate_id is not None:
            self._withdrawn(delegate_id)

    def answer(self, delegate_id: int, result: Any, error: str | None) -> bool:
        with self._lock:
            asked = self._asked.pop(delegate_id, None)
            if asked is None:
                return False
            self._by_key.pop(asked.key, None)
            self._by_worker.pop(asked.worker_key, None)
            self._answers[asked.key] = (result, error)
            if len(self._answers) > ANSWERS_KEPT:
                self._answers.popitem(last=False)
        asked.backend.answer_tool(asked.delegate, asked.key, result, error)
        return True

    def fail_all(self, error: str) -> None:
        with self._lock:
            self._gone = error
            asked, self._asked = list(self._asked.values()), {}
            self._by_key.clear()
            self._by_worker.clear()
        for call in asked:
            call.backend.answer_tool(call.delegate, call.key, None, error)


@dataclass
class _Open:
    session: Session
    server_shaping: bool

    @property
    def backend(self) -> _Backend:
        return cast("_Backend", self.session.backend)


@dataclass
class _Observation:
    """A request whose answer is an observation (execute's initial response, wait)."""

    session: _Open
    cell_id: str
    future: Future[CellAnswer] | None = None
    started_execution: bool = False  # an execute past `execution/started`: not cancellable


class HostServer:
    """One client connection over a pair of byte streams."""

    def __init__(
        self,
        host: Host | FleetClient,
        reader: BinaryIO,
        writer: BinaryIO,
        errors: TextIO,
        *,
        memory_limit_bytes: int | None = None,
    ) -> None:
        self.host = host
        self.memory_limit_bytes = memory_limit_bytes  # of each cell's heap (None: the host's)
        self._reader = reader
        self._out = FrameWriter(writer)
        self._errors = errors
        self._lock = threading.Lock()
        self._serving = threading.Lock()  # held while `serve` handles a frame
        self._sessions: dict[str, _Open] = {}
        self._used_sessions: set[str] = set()
        self._opening: set[str] = set()  # (on the fleet: waiting for a worker with room)
        self._live_ids: set[int] = set()
        self._finished_ids: deque[int] = deque(maxlen=REMEMBERED_REQUEST_IDS)
        self._observations: dict[int, _Observation] = {}
        self._delegate_ids = itertools.count(1)
        self._notifications: dict[int, threading.Event] = {}
        self._client_ids: dict[str, str] = {}  # cellfleet's session id -> the client's
        # A cell's requests to the client wait until its `execution/started` went out.
        self._started: set[tuple[str, str]] = set()  # (client's session id, cell id)
        self._held: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # A cell's `cell/closed` goes out after every answer about it that was asked for
        # before: the cell may close before the thread that asked wrote its answer.
        self._answering: dict[int, tuple[str, str]] = {}  # request id -> its cell's key
        self._closed_held: dict[tuple[str, str], dict[str, Any]] = {}
        # Requests for a session whose shutdown is under way: answered after it.
        self._closing: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._ending = False  # the client closed its end: answers go nowhere
        self._delegate: _Delegates
        self._open_options: dict[str, Any]  # how its sessions reach the client's tools
        if isinstance(host, FleetClient):
            delegates = _FleetDelegates(self._send_tool_call, self._withdraw, self._delegate_ids)
            self._delegate, self._open_options = delegates, {"client_tools": delegates}
        else:
            dispatcher = DelegateDispatcher(
                host.journal.link, self._send_tool_call, self._withdraw, self._delegate_ids
            )
            self._delegate, self._open_options = dispatcher, {"dispatcher": dispatcher}

    # -- the connection -----------------------------------------------------------------

    def serve(self) -> int:
        """Serve until the client closes its end (0) or sends what cannot be decoded (1)."""
        try:
            if not self._handshake():
                return 0
            while (payload := read_frame(self._reader)) is not None:
                with self._serving:  # (`close` waits for the frame in hand)
                    if self._ending:  # closed from another thread: no frame more
                        break
                    self._handle(messages.read_message(payload))
        except (DecodeError, FrameError) as error:
            return self._fatal(
                "failed to read code-mode client message",
                f"failed to decode code-mode IPC frame: {error}",
            )
        except FatalError as error:
            return self._fatal(str(error))
        finally:
            self._close()
        return 0

    def _handshake(self) -> bool:
        """The hello and its answer; False when the connection was rejected."""
        try:
            payload = read_frame(self._reader)
            if payload is None:
                return False
            hello = messages.decode_hello(messages.parse(payload))
        except (DecodeError, FrameError) as error:
            raise FatalError(
                "failed to read code-mode client hello\n\nCaused by:\n"
                f"    failed to decode code-mode IPC frame: {error}"
            ) from None
        reason: dict[str, Any]
        if hello is None:
            reason = {"type": "invalidHello", "message": "first message must be connection/hello"}
            self._out.write(answers.rejected(reason))
            return False
        if not set(hello.supported_versions) & set(answers.SUPPORTED_VERSIONS):
            reason = {"type": "noCompatibleVersion", "supportedVersions": [1]}
            self._out.write(answers.rejected(reason))
            return False
        for capability in hello.required_capabilities:
            if capability not in answers.GRANTED:
                reason = {"type": "missingRequiredCapability", "capability": capability}
                self._out.write(answers.rejected(reason))
                return False
        offered = [*hello.required_capabilities, *hello.optional_capabilities]
        granted = [c for c in answers.GRANTED if c in offered]
        self._out.write(answers.ready(granted))
        return True

    def _fatal(self, message: str, cause: str | None = None) -> int:
        self._out.closed = True  # (as the reference: not one frame more)
        text = f"Error: {message}"
        if cause is not None:
            text += f"\n\nCaused by:\n    {cause}"
        print(text, file=self._errors, flush=True)
        return 1

    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """End the connection as if the client had closed its end, from another thread
        than `serve`'s: after the frame in hand (waited for up to `timeout`), no frame
        is handled; `serve` may go on waiting for one."""
        serving = self._serving.acquire(timeout=timeout)
        try:
            self._close()
        finally:
            if serving:
                self._serving.release()

    def _close(self) -> None:
        """The client closed its end: its tool calls fail and its sessions shut down.
        Requests still open are not answered (as the reference); what cells were
        already due to say (`cell/closed`) still goes out."""
        self._ending = True
        self._delegate.fail_all(texts.CLIENT_GONE)
        with self._lock:
            waiting, self._notifications = list(self._notifications.values()), {}
            sessions, self._sessions = list(self._sessions.values()), {}
        for event in waiting:
            event.set()
        for open_session in sessions:
            open_session.session.shutdown()
        self._out.closed = True

    # -- client messages ----------------------------------------------------------------

    def _handle(self, message: messages.ClientMessage) -> None:
        if isinstance(message, messages.Hello):
            raise FatalError("received a second code-mode client hello")
        if isinstance(message, messages.DelegateResponse):
            self._on_delegate_response(message)
        elif isinstance(message, messages.Cancel):
            self._cancel(message.id)
        elif isinstance(message, messages.Yield):
            self._yield(message.id)
        else:
            self._start(message.id)
            self._request(message.id, message.request)

    def _start(self, request_id: int) -> None:
        with self._lock:
            if request_id in self._live_ids or request_id in self._finished_ids:
                raise FatalError(f"duplicate code-mode request ID RequestId({request_id})")
            self._live_ids.add(request_id)

    def _finish(self, request_id: int, frame: dict[str, Any]) -> None:
        with self._lock:
            self._live_ids.discard(request_id)
            self._finished_ids.append(request_id)
            self._observations.pop(request_id, None)
        if not self._ending:
            self._out.write(frame)
        with self._lock:
            key = self._answering.pop(request_id, None)
            if key is not None:
                self._write_closed_if_due(key)

    def _request(self, request_id: int, request: messages.Request) -> None:
        began = time.monotonic_ns()
        if isinstance(request, messages.Open):
            self._open(request_id, request)
            return
        with self._lock:
            target = self._sessions.get(request.session_id)
            closing = self._closing.get(request.session_id)
            message = f"unknown code-mode session {request.session_id}"
            if target is None and closing is not None:  # (its shutdown answers first)
                closing.append((request_id, answers.error(request_id, message)))
                return
            if target is not None and isinstance(request, messages.Wait | messages.Terminate):
                self._answering[request_id] = (request.session_id, request.cell_id)
        if target is None:
            self._finish(request_id, answers.error(request_id, message))
        elif isinstance(request, messages.Execute):
            self._execute(request_id, target, request, began)
        elif isinstance(request, messages.Wait):
            self._observe(
                request_id, target, request.cell_id, began, yield_ms=request.yield_time_ms
            )
        elif isinstance(request, messages.Terminate):
            self._observe(
                request_id,
                target,
                request.cell_id,
                began,
                yield_ms=None,
                max_tokens=request.max_output_tokens,
            )
        else:
            self._shutdown(request_id, request.session_id, target)

    def _open(self, request_id: int, request: messages.Open) -> None:
        session_id = request.session_id
        with self._lock:
            if session_id in self._sessions or session_id in self._opening:
                problem = f"code-mode session ID `{session_id}` is already open"
            elif session_id in self._used_sessions:
                problem = f"code-mode session ID `{session_id}` was reused"
            else:
                problem = None
                self._used_sessions.add(session_id)
                self._opening.add(session_id)
        if problem is not None:
            self._finish(request_id, answers.error(request_id, problem))
        elif isinstance(self.host, FleetClient):  # (it may wait for a worker with room:
            # meanwhile the client's other frames are read and answered)
            name = f"open-{session_id}"
            opening = threading.Thread(
                target=self._open_session, args=(request_id, request), name=name, daemon=True
            )
            opening.start()
        else:
            self._open_session(request_id, request)

    def _open_session(self, request_id: int, request: messages.Open) -> None:
        session_id = request.session_id
        if self._ending:  # (an opening on the fleet outlived the connection)
            return
        try:
            session = self.host.open_session(
                [],
                max_yield_time_ms=request.max_yield_time_ms,
                # (`maxHeapSizeBytes` is not enforced, as by Codex's own host: the cells
                # have the host's limit, `--memory-limit-mib`.)
                memory_limit_bytes=self.memory_limit_bytes,
                label=session_id,
                notify=lambda call_id, cell_id, text: self._notify(
                    session_id, call_id, cell_id, text
                ),
                on_cell_closed=lambda cell_id: self._cell_closed(session_id, cell_id),
                **self._open_options,
            )
        except BrokerError as error:  # no fleet worker with room, the log unreachable
            with self._lock:
                self._used_sessions.discard(session_id)
                self._opening.discard(session_id)
            self._finish(request_id, answers.error(request_id, str(error)))
            return
        with self._lock:
            self._opening.discard(session_id)
            ending = self._ending  # (the client left while it opened)
            if not ending:
                self._sessions[session_id] = _Open(session, request.server_truncation)
                self._client_ids[session.id] = session_id
        if ending:
            session.shutdown()
            return
        ready = {"type": "session/ready", "sessionId": session_id}
        self._finish(request_id, answers.ok(request_id, ready))

    def _execute(
        self, request_id: int, target: _Open, request: messages.Execute, began: int
    ) -> None:
        if request.max_output_tokens is not None and request.max_output_tokens < 0:
            self._finish(request_id, answers.error(request_id, RANGE_ERROR))
            return
        yield_ms = request.yield_time_ms
        try:
            cell_id, future = target.backend.execute(
                request.tool_call_id,
                request.source,
                DEFAULT_EXEC_YIELD_TIME_MS if yield_ms is None else yield_ms,
                request.max_output_tokens,
                ObserveMode.YIELD,
                tools=_tool_set(request.tools),
            )
        except Exception as error:  # refused (shutting down, the log unreachable)
            self._finish(request_id, answers.error(request_id, str(error)))
            return
        observation = _Observation(target, cell_id, future, started_execution=True)
        started = {"type": "execution/started", "cellId": cell_id}
        key = (request.session_id, cell_id)
        with self._lock:  # its delegate requests may be waiting for this frame
            self._observations[request_id] = observation
            self._answering[request_id] = key
            self._out.write(answers.ok(request_id, started))
            self._started.add(key)
            for frame in self._held.pop(key, ()):
                self._out.write(frame)
        self._when_answered(
            request_id,
            observation,
            began,
            max_tokens=request.max_output_tokens,
            frame="execute/initialResponse",
        )

    def _observe(
        self,
        request_id: int,
        target: _Open,
        cell_id: str,
        began: int,
        *,
        yield_ms: int | None,
        max_tokens: int | None = None,
    ) -> None:
        """A wait (`yield_ms`), or a terminate (None)."""
        backend = target.backend
        terminate = yield_ms is None
        try:
            if yield_ms is None:
                future = backend.terminate(cell_id)
            else:
                future = backend.observe(cell_id, ObserveMode.YIELD, yield_ms)
        except Exception as error:  # busy: an operation error
            self._finish(request_id, answers.error(request_id, str(error)))
            return
        observation = _Observation(target, cell_id, future)
        if not terminate:
            with self._lock:
                self._observations[request_id] = observation
        self._when_answered(request_id, observation, began, max_tokens=max_tokens, wait=True)

    def _when_answered(
        self,
        request_id: int,
        observation: _Observation,
        began: int,
        *,
        max_tokens: int | None,
        frame: str = "operation/response",
        wait: bool = False,
    ) -> None:
        shaping = observation.session.server_shaping

        def answered(future: Future[CellAnswer]) -> None:
            if future.cancelled():
                self._finish(request_id, answers.error(request_id, "code-mode request cancelled"))
                return
            error = future.exception()
            if error is not None:
                self._finish(request_id, answers.error(request_id, str(error)))
                return
            answer = future.result()
            assert not isinstance(answer, Pending)
            response = answers.runtime(
                answer,
                duration_ns=time.monotonic_ns() - began,
                server_shaping=shaping,
                max_tokens=max_tokens,
            )
            missing = bool(getattr(answer, "missing", False))
            value = answers.wait_completed(response, missing=missing) if wait else response
            self._finish(request_id, answers.ok(request_id, value, frame))

        assert observation.future is not None
        observation.future.add_done_callback(answered)

    def _shutdown(self, request_id: int, session_id: str, target: _Open) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)
            self._closing[session_id] = []

        def run() -> None:
            target.session.shutdown()
            closed = {"type": "session/closed", "sessionId": session_id}
            self._finish(request_id, answers.ok(request_id, closed))
            with self._lock:
                later = self._closing.pop(session_id, [])
                self._started = {key for key in self._started if key[0] != session_id}
                held = self._closed_held
                self._closed_held = {
                    key: frame for key, frame in held.items() if key[0] != session_id
                }
            for waiting_id, frame in later:
                self._finish(waiting_id, frame)

        threading.Thread(target=run, name=f"shutdown-{session_id}", daemon=True).start()

    def _cancel(self, request_id: int) -> None:
        """Withdraw a wait (an execute past `execution/started` runs on regardless)."""
        with self._lock:
            observation = self._observations.get(request_id)
        if observation is None or observation.started_execution or observation.future is None:
            return
        observation.future.cancel()  # (answered by `answered`, if it was not answered yet)

    def _yield(self, request_id: int) -> None:
        """Answer a pending observation now with what the cell produced so far."""
        with self._lock:
            observation = self._observations.get(request_id)
        if observation is not None:
            observation.session.backend.yield_now(observation.cell_id)

    # -- requests to the client ---------------------------------------------------------

    def _send_tool_call(self, delegate_id: int, call: ToolInvocation) -> None:
        session_id = self._client_session(call.session)
        self._cell_frame(session_id, call.cell, answers.tool_invoke(delegate_id, session_id, call))

    def _cell_frame(self, session_id: str, cell_id: str, frame: dict[str, Any]) -> None:
        """Write a cell's request to the client, once its `execution/started` is out."""
        key = (session_id, cell_id)
        with self._lock:
            if key not in self._started:
                self._held.setdefault(key, []).append(frame)
                return
            self._out.write(frame)

    def _cell_closed(self, session_id: str, cell_id: str) -> None:
        """Write the cell's `cell/closed` once its `execution/started` and the answers
        asked for it so far are out (at once, as a rule)."""
        key = (session_id, cell_id)
        with self._lock:
            self._closed_held[key] = {
                "type": "cell/closed",
                "sessionId": session_id,
                "cellId": cell_id,
            }
            self._write_closed_if_due(key)

    def _write_closed_if_due(self, key: tuple[str, str]) -> None:
        """(Lock held.)"""
        if (
            key in self._closed_held
            and key in self._started
            and key not in self._answering.values()
        ):
            self._out.write(self._closed_held.pop(key))

    def _withdraw(self, delegate_id: int) -> None:
        """Tell the client a call is no longer needed (after its request, if that is
        held: on the fleet a cell may end before its `execution/started` went out)."""
        frame = {"type": "delegate/cancel", "id": delegate_id}
        with self._lock:
            for frames in self._held.values():
                if any(f["type"] == "delegate/request" and f["id"] == delegate_id for f in frames):
                    frames.append(frame)
                    return
            self._out.write(frame)

    def _notify(self, session_id: str, call_id: str, cell_id: str, text: str) -> None:
        """Hand a notification to the client and wait until it acknowledged it (the
        cell's answer waits for its notifications)."""
        delegate_id = next(self._delegate_ids)
        delivered = threading.Event()
        with self._lock:
            if self._out.closed or self._ending:  # (no client left to acknowledge it)
                return
            self._notifications[delegate_id] = delivered
        frame = answers.notification(delegate_id, session_id, call_id, cell_id, text)
        self._cell_frame(session_id, cell_id, frame)
        delivered.wait(NOTIFICATION_TIMEOUT_S)
        with self._lock:
            self._notifications.pop(delegate_id, None)

    def _on_delegate_response(self, response: messages.DelegateResponse) -> None:
        with self._lock:
            notification = self._notifications.pop(response.id, None)
        if notification is not None:
            notification.set()
            return
        error = None if response.ok else response.message
        if response.delivered:  # a notification's answer to a tool call
            error = texts.INVALID_TOOL_RESULT
        self._delegate.answer(response.id, response.value, error)  # (unknown ids: ignored)

    def _client_session(self, internal_id: str) -> str:
        with self._lock:
            return self._client_ids.get(internal_id, internal_id)


@functools.lru_cache(maxsize=64)
def _tool_set(tools: tuple[messages.WireTool, ...]) -> CellTools:
    """The tools an execute names, as the cell installs them: `tools[name]` with the name
    made a JavaScript identifier (`my-tool` -> `my_tool`, as Codex's host does), and the
    client's description in `ALL_TOOLS` as given."""
    return CellTools.from_records(
        [
            {
                "name": tool.tool_name,
                "namespace": tool.namespace,
                "global_name": normalize_identifier(tool.name),
                "kind": str(tool.kind),
                "description": tool.description,
            }
            for tool in tools
        ]
    )


def serve_stdio(
    host_factory: Callable[[], Host | FleetClient], memory_limit_bytes: int | None = None
) -> int:
    """Serve one client on standard input and output; the process's exit status."""
    frames_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray writes: not into the frames
    frames_in = os.fdopen(os.dup(sys.stdin.fileno()), "rb")  # (a frame: one read)
    host = host_factory()
    try:
        server = HostServer(
            host, frames_in, frames_out, sys.stderr, memory_limit_bytes=memory_limit_bytes
        )
        return _serve_off_the_main_thread(server)
    finally:
        host.close()


def _serve_off_the_main_thread(server: HostServer) -> int:
    """`server.serve()` on a thread of its own, while the main thread waits for it.

    There a session's requests run on the reading thread whenever the session is idle
    (`ask_here`, two thread switches fewer per request), which it must never do on the
    main thread, where Ctrl-C's KeyboardInterrupt is raised: that now interrupts the
    wait, and the connection closes as at the end of its input."""
    outcome: list[int | BaseException] = []

    def serve() -> None:
        try:
            outcome.append(server.serve())
        except BaseException as error:  # re-raised on the main thread
            outcome.append(error)

    thread = threading.Thread(target=serve, name="host-serve", daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        server.close()
        raise
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]

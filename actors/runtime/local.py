"""Run a cell runtime on a private owner thread, with in-process tools and host timers.

This is the smallest complete owner of a `CellRuntime`: it is what tests, benchmarks
and the `cellfleet` demo use to drive the runtime directly. The cell actor of the
session layer plays the same role with the event log in between.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cellfleet.actors.runtime.pool import DEFAULT_MEMORY_LIMIT_BYTES, ContextPool
from cellfleet.actors.runtime.protocol import (
    CellSpec,
    Finished,
    RuntimeEvent,
    Stopped,
    TimerCleared,
    TimerSet,
    ToolCallRequested,
)
from cellfleet.actors.runtime.runtime import POLL_INTERVAL_S, CellRuntime, RuntimeMessage
from cellfleet.broker import codec
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.tools import JsonValue
from cellfleet.broker.events import wall_clock_ms
from cellfleet.broker.tools.invocation import ToolCallError, ToolHandler

# Raised by an in-process tool handler: the JS promise rejects with its message.
ToolError = ToolCallError


@dataclass(frozen=True, slots=True)
class _ToolDone:
    call_id: str
    value: JsonValue
    error: str | None


@dataclass(frozen=True, slots=True)
class _Control:
    action: Callable[[], None]


@dataclass(frozen=True, slots=True)
class RecordedInput:
    """One input as the runtime received it: what replay delivers again, in order."""

    kind: str  # "tool_result" | "tool_error" | "timer"
    target: str  # tool call id or timer id
    clock_ms: float
    value: JsonValue = None
    error: str | None = None

    def deliver(self, runtime: CellRuntime) -> None:
        if self.kind == "tool_result":
            runtime.deliver_tool_result(self.target, self.value, self.clock_ms)
        elif self.kind == "tool_error":
            runtime.deliver_tool_error(self.target, self.error or "", self.clock_ms)
        else:
            runtime.deliver_timer(int(self.target), self.clock_ms)


class LocalCell:
    """One cell driven on its own thread; events are recorded in order in `events`."""

    def __init__(
        self,
        spec: CellSpec,
        pool: ContextPool,
        *,
        tools: Mapping[str, ToolHandler] | None = None,
        clock: Callable[[], float] = wall_clock_ms,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
        on_event: Callable[[RuntimeEvent], None] | None = None,
        replay: list[RecordedInput] | None = None,
        warmed: bool | None = None,
    ) -> None:
        """With `replay`, tools and timers are not run: the recorded inputs are fed instead
        (and `warmed` says whether the recorded cell's context was warmed)."""
        self.events: list[RuntimeEvent] = []
        self.inputs: list[RecordedInput] = []
        self._replay = replay
        self._tools = dict(tools or {})
        self._clock = clock
        self._on_event = on_event
        self._inbox: queue.SimpleQueue[RuntimeMessage | _ToolDone | _Control] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, int]] = []  # (due monotonic s, seq, timer id)
        self._timer_due_clock: dict[int, float] = {}
        self._seq = itertools.count()
        self._changed = threading.Condition()
        self.runtime = CellRuntime(
            spec,
            pool.acquire(spec.tools, warmed=warmed, source=spec.source),
            listener=self._record,
            sink=self._inbox.put,
            release=pool.release,
            memory_limit_bytes=memory_limit_bytes,
        )
        self._thread = threading.Thread(target=self._run, name=f"cell-{spec.cell_id}", daemon=True)
        self._thread.start()

    # -- caller side -------------------------------------------------------------------

    def wait(self, timeout: float = 10.0) -> Finished | Stopped:
        """Block until the cell finished or was stopped; return that event."""

        def ended() -> bool:  # (its end is reported after the runtime is done)
            return bool(self.events) and isinstance(self.events[-1], Finished | Stopped)

        with self._changed:
            if not self._changed.wait_for(ended, timeout):
                raise TimeoutError("cell did not finish in time")
        last = self.events[-1]
        assert isinstance(last, Finished | Stopped)
        return last

    def wait_for(
        self, predicate: Callable[[list[RuntimeEvent]], bool], timeout: float = 10.0
    ) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.events), timeout):
                raise TimeoutError("expected event did not happen")

    def control(self, action: Callable[[CellRuntime], None]) -> None:
        """Run `action(runtime)` on the owner thread (terminate, frontier mode, ...)."""
        self._inbox.put(_Control(lambda: action(self.runtime)))

    def terminate(self) -> None:
        self.control(CellRuntime.terminate)

    # -- owner thread ------------------------------------------------------------------

    def _run(self) -> None:
        self.runtime.start()
        for recorded in self._replay or ():
            self._deliver(recorded)
        while not self.runtime.done:
            message = self._next_message()
            if message is None:
                continue
            if isinstance(message, _ToolDone):
                kind = "tool_result" if message.error is None else "tool_error"
                self._deliver(
                    RecordedInput(
                        kind, message.call_id, self._clock(), message.value, message.error
                    )
                )
            elif isinstance(message, _Control):
                message.action()
            else:
                self.runtime.handle(message)

    def _next_message(self) -> RuntimeMessage | _ToolDone | _Control | None:
        timeout = POLL_INTERVAL_S if self.runtime.busy else None
        if self._timers:
            until_due = max(0.0, self._timers[0][0] - time.monotonic())
            timeout = until_due if timeout is None else min(timeout, until_due)
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            pass
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer_id = heapq.heappop(self._timers)
            due_clock = self._timer_due_clock.pop(timer_id, None)
            if due_clock is not None:
                clock = max(self._clock(), due_clock)
                self._deliver(RecordedInput("timer", str(timer_id), clock))
        self.runtime.poll()
        return None

    def _deliver(self, recorded: RecordedInput) -> None:
        with self._changed:
            self.inputs.append(recorded)
            self._changed.notify_all()
        recorded.deliver(self.runtime)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until `condition()` holds (checked whenever an event or input is added)."""
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                raise TimeoutError("condition did not become true")

    def _record(self, event: RuntimeEvent) -> None:
        if self._replay is not None:
            pass  # inputs come from the recording, not from live tools and timers
        elif isinstance(event, TimerSet):
            due = time.monotonic() + event.delay_ms / 1000.0
            heapq.heappush(self._timers, (due, next(self._seq), event.timer_id))
            self._timer_due_clock[event.timer_id] = event.due_clock_ms
        elif isinstance(event, TimerCleared):
            self._timer_due_clock.pop(event.timer_id, None)
        elif isinstance(event, ToolCallRequested):
            self._start_tool(event)
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()
        if self._on_event is not None:
            self._on_event(event)

    def _start_tool(self, call: ToolCallRequested) -> None:
        handler = self._tools.get(call.name)

        def run() -> None:
            try:
                problem = call.problem or codec.json_problem(call.input)
                if problem is not None:
                    raise ToolError(texts.tool_input_not_json(call.name, problem))
                if handler is None:
                    raise ToolError(texts.no_handler(call.name))
                value: Any = handler(call.input)
                problem = codec.json_problem(value)
                if problem is not None:
                    raise ToolError(texts.tool_result_not_json(call.name, problem))
                self._inbox.put(_ToolDone(call.call_id, value, None))
            except ToolError as failure:
                self._inbox.put(_ToolDone(call.call_id, None, str(failure)))
            except Exception as error:  # a handler bug is a tool failure, never a crash
                self._inbox.put(_ToolDone(call.call_id, None, f"tool failed: {error}"))

        threading.Thread(target=run, name=f"tool-{call.call_id}", daemon=True).start()

"""One cell's runtime: feeds inputs into V8 one at a time and reports what the cell does.

Threading: a `CellRuntime` belongs to one owner (the cell actor, in its turn, whichever
thread has it). V8 runs on its own thread and reports back through `sink`, which must
enqueue the message for the owner; the owner then calls `handle(message)`. The quiescent
point of the last input in flight goes to `quiescent_sink` instead, which may take the
owner's turn and handle it on the V8 thread itself (JavaScript is idle then, and the
owner's thread is not woken); its handling must not wait for that thread (`V8Context`
says which calls do). Every other method is called in the owner's turn too, so the
runtime's state has exactly one writer at a time.

Each input (the start, a tool result or error, a timer firing) is one script, followed
by a marker script: mini-racer runs the microtask checkpoint between the two, so the
marker's answer means "this input and every promise reaction it caused have run". Only
then is the next input delivered; that is the single ordered input queue that makes a
cell's behaviour a function of its recorded inputs. A tool's result or error and a timer
are left in the context's inbox for the prelude's `take()`, the same script every time
(compiled once); a text too long for its slot is staged first by a script of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson

from cellfleet.actors.runtime import source as src
from cellfleet.actors.runtime.mailbox import (
    INBOX_SLOTS,
    INPUT_FIRE,
    INPUT_REJECT,
    INPUT_RESOLVE,
    loads,
)
from cellfleet.actors.runtime.prepared import PreparedContext
from cellfleet.actors.runtime.protocol import (
    CellSpec,
    Finished,
    NotificationSent,
    OutputItem,
    Pending,
    RuntimeEvent,
    Started,
    Stopped,
    TimerCleared,
    TimerSet,
    ToolCallRequested,
    YieldRequested,
    tools_payload,
)
from cellfleet.actors.runtime.records import REPLAY_ONLY, RecordKind, record_problem
from cellfleet.actors.runtime.v8 import EvalOutcome, V8Context
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.audio import clip_duration_ms
from cellfleet.broker.contract.tools import JsonValue

# While JavaScript runs, its owner collects what it reports this often.
POLL_INTERVAL_S = 0.005

MAX_INPUTS_IN_FLIGHT = INBOX_SLOTS  # (an input in flight keeps its slot until taken)
# A source this long or shorter is scanned while V8 runs it (`start`): about 10 ms of
# scan here, two of the owner's polls, before the memory it takes is watched.
OVERLAPPED_SCAN_CHARS = 4096


# -- messages from the V8 thread to the owner -----------------------------------------


@dataclass(frozen=True, slots=True)
class _Records:
    records: list[list[Any]]


@dataclass(frozen=True, slots=True)
class _Delivered:
    outcome: EvalOutcome


@dataclass(frozen=True, slots=True)
class _Quiescent:
    """The input and its promise reactions have run; `records` is what they wrote last."""

    outcome: EvalOutcome
    records: list[list[Any]]


@dataclass(frozen=True, slots=True)
class _Stop:
    """Queued behind every record drained before termination."""


RuntimeMessage = _Records | _Delivered | _Quiescent | _Stop


@dataclass(frozen=True, slots=True)
class _Input:
    """A host input, left in the context's inbox for the prelude's `take()`."""

    kind: int  # INPUT_RESOLVE, INPUT_REJECT or INPUT_FIRE
    ident: int  # the tool call's sequence number, or the timer's id
    clock_ms: float
    text: str = ""  # the result's JSON text, or the error's message


class CellRuntime:
    """Runs one cell in a prepared context; see the module docstring for threading."""

    def __init__(
        self,
        spec: CellSpec,
        prepared: PreparedContext,
        *,
        listener: Callable[[RuntimeEvent], None],
        sink: Callable[[RuntimeMessage], None],
        release: Callable[[V8Context], None],
        memory_limit_bytes: int,
        quiescent_sink: Callable[[RuntimeMessage], None] | None = None,
    ) -> None:
        self.spec = spec
        self._quiescent_sink = quiescent_sink or sink
        self._context = prepared.context
        self._mailbox = prepared.mailbox
        self._host = prepared.host_name  # the prelude's host interface, by its secret name
        self._warmed = prepared.warmed
        self._listener = listener
        self._sink = sink
        self._release = release
        self._memory_limit_bytes = memory_limit_bytes
        self._kinds = {tool.name: tool.kind for tool in spec.tools}
        self._tools_installed = prepared.tools == tuple(spec.tools)
        self._inputs: deque[_Input] = deque()
        self._take = src.take_script(self._host)
        self.in_realm = prepared.realm  # (a realm in a hub: hubs.py)
        self._wrap = src.realm_wrap if prepared.realm else src.wrap
        self._given = 0  # inputs left in the inbox: the next goes to slot _given % SLOTS
        self._in_flight = 0  # inputs submitted whose marker has not answered yet
        self._frontier = False  # report Pending at each quiescent point and pause
        self._paused = False
        self._issued_since_pending: list[str] = []
        self._settled: tuple[str | None] | None = None
        self._writes: dict[str, str] = {}
        self._done = False
        self._stopping = False
        self._finalizers = False  # the cell registered one: its isolate must go (hubs.py)
        # Replay only (`spec.record_sites`): the source location (line, column) of the
        # record being applied, for the listener, and of each key's last `store()`.
        self.site: tuple[int, int] | None = None
        self.store_sites: dict[str, tuple[int, int] | None] = {}
        prepared.on_post = self._on_post  # V8 thread: JS waits while we drain

    # -- owner-thread API ------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    @property
    def context(self) -> V8Context:
        """The isolate the cell runs in."""
        return self._context

    @property
    def paused(self) -> bool:
        """Frozen at a reported pending frontier until `resume` or `set_frontier_mode`."""
        return self._paused and not self._stopping

    @property
    def busy(self) -> bool:
        """True while JavaScript may be running (an input is being processed)."""
        return self._in_flight > 0 and not self._done

    def listen(self, listener: Callable[[RuntimeEvent], None]) -> None:
        """Report to `listener` from now on (a recovered cell's live owner takes over
        from its replay)."""
        self._listener = listener

    def start(self) -> None:
        """Install the cell's globals and run its source."""
        config = {
            "clock": self.spec.clock_ms,
            "seed": list(self.spec.seed),
            "outputLimit": self.spec.output_limit_bytes,
            "timerLimit": self.spec.timer_limit,
            # None: the pool already installed exactly this tool set.
            "tools": None if self._tools_installed else tools_payload(self.spec.tools),
        }
        if self.spec.record_sites:
            config["sites"] = True
        literal = orjson.dumps(orjson.dumps(config).decode()).decode()
        self._config_literal = literal
        self._source = src.prepare(self.spec.source)
        self._emit(Started(self._warmed))
        # The scan for an error that stops a module before it starts (about 2 µs per
        # character here) runs while V8 compiles and runs a short cell: what the cell
        # does reaches the owner only as messages handled after this, so a cell that
        # fails it ends now with none of its effects. A long one is scanned first: while
        # the owner scans, nobody watches the memory it takes outside V8's heap.
        script = self._wrap(self._host, literal, self._source)
        overlapped = len(self._source) <= OVERLAPPED_SCAN_CHARS
        if overlapped:
            self._submit(script, start=True)
        early_error = src.module_compile_error(self._source)
        if early_error is not None:
            self._finish(early_error)
        elif not overlapped:
            self._submit(script, start=True)

    def deliver_tool_result(self, call_id: str, value: JsonValue, clock_ms: float) -> None:
        text = orjson.dumps(value).decode()
        self._enqueue(_Input(INPUT_RESOLVE, _seq(call_id), clock_ms, text))

    def deliver_tool_error(self, call_id: str, message: str, clock_ms: float) -> None:
        self._enqueue(_Input(INPUT_REJECT, _seq(call_id), clock_ms, message))

    def deliver_timer(self, timer_id: int, clock_ms: float) -> None:
        self._enqueue(_Input(INPUT_FIRE, timer_id, clock_ms))

    def set_frontier_mode(self, enabled: bool) -> None:
        """Frontier mode: report `Pending` at every quiescent point and pause there."""
        self._frontier = enabled
        if not enabled and self._paused:
            self._paused = False
            self._pump()
        elif enabled and not self._in_flight and not self._paused and not self._done:
            self._report_pending()

    def pause_at_frontier(self) -> None:
        """Stand paused at a pending frontier reported before (a recovered cell whose
        last answer was that frontier): inputs delivered from now on wait for `resume`
        or `set_frontier_mode(False)`; nothing is reported now."""
        self._frontier = True
        self._paused = True
        self._issued_since_pending.clear()

    def follow_frontiers(self, reported: Collection[str]) -> None:
        """Go on in frontier mode, as a recovered cell that a pending observer had
        resumed from the frontier that reported the calls `reported` (and earlier ones):
        its next quiescent point names only the calls issued since."""
        issued = self._issued_since_pending
        self._issued_since_pending = [call for call in issued if call not in reported]
        self.set_frontier_mode(True)

    def resume(self) -> None:
        """Leave a pending pause: run the queued inputs, then report the next quiescent
        point (spec §4.7) — at once, unchanged, if nothing was queued."""
        if self._paused:
            self._paused = False
            self._pump()
            if not self._in_flight:
                self._report_pending()

    def poll(self) -> None:
        """Collect what a long-running input has reported so far (owner thread)."""
        if self.busy:
            self._mailbox.drain_into(self._sink_records, reset=False)
            if self._context.memory_limit_reached():  # buffers the heap limit misses
                self._finish_out_of_memory()

    def fail(self, error_text: str) -> None:
        """End the cell now with `error_text` (a limit of the host's was reached); its
        stored writes are not committed, and nothing it does afterwards is reported."""
        self._finish_with(Finished(error_text, {}, False, by_host=True))

    def terminate(self) -> None:
        """Stop the cell: its remaining output is reported, then `Stopped`.

        JavaScript keeps running until the context is disposed, but nothing it writes
        after this drain is reported.
        """
        if self._done or self._stopping:
            return
        self._stopping = True
        self._paused = True
        self._inputs.clear()
        self._mailbox.drain_into(self._sink_records, reset=False)
        self._sink(_Stop())

    def handle(self, message: RuntimeMessage) -> None:
        """Process a message that the V8 thread queued for the owner."""
        if self._done:
            return
        if self._stopping and not isinstance(message, _Records | _Stop | _Quiescent):
            return  # termination wins over anything the cell was about to finish with
        if isinstance(message, _Records):
            self._process_records(message.records)
        elif isinstance(message, _Delivered):
            self._on_delivered(message.outcome)
        elif isinstance(message, _Quiescent):
            self._process_records(message.records)
            if not self._done and not self._stopping:
                self._on_quiescent(message.outcome)
        else:
            self._finish_with(Stopped())

    # -- input queue -----------------------------------------------------------------

    def _enqueue(self, item: _Input) -> None:
        if self._done or self._stopping:
            return
        self._inputs.append(item)
        self._pump()

    def _pump(self) -> None:
        """Submit queued inputs. Each is followed by its marker, so V8 still runs them one
        at a time with a microtask checkpoint after each; outside frontier mode several
        may be queued in V8 at once (frontier mode must stop at every quiescent point)."""
        limit = 1 if self._frontier else MAX_INPUTS_IN_FLIGHT
        while self._inputs and not self._paused and not self._done and self._in_flight < limit:
            item = self._inputs.popleft()
            slot = self._given % INBOX_SLOTS
            self._given += 1
            if not self._mailbox.leave_input(slot, item.kind, item.ident, item.clock_ms, item.text):
                stage = f"stage({slot}, {src.js_string(item.text)})"  # (too long for its slot)
                self._context.eval_async(src.host_script(self._host, stage), self._on_staged)
            self._submit(self._take, keep=True)

    def _on_staged(self, outcome: EvalOutcome) -> None:  # V8 thread
        """A text that could not be staged (the cell's memory limit, say) ends the cell
        as its input's own failure would, before its `take()` is seen."""
        if not outcome.ok:
            self._sink(_Delivered(outcome))

    def _submit(self, script: str, *, keep: bool = False, start: bool = False) -> None:
        """`start`: the start script (a realm's says so by its value if the model's code
        does not compile: `src.realm_wrap`)."""
        self._in_flight += 1
        sink = self._sink
        quiescent_sink = self._quiescent_sink
        mailbox = self._mailbox

        def on_input(outcome: EvalOutcome) -> None:  # V8 thread
            if not outcome.ok:  # only failures need the owner before the marker's answer
                sink(_Delivered(outcome))
            elif start and isinstance(outcome.value, str):
                sink(_Delivered(EvalOutcome(parse_error=outcome.value)))

        def on_marker(outcome: EvalOutcome) -> None:  # V8 thread, JS idle
            # One message for the owner: the last records and the quiescent point (sent
            # under the mailbox's lock, reentrant: `quiescent_sink` may handle it here).
            # (with more inputs queued in V8, this thread runs the next one meanwhile)
            to = quiescent_sink if self._in_flight <= 1 else sink
            mailbox.drain_into(
                lambda records: to(_Quiescent(outcome, records)), reset=True, always=True
            )

        self._context.eval_async(script, on_input, keep=keep)

        self._context.eval_async(src.MARKER, on_marker, keep=True)

    # -- V8 thread ------------------------------------------------------------------

    def _on_post(self) -> None:
        self._mailbox.drain_into(self._sink_records, reset=True)
        self._mailbox.answer_request(self.spec.stored.get)

    def _sink_records(self, records: list[list[Any]]) -> None:
        self._sink(_Records(records))

    # -- processing ----------------------------------------------------------------

    def _on_delivered(self, outcome: EvalOutcome) -> None:
        if outcome.parse_error is not None:
            self._on_compile_error(src.syntax_error_text(outcome.parse_error))
        elif outcome.out_of_memory:
            self._finish_out_of_memory()
        elif outcome.error is not None:
            self._finish(texts.runtime_failed(str(outcome.error)))

    def _on_compile_error(self, text: str) -> None:
        """The start script did not compile: find the text a module parse would give.

        Runs compile-only checks synchronously; this is the failure path, and the
        context is idle (nothing of the cell has run).
        """
        source = self._source
        if src.is_module_syntax_error(text):
            stripped = src.without_module_syntax(source)
            error = self._context.compile_error(src.diagnosis_script(stripped) + "}")
            specifiers = src.import_specifiers(source)
            if error is not None:
                self._finish(
                    src.diagnosed_error(self._context.compile_error(src.diagnosis_script(stripped)))
                )
            elif specifiers:
                self._finish(texts.unsupported_import(specifiers[0]))
            elif stripped != source:  # only exports: run the cell without them
                self._source = stripped
                self._submit(self._wrap(self._host, self._config_literal, stripped), start=True)
            else:
                self._finish(text)
            return
        self._finish(src.diagnosed_error(self._context.compile_error(src.diagnosis_script(source))))

    def _on_quiescent(self, outcome: EvalOutcome) -> None:
        self._in_flight -= 1
        idle = not self._in_flight  # nothing queued in the isolate: it may collect now
        if outcome.out_of_memory or self._context.memory_limit_reached(idle=idle):
            self._finish_out_of_memory()
            return
        if self._settled is not None:  # inputs still queued in V8 no longer matter
            # Ended on its own, nothing of it left in the isolate: its realm's hub may
            # take another cell (pool.py).
            self._context.done_cleanly = idle and not self._finalizers
            self._finish(self._settled[0])
            return
        if self._frontier and not self._in_flight:
            self._report_pending()
        else:
            self._pump()

    def _report_pending(self) -> None:
        ids = tuple(self._issued_since_pending)
        self._issued_since_pending.clear()
        self._paused = True
        self._emit(Pending(ids))

    def _process_records(self, records: list[list[Any]]) -> None:
        for record in records:
            if self._done:
                return
            problem = record_problem(record)
            if problem is None and record[0] == RecordKind.TOOL and record[2] not in self._kinds:
                problem = "a TOOL record for a tool the cell was not given"
            if problem is None and record[0] in REPLAY_ONLY and not self.spec.record_sites:
                problem = "a replay record in a live cell"
            if problem is not None:  # the cell got around the prelude: nothing passes
                self._finish_with(Finished(texts.malformed_record(problem), {}, False))
                return
            if record[0] in REPLAY_ONLY:  # line 0: made where none of the model's code is
                self.site = (record[1], record[2]) if record[1] else None
            elif record[0] == RecordKind.FINALIZER:
                self._finalizers = True
            else:
                self._apply(record)

    def _apply(self, record: list[Any]) -> None:
        kind = record[0]
        if self._stopping and kind != RecordKind.ITEM:
            return  # a terminated cell's output still counts; nothing else it does
        if kind == RecordKind.ITEM:
            self._emit(OutputItem(_checked_audio(record[1])))
        elif kind == RecordKind.TOOL:
            call_id = f"tool-{record[1]}"
            self._issued_since_pending.append(call_id)
            name = record[2]
            value, problem = _tool_input(record[3])
            self._emit(ToolCallRequested(call_id, name, self._kinds[name], value, problem))
        elif kind == RecordKind.STORE:
            self._store(record[1], record[2])
        elif kind == RecordKind.NOTIFY:
            self._emit(NotificationSent(record[1]))
        elif kind == RecordKind.YIELD:
            self._emit(YieldRequested())
        elif kind == RecordKind.TIMER_SET:
            self._emit(TimerSet(record[1], record[2], record[3] + record[2]))
        elif kind == RecordKind.TIMER_CLEAR:
            self._emit(TimerCleared(record[1]))
        elif kind == RecordKind.DONE:
            if self._settled is None:
                self._settled = (record[1],)
        elif kind == RecordKind.EXIT:
            self._finish(None, exited=True)
        else:  # DEFECT: a defect in the prelude; fail the cell loudly rather than hang
            self._finish(texts.runtime_failed(str(record[1])))

    def _store(self, key: str, json_text: str) -> None:
        self._writes.pop(key, None)  # keep write order = order of last writes
        self._writes[key] = json_text
        if self.spec.record_sites:
            self.store_sites[key] = self.site

    # -- endings ---------------------------------------------------------------------

    def _finish_out_of_memory(self) -> None:
        # Ended by a limit of the host's, not by its own script: its stored writes are
        # not committed (what it stored on its way to the limit may be what filled it).
        self.fail(texts.out_of_memory(self._memory_limit_bytes // (1024 * 1024)))

    def _finish(self, error_text: str | None, *, exited: bool = False) -> None:
        self._finish_with(Finished(error_text, dict(self._writes), exited))

    def _finish_with(self, event: Finished | Stopped) -> None:
        if self._done:
            return
        self._done = True
        self._inputs.clear()
        self._release(self._context)
        self._emit(event)

    def _emit(self, event: RuntimeEvent) -> None:
        self._listener(event)


def _seq(call_id: str) -> int:
    return int(call_id.removeprefix("tool-"))


def _tool_input(text: str) -> tuple[JsonValue, str | None]:
    """A tool call's input from its JSON text, or why it cannot be read (too deep, say)."""
    try:
        return loads(text), None
    except (ValueError, RecursionError) as error:
        return None, str(error) or type(error).__name__


def _checked_audio(item: dict[str, str]) -> dict[str, str]:
    """Replace an audio clip shorter than 25 ms by the reference's explanatory text."""
    if item.get("type") != "input_audio":
        return item
    duration = clip_duration_ms(item["audio_url"])
    if duration is not None and duration < 25:
        return {"type": "input_text", "text": texts.SHORT_AUDIO}
    return item

"""The client API a harness calls: `exec` and `wait` with their model-facing outputs.

`Session` turns the model's tool calls into session operations and the cells' answers
into exactly what the model sees (spec §1): pragma parsing, `wait` arguments, header,
`Script error:` item, truncation, and the plain failures that have no header. The
session itself is reached through a `SessionBackend` (the session actor).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Protocol

from cellfleet.broker.contract import texts
from cellfleet.broker.contract.description import build_exec_tool_description
from cellfleet.broker.contract.exec_input import PragmaError, parse_exec_source
from cellfleet.broker.contract.inventory import ToolInventory, build_inventory
from cellfleet.broker.contract.render import ToolOutput, failure_output, render_response
from cellfleet.broker.contract.responses import CellAnswer, ObserveMode, Pending, Result
from cellfleet.broker.contract.tool_specs import exec_tool_spec, wait_tool_spec
from cellfleet.broker.contract.tools import JsonValue
from cellfleet.broker.contract.wait_input import WaitArgumentsError, parse_wait_arguments

log = logging.getLogger(__name__)
DEFAULT_EXEC_YIELD_TIME_MS = 10_000  # the library default; Codex's product uses 30 000


class SessionBackend(Protocol):
    session_id: str

    def execute(
        self,
        call_id: str,
        source: str,
        yield_time_ms: int,
        max_output_tokens: int | None,
        mode: ObserveMode = ...,
    ) -> tuple[str, Future[CellAnswer]]: ...

    def observe(
        self, cell_id: str, mode: ObserveMode, yield_time_ms: int
    ) -> Future[CellAnswer]: ...

    def terminate(self, cell_id: str) -> Future[CellAnswer]: ...

    def shutdown(self, timeout: float = ...) -> None: ...


class Session:
    """A code-mode session as the model uses it (thread-safe: calls may overlap)."""

    def __init__(
        self,
        backend: SessionBackend,
        *,
        default_exec_yield_time_ms: int = DEFAULT_EXEC_YIELD_TIME_MS,
        answer_timeout_s: float | None = None,
        inventory: ToolInventory | None = None,
    ) -> None:
        self.backend = backend
        self.inventory = inventory or build_inventory([])  # the session's nested tools
        self.id = backend.session_id
        self.default_exec_yield_time_ms = default_exec_yield_time_ms
        self._answer_timeout_s = answer_timeout_s
        # Spec §5.2: dropping the session starts its shutdown (in the background, since a
        # finalizer must not block).
        weakref.finalize(self, _shutdown_in_background, backend)

    # -- model-facing ----------------------------------------------------------------

    def exec(self, call_id: str, input_text: str) -> ToolOutput:
        """Run the model's `exec` input (raw JavaScript, optional pragma line)."""
        began = time.monotonic()
        try:
            parsed = parse_exec_source(input_text)
        except PragmaError as error:
            return failure_output(str(error))
        yield_ms = parsed.yield_time_ms
        if yield_ms is None:
            yield_ms = self.default_exec_yield_time_ms
        try:
            _, future = self.backend.execute(
                call_id, parsed.code, yield_ms, parsed.max_output_tokens
            )
            answer = future.result(self._answer_timeout_s)
        except Exception as error:  # lifecycle and log errors are plain failures
            return failure_output(str(error))
        return self._render(answer, began, parsed.max_output_tokens)

    def wait(self, arguments: str) -> ToolOutput:
        """Run the model's `wait` call (JSON arguments)."""
        began = time.monotonic()
        try:
            args = parse_wait_arguments(arguments)
        except WaitArgumentsError as error:
            return failure_output(str(error))
        try:
            if args.terminate:
                future = self.backend.terminate(args.cell_id)
            else:
                future = self.backend.observe(args.cell_id, ObserveMode.YIELD, args.yield_time_ms)
            answer = future.result(self._answer_timeout_s)
        except Exception as error:
            return failure_output(str(error))
        return self._render(answer, began, args.max_tokens)

    def terminate(self, cell_id: str) -> ToolOutput:
        return self.wait(f'{{"cell_id": {_json_string(cell_id)}, "terminate": true}}')

    def shutdown(self) -> None:
        self.backend.shutdown()

    def tool_specs(
        self,
        *,
        code_mode_only: bool = True,
        deferred_tools_supported: bool = True,
        unified_image_budget: bool = True,
        tool_availability_note: bool = True,
    ) -> list[dict[str, JsonValue]]:
        """The `exec` and `wait` tools to give the model (spec §1.1-§1.3), as Responses
        API tool specs: `exec`'s description documents this session's nested tools.

        `code_mode_only`: the model sees no other tools, so the description declares
        the nested tools (Codex's `code_mode_only`); False when the harness also gives
        them to the model directly. `deferred_tools_supported`: the model can search
        tools, so deferred ones are left out with a note. `unified_image_budget`: the
        `image()` help text of models with one image budget.
        """
        description = build_exec_tool_description(
            self.inventory,
            default_exec_yield_time_ms=self.default_exec_yield_time_ms,
            code_mode_only=code_mode_only,
            deferred_tools_supported=deferred_tools_supported,
            unified_image_budget=unified_image_budget,
            tool_availability_note=tool_availability_note,
        )
        return [exec_tool_spec(description), wait_tool_spec()]

    # -- library API (spec §4.7) -------------------------------------------------------

    def execute_to_pending(self, call_id: str, source: str) -> CellAnswer:
        """Run until completion or the first pending frontier (no yield timer)."""
        _, future = self.backend.execute(call_id, source, 0, None, ObserveMode.PENDING)
        return future.result(self._answer_timeout_s)

    def wait_to_pending(self, cell_id: str) -> CellAnswer:
        return self.backend.observe(cell_id, ObserveMode.PENDING, 0).result(self._answer_timeout_s)

    @staticmethod
    def _render(answer: CellAnswer, began: float, max_tokens: int | None) -> ToolOutput:
        assert not isinstance(answer, Pending), "pending answers are library-only"
        return render_response(
            answer, wall_time_s=time.monotonic() - began, max_output_tokens=max_tokens
        )


def missing_cell(cell_id: str) -> Future[CellAnswer]:
    """The answer about a cell that does not exist (any more), given at once."""
    future: Future[CellAnswer] = Future()
    future.set_result(
        Result(cell_id=cell_id, error_text=texts.cell_not_found(cell_id), missing=True)
    )
    return future


def _shutdown_in_background(backend: SessionBackend) -> None:
    threading.Thread(
        target=_shutdown_quietly, args=(backend,), name="session-shutdown", daemon=True
    ).start()


def _shutdown_quietly(backend: SessionBackend) -> None:
    """A dropped session's shutdown: nobody is there to be told it failed (the log
    unreachable, the session taken over meanwhile), so it is logged."""
    try:
        backend.shutdown()
    except Exception as error:
        log.warning(
            "session %s: its shutdown (it was dropped) failed: %s", backend.session_id, error
        )


def _json_string(text: str) -> str:
    import orjson  # noqa: PLC0415 - only for this rarely used convenience

    return orjson.dumps(text).decode()


__all__ = ["Result", "Session", "SessionBackend"]

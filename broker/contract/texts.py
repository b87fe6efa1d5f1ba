"""Every text the model can see that cellfleet writes in Python, in one place.

Each is the exact text of `spec/code-mode.md` (or of Codex's host where the spec quotes
it); tests compare them with the reference's recorded answers. Texts that JavaScript
itself makes (the errors thrown by `text()`, `store()`, `tools.*`, …) live in the
prelude (actors/runtime/prelude.js), where they are thrown.
"""

from __future__ import annotations

from typing import Final

# -- the answer's header (spec §1.4) -----------------------------------------------------

SCRIPT_COMPLETED: Final = "Script completed"
SCRIPT_FAILED: Final = "Script failed"
SCRIPT_TERMINATED: Final = "Script terminated"


def script_running(cell_id: str) -> str:
    return f"Script running with cell ID {cell_id}"


def header(status: str, seconds: float) -> str:
    """The header item: `seconds` already rounded as Codex rounds it."""
    return f"{status}\nWall time {seconds:.1f} seconds\nOutput:\n"


def script_error(error_text: str) -> str:
    """The item after a failed script's output."""
    return f"Script error:\n{error_text}"


# -- the `exec` input (spec §1.1) --------------------------------------------------------

EXEC_NON_CUSTOM_PAYLOAD_ERROR: Final = "exec expects raw JavaScript source text"
EMPTY_SOURCE_ERROR: Final = (
    "exec expects raw JavaScript source text (non-empty). Provide JS only, optionally with "
    'first-line `// @exec: {"yield_time_ms": 10000, "max_output_tokens": 1000}`.'
)
MISSING_SOURCE_ERROR: Final = (
    "exec pragma must be followed by JavaScript source on subsequent lines"
)
NOT_AN_OBJECT_ERROR: Final = (
    "exec pragma must be a JSON object with supported fields `yield_time_ms` and "
    "`max_output_tokens`"
)
INVALID_JSON_ERROR: Final = (
    "exec pragma must be valid JSON with supported fields `yield_time_ms` and "
    "`max_output_tokens`: {error}"
)
UNKNOWN_FIELD_ERROR: Final = (
    "exec pragma only supports `yield_time_ms` and `max_output_tokens`; got `{key}`"
)
FIELD_TYPE_ERROR: Final = (
    "exec pragma fields `yield_time_ms` and `max_output_tokens` must be non-negative safe "
    "integers: {error}"
)
UNSAFE_INTEGER_ERROR: Final = "exec pragma field `{field}` must be a non-negative safe integer"

# -- the `wait` input (spec §1.2) --------------------------------------------------------

WAIT_NON_FUNCTION_PAYLOAD_ERROR: Final = "wait expects JSON arguments"
WAIT_PARSE_ERROR: Final = "failed to parse function arguments: {error}"

# -- the source of a cell (spec §2.1) ----------------------------------------------------

IMPORT_OUTSIDE_MODULE: Final = "SyntaxError: Cannot use import statement outside a module"
UNEXPECTED_EXPORT: Final = "SyntaxError: Unexpected token 'export'"
AWAIT_OUTSIDE_ASYNC: Final = (
    "SyntaxError: await is only valid in async functions and the top level bodies of modules"
)


def unsupported_import(specifier: str) -> str:
    return f"Unsupported import in exec: {specifier}"


# -- a cell's runtime (spec §2) ----------------------------------------------------------

SHORT_AUDIO: Final = (
    "Audio output omitted because the clip is shorter than 25 ms; use a longer clip."
)


def out_of_memory(mib: int) -> str:
    return f"exec cell exceeded its memory limit of {mib} MiB"


def malformed_record(problem: str) -> str:
    """The cell got around its prelude and wrote something the runtime does not take."""
    return f"exec runtime refused a malformed record from the cell: {problem}"


def log_budget_exceeded(events: int) -> str:
    return f"exec cell wrote more than {events} events to its log"


def stored_budget_exceeded(mib: int) -> str:
    return f"exec cell's stored values would exceed the session's budget of {mib} MiB"


def runtime_failed(detail: str) -> str:
    """A defect of cellfleet's own runtime (never expected)."""
    return f"exec runtime failed: {detail}"


# -- cells and sessions (spec §4, §5) ----------------------------------------------------

SESSION_SHUTTING_DOWN: Final = "code mode session is shutting down"
CELL_ID_SPACE_EXHAUSTED: Final = "code mode session exhausted its cell ID space"


def cell_not_found(cell_id: str) -> str:
    return f"exec cell {cell_id} not found"


def cell_lost(cell_id: str) -> str:
    """A cell whose process stopped while it ran (cellfleet's own: its log shows it
    admitted and never ended when another process opened the session)."""
    return f"exec cell {cell_id} was lost: the cellfleet process running it stopped"


def cell_unrecoverable(cell_id: str) -> str:
    """A cell left running by a stopped process that its new owner could not bring back
    by replay (why is recorded in the log's `cell_recovered` event)."""
    return (
        f"exec cell {cell_id} was lost: the cellfleet process running it stopped"
        " and its replay failed"
    )


def cell_busy(cell_id: str) -> str:
    return f"exec cell {cell_id} already has an active observer"


def cell_already_terminating(cell_id: str) -> str:
    return f"exec cell {cell_id} is already terminating"


def cell_failed(cell_id: str, detail: object) -> str:
    """A cell ended outside its lifecycle (e.g. its log became unreachable)."""
    return f"exec cell {cell_id} failed: {detail}"


def session_owned_elsewhere(session: str) -> str:
    return f"code mode session {session} is owned by another process"


def session_fenced(session: str) -> str:
    return f"code mode session {session} is now served by another worker"


WORKER_LOST: Final = "the cellfleet worker serving this session stopped before it answered"


def log_unavailable(detail: str) -> str:
    return f"cellfleet event log is unavailable: {detail}"


# -- nested tools (spec §3) --------------------------------------------------------------

EXEC_CANNOT_INVOKE_ITSELF: Final = "exec cannot invoke itself"


def tool_expects_string(tool: str) -> str:
    return f"tool `{tool}` expects a string input"


def tool_expects_object(tool: str) -> str:
    return f"tool `{tool}` expects a JSON object for arguments"


def no_handler(tool: str) -> str:
    return f"no handler registered for tool `{tool}`"


def tool_failed(tool: str, error: object | None = None) -> str:
    """A handler raised something other than `ToolCallError` (a bug, not a refusal)."""
    return f"tool `{tool}` failed" if error is None else f"tool `{tool}` failed: {error}"


def tool_input_not_json(tool: str, problem: str) -> str:
    return f"tool `{tool}` cannot take this input: {problem}"


def tool_result_not_json(tool: str, problem: str) -> str:
    return f"tool `{tool}` returned a value that is not JSON: {problem}"


def tool_timed_out(tool: str, seconds: float) -> str:
    return f"tool `{tool}` timed out after {seconds:g} s"


def tool_abandoned(tool: str, deliveries: int) -> str:
    return f"nested tool call `{tool}` was abandoned after {deliveries} deliveries"


def too_many_tool_calls(limit: int) -> str:
    return f"too many nested tool calls in flight in this session (limit {limit})"


# -- nested tools answered by Codex (`cellfleet host`) -----------------------------------

# The reference host's text for a tool call the client answered as a notification.
INVALID_TOOL_RESULT = "code-mode client returned an invalid tool result"
# cellfleet's own: a call still out when the client closed its end.
CLIENT_GONE = "the code-mode client disconnected"

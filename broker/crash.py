"""Crash points: a process that dies abruptly at a named point, so that tests can open
each window of a crash on purpose rather than hope a random SIGKILL finds it.

`CELLFLEET_CRASH_AT=POINT` (or `POINT:N`: the N-th time) makes the process kill itself
with SIGKILL when it reaches `POINT` (one of `POINTS`): no cleanup, no flush, exactly
as a crash. Read once, when this module is first imported; unset, `crash_point` costs
one comparison.
"""

from __future__ import annotations

import itertools
import os
import signal

POINTS = {
    "cell_started": "a cell runs, and its admission is not in the log yet",
    "events_appended": "a cell's events were appended, and their effect is not seen yet",
    "tool_dispatched": "a tool call was recorded and sent, and its outcome is not recorded",
    "tool_unsent": "a tool call was recorded, and the write that sends it was cut short",
    "timer_recorded": "a timer's firing was recorded, and JavaScript has not run it",
    "answer_recorded": "a fleet worker's answer was recorded, and the client has not got it",
    "tool_outcome_recorded": "a tool worker recorded an outcome and did not send it",
    "local_tool_ran": "a local tool's handler returned, and its outcome is not recorded",
    "outcome_unwritten": "JavaScript was handed an outcome whose write has not returned",
    "lease_claimed": "a session's lease was claimed, and the session is not open yet",
    "cell_recovering": "a cell was replayed to its log's end, and is not live yet",
    "shutdown_begun": "a session's shutdown was recorded, and its cells are not ended",
}
ENV = "CELLFLEET_CRASH_AT"


def _target() -> tuple[str, int] | None:
    setting = os.environ.get(ENV, "")
    if not setting:
        return None
    name, _, count = setting.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={setting}: no crash point {name!r} (points: {', '.join(POINTS)})")
    return name, int(count or 1)


_TARGET = _target()
_visits = itertools.count(1)  # (its `next` is atomic)


def armed(name: str) -> bool:
    """Whether the process is set to die at `name` (for a point that needs a step of
    its own first)."""
    return _TARGET is not None and _TARGET[0] == name


def crash_point(name: str) -> None:
    """Die here (SIGKILL) if `CELLFLEET_CRASH_AT` names this point, at its N-th visit."""
    if _TARGET is None or _TARGET[0] != name:
        return
    if next(_visits) >= _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)

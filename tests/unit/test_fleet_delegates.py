"""`cellfleet host --fleet`'s side of its cells' nested calls (`_FleetDelegates`): each
call reaches Codex once, even when a worker that took its session over asks again."""

from __future__ import annotations

import itertools
from typing import Any

from cellfleet.broker.contract.tools import ToolKind
from cellfleet.broker.tools.invocation import ToolInvocation
from cellfleet.ops.host_server import _FleetDelegates


class _Backend:
    """A session's backend as a worker's ask names it: records the outcomes sent."""

    def __init__(self, session_id: str = "s") -> None:
        self.session_id = session_id
        self.outcomes: list[tuple[int, str, Any, str | None]] = []

    def answer_tool(self, delegate: int, key: str, result: Any, error: str | None) -> None:
        self.outcomes.append((delegate, key, result, error))


def _call(call_id: str = "tool-1") -> ToolInvocation:
    return ToolInvocation(
        session="s", cell="1", call_id=call_id, name="echo", raw_name="echo",
        kind=ToolKind.FUNCTION, input={},
    )  # fmt: skip


def _delegates() -> tuple[_FleetDelegates, list[int], list[int]]:
    sent: list[int] = []
    cancelled: list[int] = []
    delegates = _FleetDelegates(lambda i, _: sent.append(i), cancelled.append, itertools.count(1))
    return delegates, sent, cancelled


def test_a_call_asked_again_by_the_next_owner_is_not_sent_twice() -> None:
    delegates, sent, cancelled = _delegates()
    old, new = _Backend(), _Backend()
    delegates.ask(old, 3, _call())  # type: ignore[arg-type]
    delegates.ask(new, 1, _call())  # type: ignore[arg-type]  # (took the session over)
    assert sent == [1]
    delegates.withdrawn(old, 3)  # type: ignore[arg-type]  # (its number is stale)
    assert cancelled == []
    assert delegates.answer(1, "r", None)
    assert (old.outcomes, new.outcomes) == ([], [(1, "s/1/tool-1", "r", None)])


def test_a_call_answered_already_is_answered_again_from_memory() -> None:
    delegates, sent, _ = _delegates()
    old, new = _Backend(), _Backend()
    delegates.ask(old, 1, _call())  # type: ignore[arg-type]
    assert delegates.answer(1, None, "failed")  # (its owner died before it got this)
    delegates.ask(new, 1, _call())  # type: ignore[arg-type]
    assert sent == [1]
    assert new.outcomes == [(1, "s/1/tool-1", None, "failed")]


def test_a_withdrawn_call_is_cancelled_once_and_its_late_answer_dropped() -> None:
    delegates, sent, cancelled = _delegates()
    backend = _Backend()
    delegates.ask(backend, 1, _call())  # type: ignore[arg-type]
    delegates.ask(backend, 2, _call("tool-2"))  # type: ignore[arg-type]
    delegates.withdrawn(backend, 2)  # type: ignore[arg-type]
    delegates.withdrawn(backend, 2)  # type: ignore[arg-type]
    assert (sent, cancelled) == ([1, 2], [2])
    assert not delegates.answer(2, "late", None)
    delegates.fail_all("gone")
    delegates.ask(backend, 3, _call("tool-3"))  # type: ignore[arg-type]
    assert backend.outcomes == [(1, "s/1/tool-1", None, "gone"), (3, "s/1/tool-3", None, "gone")]
    assert sent == [1, 2]

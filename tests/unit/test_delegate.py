"""`DelegateDispatcher`: calls a harness answers itself, matched to their answers."""

from __future__ import annotations

import itertools
from typing import Any, cast

from cellfleet.broker.contract.tools import ToolKind
from cellfleet.broker.redis.link import Link
from cellfleet.broker.tools.delegate import DelegateDispatcher
from cellfleet.broker.tools.invocation import ToolInvocation, ToolOutcome


def _call(call_id: str) -> ToolInvocation:
    return ToolInvocation(
        session="s", cell="1", call_id=call_id, name="echo", raw_name="echo",
        kind=ToolKind.FUNCTION, input={},
    )  # fmt: skip


def test_an_answer_reaches_only_the_call_it_names() -> None:
    """A worker that took a session over numbers its calls from 1 again: an answer to
    the earlier owner's call of that number, for another call (its key), is refused."""
    sent: list[tuple[int, ToolInvocation]] = []
    withdrawn: list[int] = []
    outcomes: list[ToolOutcome] = []
    dispatcher = DelegateDispatcher(
        cast("Link", None), lambda i, c: sent.append((i, c)), withdrawn.append, itertools.count(1)
    )
    handles = dispatcher.dispatch_batch([(_call("tool-1"), outcomes.append),
                                         (_call("tool-2"), outcomes.append)])  # fmt: skip
    assert [(i, c.call_id) for i, c in sent] == [(1, "tool-1"), (2, "tool-2")]
    assert not dispatcher.answer(1, "x", None, key="s/1/tool-9")  # another call's answer
    assert dispatcher.answer(1, "one", None, key="s/1/tool-1")
    assert not dispatcher.answer(1, "again", None)  # answered already
    handles[1].cancel()
    assert withdrawn == [2]
    assert not dispatcher.answer(2, "late", None)  # withdrawn
    assert [(o.call_id, o.result) for o in outcomes] == [("tool-1", "one")]


def test_when_the_harness_is_gone_every_waiting_call_fails() -> None:
    outcomes: list[Any] = []
    dispatcher = DelegateDispatcher(
        cast("Link", None), lambda *_: None, lambda _: None, itertools.count(1)
    )
    dispatcher.dispatch_batch([(_call("tool-1"), outcomes.append)])
    dispatcher.fail_all("gone")
    assert [(o.call_id, o.error) for o in outcomes] == [("tool-1", "gone")]

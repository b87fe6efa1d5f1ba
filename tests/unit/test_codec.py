"""The codec (`broker/codec.py`): events, tool calls and tool replies as stored."""

from __future__ import annotations

import dataclasses

import pytest

from cellfleet.broker import codec
from cellfleet.broker import events as ev
from cellfleet.broker.contract.tools import ToolKind
from cellfleet.broker.tools.invocation import ToolInvocation, ToolOutcome, ToolReply


def test_events_round_trip_with_their_tuples_and_enums() -> None:
    events = [
        ev.CellAdmitted(
            session="s",
            cell="3",
            seq=2,
            at_ms=12.5,
            call_id="c",
            source="x",
            tools=({"name": "t"},),
            seed=(1, 2, 3, 4),
        ),
        ev.ObservationDelivered(
            session="s",
            cell="3",
            seq=4,
            kind=ev.ObservationKind.PENDING,
            outputs=2,
            pending_tool_call_ids=("tool-1",),
        ),
        ev.CellTerminated(session="s", cell="3", seq=5, reason=ev.TerminationReason.SHUTDOWN),
    ]
    for event in events:
        decoded = codec.decode("s", codec.encode(event))
        assert decoded == event
        for name in ("kind", "reason", "seed", "tools", "pending_tool_call_ids"):
            if hasattr(event, name):
                assert type(getattr(decoded, name)) is type(getattr(event, name)), name


def test_foreign_entries_are_refused() -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode("s", {b"v": b"1", b"t": b"nope", b"d": b"{}"})
    with pytest.raises(codec.DecodeError, match="newer"):
        codec.decode("s", {**codec.encode(ev.OutputProduced(session="s")), "v": b"99"})
    observed = codec.encode(ev.ObservationDelivered(session="s", kind=ev.ObservationKind.YIELDED))
    with pytest.raises(codec.DecodeError):  # a kind this version does not know
        codec.decode("s", {**observed, "d": b'{"kind": "sideways"}'})


def _stored(flat: list[bytes | str]) -> dict[bytes, bytes]:
    """What a stream entry with these XADD fields reads back as."""
    encoded = [part.encode() if isinstance(part, str) else part for part in flat]
    return dict(zip(encoded[::2], encoded[1::2], strict=True))


def test_tool_calls_round_trip() -> None:
    call = ToolInvocation(
        session="s",
        cell="1",
        call_id="tool-2",
        name="mcp__docs__search",
        raw_name="search",
        kind=ToolKind.FREEFORM,
        input="find ✓",
    )
    decoded, reply_to = codec.decode_tool_call(_stored(codec.encode_tool_call(call, "cf:r")))
    assert (decoded, reply_to) == (call, "cf:r")
    spaced = dataclasses.replace(call, namespace="docs")  # (Codex's host names it)
    assert codec.decode_tool_call(_stored(codec.encode_tool_call(spaced, "r")))[0] == spaced
    with pytest.raises(codec.DecodeError):
        codec.decode_tool_call({b"session": b"s", b"kind": b"function"})
    with pytest.raises(codec.DecodeError):
        codec.decode_tool_call({**_stored(codec.encode_tool_call(call, "r")), b"kind": b"odd"})


def test_tool_replies_round_trip_as_recorded_outcomes() -> None:
    for outcome in (
        ToolOutcome("tool-1", result={"a": [1, None]}, clock_ms=5.5),
        ToolOutcome("tool-1", error="boom", clock_ms=6.0),
    ):
        data = codec.encode_tool_reply(ToolReply("s/1/tool-1", outcome))
        decoded = codec.decode_tool_reply(data)
        assert decoded.key == "s/1/tool-1"
        assert decoded.outcome == ToolOutcome(
            outcome.call_id,
            result=outcome.result,
            error=outcome.error,
            clock_ms=outcome.clock_ms,
            recorded=True,
        )
    assert codec.encode_tool_reply(ToolReply("k", ToolOutcome("tool-1", result=1, clock_ms=2))) == (
        b'{"key":"k","call_id":"tool-1","clock_ms":2,"result":1}'  # the layout hosts read
    )
    with pytest.raises(codec.DecodeError):
        codec.decode_tool_reply(b"[1]")

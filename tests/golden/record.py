"""Write the golden session trace (`session_trace.jsonl`) and, on request, its expectations.

Developer tool, run by hand (never in CI):

    .venv/bin/python tests/golden/record.py            # rewrite session_trace.jsonl
    .venv/bin/python tests/golden/record.py --expect   # also rewrite expected_* from it

The trace is a hand-written, realistic event sequence of one session, encoded with
`broker.codec.encode` exactly as the journal stores it. The expectations are whatever
the projections produce at the time: review every changed line by hand before
committing them (see README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from cellfleet.broker import codec  # noqa: E402
from cellfleet.broker.events import (  # noqa: E402
    AnyEvent,
    CellAdmitted,
    CellClosed,
    CellCompleted,
    CellStarted,
    CellTerminated,
    NotificationCancelled,
    NotificationDelivered,
    NotificationSent,
    ObservationDelivered,
    OutputProduced,
    SessionOpened,
    ShutdownBegun,
    ShutdownFinished,
    TimerFired,
    TimerSet,
    ToolCancelled,
    ToolCompleted,
    ToolRequested,
    YieldRequested,
)

SESSION = "golden-1"
T0 = 1_732_200_000_000
TRACE = HERE / "session_trace.jsonl"

SOURCE_A = """\
const found = await tools.search({ query: "cellfleet" });
text(`found ${found.hits} hits`);
await new Promise((resolve) => setTimeout(resolve, 50));
store("hits", found.hits);
yield_control();
notify("halfway there");
store("query", "cellfleet");
text("done");
"""

SOURCE_B = """\
text("polling job 7");
setTimeout(() => text("too late"), 60000);
store("status", "polling");
const pending = tools.fetch_status({ id: 7 });
notify("still polling job 7");
await pending;
"""

SEARCH = {"name": "search", "kind": "function"}
FETCH = {"name": "fetch_status", "kind": "function"}


def _text(text: str) -> dict[str, str]:
    return {"type": "input_text", "text": text}


def entries() -> list[tuple[int, AnyEvent]]:
    """(stream id ms offset from T0, event) in stream order.

    Cell events carry the cell actor's seq; a tool result carries the seq of its
    request (its writer is a tool-dispatch worker). One entry is a retried append.
    """
    s = SESSION
    out: list[tuple[int, AnyEvent]] = []

    def at(ms: int, event_type: type, cell: str = "", seq: int = 0, **data: object) -> AnyEvent:
        event: AnyEvent = event_type(session=s, cell=cell, seq=seq, at_ms=float(T0 + ms), **data)
        out.append((ms, event))
        return event

    at(0, SessionOpened, seq=1)
    # cell 1: a tool call, output, a timer, a yield, a notification, stored writes
    at(5, CellAdmitted, "1", 0, call_id="call_a", source=SOURCE_A, yield_time_ms=10_000,
       tools=(SEARCH,), seed=(11, 22, 33, 44), clock_ms=float(T0 + 5))  # fmt: skip
    at(8, CellStarted, "1", 1)
    at(10, ToolRequested, "1", 2, call_id="tool-1", name="search", kind="function",
       input={"query": "cellfleet"}, idempotency_key=f"{s}:1:1")  # fmt: skip
    at(14, ToolCompleted, "1", 2, call_id="tool-1", result={"hits": 3}, clock_ms=float(T0 + 14))
    found = at(15, OutputProduced, "1", 3, item=_text("found 3 hits"))
    out.append((16, found))  # the append retried after a lost reply: a repeated entry
    at(17, TimerSet, "1", 4, timer_id=1, delay_ms=50, due_clock_ms=float(T0 + 67))
    at(67, TimerFired, "1", 5, timer_id=1, clock_ms=float(T0 + 67))
    at(68, YieldRequested, "1", 6)
    at(68, ObservationDelivered, "1", 7, kind="yielded", outputs=1)
    # cell 2 starts while cell 1 carries on unobserved
    at(70, CellAdmitted, "2", 0, call_id="call_b", source=SOURCE_B, yield_time_ms=500,
       tools=(FETCH,), seed=(55, 66, 77, 88), clock_ms=float(T0 + 70))  # fmt: skip
    at(72, CellStarted, "2", 1)
    at(73, OutputProduced, "2", 2, item=_text("polling job 7"))
    at(74, TimerSet, "2", 3, timer_id=1, delay_ms=60_000, due_clock_ms=float(T0 + 60_074))
    at(75, ToolRequested, "2", 4, call_id="tool-1", name="fetch_status", kind="function",
       input={"id": 7}, idempotency_key=f"{s}:2:1")  # fmt: skip
    at(76, NotificationSent, "2", 5, notification_id=1, call_id="call_b",
       text="still polling job 7")  # fmt: skip
    at(80, NotificationSent, "1", 8, notification_id=1, call_id="call_a", text="halfway there")
    at(81, NotificationDelivered, "1", 9, notification_id=1)
    at(82, OutputProduced, "1", 10, item=_text("done"))
    at(83, CellCompleted, "1", 11, stored_writes={"hits": "3", "query": '"cellfleet"'})
    # exec of cell 2 yields after 500 ms; wait on cell 1 gets its buffered completion
    at(572, ObservationDelivered, "2", 6, kind="yielded", outputs=1)
    at(600, ObservationDelivered, "1", 12, kind="completed", outputs=2)
    at(601, CellClosed, "1", 13)
    # wait {terminate: true} on cell 2: callbacks cancelled, its stored write discarded
    at(700, ToolCancelled, "2", 7, call_id="tool-1")
    at(700, NotificationCancelled, "2", 8, notification_id=1)
    at(701, CellTerminated, "2", 9, reason="terminate")
    at(701, ObservationDelivered, "2", 10, kind="terminated", outputs=1)
    at(702, CellClosed, "2", 11)
    at(800, ShutdownBegun, seq=2)
    at(801, ShutdownFinished, seq=3)
    return out


def lines() -> list[str]:
    """The trace as JSON Lines: `{"id": stream id, "fields": stream fields}`."""
    result, used = [], {}
    for ms, event in entries():
        n = used[ms] = used.get(ms, -1) + 1
        fields = {name: value.decode() for name, value in codec.encode(event).items()}
        result.append(json.dumps({"id": f"{T0 + ms}-{n}", "fields": fields}))
    return result


def write_expectations() -> None:
    """Rewrite expected_* from the current projections of the trace (review them!)."""
    from cellfleet.projections import cells, stored, timeline
    from tests.golden.golden import load_trace

    view = load_trace()
    dump = {"indent": 2, "sort_keys": True, "ensure_ascii": False}
    (HERE / "expected_cells.json").write_text(json.dumps(cells.to_data(view.cells), **dump) + "\n")
    (HERE / "expected_stored.json").write_text(
        json.dumps(stored.to_data(view.stored), **dump) + "\n"
    )
    (HERE / "expected_timeline.txt").write_text(timeline.render(view.timeline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", action="store_true", help="also rewrite expected_*")
    args = parser.parse_args()
    TRACE.write_text("".join(f"{line}\n" for line in lines()))
    print(f"wrote {TRACE}")
    if args.expect:
        write_expectations()
        print("wrote expected_* - review them by hand before committing")


if __name__ == "__main__":
    main()

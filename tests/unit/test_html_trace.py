"""The HTML trace page's Python side: its data, folded from plain lists of events, and the
page's escaping and content security policy. (tests/browser/ opens the page.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from cellfleet.broker import events as ev
from cellfleet.projections import html
from cellfleet.projections.html_cells import page_data

SESSION = "unit"


def _cell(cell: str, start: float) -> Any:
    """An event maker for `cell`: its own seq counter, times from `start` ms."""
    seq = iter(range(1000))

    def make(event_type: type[Any], at: float, /, **data: Any) -> Any:
        fields = {"session": SESSION, "cell": cell, "at_ms": 1000.0 + start + at}
        return event_type(**fields, seq=next(seq), **data)

    return make


def _session() -> list[ev.AnyEvent]:
    one, two, three = _cell("1", 0), _cell("2", 100), _cell("3", 200)
    requested = one(ev.ToolRequested, 4, call_id="tool-1", name="echo", kind="function", input=1)
    return [
        ev.SessionOpened(session=SESSION, seq=1, at_ms=1000.0, max_yield_time_ms=30_000),
        one(ev.CellAdmitted, 0, call_id="a", source="x\ny"),
        one(ev.CellStarted, 1),
        one(ev.YieldRequested, 2),
        one(ev.ObservationDelivered, 3, kind=ev.ObservationKind.YIELDED),
        requested,
        requested,  # a retried append: skipped
        ev.ToolAttemptFailed(
            session=SESSION, cell="1", at_ms=1006.0, call_id="tool-1", attempt=1, error="busy"
        ),
        ev.ToolCompleted(session=SESSION, cell="1", at_ms=1010.0, call_id="tool-1", result=2),
        ev.ToolFailed(session=SESSION, cell="1", at_ms=1011.0, call_id="tool-1", error="late"),
        one(ev.TimerSet, 8, timer_id=1, delay_ms=5, due_clock_ms=0.0),
        one(ev.TimerFired, 20, timer_id=1, clock_ms=0.0),
        one(ev.TimerSet, 30, timer_id=2, delay_ms=99, due_clock_ms=0.0),
        one(ev.OutputProduced, 31, item={"type": "input_text", "text": "hi"}),
        one(ev.NotificationSent, 32, notification_id=1, call_id="a", text="note"),
        one(ev.NotificationDelivered, 33, notification_id=1),
        one(ev.CellCompleted, 40, error_text="Error: no", stored_writes={"k": "1"}),
        one(ev.CellTerminated, 41),  # the first terminal event wins
        one(ev.ObservationDelivered, 42, kind=ev.ObservationKind.COMPLETED, outputs=1),
        one(ev.CellClosed, 43),
        two(ev.CellAdmitted, 0, call_id="b", source="await new Promise(() => {})"),
        two(ev.CellTerminated, 10, reason=ev.TerminationReason.SHUTDOWN),
        three(ev.CellAdmitted, 0, call_id="c", source="tools.echo(1)"),
        three(ev.ToolRequested, 1, call_id="tool-1", name="echo", kind="function", input=1),
        ev.ShutdownBegun(session=SESSION, seq=2, at_ms=1250.0),
    ]


def test_the_page_data_holds_each_cell_as_its_events_tell() -> None:
    data = page_data(SESSION, _session())
    assert (data["end"], data["events"], data["repeats"]) == (250.0, 25, 1)
    assert (data["shutdown_begun"], data["shutdown_finished"]) == (250.0, None)
    assert data["max_yield_time_ms"] == 30_000
    one, two, three = data["cells"]
    assert (one["state"], one["error"], one["t0"], one["t1"], one["closed"]) == (
        "failed",
        "Error: no",
        0.0,
        40.0,
        43.0,
    )
    assert one["writes"] == {"k": "1"}
    assert one["outputs"] == [{"t": 31.0, "type": "input_text", "text": "hi"}]
    [call] = one["calls"]
    assert (call["outcome"], call["result"], call["t0"], call["t1"]) == ("completed", 2, 4.0, 10.0)
    assert call["attempts"] == [{"attempt": 1, "error": "busy", "t": 6.0}]
    assert [(t["end"], t["t1"]) for t in one["timers"]] == [("fired", 20.0), ("pending", None)]
    assert one["notes"] == [{"id": 1, "text": "note", "t": 32.0, "state": "delivered", "t1": 33.0}]
    # Waiting: the tool call and the first timer overlap; the second timer lasts as its cell.
    assert one["waiting"] == [[4.0, 20.0], [30.0, 40.0]]
    assert one["yielded"] == [[3.0, 40.0]]  # (answered at 42: after the cell's end)
    assert (two["state"], two["reason"], two["t1"]) == ("terminated", "shutdown", 110.0)
    assert (three["state"], three["t1"], three["calls"][0]["outcome"]) == (
        "running",
        None,
        "outstanding",
    )
    assert three["waiting"] == [[201.0, 250.0]]  # still waiting at the end of the log


_HOSTILE = "</script><script>alert(1)</script> <!-- <img src=x onerror=alert(2)> & \u2028 \ud800"


def _data_element(page: str) -> str:
    match = re.search(r"<script type='application/json' id='trace-data'>(.*?)</script>", page, re.S)
    assert match is not None
    return match.group(1)


def test_text_from_the_log_stays_inside_the_data_element() -> None:
    make = _cell("1", 0)
    events = [
        make(ev.CellAdmitted, 0, call_id="a", source=_HOSTILE),
        make(ev.OutputProduced, 1, item={"type": "input_text", "text": _HOSTILE}),
    ]
    page = html.render("s</title><b>", events)
    embedded = _data_element(page)
    assert not set("<>&\u2028") & set(embedded)
    assert json.loads(embedded) == page_data("s</title><b>", events)  # the same text, escaped
    assert page.count("</script>") == 2  # the data's and the script's own
    assert "<title>cellfleet trace s&lt;/title&gt;&lt;b&gt;</title>" in page
    page.encode()  # a lone surrogate from the log does not make the page unwritable


def test_the_page_admits_its_own_script_and_style_and_data_images_only() -> None:
    page = html.render(SESSION, _session())
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert policy is not None
    directives = dict(part.strip().split(" ", 1) for part in policy.group(1).split(";"))
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert script is not None
    assert style is not None

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert directives == {
        "default-src": "'none'",
        "img-src": "data:",
        "script-src": digest(script.group(1)),
        "style-src": digest(style.group(1)),
    }
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing to fetch

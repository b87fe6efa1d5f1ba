"""Cell lifecycle through the public session API, against real Redis (spec §4.2, §4.5,
§4.6, §4.9, §4.10; outputs as in §1.4)."""

from __future__ import annotations

import threading
import time

import pytest

from cellfleet.actors.cell import notifications
from cellfleet.actors.cell.notifications import Notifications
from cellfleet.broker.contract.responses import Result, Terminated, Yielded
from cellfleet.broker.events import (
    CellAdmitted,
    CellClosed,
    CellCompleted,
    CellStarted,
    CellTerminated,
    NotificationCancelled,
    NotificationDelivered,
    NotificationSent,
    ObservationDelivered,
    ToolCancelled,
    ToolRequested,
)
from tests.integration.conftest import OpenSession
from tests.integration.session_support import (
    TIMEOUT_S,
    Gates,
    Harness,
    assert_not_found,
    assert_output,
    is_event,
    render,
    text,
    wall_seconds,
)

# -- exec: completes, fails, yields ---------------------------------------------------


def test_exec_completes_with_its_output_then_the_cell_is_gone(harness: Harness) -> None:
    out = harness.exec("text('hello');\ntext(2 + 3);\ntext({ a: 1 })")
    assert_output(out, "Script completed", ["hello", "5", '{"a":1}'])
    assert_not_found(harness.wait("1"), "1")
    assert_not_found(harness.terminate("1"), "1")


def test_exec_failure_reports_output_then_the_script_error(harness: Harness) -> None:
    out = harness.exec(
        "text('before crash');\ntext('still before crash');\nthrow new Error('boom')"
    )
    assert_output(
        out,
        "Script failed",
        [
            "before crash",
            "still before crash",
            "Script error:\nError: boom\n    at exec_main.mjs:3:7",
        ],
    )
    assert_not_found(harness.wait("1"), "1")


def test_yield_control_answers_then_wait_returns_only_newer_output(
    harness: Harness, gates: Gates
) -> None:
    out = harness.exec("text('a');\nyield_control();\ntext('b');\nawait tools.gate({});\ntext('c')")
    assert_output(out, "Script running with cell ID 1", ["a"])
    gates.wait_entered()  # 'b' was produced before the tool was called
    assert_output(harness.wait("1", yield_time_ms=50), "Script running with cell ID 1", ["b"])
    gates.open()
    assert_output(harness.wait("1"), "Script completed", ["c"])
    assert_not_found(harness.wait("1"), "1")


def test_the_yield_deadline_answers_with_the_output_so_far(harness: Harness, gates: Gates) -> None:
    began = time.monotonic()
    out = harness.exec(
        "// @exec: {\"yield_time_ms\": 150}\ntext('early');\nawait tools.gate({});\ntext('late')"
    )
    assert time.monotonic() - began >= 0.15
    assert_output(out, "Script running with cell ID 1", ["early"])
    assert 0.1 <= wall_seconds(out) < 1.0
    # Expiry of a `wait` with nothing new: an empty yield; the cell keeps running.
    assert_output(harness.wait("1", yield_time_ms=50), "Script running with cell ID 1", [])
    gates.open()
    assert_output(harness.wait("1"), "Script completed", ["late"])


def test_a_cell_may_yield_again_after_a_wait(harness: Harness, gates: Gates) -> None:
    cell, first = harness.start(
        "text('a');\nyield_control();\nawait tools.gate({ name: '1' });\ntext('b');\n"
        "yield_control();\nawait tools.gate({ name: '2' });\ntext('c')"
    )
    assert_output(render(first.result(TIMEOUT_S)), "Script running with cell ID 1", ["a"])
    gates.wait_entered("1")
    second = harness.observe(cell)
    gates.open("1")
    assert_output(render(second.result(TIMEOUT_S)), "Script running with cell ID 1", ["b"])
    gates.wait_entered("2")
    third = harness.observe(cell)
    gates.open("2")
    assert_output(render(third.result(TIMEOUT_S)), "Script completed", ["c"])
    assert_not_found(harness.wait(cell), cell)


# -- §4.2 the initial observer's timer starts at Started ------------------------------


def test_the_initial_yield_timer_starts_when_the_runtime_started(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Isolate creation does not count: a 300 ms context acquisition does not use up a
    250 ms yield time, so a cell needing 100 ms completes inside it."""
    pool = harness.host.pool
    original = pool.acquire
    slow = threading.Event()

    def slow_acquire(*args: object, **kwargs: object) -> object:
        # The simulated isolate creation takes 300 ms from the acquisition's start (a
        # timer started with the test would count a fleet's admission against it).
        threading.Timer(0.3, slow.set).start()
        slow.wait(TIMEOUT_S)
        return original(*args, **kwargs)

    monkeypatch.setattr(pool, "acquire", slow_acquire)
    out = harness.exec(
        "// @exec: {\"yield_time_ms\": 250}\nawait tools.sleep({ ms: 100 });\ntext('done')"
    )
    assert_output(out, "Script completed", ["done"])
    events = harness.cell_events("1")
    admitted = next(e for e in events if isinstance(e, CellAdmitted))
    started = next(e for e in events if isinstance(e, CellStarted))
    assert started.at_ms - admitted.at_ms >= 290


def test_a_passed_deadline_is_answered_before_queued_output(
    open_session: OpenSession, gates: Gates
) -> None:
    """Spec test `yield_timer_preempts_buffered_runtime_output`: deadline 0 and output the
    runtime already produced -> `Yielded []`; the output shows up in the next answer."""
    for attempt in range(8):
        harness = open_session()
        name = f"g{attempt}"
        out = harness.exec(
            f"// @exec: {{\"yield_time_ms\": 0}}\ntext('queued output');\n"
            f"await tools.gate({{ name: '{name}' }});\ntext('after')"
        )
        assert_output(out, "Script running with cell ID 1", [])
        gates.wait_entered(name)
        assert_output(harness.terminate("1"), "Script terminated", ["queued output"])


# -- §4.6 clamp (the deadline table itself: tests/unit/test_deadlines.py) ------------------


def test_max_yield_time_clamps_exec_and_wait_without_stopping_the_cell(
    open_session: OpenSession, gates: Gates
) -> None:
    harness = open_session(max_yield_time_ms=100)
    began = time.monotonic()
    out = harness.exec(
        "// @exec: {\"yield_time_ms\": 20000}\ntext('a');\nawait tools.gate({});\ntext('b')"
    )
    assert_output(out, "Script running with cell ID 1", ["a"])
    assert wall_seconds(out) < 1.0
    assert_output(harness.wait("1", yield_time_ms=30_000), "Script running with cell ID 1", [])
    assert time.monotonic() - began < 2.0
    gates.open()
    assert_output(harness.wait("1", yield_time_ms=30_000), "Script completed", ["b"])


# -- §4.10 ids ----------------------------------------------------------------------------


def test_cell_ids_count_per_session_and_are_never_reused(
    open_session: OpenSession, gates: Gates
) -> None:
    first, second = open_session(), open_session()
    assert_output(first.exec("text(1)"), "Script completed", ["1"])
    assert_output(
        first.exec("yield_control();\nawait tools.gate({ name: 'a' })"),
        "Script running with cell ID 2",
        [],
    )
    assert_output(
        second.exec("yield_control();\nawait tools.gate({ name: 'b' })"),
        "Script running with cell ID 1",
        [],
    )
    assert_output(first.terminate("2"), "Script terminated", [])
    assert_output(
        first.exec("yield_control();\nawait tools.gate({ name: 'c' })"),
        "Script running with cell ID 3",
        [],
    )
    admitted = [e.cell for e in first.events() if isinstance(e, CellAdmitted)]
    assert admitted == ["1", "2", "3"]


def test_an_exec_call_id_used_again_runs_a_new_cell(harness: Harness) -> None:
    """As Codex's host does (checked against it): two execs with one call id are two
    cells. Retried appends are recognised by the admission's own token instead."""
    assert_output(harness.exec("text('one')", call_id="same"), "Script completed", ["one"])
    assert_output(harness.exec("text('two')", call_id="same"), "Script completed", ["two"])
    events = harness.events()
    assert [(e.cell, e.call_id) for e in events if isinstance(e, CellAdmitted)] == [
        ("1", "same"),
        ("2", "same"),
    ]


def test_notifications_are_delivered_before_the_result(harness: Harness) -> None:
    out = harness.exec("notify('first');\ntext('a');\nnotify({ n: 2 })", call_id="call-7")
    # The callbacks ran before the answer came back.
    assert harness.notes == [("call-7", "1", "first"), ("call-7", "1", '{"n":2}')]
    assert_output(out, "Script completed", ["a"])
    events = harness.cell_events("1")
    kinds = [type(e) for e in events]
    completed = kinds.index(CellCompleted)
    assert kinds[:completed].count(NotificationDelivered) == 2
    sent = [e for e in events if isinstance(e, NotificationSent)]
    assert [(e.call_id, e.text) for e in sent] == [("call-7", "first"), ("call-7", '{"n":2}')]


def test_a_failing_notify_callback_does_not_fail_the_cell(open_session: OpenSession) -> None:
    """Spec §4.8: failures to deliver a notification are logged only."""

    def broken(call_id: str, cell_id: str, text: str) -> None:
        raise RuntimeError("no active turn")

    harness = open_session(notify=broken)
    out = harness.exec("notify('lost');\ntext('still running')")
    assert_output(out, "Script completed", ["still running"])


class HeldNotify:
    """A harness `notify` callback that holds the first notification until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.texts: list[str] = []

    def __call__(self, call_id: str, cell_id: str, text: str) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(TIMEOUT_S)
        self.texts.append(text)


def test_a_slow_notify_callback_does_not_hold_the_cell_up(
    open_session: OpenSession, gates: Gates
) -> None:
    """Spec §4.8: `notify` starts a delivery and the cell goes on (here: it yields and
    its answer goes out while the callback still holds the notification)."""
    notify = HeldNotify()
    harness = open_session(notify=notify)
    out = harness.exec("notify('slow');\ntext('a');\nyield_control();\nawait tools.gate({})")
    assert_output(out, "Script running with cell ID 1", ["a"])
    assert notify.entered.wait(TIMEOUT_S)  # (on its own thread, which may start later)
    assert notify.texts == []
    notify.release.set()
    gates.open()
    assert_output(harness.wait("1"), "Script completed", [])
    assert notify.texts == ["slow"]
    kinds = [type(e) for e in harness.cell_events("1")]
    assert kinds.index(NotificationDelivered) < kinds.index(CellCompleted)


def test_termination_cancels_queued_notifications_and_waits_for_the_one_in_delivery(
    open_session: OpenSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify = HeldNotify()
    harness = open_session(notify=notify)
    cancelled = threading.Event()
    original = Notifications.cancel

    def watched(self: Notifications) -> None:
        original(self)
        cancelled.set()

    monkeypatch.setattr(Notifications, "cancel", watched)
    source = "notify('one');\nnotify('two');\nyield_control();\nawait new Promise(() => {})"
    assert_output(harness.exec(source), "Script running with cell ID 1", [])
    assert notify.entered.wait(TIMEOUT_S)  # 'one' is in the callback, 'two' queued
    terminated = harness.session.backend.terminate("1")
    assert cancelled.wait(TIMEOUT_S)  # the termination dropped 'two' and waits for 'one'
    assert not terminated.done()
    notify.release.set()
    assert_output(render(terminated.result(TIMEOUT_S)), "Script terminated", [])
    assert notify.texts == ["one"]
    events = harness.cell_events("1")
    outcomes = [
        (type(e), e.notification_id)  # type: ignore[attr-defined]
        for e in events
        if isinstance(e, NotificationDelivered | NotificationCancelled)
    ]
    # 'two' was dropped while 'one' was still in the callback
    assert outcomes == [(NotificationCancelled, 2), (NotificationDelivered, 1)]
    kinds = [type(e) for e in events]
    assert kinds.index(NotificationDelivered) < kinds.index(CellTerminated)


def test_outstanding_tool_calls_are_cancelled_before_the_terminal_event(
    harness: Harness, gates: Gates
) -> None:
    out = harness.exec("tools.gate({ name: 'never' });\ntext('done')")
    assert_output(out, "Script completed", ["done"])
    events = harness.cell_events("1")
    kinds = [type(e) for e in events]
    requested = kinds.index(ToolRequested)
    cancelled = kinds.index(ToolCancelled)
    assert requested < cancelled < kinds.index(CellCompleted)
    assert events[cancelled].call_id == "tool-1"  # type: ignore[attr-defined]


def test_the_cell_is_closed_after_its_terminal_answer(open_session: OpenSession) -> None:
    answered_first: list[bool] = []
    holder: dict[str, Harness] = {}

    def on_closed(cell_id: str) -> None:
        events = holder["h"].cell_events(cell_id)
        kinds = [type(e) for e in events]
        answered = any(
            isinstance(e, ObservationDelivered) and e.kind == "completed" for e in events
        )
        answered_first.append(answered and kinds[-1] is CellClosed)
        holder["h"].on_cell_closed(cell_id)

    harness = holder["h"] = open_session(on_cell_closed=on_closed)
    assert_output(harness.exec("text('x')"), "Script completed", ["x"])
    harness.wait_closed("1")
    assert answered_first == [True]
    assert harness.closed == ["1"]
    assert_not_found(harness.wait("1"), "1")


def test_stored_writes_commit_even_when_the_script_threw_after_storing(harness: Harness) -> None:
    out = harness.exec("store('k', { v: 1 });\nthrow new Error('after store')")
    assert out.success is False
    assert_output(harness.exec("text(load('k'))"), "Script completed", ['{"v":1}'])


# -- §4.9 initial-yield preservation --------------------------------------------------


def test_a_yield_nobody_observed_is_kept_for_the_next_wait(harness: Harness, gates: Gates) -> None:
    cell, initial = harness.start(
        "await tools.gate({});\ntext('initial');\nyield_control();\ntext('more')"
    )
    assert initial.cancel()  # the exec caller went away before the cell yielded
    gates.open()
    harness.wait_event(is_event(CellCompleted, cell))
    assert_output(harness.wait(cell), "Script running with cell ID 1", ["initial"])
    assert_output(harness.wait(cell), "Script completed", ["more"])
    assert_not_found(harness.wait(cell), cell)


def test_only_the_first_unobserved_yield_is_kept(harness: Harness, gates: Gates) -> None:
    cell, initial = harness.start(
        "await tools.gate({});\ntext('a');\nyield_control();\ntext('b');\nyield_control();\n"
        "text('c')"
    )
    assert initial.cancel()
    gates.open()
    harness.wait_event(is_event(CellCompleted, cell))
    assert_output(harness.wait(cell), "Script running with cell ID 1", ["a"])
    assert_output(harness.wait(cell), "Script completed", ["b", "c"])


def test_a_pending_observer_gets_the_kept_yield_merged_into_the_completion(
    harness: Harness, gates: Gates
) -> None:
    cell, initial = harness.start(
        "await tools.gate({});\ntext('initial');\nyield_control();\ntext('more')"
    )
    assert initial.cancel()
    gates.open()
    harness.wait_event(is_event(CellCompleted, cell))
    answer = harness.session.wait_to_pending(cell)
    assert answer == Result(cell_id=cell, content_items=[text("initial"), text("more")])


def test_terminating_a_buffered_cell_returns_the_kept_yield_and_the_completion(
    harness: Harness, gates: Gates
) -> None:
    cell, initial = harness.start(
        "await tools.gate({});\ntext('initial');\nyield_control();\ntext('more')"
    )
    assert initial.cancel()
    gates.open()
    harness.wait_event(is_event(CellCompleted, cell))
    assert_output(harness.terminate(cell), "Script completed", ["initial", "more"])


def test_a_dropped_initial_observer_loses_no_output_of_a_deadline_yield(
    harness: Harness, gates: Gates
) -> None:
    cell, initial = harness.start("text('a');\nawait tools.gate({});\ntext('b')", 50)
    assert initial.cancel()
    gates.wait_entered()
    gates.open()
    harness.wait_event(is_event(CellCompleted, cell))
    assert_output(harness.wait(cell), "Script completed", ["a", "b"])


def test_answers_are_the_runtime_responses(harness: Harness, gates: Gates) -> None:
    cell, first = harness.start("text('a');\nyield_control();\nawait tools.gate({})")
    assert first.result(TIMEOUT_S) == Yielded(cell_id=cell, content_items=[text("a")])
    gates.wait_entered()
    assert harness.session.backend.terminate(cell).result(TIMEOUT_S) == Terminated(cell_id=cell)


def test_a_notify_callback_that_never_returns_does_not_hold_the_cell_for_ever(
    open_session: OpenSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completion waits for the callback a while (`DRAIN_TIMEOUT_S`), then goes out;
    what was queued behind the stuck notification is dropped."""
    monkeypatch.setattr(notifications, "DRAIN_TIMEOUT_S", 0.2)
    notify = HeldNotify()  # holds the first one until the test ends
    harness = open_session(notify=notify)
    try:
        out = harness.exec("notify('stuck');\nnotify('behind');\ntext('done')")
        assert_output(out, "Script completed", ["done"])
        assert notify.texts == []  # 'stuck' is still in the callback
        events = harness.cell_events("1")
        assert [e.notification_id for e in events if isinstance(e, NotificationCancelled)] == [2]
    finally:
        notify.release.set()

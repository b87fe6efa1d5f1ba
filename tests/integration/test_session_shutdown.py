"""Session shutdown (spec §5.2) and a Redis outage in the middle of a cell."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cellfleet.actors.cell import actor as cell_actor
from cellfleet.actors.cell import observers
from cellfleet.broker.contract.responses import Result, Terminated
from cellfleet.broker.errors import JournalUnavailableError
from cellfleet.broker.events import (
    AnyEvent,
    CellAdmitted,
    CellCompleted,
    CellTerminated,
    ShutdownBegun,
    ShutdownFinished,
)
from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import start_redis
from tests.integration.conftest import OpenSession
from tests.integration.session_support import (
    TIMEOUT_S,
    TOOLS,
    Gates,
    Harness,
    assert_not_found,
    assert_output,
    assert_plain_failure,
    check_log,
    handlers,
    hold_journal,
    is_event,
    text,
    wait_for_event,
)

SHUTTING_DOWN = "code mode session is shutting down"


def test_shutdown_stops_every_cell_and_waits_for_them(harness: Harness, gates: Gates) -> None:
    spin = harness.exec("text('spin');\nyield_control();\nwhile (true) {}")
    assert_output(spin, "Script running with cell ID 1", ["spin"])
    tool = harness.exec("yield_control();\ntext('t');\nawait tools.gate({})")
    assert_output(tool, "Script running with cell ID 2", [])
    gates.wait_entered()
    buffered = harness.exec("yield_control();\nawait tools.echo({});\ntext('done')")
    assert_output(buffered, "Script running with cell ID 3", [])
    harness.wait_event(is_event(CellCompleted, "3"))
    observer = harness.observe("2", 30_000)

    began = time.monotonic()
    harness.session.shutdown()
    assert time.monotonic() - began < 1.0
    # Every cell ended and was closed before shutdown returned.
    assert sorted(harness.closed) == ["1", "2", "3"]
    assert observer.result(0) == Terminated(cell_id="2", content_items=[text("t")])

    assert_plain_failure(harness.exec("text('late')"), SHUTTING_DOWN)
    assert_not_found(harness.wait("1"), "1")
    assert_not_found(harness.terminate("2"), "2")

    events = harness.events()
    check_log(events, shut_down=True)
    began_at = next(i for i, e in enumerate(events) if isinstance(e, ShutdownBegun))
    ended = {e.cell: e.reason for e in events[began_at:] if isinstance(e, CellTerminated)}
    assert ended == {"1": "shutdown", "2": "shutdown"}
    assert isinstance(events[-1], ShutdownFinished)


def test_shutdown_is_idempotent_and_callers_may_race(harness: Harness) -> None:
    assert_output(
        harness.exec("yield_control();\nwhile (true) {}"), "Script running with cell ID 1", []
    )
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def shut() -> None:
        try:
            start.wait(TIMEOUT_S)
            harness.session.shutdown()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=shut) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert errors == []
    harness.session.shutdown()
    kinds = [type(e) for e in harness.events()]
    assert kinds.count(ShutdownBegun) == 1
    assert kinds.count(ShutdownFinished) == 1


def test_exec_is_refused_as_soon_as_shutdown_began(
    harness: Harness, gates: Gates, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_output(
        harness.exec("yield_control();\nawait tools.gate({})"), "Script running with cell ID 1", []
    )
    journal = harness.host.journal
    original = journal.finish
    release = threading.Event()

    def slow_finish(terminal: Any, *args: Any, **kwargs: Any) -> Any:
        assert release.wait(TIMEOUT_S)  # the cell's termination is slow to be recorded
        return original(terminal, *args, **kwargs)

    monkeypatch.setattr(journal, "finish", slow_finish)
    shutting = threading.Thread(target=harness.session.shutdown)
    shutting.start()
    harness.wait_event(is_event(ShutdownBegun))
    assert_plain_failure(harness.exec("text('refused')"), SHUTTING_DOWN)
    assert shutting.is_alive()  # still waiting for the cell
    release.set()
    shutting.join(TIMEOUT_S)
    assert not shutting.is_alive()
    assert harness.closed == ["1"]
    admitted = [e.cell for e in harness.events() if isinstance(e, CellAdmitted)]
    assert admitted == ["1"]


def test_shutdown_of_an_idle_session(open_session: OpenSession) -> None:
    harness = open_session()
    assert_output(harness.exec("text(1)"), "Script completed", ["1"])
    harness.session.shutdown()
    assert_plain_failure(harness.exec("text(2)"), SHUTTING_DOWN)
    answer = harness.session.backend.observe("1", "yield", 10).result(0)
    assert answer == Result(cell_id="1", error_text="exec cell 1 not found")


# -- a Redis outage while a cell waits on a tool ------------------------------------------


def test_a_redis_outage_mid_cell_is_a_clear_error_and_the_log_stays_consistent(
    tmp_path: Path,
) -> None:
    server = start_redis(tmp_path / "redis")
    gates = Gates()
    host = Host(server.url, handlers=handlers(gates))
    restarted = None
    try:
        session = host.open_session(TOOLS)
        out = session.exec(
            "call-1", "text('before');\nyield_control();\nawait tools.gate({});\ntext('after')"
        )
        assert_output(out, "Script running with cell ID 1", ["before"])
        gates.wait_entered()
        server.stop()

        began = time.monotonic()
        waited = session.wait('{"cell_id": "1", "yield_time_ms": 100}')
        refused = session.exec("call-2", "text('x')")
        for failed in (waited, refused):
            assert failed.success is False
            [item] = failed.items
            assert "cellfleet event log is unavailable" in item["text"], item["text"]
            assert "Traceback" not in item["text"]
        gates.open()  # the tool finishes while its result cannot be recorded
        assert time.monotonic() - began < 15

        restarted = start_redis(tmp_path / "redis", port=server.port)
        events = [event for _, event in host.journal.read(session.id)]
        admitted = [e for e in events if isinstance(e, CellAdmitted)]
        assert [(e.cell, e.call_id) for e in admitted] == [("1", "call-1")]
        check_log(events, shut_down=False)
        # The session still works once Redis is back.
        session.shutdown()
        events = [event for _, event in host.journal.read(session.id)]
        check_log(events, shut_down=True)
        terminals = [e for e in events if isinstance(e, CellCompleted | CellTerminated)]
        assert len(terminals) <= 1
        wait_for_event(host, session.id, is_event(ShutdownFinished), TIMEOUT_S)
    finally:
        gates.open_all()
        if restarted is None:
            restarted = start_redis(tmp_path / "redis", port=server.port)
        host.close()
        restarted.stop()


def test_a_cell_that_cannot_record_its_progress_fails_clearly_and_closes(
    tmp_path: Path,
) -> None:
    server = start_redis(tmp_path / "redis")
    closed, released = threading.Event(), threading.Event()
    host = Host(server.url, handlers=handlers(Gates()))
    release = host.pool.release

    def releasing(context: Any, **options: Any) -> None:
        released.set()
        release(context, **options)

    host.pool.release = releasing  # type: ignore[method-assign]
    restarted = None
    try:
        session = host.open_session(TOOLS, on_cell_closed=lambda _: closed.set())
        out = session.exec(
            "call-1",
            "text('ticking');\nyield_control();\n"
            "for (let i = 0; i < 500; i++) { await new Promise((r) => setTimeout(r, 10)); }",
        )
        assert_output(out, "Script running with cell ID 1", ["ticking"])
        observer = session.backend.observe("1", "yield", 30_000)
        server.stop()  # the next timer firing cannot be recorded
        error = observer.exception(TIMEOUT_S)
        assert error is not None
        message = str(error)
        assert (
            message == "exec cell 1 failed: cellfleet event log is unavailable: connection failed"
        )
        assert str(tmp_path) not in message  # where Redis lives is not the model's business
        assert closed.wait(TIMEOUT_S)
        assert released.wait(TIMEOUT_S)  # its V8 context was stopped and given back
        restarted = start_redis(tmp_path / "redis", port=server.port)
        assert_not_found(session.wait('{"cell_id": "1"}'), "1")
        out = session.exec("call-2", "text('back')")
        assert_output(out, "Script completed", ["back"])
        session.shutdown()
        events = [event for _, event in host.journal.read(session.id)]
        check_log(events, shut_down=True)
        assert [e.cell for e in events if isinstance(e, CellAdmitted)] == ["1", "2"]
    finally:
        if restarted is None:
            restarted = start_redis(tmp_path / "redis", port=server.port)
        host.close()
        restarted.stop()


def test_shutdown_while_redis_is_down_still_stops_every_cell(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    closed = threading.Event()
    host = Host(server.url, handlers=handlers(Gates()))
    try:
        session = host.open_session(TOOLS, on_cell_closed=lambda _: closed.set())
        out = session.exec("call-1", "text('spin');\nyield_control();\nwhile (true) {}")
        assert_output(out, "Script running with cell ID 1", ["spin"])
        server.stop()
        began = time.monotonic()
        with pytest.raises(JournalUnavailableError, match="cellfleet event log is unavailable"):
            session.shutdown()
        assert time.monotonic() - began < 1.0
        assert closed.is_set()  # the busy cell was stopped all the same
        assert_plain_failure(session.exec("call-2", "text(1)"), SHUTTING_DOWN)
        assert_not_found(session.wait('{"cell_id": "1"}'), "1")
        session.shutdown()  # over: a second call has nothing left to do
    finally:
        host.close()


def test_dropping_a_session_shuts_it_down(redis_url: str) -> None:
    """Spec §5.2: dropping the session object also starts shutdown (cells terminate)."""
    import gc

    from cellfleet.broker.events import CellTerminated, ShutdownFinished
    from cellfleet.ops.host import Host

    host = Host(redis_url, workers=0)
    try:
        session = host.open_session()
        answer = session.exec("c", '// @exec: {"yield_time_ms": 10}\nwhile (true) {}')
        assert answer.items[0]["text"].startswith("Script running with cell ID 1")
        session_id = session.id
        del session
        gc.collect()
        deadline = time.monotonic() + 10
        entries: list[tuple[str, AnyEvent]] = []
        while not any(isinstance(e, ShutdownFinished) for _, e in entries):
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no shutdown within 10 s of dropping the session"
            host.journal.wait_after(session_id, entries[-1][0] if entries else "0-0", remaining)
            entries = list(host.journal.read(session_id))
        seen = [event for _, event in entries]
        assert any(isinstance(e, CellTerminated) and e.reason == "shutdown" for e in seen)
    finally:
        host.close()


def test_a_cell_shut_down_before_its_admission_was_recorded_is_terminated(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cell is admitted at its first append; one the shutdown ends before that existed
    all the same (it ran): the model sees `Script terminated`, and the log says so."""
    monkeypatch.setattr(cell_actor, "ADMIT_WITHIN_S", 60.0)  # not admitted meanwhile
    produced = threading.Event()
    original = observers.Answers.produced

    def producing(answers: observers.Answers, item: Any) -> None:
        original(answers, item)
        produced.set()

    monkeypatch.setattr(observers.Answers, "produced", producing)
    cell_id, answer = harness.session.backend.execute(
        "c", "text('started');\nawait new Promise(() => {})", 60_000, None
    )
    assert produced.wait(TIMEOUT_S)  # it ran, and is still waiting for its admission
    harness.session.shutdown()
    assert answer.result(TIMEOUT_S) == Terminated(cell_id=cell_id, content_items=[text("started")])
    kinds = [(type(e), getattr(e, "reason", None)) for e in harness.cell_events(cell_id)]
    assert kinds[0] == (CellAdmitted, None)
    assert (CellTerminated, "shutdown") in kinds


def test_a_cell_that_completes_as_the_shutdown_begins_is_terminated(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its completion met a shutdown that began first, before its admission was recorded:
    the answer is its termination, with its output, not `session is shutting down`."""
    reached, release = hold_journal(
        monkeypatch, harness.host.journal, "finish", is_event(CellCompleted, "1")
    )
    _, answer = harness.session.backend.execute("c", "text('done')", 60_000, None)
    assert reached.wait(TIMEOUT_S)
    shutting = threading.Thread(target=harness.session.shutdown)
    shutting.start()
    harness.wait_event(is_event(ShutdownBegun))
    release.set()
    assert answer.result(TIMEOUT_S) == Terminated(cell_id="1", content_items=[text("done")])
    shutting.join(TIMEOUT_S)


def test_a_cell_whose_yield_meets_the_shutdown_is_terminated(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cell_actor, "ADMIT_WITHIN_S", 60.0)
    reached, release = hold_journal(monkeypatch, harness.host.journal, "admit", lambda events: True)
    _, answer = harness.session.backend.execute(
        "c", "text('a');\nyield_control();\nawait new Promise(() => {})", 60_000, None
    )
    assert reached.wait(TIMEOUT_S)  # the yield's answer is on its way to the log
    shutting = threading.Thread(target=harness.session.shutdown)
    shutting.start()
    harness.wait_event(is_event(ShutdownBegun))
    release.set()
    assert answer.result(TIMEOUT_S) == Terminated(cell_id="1", content_items=[text("a")])
    shutting.join(TIMEOUT_S)

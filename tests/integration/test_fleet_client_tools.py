"""Nested calls that a fleet client answers itself (`client_tools`: how `cellfleet host
--fleet` gives Codex its cells' calls): asked through the client's answers stream, in
order with the session's answers, answered back to the session's owner, recorded once;
and asked again by the next owner when the worker that asked was killed."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cellfleet.actors.session.actor import CellTools
from cellfleet.broker.events import ToolCompleted, ToolRequested
from cellfleet.broker.fleet import FleetClient
from cellfleet.broker.fleet.client import FleetSessionBackend
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.keys import Keys
from cellfleet.broker.tools.invocation import ToolInvocation
from cellfleet.ops.worker import CellWorker
from tests.integration.fleet_support import start_worker
from tests.integration.session_support import TIMEOUT_S

ECHO = CellTools.from_records(
    [{"name": "echo", "namespace": "files", "global_name": "echo", "kind": "function",
      "description": "echoes"}]
)  # fmt: skip


class Asked:
    """A client's side of its sessions' calls (`ClientTools`): each ask and withdrawal,
    for the test to answer or look at."""

    def __init__(self) -> None:
        self.asks: queue.Queue[tuple[FleetSessionBackend, int, ToolInvocation]] = queue.Queue()
        self.withdrawals: queue.Queue[int] = queue.Queue()

    def ask(self, backend: FleetSessionBackend, delegate: int, call: ToolInvocation) -> None:
        self.asks.put((backend, delegate, call))

    def withdrawn(self, backend: FleetSessionBackend, delegate: int) -> None:
        del backend
        self.withdrawals.put(delegate)

    def next_ask(self) -> tuple[FleetSessionBackend, int, ToolInvocation]:
        return self.asks.get(timeout=TIMEOUT_S)


@pytest.fixture
def keys() -> Keys:
    return Keys(f"ct-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def client(redis_url: str, keys: Keys) -> Iterator[FleetClient]:
    opened = FleetClient(redis_url, keys=keys)
    yield opened
    opened.close()


@pytest.fixture
def worker(redis_url: str, keys: Keys) -> Iterator[CellWorker]:
    """A cell worker of the client's fleet (a test shuts its sessions down first)."""
    started = CellWorker(redis_url, keys=keys, tool_workers=0).start()
    yield started
    started.stop()


def texts_of(items: list[Any]) -> list[str]:
    return [item["text"] for item in items]


def _execute(backend: Any, source: str) -> Any:
    return backend.execute("c1", source, 10_000, None, tools=ECHO)


def test_a_client_answers_its_cells_calls_and_the_log_has_each_once(
    client: FleetClient, worker: CellWorker
) -> None:
    tools = Asked()
    session = client.open_session(client_tools=tools)
    _, answer = _execute(
        session.backend,
        "const a = tools.echo({n: 1}); const b = tools.echo({n: 2});"
        " text(JSON.stringify([await a, await b]))",
    )
    asks = [tools.next_ask(), tools.next_ask()]
    assert [(call.input, call.namespace, call.raw_name) for _, _, call in asks] == [
        ({"n": 1}, "files", "echo"),
        ({"n": 2}, "files", "echo"),
    ]
    for backend, delegate, call in reversed(asks):  # (answered in any order)
        backend.answer_tool(delegate, call.idempotency_key, {"got": call.input}, None)
    done = answer.result(TIMEOUT_S)
    assert texts_of(done.content_items) == ['[{"got":{"n":1}},{"got":{"n":2}}]']
    events = [e for _, e in worker.journal.read(session.id)]
    assert [e.call_id for e in events if isinstance(e, ToolRequested)] == ["tool-1", "tool-2"]
    assert sorted(e.call_id for e in events if isinstance(e, ToolCompleted)) == [
        "tool-1",
        "tool-2",
    ]
    # An answer to a call the worker no longer waits for changes nothing.
    backend, delegate, call = asks[0]
    backend.answer_tool(delegate, call.idempotency_key, "late", None)
    again = session.exec("c2", "text('two')")
    assert [item["text"] for item in again.items][1:] == ["two"]
    assert sum(isinstance(e, ToolCompleted) for _, e in worker.journal.read(session.id)) == 2
    session.shutdown()


def test_a_call_the_cell_no_longer_needs_is_withdrawn(
    client: FleetClient, worker: CellWorker
) -> None:
    tools = Asked()
    session = client.open_session(client_tools=tools)
    _, answer = _execute(session.backend, "tools.echo({}); text('done')")
    assert texts_of(answer.result(TIMEOUT_S).content_items) == ["done"]
    _, delegate, _ = tools.next_ask()  # (every call reaches the client, as in Codex's)
    assert tools.withdrawals.get(timeout=TIMEOUT_S) == delegate
    session.shutdown()


def test_a_call_asked_by_a_killed_worker_is_asked_again_by_the_next_owner(
    redis_url: str, keys: Keys, client: FleetClient
) -> None:
    """SIGKILL while the cell waits for the client's answer: the next owner recovers the
    cell and asks again; the answer it gets is recorded once and the cell ends with it."""
    process, _ = start_worker(redis_url, keys, "--lease-ms", "300")
    tools = Asked()
    try:
        session = client.open_session(client_tools=tools)
        source = "const r = await tools.echo({n: 7}); text(JSON.stringify(r))"
        cell, _ = _execute(session.backend, f"yield_control(); {source}")
        _, _, first = tools.next_ask()
    finally:
        process.kill()
        process.wait(TIMEOUT_S)
    worker = CellWorker(redis_url, keys=keys, tool_workers=0).start()
    try:
        backend, delegate, call = tools.next_ask()  # (the next owner took the session over)
        assert call.idempotency_key == first.idempotency_key
        backend.answer_tool(delegate, call.idempotency_key, {"n": 8}, None)
        done = session.wait(f'{{"cell_id": "{cell}", "yield_time_ms": 10000}}')
        assert (done.success, [item["text"] for item in done.items][1:]) == (True, ['{"n":8}'])
        journal = RedisJournal(client.client, keys)
        events = [e for _, e in journal.read(session.id) if e.cell == cell]
        assert [e.result for e in events if isinstance(e, ToolCompleted)] == [{"n": 8}]
        session.shutdown()
    finally:
        worker.stop()


def test_an_outcome_whose_worker_is_gone_is_dropped_without_waiting_for_one(
    redis_url: str, keys: Keys
) -> None:
    """No worker serves the session any more: the outcome is not held up waiting for one
    to place the session on (the next owner, when there is one, asks again)."""
    patient = FleetClient(redis_url, keys=keys, placement_timeout_s=600)
    worker = CellWorker(redis_url, keys=keys, tool_workers=0).start()
    try:
        session = patient.open_session(client_tools=Asked())
        session.shutdown()  # (else the client's close would wait to shut it down)
    finally:
        worker.stop()
    backend: FleetSessionBackend = session.backend  # type: ignore[assignment]
    try:
        backend.answer_tool(1, f"{session.id}/1/tool-1", "late", None)  # (returns at once)
        backend.owner = None
        backend.answer_tool(2, f"{session.id}/1/tool-2", "late", None)
    finally:
        patient.close()

"""Replay the multi-step cases of the recorded reference corpus through the session API.

`tests/reference/recorded.json` holds what Codex's own host answered (see
tests/reference/README.md). The single-step cases are runtime-level and replayed by
tests/contract/test_reference_corpus.py; every other case (yields, waits, termination,
several cells in one session, unknown cells) exercises the session layer and is
replayed here, step by step with the recorded yield times, against real Redis. Answers
are compared as runtime responses (the backend's futures), not as rendered text: kind
(`Yielded` / `Result` / `Terminated`), cell id, items, error text and whether the cell
was missing. Nested tool calls (per cell, in order) and notifications are compared too.

Timing: the cases avoid races by margins of hundreds of milliseconds (spec §0 of the
corpus): nested `sleep` tools of 100 ms to 5 s against yield times of 100 ms to 5 s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cellfleet.broker.contract.responses import CellAnswer, Result
from cellfleet.broker.events import ToolRequested
from cellfleet.ops.replay_corpus import reference_tool
from tests.integration.conftest import OpenSession
from tests.integration.session_support import TIMEOUT_S, answer_kind

RECORDED = json.loads(
    (Path(__file__).parents[1] / "reference" / "recorded.json").read_text("utf-8")
)


def _runtime_level(case: dict[str, Any]) -> bool:
    program = case["program"]
    return (
        len(program) == 1
        and program[0]["op"] == "execute"
        and [r["kind"] for r in case["responses"]] == ["Result"]
    )


CASES = [
    case
    for case in RECORDED["cases"]
    if not _runtime_level(case) and not case["host_stdout_garbage"]
]


def test_the_corpus_has_the_session_level_cases() -> None:
    assert len(CASES) == 47  # 45 multi-step programs and 2 lone steps on unknown cells
    assert RECORDED["unstable"] == []


def _response(step: dict[str, Any], cell: str, answer: CellAnswer) -> dict[str, Any]:
    error = answer.error_text if isinstance(answer, Result) else None
    return {
        "op": step["op"],
        "kind": answer_kind(answer),
        "cell_id": answer.cell_id,
        "items": answer.content_items,
        "error_text": error,
        "missing": step["op"] != "execute" and error == f"exec cell {cell} not found",
    }


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_reference_program(case: dict[str, Any], open_session: OpenSession) -> None:
    harness = open_session(tools=[reference_tool(tool) for tool in case["tools"]])
    backend = harness.session.backend
    cells: list[str] = []
    responses = []
    for step in case["program"]:
        if step["op"] == "execute":
            cell, future = backend.execute(
                f"call-{len(cells) + 1}", step["source"], step["yield_time_ms"], None
            )
            cells.append(cell)
        else:
            target = step.get("cell", len(cells) - 1)
            cell = step["cell_id"] if "cell_id" in step else cells[target]
            if step["op"] == "wait":
                future = backend.observe(cell, "yield", step["yield_time_ms"])
            else:
                future = backend.terminate(cell)
        responses.append(_response(step, cell, future.result(TIMEOUT_S)))
    expected = [
        {key: response[key] for key in ("op", "kind", "cell_id", "items", "error_text", "missing")}
        for response in case["responses"]
    ]
    assert responses == expected

    calls = [
        {
            "cell_id": e.cell,
            "runtime_tool_call_id": e.call_id,
            "name": e.name,
            "kind": e.kind,
            "input": e.input,
        }
        for e in harness.events()
        if isinstance(e, ToolRequested)
    ]
    recorded_calls = [
        {key: call[key] for key in ("cell_id", "runtime_tool_call_id", "name", "kind", "input")}
        for call in case["tool_calls"]
    ]
    by_cell = sorted(recorded_calls, key=lambda call: int(call["cell_id"]))
    assert sorted(calls, key=lambda call: int(call["cell_id"])) == by_cell
    notes = [{"cell_id": c, "call_id": k, "text": t} for k, c, t in harness.notes]
    assert notes == case["notifications"]

"""Load the golden session trace and its committed expectations."""

from __future__ import annotations

import json
from pathlib import Path

from cellfleet.broker import codec
from cellfleet.broker.events import AnyEvent
from cellfleet.projections import SessionView, cells, project, stored, timeline

HERE = Path(__file__).resolve().parent
SESSION = "golden-1"


def trace_entries() -> list[tuple[str, dict[str, str]]]:
    """The golden stream entries as (stream id, stream fields)."""
    lines = (HERE / "session_trace.jsonl").read_text().splitlines()
    return [(entry["id"], entry["fields"]) for entry in map(json.loads, lines)]


def decoded(session: str = SESSION) -> list[tuple[str, AnyEvent]]:
    """The golden stream entries as (stream id, event), decoded by the codec."""
    return [(entry_id, codec.decode(session, fields)) for entry_id, fields in trace_entries()]


def load_trace() -> SessionView:
    """Every projection of the golden trace."""
    return project(SESSION, decoded())


def expected_cells() -> object:
    return json.loads((HERE / "expected_cells.json").read_text())


def expected_stored() -> object:
    return json.loads((HERE / "expected_stored.json").read_text())


def expected_timeline() -> str:
    return (HERE / "expected_timeline.txt").read_text()


def assert_matches_expectations(view: SessionView) -> None:
    """`view` equals the committed expectations of the golden trace."""
    assert cells.to_data(view.cells) == expected_cells()
    assert stored.to_data(view.stored) == expected_stored()
    assert timeline.render(view.timeline) == expected_timeline()

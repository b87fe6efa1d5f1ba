"""Replay the recorded golden session through every projection; compare with expectations."""

from __future__ import annotations

from functools import reduce

from cellfleet.projections import cells, stored, stream_id, timeline
from tests.golden.golden import (
    assert_matches_expectations,
    decoded,
    expected_timeline,
    load_trace,
)


def test_golden_trace_projects_to_the_committed_expectations():
    assert_matches_expectations(load_trace())


def test_golden_trace_decodes_every_entry_in_stream_order():
    ids = [entry_id for entry_id, _ in decoded()]
    assert ids == sorted(ids, key=stream_id)
    assert len(ids) == len(expected_timeline().splitlines())


def test_golden_projections_survive_their_json_round_trip():
    view = load_trace()
    assert cells.from_json(cells.to_json(view.cells)) == view.cells
    assert stored.from_json(stored.to_json(view.stored)) == view.stored
    assert timeline.from_json(timeline.to_json(view.timeline)) == view.timeline


def test_golden_trace_folded_event_by_event_equals_the_batch_fold():
    events = [event for _, event in decoded()]
    view = load_trace()
    assert reduce(cells.apply, events, cells.INITIAL) == view.cells
    assert reduce(stored.apply, events, stored.INITIAL) == view.stored
    assert reduce(timeline.apply, events, timeline.INITIAL) == view.timeline

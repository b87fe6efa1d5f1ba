"""`cellfleet bench replay`, bounded: a short session goes through every stage (recorded,
rebuilt, replayed identically) and the report has every figure the table prints."""

from __future__ import annotations

from cellfleet.ops.bench import replay as bench


def test_the_replay_benchmark_runs_a_short_session_through_every_stage() -> None:
    report = bench.run(cells=5)
    assert report["cells"] == 5
    assert report["replayed_events"] > 5 * 5  # started, texts, timer, tool: each compared
    for figure in ("wall_ms_per_cell", "cpu_ms_per_cell"):
        assert report["live"][figure] > 0
        assert report["replay"][figure] > 0
    table = bench.table(report)
    assert "| replay |" in table
    assert "projection rebuild" in table

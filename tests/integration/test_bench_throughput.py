"""`cellfleet bench throughput`, bounded: both workloads run back to back at every
session count, the memory phase runs its short sessions, and the table has every row."""

from __future__ import annotations

import orjson
import pytest

from cellfleet.ops.bench import throughput as bench


@pytest.mark.timeout(120)
def test_the_throughput_benchmark_runs_every_workload_and_the_memory_phase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "reference_binary", lambda: None)  # (its own bench run)
    monkeypatch.setattr(bench, "MEMORY_FIRST", 40)
    report = bench.run(samples=200, seconds=0.3)
    rows = {(row["workload"], row["sessions"]): row for row in report["rows"]}
    assert set(rows) == {(w, n) for w in bench.WORKLOADS for n in bench.SESSIONS}
    for row in rows.values():
        assert row["host"] == "cellfleet"
        assert row["cells"] > 0
        assert row["cpu_ms_per_cell"] > 0
    assert report["memory"]["cells"] == 200
    assert report["memory"]["rss_kib_after_first"] > 0
    assert orjson.loads(orjson.dumps(report)) == report  # (`--json` prints it)
    table = bench.table(report)
    assert "| tool_timer | 16 |" in table
    assert "no reference host here" in table

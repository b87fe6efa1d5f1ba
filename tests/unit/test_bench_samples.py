"""`cellfleet bench ... --samples N` refuses an N its benchmark cannot measure with, at
once and in one line, instead of failing after minutes of measuring."""

from __future__ import annotations

import pytest

from cellfleet.ops import cli
from cellfleet.ops.bench import throughput


def test_too_few_memory_cells_for_bench_throughput_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    least = throughput.MEMORY_FIRST + throughput.MEMORY_THREADS
    assert cli.run_bench("throughput", as_json=False, samples=least - 1) == 2
    assert capsys.readouterr().err == (
        f"cellfleet bench throughput: --samples must be at least {least}: the memory run"
        f" reads RSS after {throughput.MEMORY_FIRST} cells and at its end\n"
    )

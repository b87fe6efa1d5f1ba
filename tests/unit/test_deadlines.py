"""Yield deadlines (spec §4.6): the 1 s grace for yields of 10 s or more, then the
session's `max_yield_time_ms` clamp. The table is the spec's (from Codex's tests)."""

from __future__ import annotations

import pytest

from cellfleet.actors.cell.deadlines import yield_timeout_ms

U64_MAX = 2**64 - 1

TABLE = [
    # (session limit, requested ms, effective ms)
    (None, 0, 0),
    (None, 9_999, 9_999),
    (None, 10_000, 11_000),
    (None, 10_001, 11_001),
    (0, 0, 0),
    (0, 10_000, 0),
    (5_000, 9_999, 5_000),
    (10_000, 10_000, 10_000),
    (10_500, 10_000, 10_500),
    (11_000, 10_000, 11_000),
    (12_000, 10_000, 11_000),
    (10_500, 5_000, 5_000),
    (U64_MAX, U64_MAX, U64_MAX),
]


@pytest.mark.parametrize(("limit", "requested", "effective"), TABLE)
def test_yield_timeout_table(limit: int | None, requested: int, effective: int) -> None:
    assert yield_timeout_ms(requested, limit) == effective


def test_grace_starts_exactly_at_ten_seconds() -> None:
    assert yield_timeout_ms(9_999, None) == 9_999
    assert yield_timeout_ms(10_000, None) == 11_000
    assert yield_timeout_ms(30_000, None) == 31_000  # Codex's product default exec yield

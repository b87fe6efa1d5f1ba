"""Yield deadlines (spec §4.6)."""

from __future__ import annotations

GRACE_THRESHOLD_MS = 10_000
GRACE_MS = 1_000


def yield_timeout_ms(requested_ms: int, max_yield_time_ms: int | None) -> int:
    """Requested yield time plus the 1 s grace for yields of 10 s or more, then clamped."""
    effective = requested_ms + GRACE_MS if requested_ms >= GRACE_THRESHOLD_MS else requested_ms
    return effective if max_yield_time_ms is None else min(effective, max_yield_time_ms)

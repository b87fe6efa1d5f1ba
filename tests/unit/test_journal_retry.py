"""The journal's retry policy and how Redis's refusals are told (no Redis needed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from cellfleet.broker.errors import JournalUnavailableError
from cellfleet.broker.journal import run_retrying
from cellfleet.broker.redis.connect import connect_redis
from cellfleet.broker.redis.link import ReplicaWait


def _failing(*errors: Exception) -> Callable[[], str]:
    """A call that raises `errors` in turn, then answers "ok"."""
    pending = list(errors)

    def call() -> str:
        if pending:
            raise pending.pop(0)
        return "ok"

    return call


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (redis.exceptions.OutOfMemoryError("OOM command not allowed"), "Redis is out of memory"),
        (redis.exceptions.ReadOnlyError("READONLY You can't write"), "read-only replica"),
        (redis.ResponseError("BUSY Redis is busy running a script"), "busy running a script"),
        (redis.ResponseError("MISCONF Redis is configured to save"), "cannot save to disk"),
    ],
)
def test_a_refusal_is_told_by_its_reason(error: Exception, reason: str) -> None:
    with pytest.raises(JournalUnavailableError, match=reason):
        run_retrying(_failing(error))


def test_a_refusal_after_a_retry_is_told_too() -> None:
    """A timeout, then BUSY (a long script): the raw redis error came out of the retry."""
    busy = redis.ResponseError("BUSY Redis is busy running a script")
    with pytest.raises(JournalUnavailableError, match="busy running a script"):
        run_retrying(_failing(redis.TimeoutError("timed out"), busy))


def test_a_scripts_own_refusal_is_the_callers() -> None:
    refused = redis.ResponseError("SHUTTING_DOWN the session is shutting down")
    with pytest.raises(redis.ResponseError, match="SHUTTING_DOWN"):
        run_retrying(_failing(refused))


def test_transient_errors_are_retried() -> None:
    assert run_retrying(_failing(redis.ConnectionError("reset"))) == "ok"


@pytest.mark.parametrize("value", ["0", "-6000", "10000000000000000000", "abc", "1e3", "600001"])
def test_a_wait_timeout_outside_its_range_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """`WAIT 0` waits for ever, a negative or huge one broke the socket's own timeout
    (errors that are not Redis's): every value outside 1..600000 ms is refused, named."""
    monkeypatch.setenv("CELLFLEET_DURABILITY", "replica")
    monkeypatch.setenv("CELLFLEET_WAIT_TIMEOUT_MS", value)
    with pytest.raises(ValueError, match="CELLFLEET_WAIT_TIMEOUT_MS must be a whole number"):
        ReplicaWait.from_env()


def test_a_client_reads_past_the_wait_for_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client `connect_redis` makes reads for redis-py's 5 s plus the wait."""
    monkeypatch.setenv("CELLFLEET_DURABILITY", "replica")
    monkeypatch.setenv("CELLFLEET_WAIT_TIMEOUT_MS", "7000")
    assert ReplicaWait.from_env() == ReplicaWait(1, 7000)
    client = connect_redis("redis://127.0.0.1:1/0")
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 12.0
    monkeypatch.delenv("CELLFLEET_DURABILITY")
    assert (
        connect_redis("redis://127.0.0.1:1/0").connection_pool.connection_kwargs["socket_timeout"]
        == 5.0
    )

"""The embedded default: a private redis-server per data directory, reused while it runs."""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cellfleet.ops.embedded import ensure_embedded
from cellfleet.ops.redis_server import RedisUnavailableError, start_redis


def _shutdown(url: str) -> None:
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown(nosave=True)
    client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cellfleet"
    yield path
    url_file = path / "redis.url"
    if url_file.exists():
        _shutdown(url_file.read_text().strip())


def test_the_embedded_server_listens_on_a_socket_and_is_reused(data_dir: Path) -> None:
    url = ensure_embedded(data_dir)
    assert url == f"unix://{(data_dir / 'redis.sock').absolute()}?db=0"
    client = redis.Redis.from_url(url)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    pid = (data_dir / "redis.pid").read_text()
    client.close()
    assert ensure_embedded(data_dir) == url
    assert (data_dir / "redis.pid").read_text() == pid  # the same server


def test_a_server_started_by_an_earlier_version_is_reused(data_dir: Path) -> None:
    """Earlier versions wrote only `redis.port`; a second server on the same files
    would share its append-only file."""
    server = start_redis(data_dir, daemonize=True)
    (data_dir / "redis.port").write_text(str(server.port))
    try:
        assert ensure_embedded(data_dir) == server.tcp_url
    finally:
        _shutdown(server.tcp_url)


def test_a_data_directory_with_odd_characters_works(tmp_path: Path) -> None:
    data_dir = tmp_path / "a dir?#%"
    url = ensure_embedded(data_dir)
    try:
        assert redis.Redis.from_url(url).ping()
    finally:
        _shutdown(url)


def test_a_server_that_cannot_start_is_one_line_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "cellfleet"
    data_dir.mkdir()
    (data_dir / "appendonlydir").write_text("a file where redis wants its directory")
    with pytest.raises(RedisUnavailableError) as failure:
        ensure_embedded(data_dir)
    message = str(failure.value)
    assert "\n" not in message
    assert "appendonlydir" in message
    assert message.endswith(f"(its log: {data_dir / 'redis.log'})")
    pid_file = data_dir / "redis.pid"
    if pid_file.exists():  # it started, and must have been stopped again
        assert _gone_within(int(pid_file.read_text().strip()), timeout=10)


def _gone_within(pid: int, timeout: float) -> bool:
    """Whether process `pid` (not our child) has exited, waiting on its pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)

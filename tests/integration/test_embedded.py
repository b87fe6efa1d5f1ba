"""The embedded default: a private redis-server per data directory, reused while it runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cellfleet.ops.embedded import ensure_embedded
from cellfleet.ops.redis_server import start_redis


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

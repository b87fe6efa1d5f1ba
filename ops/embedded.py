"""The embedded default: a private redis-server per user, used when REDIS_URL is unset.

It keeps its append-only file in a data directory (`--data-dir`, default
`$XDG_DATA_HOME/cellfleet` or `~/.local/share/cellfleet`) and keeps running after the
command that started it, so later commands (`cellfleet events`, another `run`) reuse
it: its URL is in `redis.url` (its Unix socket, `redis.sock`, where the path fits), its
pid in `redis.pid`.
"""

from __future__ import annotations

import os
from pathlib import Path

import redis

from cellfleet.ops.redis_server import start_redis


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cellfleet"


def redis_url(data_dir: Path | None = None) -> str:
    """REDIS_URL if set, else the URL of the embedded server (started if needed)."""
    explicit = os.environ.get("REDIS_URL")
    if explicit:
        return explicit
    return ensure_embedded(data_dir or default_data_dir())


def ensure_embedded(data_dir: Path) -> str:
    url_file, port_file = data_dir / "redis.url", data_dir / "redis.port"
    known = [url_file.read_text().strip()] if url_file.exists() else []
    if port_file.exists():  # written by earlier versions, whose server may still run
        known.append(f"redis://127.0.0.1:{port_file.read_text().strip()}/0")
    for url in known:
        if _answers(url):
            return url
    port_file.unlink(missing_ok=True)
    server = start_redis(data_dir, append_only=True, daemonize=True)
    url_file.write_text(server.url)
    return server.url


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, ValueError):
        return False
    finally:
        client.close()

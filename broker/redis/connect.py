"""Clients of the Redis that a URL names: one server, or a Redis Cluster.

A URL names a cluster by naming one of its nodes; `connect_redis` asks the node
(`INFO cluster`) and makes a `RedisCluster` client for a cluster node, which learns the
other nodes and the slot map from it and follows `MOVED` and `ASK` redirections. The
answer is remembered per URL: clients are made often, and a server does not become a
cluster node without a restart.

A cluster client serves the commands cellfleet uses with the same signatures, so code
takes either as a `redis.Redis`; the few places that differ (a batch of commands over
one connection, keyspace notifications) ask `is_cluster`.
"""

from __future__ import annotations

import threading
from typing import Any, cast

import redis
from redis.exceptions import RedisClusterException

from cellfleet.broker.redis.link import ReplicaWait

_cluster_urls: dict[str, bool] = {}
_lock = threading.Lock()


class _ClusterClient(redis.RedisCluster):
    """A `RedisCluster` whose failures are `redis.RedisError`s like a server's.

    redis-py raises `RedisClusterException` (not a `RedisError`) when no node of the
    cluster answers or a slot has no node: for cellfleet both are Redis being
    unreachable, to be retried or reported as such by the code that handles
    `redis.ConnectionError`, never a crash of a loop that must live on."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisClusterException as error:
            raise redis.ConnectionError(f"Redis Cluster unavailable: {error}") from error


DEFAULT_READ_TIMEOUT_S = 5.0  # redis-py's own default


def is_cluster(client: object) -> bool:
    return isinstance(client, redis.RedisCluster)


def connect_redis(url: str, **options: Any) -> redis.Redis:
    """A client of the Redis at `url` (`redis.Redis.from_url`'s options), or of the
    Redis Cluster whose node it names. A server that cannot be asked gets a server's
    client, which reports it unreachable at its first command as before.

    Unless told otherwise it reads for redis-py's 5 s plus the wait for replicas that
    ends its links' writes (`ReplicaWait`): a read cut short fails a write that Redis
    made as a broken connection, and a retry would make it again."""
    options.setdefault("socket_timeout", ReplicaWait.socket_timeout_s(DEFAULT_READ_TIMEOUT_S))
    if not _names_cluster(url, options):
        return redis.Redis.from_url(url, **options)
    if url.startswith("unix:"):
        raise redis.ConnectionError(
            "a Redis Cluster is reached over TCP: give a node's redis:// URL, not its socket"
        )
    # (Typed as a server's client: the cluster's has the same commands.)
    return cast(redis.Redis, _ClusterClient.from_url(url, **options))


def _names_cluster(url: str, options: dict[str, Any]) -> bool:
    with _lock:
        known = _cluster_urls.get(url)
    if known is not None:
        return known
    probe = redis.Redis.from_url(
        url,
        socket_timeout=options.get("socket_timeout") or 5,
        socket_connect_timeout=options.get("socket_connect_timeout") or 5,
    )
    try:
        enabled = str(probe.info("cluster").get("cluster_enabled", 0)) == "1"
    except redis.RedisError:
        return False  # (not remembered: asked again next time)
    finally:
        probe.close()
    with _lock:
        _cluster_urls[url] = enabled
    return enabled

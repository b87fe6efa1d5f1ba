"""How durable an acknowledged event is: `CELLFLEET_DURABILITY`.

An event is acknowledged when Redis answered the command that wrote it. What survives
depends on Redis's append-only file (AOF):

| level             | Redis settings                    | an acknowledged event survives       |
| ----------------- | --------------------------------- | ------------------------------------ |
| `process` (default) | `appendonly yes`, any `appendfsync` | Redis or cellfleet killed (SIGKILL), |
|                   |                                   | restarted: Redis writes the AOF      |
|                   |                                   | before it answers; an OS crash or a  |
|                   |                                   | power loss may lose the last second  |
| `power`           | `appendonly yes`, `appendfsync always` | a power loss too: each write is   |
|                   |                                   | on disk (fsync) before Redis answers |
| `replica`         | `appendonly yes`, and replicas    | the loss of the primary's machine:   |
|                   | (`CELLFLEET_WAIT_REPLICAS`, 1)    | each batch of writes ends with `WAIT`|
|                   |                                   | (`broker/redis/link.py`) and fails   |
|                   |                                   | unless that many replicas have it    |
|                   |                                   | within `CELLFLEET_WAIT_TIMEOUT_MS`   |

The embedded server is set to the level asked for (it is cellfleet's own); a server
named by `REDIS_URL` is only checked, since it may serve others: a one-line warning
says what it promises less and which setting would change that (for `replica`: how many
replicas it has; without them every write fails).
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Any

import redis

from cellfleet.broker.redis.link import ReplicaWait

DURABILITY_ENV = "CELLFLEET_DURABILITY"


class Durability(StrEnum):
    PROCESS = "process"
    POWER = "power"
    REPLICA = "replica"


class DurabilityError(ValueError):
    """`CELLFLEET_DURABILITY` names no level."""


def requested() -> Durability:
    value = os.environ.get(DURABILITY_ENV, "") or Durability.PROCESS.value
    try:
        return Durability(value)
    except ValueError:
        levels = ", ".join(level.value for level in Durability)
        raise DurabilityError(
            f"${DURABILITY_ENV} is {value!r}; expected one of: {levels}"
        ) from None


def _wanted(level: Durability) -> dict[str, str]:
    """The settings (and values) that give `level`."""
    wanted = {"appendonly": "yes"}
    if level is Durability.POWER:
        wanted["appendfsync"] = "always"
    return wanted


def _servers(client: redis.Redis) -> list[Any]:
    """A client per server: each primary of a cluster, or the one server."""
    if isinstance(client, redis.RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def ensure(client: redis.Redis, level: Durability, *, own: bool) -> str | None:
    """Set the server's AOF for `level` if it is cellfleet's `own`; else check it. A
    warning (None: the server promises `level`)."""
    for server in _servers(client):
        try:
            current: dict[str, str] = {
                name: str(value) for name, value in server.config_get("append*").items()
            }
        except redis.ResponseError as error:  # (a managed Redis may refuse CONFIG)
            return f"cannot check that Redis keeps events for durability {level}: {error}"
        missing = {k: v for k, v in _wanted(level).items() if current.get(k) != v}
        if not missing:
            continue
        if own:
            for name, value in missing.items():
                server.config_set(name, value)
            continue
        settings = ", ".join(f"{name} {value}" for name, value in missing.items())
        found = ", ".join(f"{name} {current.get(name, '?')}" for name in missing)
        return (
            f"Redis does not promise durability {level} (it has {found}); "
            f"set {settings} on it, or lower ${DURABILITY_ENV}"
        )
    if level is Durability.REPLICA:
        return _replicas_missing(client)
    return None


def _replicas_missing(client: redis.Redis) -> str | None:
    """A warning if a server has fewer replicas than `replica` waits for."""
    wait = ReplicaWait.from_env()
    wanted = wait.replicas if wait is not None else 1
    for server in _servers(client):
        connected = int(server.info("replication").get("connected_slaves", 0))
        if connected < wanted:
            return (
                f"Redis has {connected} replicas and durability replica waits for {wanted}: "
                "every write will fail until they connect"
            )
    return None

"""Command batches on a Redis Cluster: a `RedisLink` per node, commands routed by slot.

A batch is split by the node that serves each command's key; each node gets its part in
one round trip over that node's `RedisLink`, node after node in the order the nodes first
appear in the batch. So commands to one node keep their order, and every command to a
node is done before any command to a node named later (a cell's `tool_requested` is
recorded before its call is put where tool workers read it). A command whose slot
moved (`MOVED`: the slot map is updated) or is moving (`ASK`: sent once more with
`ASKING` to the node named) is sent again where Redis said, up to `MAX_REDIRECTS` times
in a row: a redirected command was not run. A multi-key command refused while its slot
moves (`TRYAGAIN`) is sent again with backoff for up to `MIGRATION_WAIT_S`. A node that
cannot be reached makes the client relearn the slot map (a failover) before the error
is raised for the caller to retry.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, RedisClusterException, TryAgainError

from cellfleet.broker.redis.link import Command, RedisLink, ReplicaWait

MAX_REDIRECTS = 5
MIGRATION_WAIT_S = 3.0  # how long a command waits for a slot's move to end (TRYAGAIN)
_SCRIPT_CALLS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL"})
_STREAM_READS = frozenset({"XREAD", "XREADGROUP"})


def command_key(command: Command) -> bytes | None:
    """The first key `command` touches (its slot is the command's), None for a command
    of no key."""
    name = _text(command[0]).upper()
    key: bytes | str | int | None = None
    if name in _SCRIPT_CALLS:
        key = command[3] if int(command[2]) > 0 else None
    elif name in _STREAM_READS:
        words = [_text(part).upper() for part in command]
        key = command[words.index("STREAMS") + 1]
    elif len(command) > 1:
        key = command[1]
    if key is None or isinstance(key, bytes):
        return key
    return str(key).encode()


class ClusterLink:
    """Command batches to a Redis Cluster through `client`; thread-safe."""

    def __init__(self, client: redis.RedisCluster) -> None:
        self._cluster = client
        self.pause = time.sleep  # (a test's hook)
        self._links: dict[str, RedisLink] = {}  # node name -> its link
        self._lock = threading.Lock()

    def run(self, commands: Sequence[Command], *, raise_errors: bool = True) -> list[Any]:
        """As `RedisLink.run`, over the nodes that serve the commands' slots."""
        replies: list[Any] = [None] * len(commands)
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        for index, command in enumerate(commands):
            node = self._node_of(command)
            groups.setdefault(node.name, (node, []))[1].append(index)
        for node, indices in groups.values():
            self._run_on(node, commands, indices, replies)
        if raise_errors:
            failure = next((r for r in replies if isinstance(r, redis.ResponseError)), None)
            if failure is not None:
                raise failure
        return replies

    def close(self) -> None:
        with self._lock:
            links, self._links = list(self._links.values()), {}
        for link in links:
            link.close()

    def _run_on(
        self,
        node: ClusterNode,
        commands: Sequence[Command],
        indices: list[int],
        replies: list[Any],
    ) -> None:
        answers = self._send(node, [commands[i] for i in indices])
        for index, answer in zip(indices, answers, strict=True):
            replies[index] = self._follow(commands[index], answer)

    def _follow(self, command: Command, reply: Any) -> Any:
        """The reply to `command` once it went where Redis redirected it, and was sent
        again while its slot was moving (TRYAGAIN: a multi-key command whose keys are
        split between the two nodes, until the move ends)."""
        redirects, waited, pause = 0, 0.0, 0.01
        while True:
            if isinstance(reply, AskError) and redirects < MAX_REDIRECTS:  # (and MOVED)
                redirects += 1
                reply = self._redirect(command, reply)
            elif isinstance(reply, TryAgainError) and waited < MIGRATION_WAIT_S:
                self.pause(pause)  # (the move is Redis's: nothing to wait on but time)
                waited, pause, redirects = waited + pause, min(pause * 2, 0.2), 0
                reply = self._send(self._node_of(command), [command])[0]
            else:
                return reply

    def _redirect(self, command: Command, error: AskError) -> Any:
        """Send `command` where `error` says; its reply (another redirection, perhaps)."""
        if isinstance(error, MovedError):
            self._cluster.nodes_manager.move_slot(error)
            return self._send(self._node_of(command), [command])[0]
        # ASK: the slot is migrating and the key is on its target already: ask there once.
        target = self._cluster.nodes_manager.get_node(host=error.host, port=error.port)
        if target is None:
            target = ClusterNode(error.host, error.port)  # type: ignore[no-untyped-call]
        return self._send(target, [("ASKING",), command])[1]

    def _send(self, node: ClusterNode, batch: list[Command]) -> list[Any]:
        try:
            return self._link(node).run(batch, raise_errors=False)
        except (redis.ConnectionError, redis.TimeoutError):
            self._relearn()  # a failover moved the slots elsewhere, perhaps
            raise

    def _node_of(self, command: Command) -> ClusterNode:
        key = command_key(command)
        try:
            if key is None:
                node: ClusterNode = self._cluster.get_default_node()  # type: ignore[no-untyped-call]
                return node
            return self._cluster.nodes_manager.get_node_from_slot(key_slot(key))
        except RedisClusterException as error:
            raise redis.ConnectionError(f"Redis Cluster unavailable: {error}") from error

    def _link(self, node: ClusterNode) -> RedisLink:
        with self._lock:
            link = self._links.get(node.name)
        if link is None:
            link = RedisLink(self._cluster.get_redis_connection(node), ReplicaWait.from_env())
            with self._lock:
                link = self._links.setdefault(node.name, link)
        return link

    def _relearn(self) -> None:
        # (Nothing answering now is the next batch's to find.)
        with contextlib.suppress(redis.RedisError, RedisClusterException):
            self._cluster.nodes_manager.initialize()


def _text(part: bytes | str | int) -> str:
    return part.decode() if isinstance(part, bytes) else str(part)

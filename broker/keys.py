"""Every Redis key cellfleet uses. No key string is built anywhere else.

Keys start with a prefix (`cf` unless a `Keys` is made with another), so that tenants
and test runs can share one Redis.

All keys of a session carry the session id as a Redis Cluster hash tag (`{session}`),
so one session lives in one slot and its Lua scripts may touch all of them.

| key                        | type   | writer                  | reader                   |
| -------------------------- | ------ | ----------------------- | ------------------------ |
| `cf:{S}:events`            | stream | session and cell actors | projector, CLI, replay   |
| `cf:{S}:meta`              | hash   | admit/shutdown scripts  | admit script, actors     |
| `cf:{S}:terminal`          | hash   | finish script           | finish script, projector |
| `cf:{S}:stored`            | hash   | finish script (merge)   | session actor (at open)  |
| `cf:{S}:projection:<name>` | hash   | projector runner        | projector runner, CLI    |
| `cf:sessions`              | zset   | session actor (open)    | CLI `events`             |
| `cf:{S}:tools`             | hash   | tool result script      | tool workers (dedupe)    |
| `cf:tools:{R.P}:calls`     | stream | host tool dispatchers   | tool workers of tools R  |
| `cf:tools:dead`            | stream | tool workers            | operators                |
| `cf:tools:cancel`          | pubsub | host tool dispatchers   | tool workers             |
| `cf:host:{H}:replies`      | stream | tool workers            | that host's dispatcher   |
| `cf:{S}:lease`             | string | its owner (lease script)| owners, clients          |
| `cf:workers`               | zset   | cell workers            | clients (placement), CLI |
| `cf:worker:{W}:info`       | hash   | that cell worker        | clients (placement), CLI |
| `cf:worker:{W}:sessions`   | set    | that cell worker        | CLI `fleet`              |
| `cf:fleet:watch`           | zset   | cell workers (beats)    | cell workers (takeover)  |
| `cf:worker:{W}:inbox`      | stream | fleet clients           | that cell worker         |
| `cf:client:{C}:answers`    | stream | cell workers            | that fleet client        |

Retention: a session's keys expire together a retention (7 days by default) after its
shutdown finished, or after its import; a projection's hash takes the events stream's
time to live when it is saved. `cf:sessions` indexes all sessions by opening time; a
listing drops the sessions whose keys expired.
`meta` fields: `next_cell` (last admitted cell id), `shutdown` ("1" once begun),
`finished` ("1" once the shutdown finished), `fence` (the latest fencing token),
`replies` (the tool replies stream of the session's latest owner: outcomes go there),
`open:<id>` ("1" from a cell's end until its `cell_closed`: a new owner gives its answer),
`live` (cells admitted and not ended), `fleet` (the open request of the fleet worker that
serves it, with its clients: another worker takes it over from there),
`stored_version` (merges into `stored` so far), `cell:<id>` ("<exec call id> <token>"
of an admitted cell; a retried admission is recognised by its random token).
`terminal` maps a cell id to `completed` or `terminated`. `stored` maps a stored key to
its JSON text. A projection hash holds `position` (last stream id folded) and `state`.
`lease` holds "<owner> <fencing token>" of the process that serves the session, with
a time to live that its owner renews (`broker/leases.py`); `meta`'s `fence` is the
latest token, and every write of an owner checks it. `workers` maps a live cell worker
to nothing (a list); its `info` (capacity, sessions, draining), `sessions` and `inbox`
expire unless its heartbeat renews them; a client's `answers` expire when it stops refreshing them.
`tools` maps a tool call (`cell/tool-N`, `tool_call_field`) to the reply its host was
sent once its outcome is recorded, or to `cancelled`. Tool calls are read by the
consumer group `workers`; a host's replies stream is trimmed by that host.
The calls of one set of tools are spread over `TOOL_CALL_PARTITIONS` streams (`P`, by
session), so that on a Redis Cluster no one slot carries every call of the fleet; the
other shared streams belong to one process each (a host, a worker, a client).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

DEFAULT_PREFIX = "cf"
TOOL_WORKERS_GROUP = "workers"  # the consumer group of tool workers on the calls stream
TOOL_CALL_PARTITIONS = 4  # calls streams per set of tools (each read by every tool worker)


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one installation; `prefix` lets tenants and test runs share a Redis."""

    prefix: str = DEFAULT_PREFIX

    @property
    def sessions(self) -> str:
        return f"{self.prefix}:sessions"

    def tool_calls(self, registry: str, partition: int) -> str:
        """One calls stream of one set of tools (`ToolRegistry.fingerprint`)."""
        return f"{self.prefix}:tools:{{{registry}.{partition}}}:calls"

    def tool_call_streams(self, registry: str) -> tuple[str, ...]:
        """Every calls stream of one set of tools, by partition."""
        return tuple(self.tool_calls(registry, p) for p in range(TOOL_CALL_PARTITIONS))

    @property
    def tool_dead_letters(self) -> str:
        return f"{self.prefix}:tools:dead"

    @property
    def tool_cancel_channel(self) -> str:
        return f"{self.prefix}:tools:cancel"

    def host_replies(self, host: str) -> str:
        """The stream through which tool workers answer one host's calls."""
        return f"{self.prefix}:host:{{{host}}}:replies"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def fleet_watch(self) -> str:
        """The sessions cell workers serve, each by when its worker must have beaten
        again: one past that is taken over by another worker (`ops/worker.py`)."""
        return f"{self.prefix}:fleet:watch"

    def worker_info(self, worker: str) -> str:
        return f"{self.prefix}:worker:{{{worker}}}:info"

    def worker_sessions(self, worker: str) -> str:
        return f"{self.prefix}:worker:{{{worker}}}:sessions"

    def worker_inbox(self, worker: str) -> str:
        """The stream of requests for one cell worker (of the sessions it serves)."""
        return f"{self.prefix}:worker:{{{worker}}}:inbox"

    def client_answers(self, client: str) -> str:
        """The stream through which cell workers answer one fleet client."""
        return f"{self.prefix}:client:{{{client}}}:answers"

    def session(self, session: str) -> SessionKeys:
        return SessionKeys(session, self.prefix)


DEFAULT_KEYS = Keys()


def tool_call_partition(session: str) -> int:
    """Which calls stream carries a session's tool calls (the same in every process)."""
    return zlib.crc32(session.encode()) % TOOL_CALL_PARTITIONS


def tool_call_field(cell: str, call_id: str) -> str:
    """A nested tool call's field in its session's `tools` hash (`cell/tool-N`)."""
    return f"{cell}/{call_id}"


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The keys of one session."""

    session: str
    prefix: str = DEFAULT_PREFIX

    @property
    def _base(self) -> str:
        return f"{self.prefix}:{{{self.session}}}"

    @property
    def events(self) -> str:
        return f"{self._base}:events"

    @property
    def meta(self) -> str:
        return f"{self._base}:meta"

    @property
    def terminal(self) -> str:
        return f"{self._base}:terminal"

    @property
    def stored(self) -> str:
        return f"{self._base}:stored"

    @property
    def tools(self) -> str:
        return f"{self._base}:tools"

    @property
    def lease(self) -> str:
        return f"{self._base}:lease"

    def projection(self, name: str) -> str:
        return f"{self._base}:projection:{name}"

    @property
    def retired_together(self) -> tuple[str, ...]:
        """The keys that expire together when the session is done (its projections take
        the events stream's time to live when they are saved)."""
        return (self.events, self.meta, self.terminal, self.stored, self.tools)

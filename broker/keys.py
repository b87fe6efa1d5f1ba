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
| `cf:tools:{R}:calls`       | stream | host tool dispatchers   | tool workers of tools R  |
| `cf:tools:dead`            | stream | tool workers            | operators                |
| `cf:tools:cancel`          | pubsub | host tool dispatchers   | tool workers             |
| `cf:host:{H}:replies`      | stream | tool workers            | that host's dispatcher   |

Retention: a session's keys expire together a retention (7 days by default) after its
shutdown finished, or after its import; a projection's hash takes the events stream's
time to live when it is saved. `cf:sessions` indexes all sessions by opening time; a
listing drops the sessions whose keys expired.
`meta` fields: `next_cell` (last admitted cell id), `shutdown` ("1" once begun),
`stored_version` (merges into `stored` so far), `cell:<id>` ("<exec call id> <token>"
of an admitted cell; a retried admission is recognised by its random token).
`terminal` maps a cell id to `completed` or `terminated`. `stored` maps a stored key to
its JSON text. A projection hash holds `position` (last stream id folded) and `state`.
`tools` maps a tool call (`cell/tool-N`, `tool_call_field`) to the reply its host was
sent once its outcome is recorded, or to `cancelled`. Tool calls are read by the
consumer group `workers`; a host's replies stream is trimmed by that host.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "cf"
TOOL_WORKERS_GROUP = "workers"  # the consumer group of tool workers on the calls stream


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one installation; `prefix` lets tenants and test runs share a Redis."""

    prefix: str = DEFAULT_PREFIX

    @property
    def sessions(self) -> str:
        return f"{self.prefix}:sessions"

    def tool_calls(self, registry: str) -> str:
        """The calls stream of one set of tools (`ToolRegistry.fingerprint`)."""
        return f"{self.prefix}:tools:{{{registry}}}:calls"

    @property
    def tool_dead_letters(self) -> str:
        return f"{self.prefix}:tools:dead"

    @property
    def tool_cancel_channel(self) -> str:
        return f"{self.prefix}:tools:cancel"

    def host_replies(self, host: str) -> str:
        """The stream through which tool workers answer one host's calls."""
        return f"{self.prefix}:host:{{{host}}}:replies"

    def session(self, session: str) -> SessionKeys:
        return SessionKeys(session, self.prefix)


DEFAULT_KEYS = Keys()


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

    def projection(self, name: str) -> str:
        return f"{self._base}:projection:{name}"

    @property
    def retired_together(self) -> tuple[str, ...]:
        """The keys that expire together when the session is done (its projections take
        the events stream's time to live when they are saved)."""
        return (self.events, self.meta, self.terminal, self.stored, self.tools)

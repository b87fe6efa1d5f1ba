"""A context made ready for a cell: what the pool hands out and the runtime drives."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cellfleet.actors.runtime.mailbox import Mailbox
from cellfleet.actors.runtime.protocol import RuntimeTool
from cellfleet.actors.runtime.v8 import V8Context


@dataclass(slots=True)
class PreparedContext:
    """A context with the prelude installed and its log mapped, not yet used by a cell."""

    context: V8Context
    mailbox: Mailbox
    # The global (lexical) name of the prelude's host interface in this context: random,
    # so that the cell's code cannot name it (it could forge its inputs through it). In
    # a realm, where the cell's code cannot see the hub's names, its hub's name for it.
    host_name: str
    tools: tuple[RuntimeTool, ...] = ()  # the tool set installed ahead of time
    on_post: Callable[[], None] = field(default=lambda: None)
    warmed: bool = False  # its start and output paths ran once (`warm`)
    realm: bool = False  # a realm in a hub (hubs.py), not an isolate of its own
    stocked_at: float = 0.0  # (monotonic) when it went into the pool's stock
    # Collected in stock once already (`give_back_memory`): never again, for each
    # collection ages its compiled code, and enough of them would discard what warming
    # compiled (a cell recorded as warmed would then run as a cold one).
    given_back: bool = False

    def stocked(self) -> None:
        self.stocked_at = time.monotonic()

    def age(self) -> float:
        """Seconds since it went into the stock."""
        return time.monotonic() - self.stocked_at

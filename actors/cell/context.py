"""What a cell actor gets from its session: one `CellContext` per session."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

from cellfleet.actors.cell.facts import CellFacts
from cellfleet.actors.cell.log import FailedEnding
from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.actors.scheduler import Scheduler
from cellfleet.actors.session.store import SessionStore
from cellfleet.broker.contract.tools import ToolDefinition
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.tools.invocation import ToolDispatcher


@dataclass(frozen=True, slots=True)
class CellEnd:
    """How a cell ended, for its session."""

    existed: bool  # the log admitted it (else it never existed)
    untold: Exception | None = None  # a failure nobody observed: for the next wait
    unrecorded: FailedEnding | None = None  # a failed cell's end the log has yet to take


@dataclass(frozen=True, slots=True, kw_only=True)
class CellContext:
    """Everything a cell actor needs from its session."""

    session_id: str
    journal: RedisJournal
    store: SessionStore
    pool: ContextPool
    scheduler: Scheduler
    dispatcher: ToolDispatcher
    memory_limit_bytes: int  # of each cell's heap
    tools: Mapping[str, ToolDefinition]  # JS global name -> definition
    notify: Callable[[str, str, str, int], None]  # (exec call id, cell, text, notification id)
    notifier: Executor  # where notifications are handed to `notify`
    on_closed: Callable[[str, CellEnd], None]  # (cell id, how it ended)
    clock: Callable[[], float]
    # Told each closed cell's final facts (cell id, facts): tests check them against
    # the cell's events in the log.
    audit: Callable[[str, CellFacts], None] | None = None

"""Ready-to-run V8 contexts: created ahead of time, used once, disposed off the hot path.

A cell never shares a context with another cell. Creating one (isolate, context,
prelude) costs milliseconds, so a bounded pool keeps a few prepared in a background
thread; disposal, which also blocks for milliseconds, happens on a reaper thread.
Contexts are prepared with the tool set of the most recent cell already installed,
since a session's cells usually share one; a cell with another tool set installs its
own at start. A full, idle stock is then warmed (its start and output paths run once,
so V8 compiled them before a cell's clock starts); under load there is no idle time,
and warming a context that a cell takes at once would cost more than it saves.
"""

from __future__ import annotations

import functools
import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from cellfleet.actors.runtime import snapshot
from cellfleet.actors.runtime import source as src
from cellfleet.actors.runtime.mailbox import MAX_STRING_UNITS, Mailbox
from cellfleet.actors.runtime.prelude import context_script, prelude_digest
from cellfleet.actors.runtime.protocol import RuntimeTool, tools_payload
from cellfleet.actors.runtime.v8 import V8Context, v8_flags, v8_version

log = logging.getLogger(__name__)

DEFAULT_MEMORY_LIMIT_BYTES = 256 * 1024 * 1024


# Background work waits this long after a cell took a context, so that refilling and
# disposal do not compete with the cell that just started for the machine's cores.
BACKGROUND_DELAY_S = 0.005
FILLER_JOIN_S = 5.0  # how long `close` waits for a context being prepared
CLOSE_FREE_WAIT_S = 10.0  # ... and for the contexts disposed of to be freed


@dataclass(slots=True)
class PreparedContext:
    """A context with the prelude installed and its log mapped, not yet used by a cell."""

    context: V8Context
    mailbox: Mailbox
    # The global (lexical) name of the prelude's host interface in this context: random,
    # so that the cell's code cannot name it (it could forge its inputs through it).
    host_name: str
    tools: tuple[RuntimeTool, ...] = ()  # the tool set installed ahead of time
    on_post: Callable[[], None] = field(default=lambda: None)
    warmed: bool = False  # its start and output paths ran once (`warm`)


@functools.cache
def runtime_identity() -> str:
    """What runs cells here, as recorded with each cell: V8's version and flags and the
    prelude's digest (a cell replays exactly only where all are the same: `--no-lazy`,
    say, moves where a deep recursion overflows), and whether contexts come from the
    prelude's snapshot (the same behaviour, told in case it is not)."""
    version = v8_version()  # (starts V8: the snapshot is in use from then on, or never)
    how = " from a snapshot" if snapshot.in_use() else ""
    return f"V8 {version} ({v8_flags()}), prelude {prelude_digest()}{how}"


def prepare_context(
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES, tools: tuple[RuntimeTool, ...] = ()
) -> PreparedContext:
    """Create an isolate, install the prelude and `tools`, map its log (blocks ~5 ms;
    four crossings to the isolate's thread)."""
    context = V8Context(memory_limit_bytes=memory_limit_bytes)
    try:
        owner: list[PreparedContext] = []

        # JS calls post() with the log to drain; route it to whoever owns the context now
        # (looked up at call time: the owner changes when a cell takes the context).
        def post_hook() -> None:
            if owner:
                owner[0].on_post()

        context.set_global("__cellfleet_post", context.make_post_function(post_hook))
        host_name = f"__cellfleet_host_{secrets.token_hex(16)}"
        names = orjson.dumps(orjson.dumps(tools_payload(tools)).decode()) if tools else b"null"
        script = context_script(host_name, names.decode(), from_snapshot=snapshot.in_use())
        buffer = context.eval_sync(script)  # (its value: the log's buffer)
        # A string as long as the heap limit (in one-byte characters) is the most a
        # record or a key can be.
        mailbox = Mailbox(buffer, memory_limit_bytes or MAX_STRING_UNITS)
        context.keep(src.MARKER)  # (each input's; a cell's first would pay for it)
        context.keep(src.take_script(host_name))
        owner.append(PreparedContext(context, mailbox, host_name, tools))
    except BaseException:
        context.dispose()
        raise
    return owner[0]


def warm(prepared: PreparedContext) -> None:
    """Run the context's start and output paths once (blocks ~1 ms), leaving no trace."""
    prepared.context.eval_sync(f"{prepared.host_name}.warm(); 0")
    prepared.mailbox.drain_into(_discard, reset=True)
    prepared.warmed = True


def _discard(records: list[list[Any]]) -> None:
    del records


class ContextPool:
    """A bounded stock of prepared contexts, refilled by a background thread."""

    def __init__(
        self, size: int = 2, *, memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES
    ) -> None:
        self.size = size
        self.memory_limit_bytes = memory_limit_bytes
        self._ready: deque[PreparedContext] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._tools: tuple[RuntimeTool, ...] = ()  # what the next cells are expected to use
        self._graveyard: queue.SimpleQueue[tuple[V8Context, bool] | None] = queue.SimpleQueue()
        self._disposing = 0  # contexts released and not yet freed
        self._filler = threading.Thread(target=self._fill, name="v8-pool", daemon=True)
        self._reaper = threading.Thread(target=self._reap, name="v8-reaper", daemon=True)
        if size > 0:
            self._filler.start()
        self._reaper.start()

    def acquire(
        self, tools: Sequence[RuntimeTool] = (), *, warmed: bool | None = None
    ) -> PreparedContext:
        """A prepared context (from the stock if one is ready, else made now: cold).

        `tools` is the cell's tool set; the pool prepares the next contexts with it.
        `warmed`: a context warmed (or not) exactly so (a replayed cell starts from what
        its record says: warming changes how deep its stack can go).
        """
        wanted = tuple(tools)
        with self._cond:
            if wanted != self._tools:
                self._tools = wanted
                # Stock made for another tool set still works, it just installs at start.
            for prepared in self._ready:
                if warmed is None or prepared.warmed == warmed:
                    self._ready.remove(prepared)
                    self._cond.notify()
                    return prepared
        prepared = prepare_context(self.memory_limit_bytes)
        if warmed:
            warm(prepared)
        return prepared

    def release(self, context: V8Context, *, at_once: bool = False) -> None:
        """Dispose a used context in the background; its JavaScript ends now (a cell
        terminated while allocating would otherwise allocate until its turn comes).
        `at_once`: its cell's owner is done with it (else disposal waits a moment)."""
        context.stop_javascript()
        with self._cond:  # (reentrant: also called with it held)
            self._disposing += 1
        self._graveyard.put((context, at_once))

    def wait_ready(self, count: int, timeout: float = 30.0) -> bool:
        """Block until `count` warmed contexts are in stock (for benchmarks and tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._warmed() >= count, timeout)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until the stock is full and warmed and every released context is
        disposed, i.e. the pool has no background work left (for benchmarks)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._warmed() >= self.size and not self._disposing, timeout
            )

    def _warmed(self) -> int:
        return sum(prepared.warmed for prepared in self._ready)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._filler.is_alive():  # (what it prepares meanwhile goes to the reaper)
            self._filler.join(FILLER_JOIN_S)
        with self._cond:
            stock = list(self._ready)
            self._ready.clear()
        for prepared in stock:
            self.release(prepared.context)
        self._graveyard.put(None)
        self._reaper.join()
        with self._cond:  # (every context freed, as when it was disposed of)
            if not self._cond.wait_for(lambda: not self._disposing, CLOSE_FREE_WAIT_S):
                log.warning("%d V8 contexts were not freed in time", self._disposing)

    def _fill(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closed or len(self._ready) < self.size or self._cold()
                )
                if self._closed:
                    return
                tools = self._tools
                delay = BACKGROUND_DELAY_S if self._ready else 0.0
                cold = self._cold() if len(self._ready) >= self.size else None
                if cold is not None:
                    self._ready.remove(cold)
            time.sleep(delay)  # let the cell that just took a context run first
            if cold is not None:
                try:
                    warm(cold)
                except Exception:  # (never expected) it is not stocked again
                    log.exception("could not warm a V8 context")
                    self.release(cold.context)
                    continue
                prepared = cold
            else:
                try:
                    prepared = prepare_context(self.memory_limit_bytes, tools)
                except Exception:
                    log.exception("could not prepare a V8 context")
                    return
            with self._cond:
                if self._closed:
                    self.release(prepared.context)
                    return
                self._ready.append(prepared)
                self._cond.notify_all()

    def _cold(self) -> PreparedContext | None:
        """A stocked context not yet warmed, if the stock is full (no cell waits)."""
        if len(self._ready) < self.size:
            return None
        return next((prepared for prepared in self._ready if not prepared.warmed), None)

    def _reap(self) -> None:
        while (released := self._graveyard.get()) is not None:
            context, at_once = released
            if not at_once and self._graveyard.empty():  # let the cell's owner finish first
                time.sleep(BACKGROUND_DELAY_S)
            try:
                context.dispose()
            except Exception:
                log.exception("could not dispose a V8 context")
                self._freed_one()
            else:  # (at once, or once its thread gave back its Python thread state)
                context.when_freed(self._freed_one)
            del context, released  # (its cell's state must not live on while we wait)

    def _freed_one(self) -> None:
        with self._cond:
            self._disposing -= 1
            self._cond.notify_all()

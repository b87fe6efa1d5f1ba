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
import math
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from cellfleet.actors.runtime import allocator, snapshot
from cellfleet.actors.runtime import source as src
from cellfleet.actors.runtime.hubs import Hub, make_realm, make_realm_now, new_hub, realm_suits
from cellfleet.actors.runtime.mailbox import MAX_STRING_UNITS, Mailbox
from cellfleet.actors.runtime.prelude import context_script, prelude_digest
from cellfleet.actors.runtime.prepared import PreparedContext
from cellfleet.actors.runtime.protocol import RuntimeTool, tools_literal
from cellfleet.actors.runtime.v8 import V8Context, realms_enabled, v8_flags, v8_version

log = logging.getLogger(__name__)

DEFAULT_MEMORY_LIMIT_BYTES = 256 * 1024 * 1024


# Background work waits this long after a cell took a context, so that refilling and
# disposal do not compete with the cell that just started for the machine's cores.
BACKGROUND_DELAY_S = 0.005
FILLER_JOIN_S = 5.0  # how long `close` waits for a context being prepared
CLOSE_FREE_WAIT_S = 10.0  # ... and for the contexts disposed of to be freed
# Hubs back from their cells go into the stock, past its size: up to `MAX_STOCK`, each
# disposed of once no cell took it for `STOCK_IDLE_S`. The stock is warmed only once no
# cell took a context for `WARM_AFTER_S`; once none took one for `STOCK_IDLE_S`, the pool
# gives back the memory it no longer needs (`give_back_memory`).
MAX_STOCK = 64
RECYCLED_WAIT_S = 0.05  # a cell finding no stock waits this long for a hub coming back
# A hub back from its cell makes its next realm `RECYCLE_DELAY_S` later ("parked"
# meanwhile) when the stock holds `SPARE_REALMS` others for the cells to come: made at
# once, on the hub's thread right after the cell's answer, the realm (about 0.5 ms of
# CPU) competes for the cores with whoever reads that answer (a harness reads it in
# 0.1-0.3 ms here). Made before the cell's close goes out (`BACKGROUND_DELAY_S` after
# the answer), so that a harness that waits for it finds the hub ready. With fewer in
# stock (under load) it is made at once, and a cell that finds no stock has a parked
# hub's made now.
RECYCLE_DELAY_S = 0.002
SPARE_REALMS = 2
STOCK_IDLE_S = 2.0
WARM_AFTER_S = 0.05


@functools.cache
def runtime_identity() -> str:
    """What runs cells here, as recorded with each cell: V8's version and flags and the
    prelude's digest (a cell replays exactly only where all are the same: `--no-lazy`,
    say, moves where a deep recursion overflows), and whether contexts come from the
    prelude's snapshot (the same behaviour, told in case it is not), and whether cells
    may run in hubs' realms (hubs.py)."""
    version = v8_version()  # (starts V8: the snapshot is in use from then on, or never)
    where = ", cells in realms" if realms_enabled() else ""
    how = " from a snapshot" if snapshot.in_use() else ""
    return f"V8 {version} ({v8_flags()}){where}, prelude {prelude_digest()}{how}"


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
        script = context_script(host_name, tools_literal(tools), from_snapshot=snapshot.in_use())
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
        self,
        size: int = 2,
        *,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
        realms: bool | None = None,
    ) -> None:
        """`realms`: whether cells may run in hubs' realms (None: wherever V8 can)."""
        self.size = size
        self.memory_limit_bytes = memory_limit_bytes
        self._ready: deque[PreparedContext] = deque()
        lock = threading.RLock()
        self._cond = threading.Condition(lock)  # the stock changed
        # The filler's own: woken only when the stock fell below its size (a cell took
        # one, a hub was freed) or the pool closed, not by every cell's comings and goings.
        self._stock_low = threading.Condition(lock)
        self._closed = False
        self._tools: tuple[RuntimeTool, ...] = ()  # what the next cells are expected to use
        self._graveyard: queue.SimpleQueue[tuple[V8Context, bool] | None] = queue.SimpleQueue()
        self._disposing = 0  # contexts released and not yet freed
        self._realms = realms_enabled() if realms is None else realms and realms_enabled()
        self._hubs: dict[V8Context, Hub] = {}  # every hub alive, by its context
        self._recycling = 0  # hubs making their next realm
        self._parked: deque[tuple[float, Hub]] = deque()  # (when due, hub), due first
        self._filler_wakes = 0.0  # (monotonic) when the waiting filler wakes (0: busy)
        self._acquired_at = 0.0  # (monotonic) when a cell last took a context
        self._busy_at = 0.0  # ... or a hub came back from its cell, or one was freed
        self._gave_back_at = 0.0  # `_busy_at` as it was when the pool last gave back
        self._filler = threading.Thread(target=self._fill, name="v8-pool", daemon=True)
        self._reaper = threading.Thread(target=self._reap, name="v8-reaper", daemon=True)
        if size > 0:
            self._filler.start()
        self._reaper.start()

    def acquire(
        self, tools: Sequence[RuntimeTool] = (), *, warmed: bool | None = None, source: str = ""
    ) -> PreparedContext:
        """A prepared context (from the stock if one is ready, else made now: cold).

        `tools` is the cell's tool set; the pool prepares the next contexts with it.
        `warmed`: a context warmed (or not) exactly so (a replayed cell starts from what
        its record says: warming changes how deep its stack can go).
        `source`: the cell's code, which decides whether a realm suits it (hubs.py).
        """
        wanted = tuple(tools)
        realm = self._realms and realm_suits(source)
        with self._cond:
            if wanted != self._tools:
                self._tools = wanted
                # Stock made for another tool set still works, it just installs at start.
            self._acquired_at = self._busy_at = deadline = time.monotonic()
            deadline += RECYCLED_WAIT_S
            while True:
                # (the oldest first: under a steady load each hub is used in turn, and
                # only a stock the load no longer needs ages, and goes: `_trim`)
                for prepared in self._ready:
                    if (warmed is None or prepared.warmed == warmed) and prepared.realm == realm:
                        self._ready.remove(prepared)
                        self._note_taken()
                        return prepared
                # A hub about to be back beats a new one (made now: ~3 ms, and kept).
                if realm and not warmed and self._parked and not self._recycling:
                    self._unpark(self._parked.popleft()[1])
                remaining = deadline - time.monotonic()
                if not (realm and not warmed and self._recycling and remaining > 0):
                    break
                self._cond.wait(remaining)
        prepared = self._prepare((), realm=realm)
        if warmed:
            warm(prepared)
        return prepared

    def release(self, context: V8Context, *, at_once: bool = False) -> None:
        """Take back a used context. A hub whose cell ended cleanly makes its next
        realm (at once, or parked until `RECYCLE_DELAY_S` later) and goes back into the
        stock; any other context is disposed of in the background, its JavaScript ended
        now (a cell terminated while allocating would otherwise allocate until its turn
        comes). `at_once`: its cell's owner is done with it (else disposal waits a
        moment)."""
        with self._cond:  # (reentrant: also called with it held)
            hub = self._hubs.get(context)
            reuse = (
                hub is not None and context.done_cleanly and not hub.used_up()
                and not self._closed and context.idle()
            )  # fmt: skip
            context.done_cleanly = False
            if reuse and self._may_park():
                assert hub is not None
                hub.current = None  # (its last cell's: not kept alive meanwhile)
                due = time.monotonic() + RECYCLE_DELAY_S
                self._parked.append((due, hub))
                if self._filler_wakes > due:  # (waiting longer: it must look again)
                    self._stock_low.notify()
                return
            if reuse:
                self._recycling += 1
            else:
                self._hubs.pop(context, None)
                self._disposing += 1
        if reuse:
            assert hub is not None
            make_realm(hub, self._tools, functools.partial(self._recycled, hub))
            return
        context.stop_javascript()
        self._graveyard.put((context, at_once))

    def _may_park(self) -> bool:
        """(Lock held.) Whether a hub back from its cell may make its next realm later:
        the stock is full and holds enough realms meanwhile, and the filler, which makes
        it, waits for work (it does not refill the stock)."""
        if len(self._ready) < self.size or self._closed or not self._filler.is_alive():
            return False
        return sum(1 for prepared in self._ready if prepared.realm) >= SPARE_REALMS

    def _unpark(self, hub: Hub) -> None:
        """(Lock held.) A parked hub makes its next realm now."""
        self._recycling += 1
        try:
            make_realm(hub, self._tools, functools.partial(self._recycled, hub))
        except Exception:  # (never expected) freed instead
            log.exception("could not make a parked hub's next realm")
            self._recycling -= 1
            self.release(hub.context, at_once=True)

    def _unpark_due(self, by: float | None = None) -> None:
        """(Lock held.) The parked hubs due by `by` (default: now) make their next realm."""
        by = time.monotonic() if by is None else by
        while self._parked and self._parked[0][0] <= by:
            self._unpark(self._parked.popleft()[1])

    def _coming(self) -> int:
        """(Lock held.) Hubs that will be back in stock: making a realm, or parked."""
        return self._recycling + len(self._parked)

    def _recycled(self, hub: Hub, prepared: PreparedContext | None) -> None:
        """(On the hub's isolate thread.) Its next realm made, or None: freed instead."""
        with self._cond:
            self._recycling -= 1
            keep = prepared is not None and not self._closed and len(self._ready) < MAX_STOCK
            if keep:
                assert prepared is not None
                prepared.stocked()
                self._ready.append(prepared)
                self._busy_at = prepared.stocked_at  # (with its last cell's garbage)
            else:
                self._note_taken()
            self._cond.notify_all()
        if not keep:
            self.release(hub.context, at_once=True)

    def wait_ready(self, count: int, timeout: float = 30.0) -> bool:
        """Block until `count` warmed contexts are in stock (for benchmarks and tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._warmed() >= count, timeout)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until the stock is full and warmed and every released context is
        disposed, i.e. the pool has no background work left (for benchmarks)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._warmed() >= self.size and not self._disposing and not self._coming(),
                timeout,
            )

    def _warmed(self) -> int:
        return sum(prepared.warmed for prepared in self._ready)

    def _note_taken(self) -> None:
        """(Lock held.) The stock lost one: wake the filler if it is short now."""
        if len(self._ready) + self._coming() < self.size:
            self._stock_low.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._stock_low.notify_all()
        if self._filler.is_alive():  # (what it prepares meanwhile goes to the reaper)
            self._filler.join(FILLER_JOIN_S)
        with self._cond:
            parked = [hub for _, hub in self._parked]
            self._parked.clear()
        for hub in parked:  # (closed: disposed of)
            self.release(hub.context, at_once=True)
        with self._cond:  # (hubs making a realm are then disposed of: `_recycled`)
            self._cond.wait_for(lambda: not self._recycling, CLOSE_FREE_WAIT_S)
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
        while (job := self._next_job()) is not None:
            if isinstance(job, str):  # "give back"
                try:
                    self.give_back_memory()
                except Exception:  # (never expected) the filler goes on
                    log.exception("could not give back the pool's idle memory")
                continue
            if isinstance(job, PreparedContext):
                time.sleep(BACKGROUND_DELAY_S)  # let the cell that just took one run first
                try:
                    warm(job)
                except Exception:  # (never expected) it is not stocked again
                    log.exception("could not warm a V8 context")
                    self.release(job.context)
                    continue
                prepared = job
            else:
                time.sleep(job)  # (as above, when a cell may have just taken one)
                try:
                    prepared = self._prepare(self._tools, realm=self._realms)
                except Exception:
                    log.exception("could not prepare a V8 context")
                    return
            with self._cond:
                if self._closed:
                    self.release(prepared.context)
                    return
                prepared.stocked()
                self._ready.append(prepared)
                self._cond.notify_all()

    def _next_job(self) -> PreparedContext | float | str | None:
        """Wait for the filler's next job: a stocked context to warm (taken out of the
        stock), "give back" (idle memory), a delay before it makes a context, or None
        (closed)."""
        with self._cond:
            # (a hub making its next realm will stock it: not made twice)
            while not self._closed and len(self._ready) + self._coming() >= self.size:
                self._unpark_due()
                cold = self._cold()
                if cold is not None:
                    self._ready.remove(cold)
                    return cold
                self._trim()
                if self._idle_long() and self._gave_back_at != self._busy_at:
                    self._gave_back_at = self._busy_at
                    return "give back"
                wait = self._next_check()
                self._filler_wakes = time.monotonic() + wait
                self._stock_low.wait(wait)
                self._filler_wakes = 0.0
            if self._closed:
                return None
            self._unpark_due(by=math.inf)  # (the stock is short: they are needed now)
            return BACKGROUND_DELAY_S if self._ready else 0.0

    def _prepare(self, tools: tuple[RuntimeTool, ...], *, realm: bool) -> PreparedContext:
        """A context made now: a realm in a new hub, or an isolate of its own."""
        if not realm:
            return prepare_context(self.memory_limit_bytes, tools)
        hub = new_hub(self.memory_limit_bytes)
        with self._cond:
            self._hubs[hub.context] = hub
        # (however it is disposed of: a replay disposes of its context itself)
        hub.context.when_freed(functools.partial(self._forget_hub, hub.context))
        try:
            prepared = make_realm_now(hub, tools)
        except BaseException:
            self.release(hub.context, at_once=True)
            raise
        if prepared is None:  # (never expected of a new hub)
            self.release(hub.context, at_once=True)
            raise RuntimeError("a new hub could not make a realm")
        return prepared

    def _forget_hub(self, context: V8Context) -> None:
        with self._cond:
            self._hubs.pop(context, None)

    def _cold(self) -> PreparedContext | None:
        """A stocked context not yet warmed, if the stock is full and no cell took one
        for `WARM_AFTER_S` (hubs back from their cells fill it under load too)."""
        if len(self._ready) < self.size or self._since_acquired() < WARM_AFTER_S:
            return None
        return next((prepared for prepared in self._ready if not prepared.warmed), None)

    def _since_acquired(self) -> float:
        return time.monotonic() - self._acquired_at

    def _trim(self) -> None:
        """Dispose of the stock beyond its size that no cell took for `STOCK_IDLE_S`
        (hubs back from their cells, more than the load now needs), oldest first."""
        while len(self._ready) > self.size and self._ready[0].age() > STOCK_IDLE_S:
            self.release(self._ready.popleft().context, at_once=True)

    def _idle_long(self) -> bool:
        return time.monotonic() - self._busy_at >= STOCK_IDLE_S

    def give_back_memory(self) -> int:
        """Return what the pool holds and no longer needs: a full collection in each
        stocked context not collected yet (a hub's heap holds its past realms' garbage),
        one at a time and out of the stock meanwhile, then the C allocator's free
        memory. The pool does it itself once no cell took a context and no hub came
        back for `STOCK_IDLE_S`. Returns the heap bytes the collections freed."""
        freed = 0
        with self._cond:
            stocked = [prepared for prepared in self._ready if not prepared.given_back]
        for prepared in stocked:
            with self._cond:  # (a cell took it, or another give-back collects it)
                if self._closed or prepared.given_back or prepared not in self._ready:
                    continue
                self._ready.remove(prepared)
                prepared.given_back = True
                self._recycling += 1  # (a cell that wants a hub waits a moment for it)
            try:
                freed += prepared.context.release_memory()
            except BaseException:
                prepared.given_back = False
                raise
            finally:
                with self._cond:
                    self._recycling -= 1
                    self._restock(prepared)
                    self._cond.notify_all()
        allocator.give_back_free_memory()
        return freed

    def _restock(self, prepared: PreparedContext) -> None:
        """(Lock held.) Put `prepared` back where its age puts it (oldest first)."""
        index = next(
            (i for i, other in enumerate(self._ready) if other.stocked_at > prepared.stocked_at),
            len(self._ready),
        )
        self._ready.insert(index, prepared)

    def _next_check(self) -> float:
        """How long the filler may wait before it has something to trim, warm or give
        back (at most `STOCK_IDLE_S`: the stock may outgrow its size meanwhile)."""
        waits = [STOCK_IDLE_S]
        if self._parked:
            waits.append(self._parked[0][0] - time.monotonic())
        if self._gave_back_at != self._busy_at:
            waits.append(STOCK_IDLE_S - (time.monotonic() - self._busy_at))
        if len(self._ready) > self.size:
            waits.append(STOCK_IDLE_S - self._ready[0].age())
        if len(self._ready) >= self.size and not all(p.warmed for p in self._ready):
            waits.append(WARM_AFTER_S - self._since_acquired())
        return max(0.0, min(waits)) + 0.001

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
            self._busy_at = time.monotonic()  # (what the allocator then holds: given back)
            self._disposing -= 1
            self._cond.notify_all()

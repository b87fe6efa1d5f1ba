"""Hubs: isolates that run their cells one after another, each in a realm of its own.

A hub is a V8 isolate whose own context runs only the hub's script (prelude.py); each
cell gets a new context in it, a realm (realms.py), with the prelude installed as in a
fresh isolate's context. A hub whose cell ended on its own (its JavaScript done, none
of it left queued) makes its next realm at once and goes back into the pool's stock;
any other end (terminated, out of memory, a limit of the host's) frees the isolate as
before.

What a cell could leave behind in its hub is bounded: its realm's objects are garbage
once the next realm replaces it (the hub keeps one host interface at a time, and
collects every `COLLECT_EVERY` realms), and a hub is freed when its heap holds more
than `STALE_HEAP_FRACTION` of the memory limit after its cell (so a cell never starts
with much of another's garbage counted against its limit) or after `MAX_REALMS` cells.
A cell that registers a finalizer (which V8 may run at any later time) has its hub
freed. Code whose answer could tell a realm from a fresh isolate gets a fresh isolate
instead (`realm_suits`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from cellfleet.actors.runtime import snapshot
from cellfleet.actors.runtime import source as src
from cellfleet.actors.runtime.mailbox import MAX_STRING_UNITS, Mailbox
from cellfleet.actors.runtime.prelude import REALMS, hub_script, realm_script
from cellfleet.actors.runtime.prepared import PreparedContext
from cellfleet.actors.runtime.protocol import RuntimeTool, tools_literal
from cellfleet.actors.runtime.v8 import EvalOutcome, V8Context

MAX_REALMS = 256  # cells per hub; then its isolate is freed
# A hub's heap grows ~110 KB per realm, too slowly for V8 to collect the dead ones by
# itself: a full collection every `COLLECT_EVERY` realms (~1.5 ms) keeps it under 2 MB.
COLLECT_EVERY = 16
STALE_HEAP_FRACTION = 8  # a hub holding more than limit/8 after its cell is freed
# Code that gets a fresh isolate, for its answer's sake: `eval` and `Function` (a realm's
# stack traces name their frames by the realm's own `eval`), a stack hook of its own
# (it would see the frames as V8 gives them), and `import` (a realm's host hooks). Code
# that reaches them without naming them runs in a realm all the same: only its frames
# may then read differently (and V8 refuses CallSite's `getThis` and `getFunction` in a
# realm, which would reach the hub's frames). What a cell could leave running in its
# hub (a finalizer) is told by the cell itself (the prelude's FINALIZER record), and its
# hub is then freed. (Whole words: "retrieval" or "important" say nothing of the kind.)
_FRESH_ISOLATE = re.compile(r"\b(?:eval|Function|prepareStackTrace|import)\b")


def realm_suits(source: str) -> bool:
    """Whether a cell of `source` may run in a hub's realm (else: a fresh isolate)."""
    return _FRESH_ISOLATE.search(source) is None


@dataclass(eq=False, slots=True)
class Hub:
    """An isolate that makes realms; its `post()` reaches its current realm's owner."""

    context: V8Context
    memory_limit_bytes: int
    realms: int = 0  # made so far
    enabled: bool = False  # its isolate makes realms
    current: PreparedContext | None = None  # its realm's (`post()` reaches its owner)

    def post(self) -> None:
        """(On the isolate's thread, JavaScript waiting.)"""
        if not self.enabled:  # the hub script's first call
            self.context.enable_realms()
            self.enabled = True
            return
        if self.current is not None:
            self.current.on_post()

    def used_up(self) -> bool:
        return self.realms >= MAX_REALMS


def new_hub(memory_limit_bytes: int) -> Hub:
    """A fresh isolate made a hub (blocks ~3 ms)."""
    context = V8Context(memory_limit_bytes=memory_limit_bytes)
    try:
        hub = Hub(context, memory_limit_bytes)
        context.set_global("__cellfleet_post", context.make_post_function(hub.post))
        context.eval_sync(hub_script())
    except BaseException:
        context.dispose()
        raise
    return hub


def make_realm(
    hub: Hub, tools: tuple[RuntimeTool, ...], done: Callable[[PreparedContext | None], None]
) -> None:
    """Queue a new realm in `hub` (idle: nothing of its last cell left); `done` gets,
    on the isolate's thread, the realm prepared, or None if the hub should be freed
    instead (its heap holds too much, or the realm could not be made; None at once, on
    this thread, if the hub's context was disposed of)."""
    context = hub.context
    hub.realms += 1
    name = f"r{hub.realms}"
    host_name = f"{REALMS}.{name}"  # (a name per realm: its scripts compile afresh)
    script = realm_script(name, tools_literal(tools), from_snapshot=snapshot.in_use())
    hub.current = None  # (the prelude's first `post()`, and any of the last realm's)
    context.forget_kept()  # the last realm's scripts
    if context.memory_limit_bytes != hub.memory_limit_bytes:  # (its last cell's own)
        context.set_memory_limit(hub.memory_limit_bytes)
    limit = hub.memory_limit_bytes

    def on_result(outcome: EvalOutcome) -> None:  # the isolate's thread, JS idle
        if hub.realms % COLLECT_EVERY == 0:  # (its dead realms: V8 would leave them)
            context.collect_garbage()
        stale = limit // STALE_HEAP_FRACTION if limit else None
        if not outcome.ok or (
            stale is not None
            and (context.heap_used_bytes() > stale or context.external_memory_bytes() > stale)
        ):
            done(None)
            return
        mailbox = Mailbox(outcome.value, limit or MAX_STRING_UNITS)
        context.keep(src.MARKER)
        context.keep(src.take_script(host_name))
        hub.current = PreparedContext(context, mailbox, host_name, tools, realm=True)
        done(hub.current)

    if not context.eval_async(script, on_result):  # (disposed of meanwhile)
        done(None)


def make_realm_now(hub: Hub, tools: tuple[RuntimeTool, ...]) -> PreparedContext | None:
    """`make_realm`, waiting for it (never on the hub's isolate thread)."""
    made = threading.Event()
    box: list[PreparedContext | None] = []

    def done(prepared: PreparedContext | None) -> None:
        box.append(prepared)
        made.set()

    make_realm(hub, tools, done)
    if not made.wait(30.0):
        raise TimeoutError("V8 did not make a realm")
    return box[0]

"""What cellfleet's actors share on top of pykka's threading actor."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import pykka
from pykka._envelope import Envelope  # (pykka 4 internals: pinned below 5)

_pykka_log = logging.getLogger("pykka")
# The most messages a thread handles for an actor after its own (`tell_here`): it may
# have its own work waiting (the frames of a connection, say).
MAX_DRAINED = 4


class _ActorThreads:
    """Daemon threads that each run one actor's loop at a time and then wait, up to
    `IDLE_S`, for the next actor's: an actor lives as long as its cell, and starting a
    thread (and ending it) for each cell cost about as much as a short cell's own work
    in Python. Each thread is named after the actor it runs, as pykka names its own."""

    IDLE_S = 30.0

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # (a child has none of them)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[tuple[Callable[[], None], str]]] = []

    def run(self, loop: Callable[[], None], name: str) -> None:
        """Run `loop` on an idle thread, or on a new one."""
        with self._lock:
            jobs = self._idle.pop() if self._idle else None
        if jobs is None:  # (the job goes through the queue: a thread's arguments would
            # hold its first actor for as long as the thread lives)
            jobs = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(jobs,), name=name, daemon=True).start()
        jobs.put((loop, name))

    def _serve(self, jobs: queue.SimpleQueue[tuple[Callable[[], None], str]]) -> None:
        thread = threading.current_thread()
        loop, name = jobs.get()
        while True:
            thread.name = name
            try:
                loop()
            except BaseException:  # (pykka's loop handles its own: never expected)
                _pykka_log.exception("an actor's loop failed")
            del loop  # (the actor must not live on while this thread waits)
            with self._lock:
                self._idle.append(jobs)
            thread.name = "actor-idle"  # (until its next job: named after it)
            try:
                loop, name = jobs.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    if jobs in self._idle:  # (else taken meanwhile: its job comes)
                        self._idle.remove(jobs)
                        return
                loop, name = jobs.get()


_ACTOR_THREADS = _ActorThreads()
_actor_numbers = itertools.count(1)


class Actor(pykka.ThreadingActor):
    """A pykka threading actor on a daemon thread (a harness that exits without shutting
    its sessions down must not hang: to the log that is a worker that died, which it is
    built to survive), kept for the next actor once it stopped (`_ActorThreads`), whose
    inbox is a `queue.SimpleQueue`: pykka's `queue.Queue` wakes its reader through a
    Condition written in Python, with the GIL held, for every message (pykka only puts,
    gets and asks whether it is empty)."""

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()

    def _start_actor_loop(self) -> None:
        _ACTOR_THREADS.run(self._actor_loop, f"{type(self).__name__}-{next(_actor_numbers)}")


class _CountingInbox(queue.SimpleQueue[Any]):
    """An actor's inbox that counts the messages put in it and not yet handled
    (`unhandled`), and those not yet taken out of it (`queued`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.unhandled = 0
        self.queued = 0
        # A lazy actor's (`HereAskedActor.lazy_thread`) until its first message is put
        # here: it starts the thread that takes the messages out.
        self.attach: Callable[[], None] | None = None

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.lock:
            self.unhandled += 1
            self.queued += 1
            attach, self.attach = self.attach, None
        super().put(item, block, timeout)
        if attach is not None:
            try:
                attach()
            except BaseException:  # (no thread to be had: the next put tries again)
                with self.lock:
                    self.attach = attach
                raise

    def threadless(self) -> bool:
        """A lazy actor's inbox that no thread reads yet (nothing was ever put in it)."""
        with self.lock:
            return self.attach is not None

    def count_in(self) -> None:
        """A message was added past the queue (`tell_self`)."""
        with self.lock:
            self.unhandled += 1

    def taken(self) -> None:
        """A message got out of the queue (its `unhandled` count stays)."""
        with self.lock:
            self.queued -= 1

    def handled(self) -> None:
        with self.lock:
            self.unhandled -= 1


class HereAskedActor(Actor):
    """An actor whose asks (`ask_here`) and tells (`tell_here`) may be handled on the
    sending thread.

    One message is handled at a time, in its turn (a lock): its `on_start`, each
    message with its answer or the failure that stops the actor, its `on_stop`. The
    actor's thread takes each message from the inbox into `_taken`; whoever has the turn
    then hands it on before the turn ends (`_end_turn`), so that messages keep the
    order in which they were sent, whichever thread handles them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn = threading.Lock()
        self._started = False  # `on_start` ran (on the actor's thread)
        # Messages out of the inbox, not yet handled: whoever has the turn hands them on
        # before it ends (`_end_turn`). Guarded by `_taking`, as is giving up the turn.
        self._taken: deque[Any] = deque()
        self._taking = threading.Lock()
        # The message in hand is handled on another thread than the actor's (`here`).
        self.borrowed = False
        self._handler: int | None = None  # the thread handling a message now

    # A lazy actor gets its thread only when a message must wait in its inbox (none while
    # its senders handle every message here); it starts on the thread that creates it,
    # so it must not have an `on_start` that cares which thread runs it. A short cell's
    # actor then never wakes a thread, to start, to take its first message, or to end.
    lazy_thread = False

    @staticmethod
    def _create_actor_inbox() -> Any:
        return _CountingInbox()

    def _start_actor_loop(self) -> None:
        if not self.lazy_thread:
            super()._start_actor_loop()
            return
        self._inbox.attach = self._attach_thread
        self._actor_loop_setup()
        self._end_thread_if_stopped()  # (stopped meanwhile by a message that got it one)

    def _attach_thread(self) -> None:
        name = f"{type(self).__name__}-{next(_actor_numbers)}"
        _ACTOR_THREADS.run(self._lazy_loop, name)

    def _lazy_loop(self) -> None:
        """A lazy actor's loop, on the thread it got (its setup ran when it started)."""
        self._actor_loop_running()
        self._actor_loop_teardown()

    def stop(self) -> None:
        """pykka's (handled after the messages sent before it), but a lazy actor without
        a thread that stops itself (in a handler, on this thread) while nothing else
        waits stops at once: no thread is started just to end it."""
        with self._taking:
            at_once = (
                self._handler == threading.get_ident() and not self._taken
                and self._inbox.threadless() and not self.actor_stopped.is_set()
            )  # fmt: skip
        if at_once:
            self._stop()
        else:
            super().stop()

    @property
    def _inbox(self) -> _CountingInbox:
        return cast("_CountingInbox", self.actor_inbox)

    def _actor_loop_setup(self) -> None:
        self._turn.acquire()
        try:
            super()._actor_loop_setup()
            self._started = True
        finally:
            self._end_turn(here=False)

    def tell_self(self, message: Any) -> None:
        """`tell` this actor `message` from any thread. While a thread has the actor's
        turn and nothing waits in the inbox, the message is left with that thread, to
        be handled (or handed on) before its turn ends, instead of waking the actor's
        thread through the inbox. Raises `pykka.ActorDeadError` as `tell` does."""
        with self._taking:
            if self._turn.locked() and not self.actor_stopped.is_set():
                with self._inbox.lock:
                    ahead = self._inbox.queued  # (sent before: it must go first)
                if not ahead:
                    self._inbox.count_in()
                    self._taken.append(Envelope(message))
                    return
        self.actor_ref.tell(message)

    def _actor_loop_running(self) -> None:
        while not self.actor_stopped.is_set():
            envelope = self.actor_inbox.get()
            with self._taking:
                self._taken.append(envelope)
                self._inbox.taken()
                if not self._turn.acquire(blocking=False):
                    continue  # the turn's holder hands it on (`_end_turn`)
            self._end_turn(here=False)

    def _end_turn(self, *, here: bool, drain: int = 0) -> None:
        """Hand on what was taken meanwhile, then give up the turn (held).

        The actor's thread handles it all. Another thread (`here`) handles at most
        `drain` messages, in order, and only while `_drains` accepts the next one; the
        actor's thread is woken for the rest. If handling fails, the turn is given up
        all the same."""
        handled, given_up = 0, False
        try:
            while True:
                with self._taking:
                    taken = self._taken
                    # (a stopped actor's messages are all refused, by any thread)
                    selective = here and not self.actor_stopped.is_set()
                    if not taken or (
                        selective and (handled >= drain or not self._drains(taken[0].message))
                    ):
                        given_up = True
                        self._give_up_turn()
                        return
                    envelope = taken.popleft()
                try:
                    if self.actor_stopped.is_set():  # (by a message handled elsewhere)
                        _refuse(envelope)
                    elif not isinstance(envelope.message, _Wake):
                        handled += 1
                        self._handle_envelope(envelope, here=here)
                finally:
                    self._inbox.handled()
        finally:
            if not given_up:
                with self._taking:
                    self._give_up_turn()

    def _give_up_turn(self) -> None:
        """Release the turn (`_taking` held); wake the actor's thread for what is left."""
        self._turn.release()
        if self._taken:
            self.actor_inbox.put(Envelope(_Wake()))

    def _drains(self, message: Any) -> bool:
        """Whether a thread that ends its turn (`tell_here(..., drain=True)`) may handle
        `message`, sent meanwhile, on the actor's behalf (none by default: a subclass
        names those that may run on any thread). Called with `_taking` held: it must
        only look at the message."""
        del message
        return False

    def _take_unhandled(self) -> list[Any]:
        """Take every message sent and not handled yet, in order (turn held): for an
        actor that ends without its loop. They count as handled."""
        with self._taking:
            envelopes, self._taken = list(self._taken), deque()
            with contextlib.suppress(queue.Empty):
                while True:
                    envelopes.append(self._inbox.get_nowait())
                    self._inbox.taken()
        for _ in envelopes:
            self._inbox.handled()
        return [e.message for e in envelopes if not isinstance(e.message, _Wake)]

    def _handle_envelope(self, envelope: Any, *, here: bool = False) -> None:
        """One message, as pykka 4's actor loop handles it (`here`: on another thread
        than the actor's, which must not wait there for the other actors to stop: it
        may hold one's turn)."""
        self.borrowed, self._handler = here, threading.get_ident()
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                _pykka_log.info(f"Exception returned from {self} to caller:", exc_info=True)
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            _pykka_log.debug(f"{sys.exc_info()[1]!r} in {self}. Stopping all actors.")
            self._stop()
            if here:
                threading.Thread(target=pykka.ActorRegistry.stop_all, daemon=True).start()
            else:
                pykka.ActorRegistry.stop_all()
        finally:
            self.borrowed, self._handler = False, None

    def _actor_loop_teardown(self) -> None:
        with self._turn:
            super()._actor_loop_teardown()

    def _handle_here(self, message: Any) -> tuple[bool, Any]:
        """(True, its result) if `message` could be handled on this thread now."""
        if not self._turn.acquire(blocking=False):
            return False, None
        try:
            if not self._idle():
                return False, None
            self.borrowed, self._handler = True, threading.get_ident()
            try:
                return True, pykka.ThreadingActor._handle_receive(self, message)
            finally:
                self.borrowed, self._handler = False, None
        finally:
            self._end_turn(here=True)
            self._end_thread_if_stopped()

    def _handle_told_here(self, message: Any, drain: int = 0) -> bool:
        """Whether `message` could be handled on this thread now (as a tell: a failure
        stops the actor, as on its own thread, which then ends too); then up to `drain`
        messages sent meanwhile (`_end_turn`)."""
        if not self._turn.acquire(blocking=False):
            return False
        handled = False
        try:
            if not self._idle():
                return False
            handled = True
            self._handle_envelope(Envelope(message), here=True)
            return True
        finally:
            self._end_turn(here=True, drain=drain if handled else 0)
            if handled:
                self._end_thread_if_stopped()

    def _end_thread_if_stopped(self) -> None:
        """Stopped by a message handled on another thread than its own: its thread, if
        it has one, waits for a message: wake it to end."""
        if self.actor_stopped.is_set() and not self._inbox.threadless():
            self.actor_inbox.put(Envelope(_Wake()))

    def _idle(self) -> bool:
        """Started, not stopped, and nothing sent to it is unhandled (turn held)."""
        with self._inbox.lock:
            idle = not self._inbox.unhandled and self._started
        return idle and not self.actor_stopped.is_set()


class _Wake:
    """What wakes an actor's thread: to end, stopped by a message handled on another
    thread, or to handle what it took while another thread had the turn."""


def _refuse(envelope: Any) -> None:
    """Answer a message its stopped actor will not handle, as pykka's teardown does."""
    if envelope.reply_to is None:
        return
    if isinstance(envelope.message, pykka.messages._ActorStop):
        envelope.reply_to.set(None)
    else:
        dead = pykka.ActorDeadError("the actor stopped before handling the message")
        envelope.reply_to.set_exception(exc_info=(pykka.ActorDeadError, dead, None))


def ask_here(ref: pykka.ActorRef[Any], message: Any) -> Any:
    """`ref.ask(message)`, but handled on the calling thread when the actor is idle: two
    thread switches fewer (about 0.12 ms of an exec here). The order holds: nothing sent
    to the actor before is still unhandled, and its thread waits meanwhile.

    Not on the main thread: a signal handler's exception (KeyboardInterrupt) would stop
    the handler half way there, where an ask leaves it whole on the actor's thread.
    For asks whose handler does not care which other thread runs it."""
    actor = _here(ref)
    if actor is not None:
        handled, result = actor._handle_here(message)
        if handled:
            return result
    return ref.ask(message)


def tell_here(ref: pykka.ActorRef[Any], message: Any, *, drain: bool = False) -> None:
    """`ref.tell(message)`, but handled on the calling thread when the actor is idle
    (as `ask_here`, and not on the main thread either): the actor's thread is not woken
    for it. A failure stops the actor as it would on the actor's own thread.

    `drain`: then also handle, up to `MAX_DRAINED`, the messages the actor's `_drains`
    accepts that arrived meanwhile (what a V8 thread reported while this thread
    waited on the log, say), instead of waking the actor's thread for them.

    For messages whose handler may run on the sender's thread and keep it meanwhile."""
    actor = _here(ref)
    if actor is None or not actor._handle_told_here(message, MAX_DRAINED if drain else 0):
        ref.tell(message)


def _here(ref: pykka.ActorRef[Any]) -> HereAskedActor | None:
    """The actor behind `ref` if this thread may handle its messages."""
    actor = ref._actor_weakref()  # (pykka's; the actor is in this process)
    if (
        not isinstance(actor, HereAskedActor)
        or threading.current_thread() is threading.main_thread()
    ):
        return None
    return actor

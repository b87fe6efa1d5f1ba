"""What cellfleet's actors share on top of pykka's threading actor."""

from __future__ import annotations

import queue
import threading
from typing import Any, cast

import pykka


class _Inbox(queue.SimpleQueue[Any]):
    """An actor's inbox that counts the messages put in it and not yet handled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.unhandled = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.lock:
            self.unhandled += 1
        super().put(item, block, timeout)

    def handled(self) -> None:
        with self.lock:
            self.unhandled -= 1


class Actor(pykka.ThreadingActor):
    """A pykka threading actor on a daemon thread (a harness that exits without shutting
    its sessions down must not hang: to the log that is a worker that died, which it is
    built to survive), whose inbox is a `queue.SimpleQueue`: pykka's `queue.Queue` wakes
    its reader through a Condition written in Python, with the GIL held, for every
    message (pykka only puts, gets and asks whether it is empty).

    One message is handled at a time (its turn), usually on the actor's thread; see
    `ask_here` for the exception."""

    use_daemon_thread = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn = threading.Lock()  # held while a message is handled, on any thread
        self._started = False  # `on_start` ran (on the actor's thread)

    @staticmethod
    def _create_actor_inbox() -> Any:
        return _Inbox()

    @property
    def _inbox(self) -> _Inbox:
        return cast("_Inbox", self.actor_inbox)

    def _actor_loop_setup(self) -> None:
        with self._turn:
            super()._actor_loop_setup()
            self._started = True

    def _handle_receive(self, message: Any) -> Any:
        try:
            with self._turn:
                return super()._handle_receive(message)
        finally:
            self._inbox.handled()

    def _actor_loop_teardown(self) -> None:
        with self._turn:
            super()._actor_loop_teardown()

    def _handle_here(self, message: Any) -> tuple[bool, Any]:
        """(True, its result) if `message` could be handled on this thread now."""
        if not self._turn.acquire(blocking=False):
            return False, None
        try:
            with self._inbox.lock:
                idle = not self._inbox.unhandled and self._started
            if not idle or self.actor_stopped.is_set():
                return False, None
            return True, pykka.ThreadingActor._handle_receive(self, message)
        finally:
            self._turn.release()


def ask_here(ref: pykka.ActorRef[Any], message: Any) -> Any:
    """`ref.ask(message)`, but handled on the calling thread when the actor is idle: two
    thread switches fewer (about 0.12 ms of an exec here). The order holds: nothing sent
    to the actor before is still unhandled, and its thread waits meanwhile. For asks
    whose handler does not care which thread runs it."""
    actor = ref._actor_weakref()  # (pykka's; the actor is in this process)
    if isinstance(actor, Actor):
        handled, result = actor._handle_here(message)
        if handled:
            return result
    return ref.ask(message)

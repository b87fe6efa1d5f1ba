"""`ask_here`: an ask handled on the caller's thread when the actor is idle, and only
then: messages sent before it are handled first, and the actor's own thread waits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from cellfleet.actors.base import HereAskedActor, ask_here


class _Recorder(HereAskedActor):
    """Handles callables: runs each and records its name and the thread it ran on."""

    def __init__(self, started: threading.Event | None = None) -> None:
        super().__init__()
        self.handled: list[tuple[str, str]] = []
        self._may_start = started

    def on_start(self) -> None:
        if self._may_start is not None:
            self._may_start.wait(5)

    def on_receive(self, message: Any) -> Any:
        name, action = message
        self.handled.append((name, threading.current_thread().name))
        return action()


@pytest.fixture
def actors() -> Iterator[Callable[..., pykka.ActorRef[Any]]]:
    made: list[pykka.ActorRef[Any]] = []

    def start(**options: Any) -> pykka.ActorRef[Any]:
        made.append(_Recorder.start(**options))
        return made[-1]

    yield start
    for ref in made:
        ref.stop(block=False)


class _Asker(threading.Thread):
    """`ask_here` on a thread of its own (not the main thread): its result or error."""

    def __init__(self, ref: pykka.ActorRef[Any], message: Any) -> None:
        super().__init__()
        self.ref, self.message, self.outcome = ref, message, None

    def run(self) -> None:
        try:
            self.outcome = ask_here(self.ref, self.message)
        except Exception as error:
            self.outcome = error

    def result(self) -> Any:
        self.join(5)
        return self.outcome


def _when_queued(ref: pykka.ActorRef[Any]) -> threading.Event:
    """Set once a message is put in the actor's inbox."""
    inbox, queued = ref.actor_inbox, threading.Event()
    put = inbox.put

    def putting(*args: Any) -> None:
        put(*args)
        queued.set()

    inbox.put = putting  # type: ignore[method-assign]
    return queued


def _threads(ref: pykka.ActorRef[Any]) -> dict[str, str]:
    return dict(ref.proxy().handled.get())


def test_an_idle_actor_handles_the_ask_on_the_calling_thread(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))  # (started, and idle again)
    asker = _Asker(ref, ("here", lambda: 42))
    asker.start()
    assert asker.result() == 42
    assert _threads(ref)["here"] == asker.name


def test_on_the_main_thread_the_actor_s_own_thread_handles_it(actors: Any) -> None:
    """(A KeyboardInterrupt there must not stop a handler half way.)"""
    ref = actors()
    ref.ask(("first", lambda: None))
    assert ask_here(ref, ("ask", lambda: 1)) == 1
    assert _threads(ref)["ask"] == _threads(ref)["first"] != threading.current_thread().name


def test_an_ask_waits_for_what_was_sent_before_it(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))
    release = threading.Event()
    ref.tell(("slow", lambda: release.wait(5)))
    ref.tell(("queued", lambda: None))
    queued = _when_queued(ref)
    asker = _Asker(ref, ("ask", release.is_set))
    asker.start()
    assert queued.wait(5)  # (sent to the actor's thread: it is busy)
    release.set()
    assert asker.result() is True  # (after `slow` ended)
    assert [name for name, _ in ref.proxy().handled.get()] == ["first", "slow", "queued", "ask"]
    threads = _threads(ref)
    assert threads["ask"] == threads["slow"] != asker.name  # (on the actor's own thread)


def test_nothing_is_handled_here_before_the_actor_started(actors: Any) -> None:
    may_start = threading.Event()
    ref = actors(started=may_start)
    queued = _when_queued(ref)
    asker = _Asker(ref, ("ask", lambda: 1))
    asker.start()
    assert queued.wait(5)  # (sent to the actor's thread: it has not started)
    may_start.set()
    assert asker.result() == 1
    assert _threads(ref)["ask"] != asker.name


def test_the_actor_waits_while_an_ask_is_handled_here(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))
    inside, release = threading.Event(), threading.Event()

    def held() -> str:
        inside.set()
        release.wait(5)
        return "done"

    asker = _Asker(ref, ("held", held))
    asker.start()
    assert inside.wait(5)
    later = ref.ask(("later", release.is_set), block=False)
    release.set()
    assert later.get(timeout=5) is True  # (its turn came after `held`)
    assert asker.result() == "done"
    assert [name for name, _ in ref.proxy().handled.get()] == ["first", "held", "later"]


def _fails() -> None:
    raise ValueError("bad")


def test_errors_and_a_stopped_actor_answer_as_an_ask_does(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))
    for message, outcome in ((("fails", _fails), ValueError), (("after", lambda: 2), int)):
        asker = _Asker(ref, message)
        asker.start()
        assert isinstance(asker.result(), outcome)  # (the actor lives on after the error)
    ref.stop()
    asker = _Asker(ref, ("dead", lambda: 3))
    asker.start()
    assert isinstance(asker.result(), pykka.ActorDeadError)


def test_an_ask_after_a_tell_that_stops_the_actor_finds_it_stopped(actors: Any) -> None:
    """A told message that fails stops the actor, after pykka logs it: an ask in that
    moment is not handled here on an actor about to stop."""
    ref = actors()
    ref.ask(("first", lambda: None))
    logging_it, release = threading.Event(), threading.Event()

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logging_it.set()
            release.wait(5)

    slow = Slow(logging.ERROR)
    logging.getLogger("pykka").addHandler(slow)
    try:
        ref.tell(("fails", _fails))
        assert logging_it.wait(5)
        queued = _when_queued(ref)
        asker = _Asker(ref, ("after", lambda: 1))
        asker.start()
        assert queued.wait(5)  # (not handled here: its turn is the failure's)
        release.set()
        assert isinstance(asker.result(), pykka.ActorDeadError)
    finally:
        release.set()
        logging.getLogger("pykka").removeHandler(slow)

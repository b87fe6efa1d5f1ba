"""`ask_here`: an ask handled on the caller's thread when the actor is idle, and only
then: messages sent before it are handled first, and the actor's own thread waits."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from cellfleet.actors.base import Actor, ask_here


class _Recorder(Actor):
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


def _when_queued(ref: pykka.ActorRef[Any]) -> threading.Event:
    """Set once a message is put in the actor's inbox."""
    inbox, queued = ref.actor_inbox, threading.Event()
    put = inbox.put

    def putting(*args: Any) -> None:
        put(*args)
        queued.set()

    inbox.put = putting  # type: ignore[method-assign]
    return queued


def test_an_idle_actor_handles_the_ask_on_the_calling_thread(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))  # (started, and idle again)
    assert ask_here(ref, ("here", lambda: 42)) == 42
    here = threading.current_thread().name
    assert ref.proxy().handled.get()[1] == ("here", here)


def test_an_ask_waits_for_what_was_sent_before_it(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))
    release = threading.Event()
    ref.tell(("slow", lambda: release.wait(5)))
    ref.tell(("queued", lambda: None))
    queued = _when_queued(ref)
    answered: list[Any] = []
    asker = threading.Thread(target=lambda: answered.append(ask_here(ref, ("ask", release.is_set))))
    asker.start()
    assert queued.wait(5)  # (sent to the actor's thread: it is busy)
    release.set()
    asker.join(5)
    assert answered == [True]  # (after `slow` ended)
    names = [name for name, _ in ref.proxy().handled.get()]
    assert names == ["first", "slow", "queued", "ask"]
    threads = dict(ref.proxy().handled.get())
    assert threads["ask"] == threads["slow"] != asker.name  # (on the actor's own thread)


def test_nothing_is_handled_here_before_the_actor_started(actors: Any) -> None:
    may_start = threading.Event()
    ref = actors(started=may_start)
    queued = _when_queued(ref)
    answered: list[Any] = []
    asker = threading.Thread(target=lambda: answered.append(ask_here(ref, ("ask", lambda: 1))))
    asker.start()
    assert queued.wait(5)  # (sent to the actor's thread: it has not started)
    may_start.set()
    asker.join(5)
    assert answered == [1]
    assert ref.proxy().handled.get()[0][1] != asker.name


def test_the_actor_waits_while_an_ask_is_handled_here(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))
    inside, release = threading.Event(), threading.Event()

    def held() -> str:
        inside.set()
        release.wait(5)
        return "done"

    asker = threading.Thread(target=lambda: ask_here(ref, ("held", held)))
    asker.start()
    assert inside.wait(5)
    later = ref.ask(("later", release.is_set), block=False)
    release.set()
    assert later.get(timeout=5) is True  # (its turn came after `held`)
    asker.join(5)
    assert [name for name, _ in ref.proxy().handled.get()] == ["first", "held", "later"]


def test_errors_and_a_stopped_actor_answer_as_an_ask_does(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))

    def fails() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        ask_here(ref, ("fails", fails))
    assert ask_here(ref, ("after", lambda: 2)) == 2  # (the actor lives on)
    ref.stop()
    with pytest.raises(pykka.ActorDeadError):
        ask_here(ref, ("dead", lambda: 3))

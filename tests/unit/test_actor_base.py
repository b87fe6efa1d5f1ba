"""`ask_here` and `tell_here`: a message handled on the sender's thread when the actor is
idle, and only then: messages sent before it are handled first, and the actor's own
thread waits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from cellfleet.actors.base import HereAskedActor, ask_here, tell_here


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


def _tell_from_a_thread(ref: pykka.ActorRef[Any], message: Any) -> str:
    """`tell_here` on a thread of its own (not the main thread); that thread's name."""
    teller = threading.Thread(target=tell_here, args=(ref, message))
    teller.start()
    teller.join(5)
    return teller.name


def test_an_idle_actor_handles_a_tell_on_the_sending_thread(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))
    teller = _tell_from_a_thread(ref, ("told", lambda: None))
    assert _threads(ref)["told"] == teller  # (handled before tell_here returned)
    ref.ask(("next", lambda: None))  # (and the actor goes on on its own thread)
    assert _threads(ref)["next"] == _threads(ref)["first"]


def test_a_busy_actor_handles_the_tell_on_its_own_thread_in_order(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))
    release = threading.Event()
    ref.tell(("slow", lambda: release.wait(5)))
    teller = _tell_from_a_thread(ref, ("told", lambda: None))
    release.set()
    ref.ask(("last", lambda: None))
    assert [name for name, _ in ref.proxy().handled.get()] == ["first", "slow", "told", "last"]
    assert _threads(ref)["told"] == _threads(ref)["slow"] != teller
    may_start = threading.Event()  # (nor before on_start ran)
    unstarted = actors(started=may_start)
    teller = _tell_from_a_thread(unstarted, ("early", lambda: None))
    may_start.set()
    unstarted.ask(("after", lambda: None))
    assert _threads(unstarted)["early"] != teller


def test_a_tell_on_the_main_thread_goes_to_the_actor_s_thread(actors: Any) -> None:
    ref = actors()
    ref.ask(("first", lambda: None))
    tell_here(ref, ("told", lambda: None))
    ref.ask(("last", lambda: None))
    assert _threads(ref)["told"] == _threads(ref)["first"] != threading.current_thread().name


def test_a_tell_that_fails_here_stops_the_actor_and_ends_its_thread(actors: Any) -> None:
    """As on the actor's thread: the failure is logged, the actor stops, an ask sent
    after it fails as a dead actor's does, and the actor's thread ends."""
    ref = actors()
    ref.ask(("first", lambda: None))
    actor_thread = next(t for t in threading.enumerate() if t.name == _threads(ref)["first"])
    _tell_from_a_thread(ref, ("fails", _fails))
    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.ask(("after", lambda: 1))
    actor_thread.join(5)
    assert not actor_thread.is_alive()


def test_nothing_sent_while_a_tell_fails_here_is_handled_after_it(actors: Any) -> None:
    """The actor's thread, woken meanwhile by a message, finds the actor stopped: it
    handles nothing more (an ask among them fails as a dead actor's does)."""
    ref = actors()
    ref.ask(("first", lambda: None))
    actor = ref._actor_weakref()  # (kept: the stopped actor's record is read)
    asked: list[Any] = []

    def fails_after_sends() -> None:
        ref.tell(("sent-while-failing", lambda: None))
        asked.append(ref.ask(("asked-while-failing", lambda: None), block=False))
        raise ValueError("bad")

    _tell_from_a_thread(ref, ("fails", fails_after_sends))
    with pytest.raises(pykka.ActorDeadError):
        asked[0].get(timeout=5)
    assert [name for name, _ in actor.handled] == ["first", "fails"]


def test_a_tell_that_stops_everything_here_does_not_wait_for_the_others(
    actors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BaseException stops every actor (pykka's rule), but not by waiting on the
    sending thread: it may hold another actor's turn, whose own thread waits for it."""
    stopping: list[str] = []
    stopped = threading.Event()

    def stop_all(*args: Any, **kwargs: Any) -> None:
        stopping.append(threading.current_thread().name)
        stopped.set()

    monkeypatch.setattr(pykka.ActorRegistry, "stop_all", stop_all)
    outer, inner = actors(), actors()
    outer.ask(("first", lambda: None))
    inner.ask(("first", lambda: None))
    inner_actor = inner._actor_weakref()  # (kept: the stopped actor's record is read)

    def exits() -> None:
        raise SystemExit

    asker = _Asker(outer, ("tells", lambda: tell_here(inner, ("exits", exits))))
    asker.start()
    assert asker.result() is None  # (returned: `outer`'s turn is not held for ever)
    assert not inner.is_alive()
    assert _threads(outer)["tells"] == asker.name == dict(inner_actor.handled)["exits"]
    assert stopped.wait(5)
    assert stopping != [asker.name]

"""`ask_here` and `tell_here`: a message handled on the sender's thread when the actor is
idle, and only then: messages sent before it are handled first, and the actor's own
thread waits."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from cellfleet.actors import base
from cellfleet.actors.base import HereAskedActor, ask_here, tell_here


class _Recorder(HereAskedActor):
    """Handles callables: runs each and records its name and the thread it ran on."""

    def __init__(
        self, started: threading.Event | None = None, starting: threading.Event | None = None
    ) -> None:
        super().__init__()
        self.handled: list[tuple[str, str]] = []
        self._may_start = started
        self._starting = starting
        self.idle = threading.Event()  # (`_first`)

    def on_start(self) -> None:
        if self._starting is not None:
            self._starting.set()
        if self._may_start is not None:
            self._may_start.wait(5)

    def on_receive(self, message: Any) -> Any:
        name, action = message
        self.handled.append((name, threading.current_thread().name))
        return action()

    def _give_up_turn(self) -> None:
        super()._give_up_turn()
        if self.handled and not self._taken:
            self.idle.set()  # (`_first`: the turn was given up after `first`)


def _first(ref: pykka.ActorRef[Any]) -> None:
    """Send `first` and wait until it was handled and the actor is idle again (its
    thread gave up the turn: an asker learns its answer a moment before that)."""
    ref.ask(("first", lambda: None))
    assert ref._actor_weakref().idle.wait(5)


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
    _first(ref)  # (started, and idle again)
    asker = _Asker(ref, ("here", lambda: 42))
    asker.start()
    assert asker.result() == 42
    assert _threads(ref)["here"] == asker.name


def test_on_the_main_thread_the_actor_s_own_thread_handles_it(actors: Any) -> None:
    """(A KeyboardInterrupt there must not stop a handler half way.)"""
    ref = actors()
    _first(ref)
    assert ask_here(ref, ("ask", lambda: 1)) == 1
    assert _threads(ref)["ask"] == _threads(ref)["first"] != threading.current_thread().name


def test_an_ask_waits_for_what_was_sent_before_it(actors: Any) -> None:
    ref = actors()
    _first(ref)
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
    _first(ref)
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
    _first(ref)
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
    _first(ref)
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
    _first(ref)
    teller = _tell_from_a_thread(ref, ("told", lambda: None))
    assert _threads(ref)["told"] == teller  # (handled before tell_here returned)
    ref.ask(("next", lambda: None))  # (and the actor goes on on its own thread)
    assert _threads(ref)["next"] == _threads(ref)["first"]


def test_a_busy_actor_handles_the_tell_on_its_own_thread_in_order(actors: Any) -> None:
    ref = actors()
    _first(ref)
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
    _first(ref)
    tell_here(ref, ("told", lambda: None))
    ref.ask(("last", lambda: None))
    assert _threads(ref)["told"] == _threads(ref)["first"] != threading.current_thread().name


def test_a_tell_that_fails_here_stops_the_actor_and_ends_its_thread(actors: Any) -> None:
    """As on the actor's thread: the failure is logged, the actor stops, an ask sent
    after it fails as a dead actor's does, and the actor's loop ends (its thread waits
    for another actor's, or ends)."""
    ref = actors()
    _first(ref)
    name = _threads(ref)["first"]
    actor_thread = next(t for t in threading.enumerate() if t.name == name)
    _tell_from_a_thread(ref, ("fails", _fails))
    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.ask(("after", lambda: 1))
    deadline = time.monotonic() + 5
    while actor_thread.is_alive() and actor_thread.name == name and time.monotonic() < deadline:
        actor_thread.join(0.01)
    assert not actor_thread.is_alive() or actor_thread.name != name


def test_nothing_sent_while_a_tell_fails_here_is_handled_after_it(actors: Any) -> None:
    """The actor's thread, woken meanwhile by a message, finds the actor stopped: it
    handles nothing more (an ask among them fails as a dead actor's does)."""
    ref = actors()
    _first(ref)
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
    _first(outer)
    _first(inner)
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


# -- what arrives while a thread has the turn (`tell_here(..., drain=True)`, `tell_self`) --


class _Draining(_Recorder):
    """Lets a sending thread handle, after its own message, those named `drains...`."""

    def _drains(self, message: Any) -> bool:
        return isinstance(message, tuple) and str(message[0]).startswith("drains")


@pytest.fixture
def draining() -> Iterator[pykka.ActorRef[Any]]:
    ref = _Draining.start()
    _first(ref)
    yield ref
    ref.stop(block=False)


def _on_a_thread(target: Callable[[], Any]) -> str:
    """Run `target` on a thread of its own (not the main thread); that thread's name."""
    thread = threading.Thread(target=target)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    return thread.name


def _tell_draining(ref: pykka.ActorRef[Any], action: Callable[[], None]) -> str:
    """`tell_here(ref, ("told", action), drain=True)` on a thread of its own; its name."""
    return _on_a_thread(lambda: tell_here(ref, ("told", action), drain=True))


def _handled(ref: pykka.ActorRef[Any]) -> list[str]:
    ref.ask(("last", lambda: None))  # (everything sent before it was handled)
    return [name for name, _ in ref.proxy().handled.get() if name not in ("first", "last")]


def _tell_self(ref: pykka.ActorRef[Any], *names: str) -> Callable[[], None]:
    actor = ref._actor_weakref()
    return lambda: [actor.tell_self((name, lambda: None)) for name in names] and None


def test_tell_self_leaves_the_message_with_the_thread_that_has_the_turn(
    draining: pykka.ActorRef[Any],
) -> None:
    """Not through the inbox (the actor's thread is not woken for it): a sender that
    drains handles it after its own."""
    queued = _when_queued(draining)
    teller = _tell_draining(draining, _tell_self(draining, "drains"))
    assert not queued.is_set()
    assert _handled(draining) == ["told", "drains"]
    assert _threads(draining)["told"] == _threads(draining)["drains"] == teller


def test_a_sender_drains_what_the_actor_s_thread_took_from_the_inbox_meanwhile(
    draining: pykka.ActorRef[Any],
) -> None:
    actor = draining._actor_weakref()
    took = threading.Event()

    class Taken(deque[Any]):
        def append(self, envelope: Any) -> None:
            super().append(envelope)
            took.set()

    actor._taken = Taken()

    def sends() -> None:
        draining.tell(("drains", lambda: None))
        assert took.wait(5)  # (the actor's thread took it: it is not this thread's turn)

    teller = _tell_draining(draining, sends)
    assert _handled(draining) == ["told", "drains"]
    assert _threads(draining)["drains"] == teller


def test_what_the_actor_keeps_for_its_own_thread_is_handled_there_in_order(
    draining: pykka.ActorRef[Any],
) -> None:
    teller = _tell_draining(draining, _tell_self(draining, "kept", "drains"))
    assert _handled(draining) == ["told", "kept", "drains"]  # (not here: behind `kept`)
    threads = _threads(draining)
    assert threads["told"] == teller
    assert threads["kept"] == threads["drains"] == threads["first"] != teller


def test_a_sender_drains_at_most_max_drained_and_the_actor_s_thread_the_rest(
    draining: pykka.ActorRef[Any],
) -> None:
    names = [f"drains-{index}" for index in range(base.MAX_DRAINED + 2)]
    teller = _tell_draining(draining, _tell_self(draining, *names))
    assert _handled(draining) == ["told", *names]
    threads = _threads(draining)
    assert [threads[name] == teller for name in names] == [True] * base.MAX_DRAINED + [False] * 2


def test_a_sender_that_does_not_drain_leaves_it_all_to_the_actor_s_thread(
    draining: pykka.ActorRef[Any],
) -> None:
    teller = _tell_from_a_thread(draining, ("told", _tell_self(draining, "drains")))
    assert _handled(draining) == ["told", "drains"]
    threads = _threads(draining)
    assert threads["told"] == teller
    assert threads["drains"] == threads["first"] != teller


def test_an_ask_here_leaves_what_arrived_meanwhile_to_the_actor_s_thread(
    draining: pykka.ActorRef[Any],
) -> None:
    asker = _Asker(draining, ("asked", _tell_self(draining, "drains")))
    asker.start()
    asker.result()
    assert _handled(draining) == ["asked", "drains"]
    threads = _threads(draining)
    assert threads["asked"] == asker.name
    assert threads["drains"] == threads["first"] != asker.name


def test_after_a_drain_the_actor_is_idle_again(draining: pykka.ActorRef[Any]) -> None:
    """(Nothing is counted twice or left uncounted: the next tell is handled here.)"""
    _tell_draining(draining, _tell_self(draining, "drains"))
    actor = draining._actor_weakref()
    assert actor._inbox.unhandled == 0
    assert actor._inbox.queued == 0
    teller = _tell_from_a_thread(draining, ("next", lambda: None))
    assert _threads(draining)["next"] == teller


def test_tell_self_keeps_the_order_of_what_waits_in_the_inbox(
    draining: pykka.ActorRef[Any],
) -> None:
    """A message sent while the turn is held goes behind those sent before it and still
    in the inbox (the actor's thread, busy, has not taken them yet)."""
    actor = draining._actor_weakref()
    inside, a_sent = threading.Event(), threading.Event()

    def sends_b_after_a() -> None:
        inside.set()
        assert a_sent.wait(5)
        actor.tell_self(("b", lambda: None))

    draining.tell(("x", sends_b_after_a))
    assert inside.wait(5)
    draining.tell(("a", lambda: None))  # (in the inbox: the actor's thread handles `x`)
    a_sent.set()
    assert _handled(draining) == ["x", "a", "b"]


def test_a_message_handled_on_its_actor_s_thread_may_tell_itself_more(
    draining: pykka.ActorRef[Any],
) -> None:
    """Handled next, in order, with what other threads sent meanwhile, and none of it
    through the inbox (the actor's thread has the turn)."""
    actor = draining._actor_weakref()
    inside, release = threading.Event(), threading.Event()

    def tells_itself() -> None:
        actor.tell_self(("self-told", lambda: None))
        inside.set()
        release.wait(5)

    draining.tell(("slow", tells_itself))
    assert inside.wait(5)
    queued = _when_queued(draining)
    _on_a_thread(_tell_self(draining, "from-outside"))
    assert not queued.is_set()
    release.set()
    assert _handled(draining) == ["slow", "self-told", "from-outside"]
    threads = _threads(draining)
    assert threads["self-told"] == threads["from-outside"] == threads["first"]


def test_tell_self_to_an_idle_actor_goes_through_its_inbox(
    draining: pykka.ActorRef[Any],
) -> None:
    queued = _when_queued(draining)
    _tell_self(draining, "idle")()
    assert queued.is_set()
    assert _handled(draining) == ["idle"]
    assert _threads(draining)["idle"] == _threads(draining)["first"]


def test_tell_self_while_the_actor_starts_is_handled_after_on_start() -> None:
    starting, may_start = threading.Event(), threading.Event()
    ref = _Recorder.start(started=may_start, starting=starting)
    try:
        assert starting.wait(5)  # (on_start runs with the turn held)
        queued = _when_queued(ref)
        _tell_self(ref, "early")()
        assert not queued.is_set()
        may_start.set()
        assert _handled(ref) == ["early"]
    finally:
        ref.stop(block=False)


def test_a_drained_failure_stops_the_actor_and_what_was_sent_after_it_is_refused(
    draining: pykka.ActorRef[Any],
) -> None:
    actor = draining._actor_weakref()  # (kept: the stopped actor's record is read)
    asked: list[Any] = []

    def sends() -> None:
        actor.tell_self(("drains-fails", _fails))
        asked.append(draining.ask(("asked", lambda: None), block=False))

    teller = _tell_draining(draining, sends)
    with pytest.raises(pykka.ActorDeadError):
        asked[0].get(timeout=5)
    assert not draining.is_alive()
    assert actor.handled == [
        ("first", actor.handled[0][1]),
        ("told", teller),
        ("drains-fails", teller),
    ]


def test_a_turn_is_given_up_even_when_handling_escapes(
    draining: pykka.ActorRef[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """(A BaseException out of `on_failure`, say: the next message still has a turn.)"""
    actor = draining._actor_weakref()

    def escapes(envelope: Any, *, here: bool = False) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(actor, "_handle_envelope", escapes)
    actor._turn.acquire()
    actor.tell_self(("drains", lambda: None))
    with pytest.raises(KeyboardInterrupt):
        actor._end_turn(here=True, drain=1)
    assert not actor._turn.locked()


def test_tell_self_to_a_stopped_actor_raises_as_tell_does(
    draining: pykka.ActorRef[Any],
) -> None:
    actor = draining._actor_weakref()
    draining.stop()
    with pytest.raises(pykka.ActorDeadError):
        actor.tell_self(("late", lambda: None))


def test_an_actor_started_after_another_stopped_runs_on_its_thread(actors: Any) -> None:
    """Actors' threads are kept for the next actor (`_ActorThreads`), each named after
    the actor it runs, as pykka names its own."""
    first = actors()
    _first(first)
    name = _threads(first)["first"]
    thread = next(t for t in threading.enumerate() if t.name == name)
    first.stop()
    deadline = time.monotonic() + 5
    while thread.name != "actor-idle" and time.monotonic() < deadline:  # (kept, idle)
        thread.join(0.01)
    second = actors()
    _first(second)
    assert _threads(second)["first"] == thread.name != name
    assert thread.name.startswith("_Recorder-")


def test_actor_threads_left_idle_end_and_new_ones_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads = base._ActorThreads()
    monkeypatch.setattr(threads, "IDLE_S", 0.05)
    ran: list[str] = []
    workers: list[threading.Thread] = []
    done = threading.Event()

    def job() -> None:
        ran.append(threading.current_thread().name)
        workers.append(threading.current_thread())
        done.set()

    threads.run(job, "job-1")
    assert done.wait(5)
    worker = workers[0]
    worker.join(5)  # (idle longer than IDLE_S: it ends)
    assert not worker.is_alive()
    done.clear()
    threads.run(job, "job-2")
    assert done.wait(5)
    assert ran == ["job-1", "job-2"]
    assert workers[1] is not worker


class _Lazy(HereAskedActor):
    """A lazy actor (`lazy_thread`) that records where each message ran; `stop` as a
    message stops it from within its handler."""

    lazy_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.handled: list[tuple[str, str]] = []
        self.in_handler = threading.Event()
        self.go_on = threading.Event()
        self.stopped_in: list[str] = []

    def on_receive(self, message: Any) -> Any:
        self.handled.append((message, threading.current_thread().name))
        if message == "hold":
            self.in_handler.set()
            assert self.go_on.wait(5)
        elif message == "stop":
            self.stop()
        return message

    def on_stop(self) -> None:
        self.stopped_in.append(threading.current_thread().name)


def _on(thread: str, action: Callable[[], None]) -> None:
    runner = threading.Thread(target=action, name=thread)
    runner.start()
    runner.join(5)


def test_a_lazy_actor_whose_senders_handle_everything_never_gets_a_thread() -> None:
    ref = _Lazy.start()
    actor = ref._actor_weakref()
    _on("sender", lambda: tell_here(ref, "first"))
    _on("sender", lambda: tell_here(ref, "stop"))
    assert actor.handled == [("first", "sender"), ("stop", "sender")]
    assert actor.stopped_in == ["sender"]  # (at once: no thread was started to end it)
    assert not ref.is_alive()
    assert actor._inbox.threadless()
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")


def test_a_lazy_actor_gets_a_thread_for_what_waits_in_its_inbox() -> None:
    ref = _Lazy.start()
    actor = ref._actor_weakref()
    assert ref.ask("asked") == "asked"  # (an ask waits in the inbox: a thread takes it)
    _on("sender", lambda: tell_here(ref, "told"))
    assert ref.ask("stop") == "stop"
    assert [name for name, _ in actor.handled] == ["asked", "told", "stop"]
    assert actor.handled[0][1].startswith("_Lazy-")
    assert not actor._inbox.threadless()
    assert actor.stopped_in == [actor.handled[0][1]]


def test_a_lazy_actor_stopped_from_another_thread_stops_after_the_message_in_hand() -> None:
    ref = _Lazy.start()
    actor = ref._actor_weakref()
    sender = threading.Thread(target=lambda: tell_here(ref, "hold"), name="sender")
    sender.start()
    assert actor.in_handler.wait(5)
    _on("stopper", actor.stop)  # (pykka's `stop()`: the same as ref.stop(block=False))
    assert actor.stopped_in == []
    assert ref.is_alive()
    actor.go_on.set()
    sender.join(5)
    assert actor.actor_stopped.wait(5)
    assert actor.stopped_in[0] != "stopper"  # (its own thread, after the message)


def test_a_lazy_actor_whose_thread_could_not_start_gets_one_at_its_next_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = _Lazy.start()
    actor = ref._actor_weakref()
    real = base._ACTOR_THREADS.run
    failures = []

    def failing_once(loop: Callable[[], None], name: str) -> None:
        if not failures:
            failures.append(name)
            raise RuntimeError("can't start new thread")
        real(loop, name)

    monkeypatch.setattr(base._ACTOR_THREADS, "run", failing_once)
    with pytest.raises(RuntimeError):
        ref.tell("first")
    assert ref.ask("second") == "second"
    assert [name for name, _ in actor.handled] == ["first", "second"]
    ref.stop()

"""One V8 isolate and context, driven through mini-racer's low-level C interface.

mini-racer runs each context on its own native thread and reports every result
through one C callback. This module keeps that interface small and explicit:

* `eval_async(code, on_result)` queues a script; `on_result` runs **on the V8 thread**
  with an `EvalOutcome`, so it must only hand the outcome over (e.g. put it in a queue).
* `make_post_function()` creates the JS function `post()`; calling it from JavaScript
  runs `on_post` synchronously on the V8 thread while JavaScript waits.
* Isolates are created on one thread of the process and freed on another, both with
  access to V8's memory protection key (`create_isolate`, `free_isolate`).
* `dispose()` stops any running JavaScript (also inside a microtask checkpoint, which
  task cancellation cannot reach) and frees the isolate, at once or soon after
  (`freed`, `when_freed`); callers run it off their hot path all the same.
* Callbacks on an isolate's thread share one Python thread state, kept from the first
  until the context is disposed of (`V8Context._keep_thread_state`).

This is the only module that touches mini-racer internals; they are pinned to the
0.14 line in pyproject.toml and covered by tests/unit/test_v8.py.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import orjson
from py_mini_racer import JSEvalException, JSOOMException, JSParseException
from py_mini_racer._dll import (
    DEFAULT_V8_FLAGS,
    LibAlreadyInitializedError,
    init_mini_racer,
    mr_callback_func,
)
from py_mini_racer._exc import JSTerminatedException
from py_mini_racer._objects import ObjectFactoryImpl
from py_mini_racer._value_handle import ValueHandle

from cellfleet.actors.runtime import realms

log = logging.getLogger(__name__)

_POST_CALLBACK_ID = 1
_RELEASE_CALLBACK_ID = 2  # a disposed context's last task (`V8Context._keep_thread_state`)
_GILSTATE_ENSURE = ctypes.pythonapi.PyGILState_Ensure
_GILSTATE_RELEASE = ctypes.pythonapi.PyGILState_Release
_GILSTATE_RELEASE.argtypes = [ctypes.c_int]
_GILSTATE_LOCKED = 0  # (what a thread already in Python got from `PyGILState_Ensure`)
# JSON.stringify's fast path walks any depth with an explicit stack outside the heap,
# in time that grows with the square of the depth (3 million levels: 3.7 s and 300 MB
# the heap limit does not see). Without it, deep values end in V8's usual
# `RangeError: Maximum call stack size exceeded`.
#
# `--no-lazy`: V8 compiles every function when it compiles its script, not at its first
# call. Every cell runs in a new isolate, where a lazily compiled function is compiled
# again each time: so the prelude's functions are compiled once, into the startup
# snapshot (`snapshot.py`), instead of per cell (measured here: a cell in an unwarmed
# context 2.1 -> 1.0 ms, warming a context 1.9 -> 0.7 ms). A cell's own functions are
# compiled up front too: the same errors, a little more work for functions never called.
#
# `--harmony-shadow-realm`: how a context is made in an isolate that exists (realms.py).
V8_FLAGS = (
    *DEFAULT_V8_FLAGS,
    "--no-json-stringify-fast-path",
    "--no-lazy",
    *((realms.FLAG,) if realms.wanted() else ()),
)


_EXTERNAL_MEMORY_SYMBOL = (  # v8::ExternalMemoryAccounter::GetTotalAmountOf...(const Isolate*)
    "_ZN2v823ExternalMemoryAccounter49GetTotalAmountOf"
    "ExternalAllocatedMemoryForTestingEPKNS_7IsolateE"
)


_MEMORY_PRESSURE_SYMBOL = "_ZN2v87Isolate26MemoryPressureNotificationENS_19MemoryPressureLevelE"
_MEMORY_PRESSURE_CRITICAL = 2  # v8::MemoryPressureLevel::kCritical
COLLECTION_GRACE_S = 0.5  # see V8Context.memory_limit_reached
# Buffers may hold this many times the heap limit: what V8 counts outside the heap
# lags behind what the cell holds (garbage not yet swept).
EXTERNAL_FACTOR = 2


class _IsolateApi:
    """The two calls of V8's own API (exported by mini-racer's library) that let the
    host watch an isolate's memory outside its heap: ArrayBuffer backing stores, which
    the heap limit does not see (8 buffers of 256 MiB passed a 256 MiB limit)."""

    def __init__(self, dll: Any) -> None:
        self.get_current = dll._ZN2v87Isolate10GetCurrentEv
        self.get_current.restype = ctypes.c_void_p
        self.get_current.argtypes = []
        # A static that reads the isolate's external-memory counter (an atomic): safe
        # from any thread while the isolate lives, also while its JavaScript runs.
        self.external_bytes = _holding_gil(dll)[_EXTERNAL_MEMORY_SYMBOL]  # (a read)
        # Isolate::MemoryPressureNotification: callable from any thread while JavaScript
        # runs (V8 then collects at its next interrupt check).
        self.memory_pressure = (
            dll._ZN2v87Isolate26MemoryPressureNotificationENS_19MemoryPressureLevelE
        )
        self.memory_pressure.restype = None
        self.memory_pressure.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.external_bytes.restype = ctypes.c_int64
        self.external_bytes.argtypes = [ctypes.c_void_p]
        # Isolate::TerminateExecution: thread-safe; the running script (and any it would
        # run next) ends at V8's next interrupt check.
        self.terminate = dll._ZN2v87Isolate18TerminateExecutionEv
        self.terminate.restype = None
        self.terminate.argtypes = [ctypes.c_void_p]


_STARTING_V8 = threading.Lock()
_started: list[Any] = []  # mini-racer's library, once V8 started (and its snapshot chosen)
_started_elsewhere: list[bool] = []  # [True]: something else started V8 (its flags unknown)


def _v8() -> Any:
    """mini-racer's library, V8 started with `V8_FLAGS` (or, if something of this process
    started it before, with that one's flags: then said once, as a warning).

    One thread starts it, and the others wait until it chose the snapshot: an isolate
    made meanwhile from the built-in one would abort the process (see `snapshot`)."""
    if not _started:
        with _STARTING_V8:
            if not _started:
                _started.append(_start_v8())
    return _started[0]


def _start_v8() -> Any:
    try:
        dll = init_mini_racer(flags=V8_FLAGS)
    except LibAlreadyInitializedError:  # (and its isolates may be alive: no snapshot)
        log.warning(
            "V8 was started before cellfleet without its flags %s: JSON.stringify walks"
            " any depth outside the memory limit, and cells recorded here may not replay"
            " exactly elsewhere",
            " ".join(V8_FLAGS),
        )
        _started_elsewhere.append(True)
        return init_mini_racer(flags=V8_FLAGS, ignore_duplicate_init=True)
    from cellfleet.actors.runtime import snapshot  # noqa: PLC0415 - it builds with this module

    snapshot.install(dll, V8_FLAGS)  # (before this process's first isolate)
    return dll


def v8_flags() -> str:
    """The flags V8 runs with here (starting V8 if it was not yet): they change what a
    cell can see (how deep its stack goes), so a replay must know them."""
    _v8()
    return "flags unknown" if _started_elsewhere else " ".join(V8_FLAGS)


def realms_enabled() -> bool:
    """Whether cells may run in realms of hubs here (realms.py; starts V8 if it was not)."""
    return not _started_elsewhere and realms.available(_v8())


def v8_version() -> str:
    """The version of the V8 that runs cells here (starting V8 if it was not yet)."""
    return str(_v8().mr_v8_version().decode())


@functools.cache
def environment() -> tuple[str, str]:
    """The time zone and the default locale V8 took from this process's environment
    (`TZ`, `LC_ALL`/`LANG`; read once, when V8 first needs them): what Date's local
    time and Intl use. Asked of a throwaway isolate, once per process."""
    context = V8Context(memory_limit_bytes=0)
    try:
        found = context.eval_sync(
            "const o = Intl.DateTimeFormat().resolvedOptions();"
            " JSON.stringify([o.timeZone, o.locale])"
        )
    finally:
        context.dispose()
    time_zone, locale = orjson.loads(found)
    if not time_zone:  # ICU could not name it (`TZ=:/path/to/zoneinfo`): the setting itself
        time_zone = os.environ.get("TZ", "")
    return str(time_zone), str(locale)


@functools.cache
def _isolate_api() -> _IsolateApi:
    return _IsolateApi(_v8())


@functools.cache
def _holding_gil(dll: Any) -> ctypes.PyDLL:
    """mini-racer's library, its functions called without letting go of the GIL.

    ctypes lets go of it for every call, and takes it back after: from a thread among
    many that want it (every cell's isolate has one), taking it back means waiting, and
    a thread switch, for a call that took a microsecond (measured here with 16
    sessions: 52 voluntary context switches per cell on the isolates' threads, 30 with
    the calls below holding it). Only for calls that never wait for another thread:
    one that waited for a thread that waits for the GIL would never return."""
    return ctypes.PyDLL(dll._name)


class _QuickCalls:
    """The calls of mini-racer's that a cell makes, holding the GIL (`_holding_gil`):
    they queue a task, allocate or free a value, read a flag; none waits for another
    thread, but one: a call that drops the context's last reference (mini-racer holds
    one for each call) destroys it, and that waits for the isolate's thread. So they
    hold it only through `_Gate`: on the isolate's own thread (nothing else waits for
    it), while the context is not disposed of (it cannot be freed meanwhile)."""

    NAMES = (
        "mr_eval",
        "mr_alloc_string_val",
        "mr_alloc_int_val",
        "mr_alloc_double_val",
        "mr_free_value",
        "mr_hard_memory_limit_reached",
    )

    def __init__(self, dll: Any) -> None:
        fast = _holding_gil(dll)
        for name in self.NAMES:
            slow, quick = getattr(dll, name), getattr(fast, name)
            quick.argtypes, quick.restype = slow.argtypes, slow.restype
            setattr(self, name, quick)


@functools.cache
def _quick_calls(dll: Any) -> _QuickCalls:
    return _QuickCalls(dll)


class _Gate:
    """Whether a call may hold the GIL now (`_QuickCalls`): on the isolate's thread,
    and the context not disposed of, checked under the context's lock (which `dispose`
    takes to say so, before the context can be freed) and held through the call. A
    thread that has the lock already (a value freed by the garbage collector in the
    middle of `eval_async`, say) lets go of the GIL, as any other thread does."""

    __slots__ = ("disposed", "lock", "quick", "slow", "thread")

    def __init__(self, lock: threading.Lock, quick: Any, slow: Any) -> None:
        self.lock, self.quick, self.slow = lock, quick, slow
        self.thread: int | None = None  # the isolate's own, once known
        self.disposed = False

    def call(self, name: str, *args: Any) -> Any:
        if threading.get_ident() == self.thread and self.lock.acquire(blocking=False):
            try:
                if not self.disposed:
                    return getattr(self.quick, name)(*args)
            finally:
                self.lock.release()
        return getattr(self.slow, name)(*args)


_FACTORY = ObjectFactoryImpl()


@dataclass(frozen=True, slots=True)
class EvalOutcome:
    """The result of one evaluated script: a primitive value or why it failed."""

    value: Any = None
    parse_error: str | None = None  # V8's message for a script that did not compile
    error: str | None = None  # an exception escaped the script (never expected)
    terminated: bool = False
    out_of_memory: bool = False

    @property
    def ok(self) -> bool:
        return (
            self.parse_error is None
            and self.error is None
            and not self.terminated
            and not self.out_of_memory
        )


T = TypeVar("T")
_Jobs = queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]


class _IsolateThreads:
    """The two threads that create and free every isolate of the process.

    On CPUs with memory protection keys (`pku` in /proc/cpuinfo) V8 guards its code
    space with a key that only the thread which created the first isolate may use;
    threads inherit that right from the thread that starts them. Creating, running or
    freeing (once it holds compiled code) an isolate on a thread started before the
    first isolate existed (the context pool's threads, any thread of an embedding
    harness) crashes the process with SIGSEGV.

    So the creating thread starts by initializing V8 and making (and freeing) the
    process's first isolate: it holds the key from then on. It then starts the freeing
    thread, which inherits the key; each isolate's own thread, where its JavaScript
    runs, is started by the creating thread and inherits it too. V8's hardening stays
    on, and freeing one isolate runs in parallel with creating the next. Creating
    isolates one at a time also avoids V8's abort when two threads create the first
    ones at once.
    """

    def __init__(self) -> None:
        self._reset()
        # A forked child has none of these threads: it starts its own on first use.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._creations: _Jobs = queue.SimpleQueue()
        self._disposals: _Jobs = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._ready = threading.Event()
        self._creator: threading.Thread | None = None
        self._freer: threading.Thread | None = None

    def create(self, action: Callable[[], T]) -> T:
        """Run `action` on the creating thread; return its result (or raise its error)."""
        return self._run(self._creations, action)

    def free(self, action: Callable[[], T]) -> T:
        """Run `action` on the freeing thread; return its result (or raise its error)."""
        return self._run(self._disposals, action)

    def free_later(self, action: Callable[[], object]) -> None:
        """Queue `action` for the freeing thread and return at once (its error is logged)."""
        self._start()
        future: Future[object] = Future()
        future.add_done_callback(_log_failure)
        self._disposals.put((action, future))

    def _start(self) -> None:
        with self._start_lock:
            if self._creator is None:
                self._creator = threading.Thread(
                    target=self._create_loop, name="v8-create", daemon=True
                )
                self._creator.start()
        self._ready.wait()

    def _run(self, jobs: _Jobs, action: Callable[[], T]) -> T:
        self._start()
        if threading.current_thread() in (self._creator, self._freer):
            return action()  # nested: queueing it would wait forever
        future: Future[T] = Future()
        jobs.put((action, future))
        return future.result()

    def _create_loop(self) -> None:
        try:
            _make_first_isolate()
        except Exception:  # each later creation reports its own error to its caller
            log.exception("V8 could not make its first isolate")
        self._freer = threading.Thread(
            target=_serve, args=(self._disposals,), name="v8-free", daemon=True
        )
        self._freer.start()
        self._ready.set()
        _serve(self._creations)


def _serve(jobs: _Jobs) -> None:
    while True:
        action, future = jobs.get()
        try:
            future.set_result(action())
        except BaseException as error:  # handed to the caller, who re-raises it
            future.set_exception(error)
        del action, future  # (what they hold must not live on while we wait)


def _log_failure(future: Future[object]) -> None:
    error = future.exception()
    if error is not None:
        log.error("could not free a V8 isolate: %s", error)


def _make_first_isolate() -> None:
    dll = _v8()
    callback = mr_callback_func(cast("Any", _ignore_result))
    dll.mr_free_context(dll.mr_init_context(callback))


def _new_context(c_callback: Any) -> tuple[Any, Any]:
    """mini-racer's library and a new isolate+context reporting to `c_callback`."""
    dll = _v8()
    return dll, dll.mr_init_context(c_callback)


def _ignore_result(callback_id: int, raw: Any) -> None:
    del callback_id, raw


_ISOLATE_THREADS = _IsolateThreads()
_FREEING: set[V8Context] = set()  # disposed of, waiting for their last task, not freed
EXIT_FREEING_WAIT_S = 2.0


@atexit.register
def _await_freeing() -> None:
    """At exit, contexts still to be freed get a moment: the last task of a context
    calls back into Python, which must not happen once the interpreter is finalised."""
    deadline = time.monotonic() + EXIT_FREEING_WAIT_S
    for context in list(_FREEING):
        context.freed.wait(max(0.0, deadline - time.monotonic()))


def create_isolate(factory: Callable[[], T]) -> T:
    """Run `factory`, which creates a mini-racer isolate (`MiniRacer`, `V8Context`'s
    `mr_init_context`), on the thread of the process that creates them all.

    Code of this process that creates an isolate must do it through here (`V8Context`
    does); see `_IsolateThreads`."""
    return _ISOLATE_THREADS.create(factory)


def free_isolate(action: Callable[[], T]) -> T:
    """Run `action`, which frees a mini-racer isolate (`MiniRacer.close`), on the thread
    of the process that frees them all.

    A `MiniRacer` must be closed through here, never left to the garbage collector,
    which may free it on any thread."""
    return _ISOLATE_THREADS.free(action)


class V8Context:
    """A fresh isolate+context; `eval_async` and `dispose` may be called from any thread."""

    def __init__(self, *, memory_limit_bytes: int) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Callable[[EvalOutcome], None], ValueHandle]] = {}
        self._tasks: dict[int, int] = {}  # callback id -> mini-racer's task id, until answered
        self._kept: dict[str, ValueHandle] = {}  # scripts run again and again (`eval_async`)
        self._ids = itertools.count(_RELEASE_CALLBACK_ID + 1)
        self._on_post: Callable[[], None] = _ignore
        self._disposed = False
        self._isolate: int | None = None  # v8::Isolate*, learnt at the first callback
        self._memory_limit_bytes = memory_limit_bytes
        # Over the limit outside the heap: when a collection was asked for, at what count.
        self._collection_asked: tuple[float, int] | None = None
        self._thread_state_kept = False  # (see `_keep_thread_state`)
        # Its last cell's JavaScript ended on its own, nothing of it left queued: the
        # isolate may host another cell's realm (the cell's runtime says so, pool.py).
        self.done_cleanly = False
        self.freed = threading.Event()  # set once the isolate is freed
        self._when_freed: list[Callable[[], None]] = []

        def callback(callback_id: int, raw: Any) -> None:
            self._dispatch(callback_id, raw)

        c_callback = mr_callback_func(cast("Any", callback))
        self._c_callback = c_callback  # keep alive: V8 calls it until dispose()
        self._dll, self._ctx = create_isolate(lambda: _new_context(c_callback))
        self._gate = _Gate(self._lock, _quick_calls(self._dll), self._dll)
        if memory_limit_bytes:
            self._dll.mr_set_hard_memory_limit(self._ctx, memory_limit_bytes)

    def set_memory_limit(self, memory_limit_bytes: int) -> None:
        """Change the heap limit (before the context runs anything of a cell's)."""
        self._memory_limit_bytes = memory_limit_bytes
        self._dll.mr_set_hard_memory_limit(self._ctx, memory_limit_bytes)

    # -- the conversion hooks ObjectFactoryImpl expects of a context ------------------

    def create_string_val(self, val: str, typ: int) -> ValueHandle:
        data = val.encode("utf-8", "surrogatepass")
        raw = self._gate.call("mr_alloc_string_val", self._ctx, data, len(data), typ)
        return self._handle(raw)

    def create_intish_val(self, val: int, typ: int) -> ValueHandle:
        return self._handle(self._gate.call("mr_alloc_int_val", self._ctx, val, typ))

    def create_doublish_val(self, val: float, typ: int) -> ValueHandle:
        return self._handle(self._gate.call("mr_alloc_double_val", self._ctx, val, typ))

    def _handle(self, raw: Any) -> ValueHandle:
        gate, ctx = self._gate, self._ctx
        return ValueHandle(lambda: gate.call("mr_free_value", ctx, raw), raw)

    @property
    def _v8_thread(self) -> int | None:
        return self._gate.thread

    # -- evaluation -------------------------------------------------------------------

    def eval_async(
        self, code: str, on_result: Callable[[EvalOutcome], None], *, keep: bool = False
    ) -> bool:
        """Queue `code`; `on_result` is called on the V8 thread once it has run. False:
        nothing was queued (disposed of), `on_result` is never called.

        `keep`: a script this context runs again and again; its text is handed to V8
        once, and freed with the context."""
        handle = self._kept.get(code) if keep else None
        if handle is None:
            handle = _FACTORY.python_to_value_handle(self, code)  # type: ignore[arg-type]
        callback_id = next(self._ids)
        with self._lock:
            if self._disposed:
                return False
            if keep:
                self._kept[code] = handle
            # The code handle must outlive the queued task, which reads it when it runs.
            self._pending[callback_id] = (on_result, handle)
            # (the lock held, not disposed of: `_Gate`'s terms, its lock taken already)
            calls = self._gate.quick if threading.get_ident() == self._v8_thread else self._dll
            self._tasks[callback_id] = calls.mr_eval(self._ctx, handle.raw, callback_id)
        return True

    def keep(self, code: str) -> None:
        """Hand V8 the text of a script this context will run again and again now (off
        the cells' path: the first `eval_async(code, keep=True)` would do it)."""
        handle = _FACTORY.python_to_value_handle(self, code)  # type: ignore[arg-type]
        with self._lock:
            if not self._disposed:
                self._kept[code] = handle

    def eval_sync(self, code: str, timeout: float = 30.0) -> Any:
        """Run `code` and return its value (setup only; never call it on the V8 thread)."""
        outcome = self._eval_blocking(code, timeout)
        if outcome.parse_error is not None or outcome.error is not None:
            raise RuntimeError(outcome.parse_error or outcome.error)
        return outcome.value

    def compile_error(self, code: str, timeout: float = 30.0) -> str | None:
        """Evaluate `code` (a declaration-only script); return V8's parse error, if any
        (never on the V8 thread, as `eval_sync`)."""
        return self._eval_blocking(code, timeout).parse_error

    def _eval_blocking(self, code: str, timeout: float) -> EvalOutcome:
        if threading.get_ident() == self._v8_thread:  # (it would wait for itself)
            raise RuntimeError("a blocking evaluation on the isolate's own thread")
        done = threading.Event()
        box: list[EvalOutcome] = []

        def on_result(outcome: EvalOutcome) -> None:
            box.append(outcome)
            done.set()

        self.eval_async(code, on_result)
        if not done.wait(timeout):
            raise TimeoutError("V8 did not answer")
        return box[0]

    def make_post_function(self, on_post: Callable[[], None]) -> Any:
        """Create the JS function `post()`; each call runs `on_post()` on the V8 thread."""
        self._on_post = on_post
        raw = self._dll.mr_make_js_callback(self._ctx, _POST_CALLBACK_ID)
        return _FACTORY.value_handle_to_python(self, self._handle(raw))  # type: ignore[arg-type]

    def set_global(self, name: str, value: Any) -> None:
        """Set `globalThis[name] = value` for a value handle from this context."""
        global_object = self.eval_sync("globalThis")
        key = _FACTORY.python_to_value_handle(self, name)  # type: ignore[arg-type]
        val = _FACTORY.python_to_value_handle(self, value)  # type: ignore[arg-type]
        raw = self._dll.mr_set_object_item(
            self._ctx, global_object.raw_handle.raw, key.raw, val.raw
        )
        self._dll.mr_free_value(self._ctx, raw)

    def memory_limit_reached(self, *, idle: bool = False) -> bool:
        """The heap went over the limit (the isolate stopped its JavaScript), or the
        memory outside it (ArrayBuffer backing stores) went over `EXTERNAL_FACTOR`
        times the limit (one thread at a time; `idle`: nothing runs or is queued in the
        isolate).

        V8's count outside the heap includes buffers that are garbage until a collection
        and its sweeping. Idle, the host collects at once and counts again. While
        JavaScript runs, it asks V8 for a collection (run at the JavaScript's next
        interrupt check, after a builtin such as `fill` returns); the limit is reached if
        the count is still over it once it has gone down, or has not gone down within
        `COLLECTION_GRACE_S`, or at once beyond twice that.
        """
        if self._gate.call("mr_hard_memory_limit_reached", self._ctx):
            return True
        limit = self._memory_limit_bytes * EXTERNAL_FACTOR
        external = self.external_memory_bytes()
        asked = self._collection_asked
        if not limit or external <= limit:
            self._collection_asked = None
            return False
        if external > 2 * limit:
            return True
        if idle:  # a full collection now, on the isolate's thread (it has nothing to run)
            if threading.get_ident() == self._v8_thread:  # (mini-racer's would wait on it)
                with self._lock:
                    if not self._disposed and self._isolate is not None:
                        _isolate_api().memory_pressure(self._isolate, _MEMORY_PRESSURE_CRITICAL)
            else:
                self._dll.mr_low_memory_notification(self._ctx)
            return self.external_memory_bytes() > limit
        if asked is None:
            self._collection_asked = (time.monotonic(), external)
            with self._lock:
                if not self._disposed and self._isolate is not None:
                    _isolate_api().memory_pressure(self._isolate, _MEMORY_PRESSURE_CRITICAL)
            return False
        asked_at, asked_bytes = asked
        return external < asked_bytes or time.monotonic() - asked_at > COLLECTION_GRACE_S

    def external_memory_bytes(self) -> int:
        """Bytes the isolate holds outside its heap (0 before its first callback)."""
        with self._lock:  # dispose() cannot free the isolate meanwhile
            if self._disposed or self._isolate is None:
                return 0
            return int(_isolate_api().external_bytes(self._isolate))

    @property
    def memory_limit_bytes(self) -> int:
        return self._memory_limit_bytes

    def forget_kept(self) -> None:
        """Drop the scripts kept so far (a hub's, when its realm changes: hubs.py)."""
        with self._lock:
            self._kept.clear()

    def idle(self) -> bool:
        """Nothing runs or waits in the isolate that this context queued."""
        with self._lock:
            return not self._pending

    def enable_realms(self) -> None:
        """(In a callback, on the isolate's thread.) Let `new ShadowRealm()` make realms."""
        assert self._isolate is not None
        realms.enable(self._dll, self._isolate)

    def heap_used_bytes(self) -> int:
        """(In a callback, on the isolate's thread.) The heap's bytes, garbage included."""
        assert self._isolate is not None
        return realms.heap_used_bytes(self._dll, self._isolate)

    def collect_garbage(self) -> None:
        """(In a callback, on the isolate's thread.) A full collection, now (~1.5 ms)."""
        assert self._isolate is not None
        _isolate_api().memory_pressure(self._isolate, _MEMORY_PRESSURE_CRITICAL)

    def release_memory(self, timeout: float = 10.0) -> int:
        """A full collection once the JavaScript queued before it has run (never on the
        isolate's thread); the heap bytes it freed (0 if disposed of meanwhile)."""
        if threading.get_ident() == self._v8_thread:  # (it would wait for itself)
            raise RuntimeError("a blocking collection on the isolate's own thread")
        done = threading.Event()
        freed = [0]

        def collect(_: EvalOutcome) -> None:  # (the isolate's thread, JavaScript idle)
            try:
                before = self.heap_used_bytes()
                self.collect_garbage()
                freed[0] = before - self.heap_used_bytes()
            finally:
                done.set()

        if self.eval_async("0", collect):
            done.wait(timeout)
        return freed[0]

    def stop_javascript(self) -> None:
        """End the JavaScript running in the isolate now, from any thread (its freeing
        may come later: a cell stopped mid-allocation must not go on allocating)."""
        with self._lock:
            if not self._disposed and self._isolate is not None:
                _isolate_api().terminate(self._isolate)

    def dispose(self) -> None:
        """Stop all JavaScript and free the isolate (blocks until its thread ended, but
        in the two cases below).

        On the isolate's own thread (from a callback) freeing cannot wait for that
        thread to end: it is handed to the freeing thread, and this returns at once.
        So it does when that thread kept a Python thread state (`_keep_thread_state`):
        the tasks queued are cancelled, and a last task gives the thread state back,
        then hands the freeing on (`freed` and `when_freed` tell when it is done).
        """
        with self._lock:
            if self._disposed:
                return
            self._disposed = self._gate.disposed = True  # (no thread state kept from now on)
            self._pending.clear()
            self._kept.clear()
            kept, isolate = self._thread_state_kept, self._isolate
            tasks, self._tasks = list(self._tasks.values()), {}
        if threading.get_ident() == self._v8_thread:
            self._release_thread_state()
            _ISOLATE_THREADS.free_later(self._free)
        elif kept:
            # Not freed before that task ran: mini-racer frees a context's parts while
            # a task that runs still uses them.
            _FREEING.add(self)  # (its C callback must live until then)
            # No queued task runs JavaScript any more (the running one is terminated),
            # nor does a microtask checkpoint: else the last task might never come.
            for task in tasks:
                self._dll.mr_cancel_task(self._ctx, task)
            if isolate is not None:
                _isolate_api().terminate(isolate)
            code = _FACTORY.python_to_value_handle(self, "0")  # type: ignore[arg-type]
            self._dll.mr_eval(self._ctx, code.raw, _RELEASE_CALLBACK_ID)
        else:
            free_isolate(self._free)

    def when_freed(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the isolate is freed (now, if it is: on the freeing
        thread otherwise)."""
        with self._lock:
            if not self.freed.is_set():
                self._when_freed.append(callback)
                return
        callback()

    def _free(self) -> None:
        """(On the freeing thread.) Its C callback lives until then: freeing calls it
        for the tasks left."""
        self._dll.mr_free_context(self._ctx)
        _FREEING.discard(self)
        with self._lock:
            self.freed.set()
            callbacks, self._when_freed = self._when_freed, []
        for callback in callbacks:
            callback()

    # -- the V8 thread ------------------------------------------------------------------

    def _dispatch(self, callback_id: int, raw: Any) -> None:
        self._gate.thread = threading.get_ident()  # (callbacks run on it)
        if callback_id == _RELEASE_CALLBACK_ID:  # (`raw` goes with the context)
            self._release_thread_state()
            _ISOLATE_THREADS.free_later(self._free)
            return
        if not self._thread_state_kept:
            self._keep_thread_state()
        if callback_id == _POST_CALLBACK_ID:
            self._gate.call("mr_free_value", self._ctx, raw)  # the arguments array: unused
            self._on_post()
            return
        with self._lock:
            entry = self._pending.pop(callback_id, None)
            self._tasks.pop(callback_id, None)
        outcome = self._convert(raw)
        if entry is not None:
            entry[0](outcome)

    def _keep_thread_state(self) -> None:
        """Keep this thread's Python thread state until the context is disposed of.

        mini-racer calls back on a thread Python did not start: ctypes makes a thread
        state for each call and destroys it after, with its frame stack (an mmap, and a
        munmap whose TLB shootdown interrupts every other CPU of the process): measured
        here, a quarter of the process's CPU time in a tool round trip. One more
        `PyGILState_Ensure` keeps it. Disposing of the context gives it back, on this
        thread (`_release_thread_state`): from a callback here, or else from a last
        task, which then hands the freeing on (`dispose`)."""
        with self._lock:  # (`dispose` learns under it whether one is kept)
            if not self._disposed:
                _GILSTATE_ENSURE()
                self._thread_state_kept = True
                # (its thread has it entered while it runs tasks)
                self._isolate = _isolate_api().get_current()

    def _release_thread_state(self) -> None:
        """In a callback on the isolate's thread: the kept thread state goes when the
        callback returns (ctypes' own `PyGILState_Release` is then the last)."""
        if self._thread_state_kept:
            self._thread_state_kept = False
            _GILSTATE_RELEASE(_GILSTATE_LOCKED)

    def _convert(self, raw: Any) -> EvalOutcome:
        try:
            value = _FACTORY.value_handle_to_python(self, self._handle(raw))  # type: ignore[arg-type]
        except JSParseException as error:
            return EvalOutcome(parse_error=str(error))
        except JSOOMException:
            return EvalOutcome(out_of_memory=True)
        except JSTerminatedException:
            return EvalOutcome(terminated=True)
        except JSEvalException as error:
            return EvalOutcome(error=str(error))
        return EvalOutcome(value=value)


def _ignore() -> None:
    return None

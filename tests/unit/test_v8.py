"""The raw mini-racer driver (`actors/runtime/v8.py`)."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from cellfleet.actors.runtime import v8
from cellfleet.actors.runtime.pool import runtime_identity
from cellfleet.actors.runtime.v8 import V8Context

REPO = Path(__file__).parents[2]


def test_isolates_are_created_on_one_thread_and_freed_on_another_whoever_asks() -> None:
    """Every creation runs on the same thread, also when asked from several at once;
    every freeing on one other thread."""
    seen: list[tuple[threading.Thread, threading.Thread]] = []

    def ask() -> None:
        seen.append(
            (
                v8.create_isolate(threading.current_thread),
                v8.free_isolate(threading.current_thread),
            )
        )

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for asker in askers:
        asker.start()
    ask()
    for asker in askers:
        asker.join(10)
    assert len(seen) == 5
    assert len(set(seen)) == 1
    creator, freer = seen[0]
    assert creator is not freer
    assert {creator, freer}.isdisjoint([*askers, threading.current_thread()])


class _RecordingDll:
    """mini-racer's library, recording on which thread isolates are made and freed."""

    def __init__(self, dll: Any) -> None:
        self._dll = dll
        self.threads: dict[str, threading.Thread] = {}

    def __getattr__(self, name: str) -> Any:
        function = getattr(self._dll, name)
        if name not in {"mr_init_context", "mr_free_context"}:
            return function

        def recorded(*args: Any) -> Any:
            self.threads[name] = threading.current_thread()
            return function(*args)

        return recorded

    def __getitem__(self, name: str) -> Any:
        return self._dll[name]


def test_contexts_are_made_and_freed_on_the_isolate_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dll = _RecordingDll(v8._v8())
    monkeypatch.setattr(v8, "_v8", lambda: dll)
    context = V8Context(memory_limit_bytes=0)
    assert context.eval_sync("6 * 7") == 42
    context.dispose()
    assert context.freed.wait(10)
    assert dll.threads == {
        "mr_init_context": v8.create_isolate(threading.current_thread),
        "mr_free_context": v8.free_isolate(threading.current_thread),
    }


def test_isolate_threads_hand_back_errors_and_run_nested_calls_inline() -> None:
    def fail() -> None:
        raise ValueError("no isolate for you")

    with pytest.raises(ValueError, match="no isolate for you"):
        v8.create_isolate(fail)
    with pytest.raises(ValueError, match="no isolate for you"):
        v8.free_isolate(fail)
    outer = v8.create_isolate(
        lambda: (threading.current_thread(), v8.create_isolate(threading.current_thread))
    )
    assert outer[0] is outer[1]  # a nested call would deadlock if it queued


def test_contexts_made_in_parallel_all_work() -> None:
    contexts: list[V8Context] = []
    threads = [
        threading.Thread(target=lambda: contexts.append(V8Context(memory_limit_bytes=0)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(contexts) == 4
    try:
        for context in contexts:
            assert context.eval_sync("6 * 7") == 42
    finally:
        for context in contexts:
            context.dispose()


def _cpu_has_memory_protection_keys() -> bool:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return {"pku", "ospke"} <= set(line.split(":", 1)[1].split())
    return False


def _child(*args: str) -> subprocess.CompletedProcess[str]:
    """Run tests/unit/children/threads_before_v8.py: a crash fails the test, not pytest."""
    return subprocess.run(
        [sys.executable, "-m", "tests.unit.children.threads_before_v8", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_threads_started_before_the_first_isolate_run_cells() -> None:
    """On CPUs with memory protection keys, a thread started before V8's first isolate
    crashed the process when it created or ran one (the pool's own threads included)."""
    child = _child()
    assert child.returncode == 0, f"exit {child.returncode}\n{child.stderr}"
    assert child.stdout.splitlines() == ["cell 1: 6765", "cell 2: 6765", "cell 3: 6765"]


@pytest.mark.skipif(
    not _cpu_has_memory_protection_keys(), reason="the CPU has no memory protection keys"
)
def test_plain_mini_racer_crashes_there_so_the_test_above_means_something() -> None:
    child = _child("--bare")
    assert child.returncode == -signal.SIGSEGV, (child.returncode, child.stdout, child.stderr)


def test_a_context_disposed_from_its_own_v8_thread_frees_without_blocking_others() -> None:
    context = V8Context(memory_limit_bytes=0)
    disposed = threading.Event()

    def on_result(outcome: v8.EvalOutcome) -> None:  # runs on the context's V8 thread
        context.dispose()
        disposed.set()

    context.eval_async("1", on_result)
    assert disposed.wait(10)
    other = V8Context(memory_limit_bytes=0)
    done = threading.Thread(target=other.dispose)
    done.start()
    done.join(10)
    assert not done.is_alive()  # the freeing thread is not stuck behind the first


def _thread_states() -> int:
    """How many Python thread states the interpreter holds (call it with no thread
    making or dropping one)."""
    api = ctypes.pythonapi
    api.PyInterpreterState_Get.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]
    api.PyThreadState_Next.restype = ctypes.c_void_p
    api.PyThreadState_Next.argtypes = [ctypes.c_void_p]
    count, state = 0, api.PyInterpreterState_ThreadHead(api.PyInterpreterState_Get())
    while state:
        count, state = count + 1, api.PyThreadState_Next(state)
    return count


FOREVER_IN_A_MICROTASK = "Promise.resolve().then(() => { while (true) {} }); 0"


def test_the_callbacks_on_an_isolate_thread_share_one_python_thread_state() -> None:
    """ctypes would make and destroy one per callback (a thread-local set in one would
    be gone in the next), with an mmap and a munmap each."""
    context = V8Context(memory_limit_bytes=0)
    local = threading.local()
    seen: list[Any] = []
    done = threading.Event()

    def first(outcome: v8.EvalOutcome) -> None:
        local.mark = "kept"

    def second(outcome: v8.EvalOutcome) -> None:
        seen.append(getattr(local, "mark", None))
        done.set()

    context.eval_async("1", first)
    context.eval_async("2", second)
    assert done.wait(10)
    context.dispose()
    assert seen == ["kept"]


@pytest.mark.parametrize(
    "how", ["idle", "from_its_own_thread", "running_javascript", "javascript_queued"]
)
def test_a_disposed_context_gives_back_its_threads_python_thread_state(how: str) -> None:
    contexts = [V8Context(memory_limit_bytes=0) for _ in range(5)]
    before = _thread_states()
    for context in contexts:
        assert context.eval_sync("1 + 1") == 2  # (a callback: a thread state kept)
    assert _thread_states() == before + len(contexts)
    for context in contexts:
        if how == "from_its_own_thread":
            context.eval_async("1", lambda _, context=context: context.dispose())
        else:
            if how == "running_javascript":
                context.eval_async("while (true) {}", lambda _: None)
            if how == "javascript_queued":  # (one termination would end only the first)
                for script in ["while (true) {}"] * 3 + [FOREVER_IN_A_MICROTASK]:
                    context.eval_async(script, lambda _: None)
            context.dispose()
    for context in contexts:
        assert context.freed.wait(10)
    assert _thread_states() == before


FORKED = """
import os, threading
from cellfleet.actors.runtime.v8 import V8Context
V8Context(memory_limit_bytes=0).dispose()
pid = os.fork()
if pid == 0:
    result = []
    t = threading.Thread(target=lambda: result.append(
        V8Context(memory_limit_bytes=0).eval_sync("2 + 2")), daemon=True)
    t.start()
    t.join(20)
    os._exit(0 if result == [4] else 1)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_makes_isolates_of_its_own() -> None:
    child = subprocess.run(
        [sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=60, check=False
    )
    assert child.returncode == 0, child.stderr


def test_v8_started_by_someone_else_first_is_said() -> None:
    """`--no-json-stringify-fast-path` cannot apply if V8 was started before: a warning."""
    script = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout)\n"
        "from py_mini_racer import MiniRacer\n"
        "MiniRacer()\n"
        "from cellfleet.actors.runtime.v8 import V8Context\n"
        "V8Context(memory_limit_bytes=0).dispose()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "V8 was started before cellfleet without its flags" in run.stdout


def test_a_released_context_stops_its_javascript_before_it_is_freed() -> None:
    """A cell terminated while allocating must not go on allocating until the reaper
    gets to its context: 200 such cells took the process past 2 GB, then V8 aborted
    it ("Fatal JavaScript out of memory")."""
    from cellfleet.actors.runtime.pool import prepare_context

    prepared = prepare_context()
    context = prepared.context
    ended = threading.Event()
    outcomes: list[Any] = []

    def on_result(outcome: Any) -> None:
        outcomes.append(outcome)
        ended.set()

    context.eval_async(
        "const a = [];\n"
        "while (true) { a.push(new Array(100).fill(1)); if (a.length > 1e4) a.length = 0 }",
        on_result,
    )
    context.stop_javascript()
    assert ended.wait(10)
    assert outcomes[0].terminated
    context.dispose()


def test_the_runtime_identity_names_the_flags_v8_runs_with() -> None:
    """A cell's record names the flags that ran it: `--no-lazy`, say, moves where a deep
    recursion overflows, so a replay elsewhere must be able to tell."""
    assert "--no-lazy" in v8.v8_flags().split()
    assert f"({v8.v8_flags()})" in runtime_identity()

"""One V8 isolate and context, driven through mini-racer's low-level C interface.

mini-racer runs each context on its own native thread and reports every result
through one C callback. This module keeps that interface small and explicit:

* `eval_async(code, on_result)` queues a script; `on_result` runs **on the V8 thread**
  with an `EvalOutcome`, so it must only hand the outcome over (e.g. put it in a queue).
* `make_post_function()` creates the JS function `post()`; calling it from JavaScript
  runs `on_post` synchronously on the V8 thread while JavaScript waits.
* `dispose()` stops any running JavaScript (also inside a microtask checkpoint, which
  task cancellation cannot reach) and frees the isolate. It blocks for a few
  milliseconds, so callers run it off their hot path.

This is the only module that touches mini-racer internals; they are pinned to the
0.14 line in pyproject.toml and covered by tests/unit/test_v8.py.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from py_mini_racer import JSEvalException, JSOOMException, JSParseException
from py_mini_racer._dll import init_mini_racer, mr_callback_func
from py_mini_racer._exc import JSTerminatedException
from py_mini_racer._objects import ObjectFactoryImpl
from py_mini_racer._value_handle import ValueHandle

_POST_CALLBACK_ID = 1
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


_first_isolate_lock = threading.Lock()
_first_isolate_made = False


def _init_context(dll: Any, c_callback: Any) -> Any:
    """Create an isolate and context. V8 initializes process-wide memory pools lazily
    with the first isolate and aborts the process when two threads do it at once
    (`Check failed: !IsConfigurablePoolInitialized()`), so the first creation is
    serialized; later ones run in parallel."""
    global _first_isolate_made  # noqa: PLW0603 - a process-wide one-time fact
    if _first_isolate_made:
        return dll.mr_init_context(c_callback)
    with _first_isolate_lock:
        context = dll.mr_init_context(c_callback)
        _first_isolate_made = True
        return context


class V8Context:
    """A fresh isolate+context; `eval_async` and `dispose` may be called from any thread."""

    def __init__(self, *, memory_limit_bytes: int) -> None:
        self._dll = init_mini_racer(ignore_duplicate_init=True)
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Callable[[EvalOutcome], None], ValueHandle]] = {}
        self._ids = itertools.count(_POST_CALLBACK_ID + 1)
        self._on_post: Callable[[], None] = _ignore
        self._disposed = False

        def callback(callback_id: int, raw: Any) -> None:
            self._dispatch(callback_id, raw)

        c_callback = mr_callback_func(cast("Any", callback))
        self._c_callback = c_callback  # keep alive: V8 calls it until dispose()
        self._ctx = _init_context(self._dll, c_callback)
        if memory_limit_bytes:
            self._dll.mr_set_hard_memory_limit(self._ctx, memory_limit_bytes)

    # -- the conversion hooks ObjectFactoryImpl expects of a context ------------------

    def create_string_val(self, val: str, typ: int) -> ValueHandle:
        data = val.encode("utf-8", "surrogatepass")
        return self._handle(self._dll.mr_alloc_string_val(self._ctx, data, len(data), typ))

    def create_intish_val(self, val: int, typ: int) -> ValueHandle:
        return self._handle(self._dll.mr_alloc_int_val(self._ctx, val, typ))

    def create_doublish_val(self, val: float, typ: int) -> ValueHandle:
        return self._handle(self._dll.mr_alloc_double_val(self._ctx, val, typ))

    def _handle(self, raw: Any) -> ValueHandle:
        dll, ctx = self._dll, self._ctx
        return ValueHandle(lambda: dll.mr_free_value(ctx, raw), raw)

    # -- evaluation -------------------------------------------------------------------

    def eval_async(self, code: str, on_result: Callable[[EvalOutcome], None]) -> None:
        """Queue `code`; `on_result` is called on the V8 thread once it has run."""
        handle = _FACTORY.python_to_value_handle(self, code)  # type: ignore[arg-type]
        callback_id = next(self._ids)
        with self._lock:
            if self._disposed:
                return
            # The code handle must outlive the queued task, which reads it when it runs.
            self._pending[callback_id] = (on_result, handle)
            self._dll.mr_eval(self._ctx, handle.raw, callback_id)

    def eval_sync(self, code: str, timeout: float = 30.0) -> Any:
        """Run `code` and return its value (setup only; never call it on the V8 thread)."""
        outcome = self._eval_blocking(code, timeout)
        if outcome.parse_error is not None or outcome.error is not None:
            raise RuntimeError(outcome.parse_error or outcome.error)
        return outcome.value

    def compile_error(self, code: str, timeout: float = 30.0) -> str | None:
        """Evaluate `code` (a declaration-only script); return V8's parse error, if any."""
        return self._eval_blocking(code, timeout).parse_error

    def _eval_blocking(self, code: str, timeout: float) -> EvalOutcome:
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

    def memory_limit_reached(self) -> bool:
        return bool(self._dll.mr_hard_memory_limit_reached(self._ctx))

    def dispose(self) -> None:
        """Stop all JavaScript and free the isolate (blocks until its thread ended)."""
        with self._lock:
            if self._disposed:
                return
            self._disposed = True
            self._pending.clear()
        self._dll.mr_free_context(self._ctx)

    # -- the V8 thread ------------------------------------------------------------------

    def _dispatch(self, callback_id: int, raw: Any) -> None:
        if callback_id == _POST_CALLBACK_ID:
            self._dll.mr_free_value(self._ctx, raw)  # the arguments array: unused
            self._on_post()
            return
        with self._lock:
            entry = self._pending.pop(callback_id, None)
        outcome = self._convert(raw)
        if entry is not None:
            entry[0](outcome)

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

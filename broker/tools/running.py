"""Running one nested tool call's handler: its retry policy (tenacity), the time limit of
an attempt, and the conversion of what it returned or raised into the call's result or
error text. The tool workers (`worker.py`) and local tools (`local.py`) run calls
through here, so a call behaves the same wherever it runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from cellfleet.broker import codec
from cellfleet.broker.contract import texts
from cellfleet.broker.contract.tools import JsonValue
from cellfleet.broker.tools.invocation import ToolCallError, ToolInvocation
from cellfleet.broker.tools.registry import (
    RetryableToolError,
    RetryPolicy,
    ToolContext,
    ToolRegistry,
)

OnRetry = Callable[[ToolInvocation, RetryCallState], None]  # a failed attempt, to record


def run_call(
    registry: ToolRegistry,
    invocation: ToolInvocation,
    context: ToolContext,
    on_retry: OnRetry | None = None,
) -> tuple[JsonValue, str | None]:
    """Run the call's handler under its tool's retry policy: (result, None) or (None,
    the error text the JavaScript promise rejects with); `on_retry` is told each failed
    attempt that another follows. Never raises."""
    spec = registry.spec(invocation.raw_name)
    if spec is None:
        return None, texts.no_handler(invocation.raw_name)
    policy = spec.retry
    retrying = _retrying(policy, context, lambda state: on_retry and on_retry(invocation, state))
    try:
        for attempt in retrying:
            with attempt:
                context.attempt = attempt.retry_state.attempt_number
                result = _attempt(spec.invoke, invocation, context, policy)
                problem = codec.json_problem(result)
                if problem is not None:  # recorded as the call's failure: never rerun
                    return None, texts.tool_result_not_json(invocation.raw_name, problem)
                return result, None
    except ToolCallError as error:
        return None, codec.well_formed(str(error))
    except BaseException as error:  # a handler bug (even `sys.exit`) is a tool failure
        return None, codec.well_formed(texts.tool_failed(invocation.raw_name, error))
    return None, texts.tool_failed(invocation.raw_name)


def _attempt(
    invoke: Callable[[JsonValue, ToolContext], Any],
    invocation: ToolInvocation,
    context: ToolContext,
    policy: RetryPolicy,
) -> Any:
    if policy.start_to_close_s is None:
        return invoke(invocation.input, context)
    # A handler that overruns is told to stop (cancelled) and abandoned.
    box: list[Any] = []

    def target() -> None:
        try:
            box.append((True, invoke(invocation.input, context)))
        except BaseException as error:
            box.append((False, error))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(policy.start_to_close_s)
    if thread.is_alive():
        context.cancelled.set()
        raise RetryableToolError(texts.tool_timed_out(invocation.raw_name, policy.start_to_close_s))
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _retrying(
    policy: RetryPolicy, context: ToolContext, on_retry: Callable[[RetryCallState], None]
) -> Retrying:
    # A call nobody waits for any more (cancelled) is not tried again.
    stop: Any = stop_after_attempt(max(1, policy.attempts)) | stop_when_event_set(context.cancelled)
    if policy.schedule_to_close_s is not None:
        stop = stop | stop_after_delay(policy.schedule_to_close_s)
    return Retrying(
        retry=retry_if_exception_type(RetryableToolError),
        stop=stop,
        reraise=True,
        wait=wait_exponential(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s),
        before_sleep=on_retry,
    )

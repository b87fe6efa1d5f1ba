"""The host's answers on the wire: runtime responses (externally tagged, snake_case) and
the operation, delegate and notice frames around them (camelCase)."""

from __future__ import annotations

from typing import Any

from cellfleet.broker.contract import texts
from cellfleet.broker.contract.render import truncate_code_mode_result
from cellfleet.broker.contract.responses import (
    ContentItem,
    Result,
    RuntimeResponse,
    Terminated,
    Yielded,
)
from cellfleet.broker.tools.invocation import ToolInvocation

GRANTED = (
    "bounded-output-v1",
    "delegate-capacity-4096",
    "session-cell-execution-resource-limits",
    "yield-observation",
)
SUPPORTED_VERSIONS = (1,)
DEFAULT_WAIT_MAX_TOKENS = 10_000  # a wait's request has no token budget of its own


def runtime(
    answer: RuntimeResponse, *, duration_ns: int, server_shaping: bool, max_tokens: int | None
) -> dict[str, Any]:
    """`answer` as the runtime response the client reads. With server-side output
    shaping the host adds the `Script error:` item and truncates to the token budget
    (the status header stays the client's)."""
    items: list[ContentItem] = list(answer.content_items)
    if server_shaping:
        if isinstance(answer, Result) and answer.error_text is not None:
            items.append({"type": "input_text", "text": texts.script_error(answer.error_text)})
        items = truncate_code_mode_result(items, max_tokens)
    body: dict[str, Any] = {"cell_id": answer.cell_id, "content_items": items}
    if isinstance(answer, Result):
        body["error_text"] = answer.error_text
        body["result_buffered_for_ns"] = 0  # (not measured: the answer is sent when made)
    body["code_mode_host_duration_ns"] = duration_ns
    variant = "Yielded" if isinstance(answer, Yielded) else "Terminated"
    return {"Result" if isinstance(answer, Result) else variant: body}


def ok(request_id: int, value: dict[str, Any], frame: str = "operation/response") -> dict[str, Any]:
    return {"type": frame, "id": request_id, "result": {"status": "ok", "value": value}}


def error(request_id: int, message: str) -> dict[str, Any]:
    return {"type": "operation/response", "id": request_id,
            "result": {"status": "error", "message": message}}  # fmt: skip


def wait_completed(response: dict[str, Any], *, missing: bool) -> dict[str, Any]:
    return {
        "type": "wait/completed",
        "outcome": {"MissingCell" if missing else "LiveCell": response},
    }


def tool_invoke(delegate_id: int, session_id: str, call: ToolInvocation) -> dict[str, Any]:
    return {
        "type": "delegate/request",
        "id": delegate_id,
        "sessionId": session_id,
        "request": {
            "type": "tool/invoke",
            "invocation": {
                "cell_id": call.cell,
                "runtime_tool_call_id": call.call_id,
                "tool_name": {"name": call.raw_name, "namespace": call.namespace},
                "tool_kind": str(call.kind),
                "input": call.input,
            },
        },
    }


def notification(
    delegate_id: int, session_id: str, call_id: str, cell_id: str, text: str
) -> dict[str, Any]:
    return {
        "type": "delegate/request",
        "id": delegate_id,
        "sessionId": session_id,
        "request": {
            "type": "notification/send",
            "callId": call_id,
            "cellId": cell_id,
            "text": text,
        },
    }


def ready(capabilities: list[str]) -> dict[str, Any]:
    return {"type": "connection/ready", "selectedVersion": 1, "capabilities": capabilities}


def rejected(reason: dict[str, Any]) -> dict[str, Any]:
    return {"type": "connection/rejected", "reason": reason}


__all__ = ["GRANTED", "SUPPORTED_VERSIONS", "Terminated", "runtime"]

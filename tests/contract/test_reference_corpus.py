"""Replay the behaviour recorded from Codex's own host through cellfleet's runtime.

`tests/reference/recorded.json` holds what the reference `codex-code-mode-host`
answered for ~900 small cells (see tests/reference/README.md). Every case that is a
single `exec` running to completion is a runtime-level case: its output items, error
text, nested tool calls and notifications must come out of cellfleet identically.
Cases that need observers (yields, waits, termination) or several cells of one
session exercise the session layer and are replayed by its own tests.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from cellfleet.actors.runtime.local import LocalCell, ToolHandler
from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.actors.runtime.protocol import (
    CellSpec,
    Finished,
    NotificationSent,
    OutputItem,
    RuntimeTool,
    ToolCallRequested,
)
from cellfleet.broker.contract.inventory import normalize_identifier
from cellfleet.broker.contract.tools import ToolKind
from tests.reference.behaviors import handler_for

RECORDED = json.loads(
    (Path(__file__).parents[1] / "reference" / "recorded.json").read_text("utf-8")
)


def _runtime_level(case: dict[str, Any]) -> bool:
    program = case["program"]
    return (
        len(program) == 1
        and program[0]["op"] == "execute"
        and [r["kind"] for r in case["responses"]] == ["Result"]
        and not case["host_stdout_garbage"]
    )


CASES = [case for case in RECORDED["cases"] if _runtime_level(case)]

_SCRIPT_NOT_MODULE = "mini-racer compiles scripts: module-only syntax rule (README)"
_DYNAMIC_IMPORT = "V8 rejects import() natively with `Error: Not supported` (README)"
_JS_HELPER_SOURCE = "the reference's content/as_settled/stream_settled are its own JS source"
_STACK_HOOK = "stack frames are filtered by an Error.prepareStackTrace hook"

# Where cellfleet cannot match the reference, and why (strict: a fix must update this).
KNOWN_DIFFERENCES = {
    "mod_arguments_top_level": _SCRIPT_NOT_MODULE,
    "mod_arguments_reference_error": _SCRIPT_NOT_MODULE,
    "mod_new_target_top_level": _SCRIPT_NOT_MODULE,
    "mod_html_comment": _SCRIPT_NOT_MODULE,
    "import_meta_json": _SCRIPT_NOT_MODULE,
    "import_meta_url": _SCRIPT_NOT_MODULE,
    "import_meta_keys": _SCRIPT_NOT_MODULE,
    "import_meta_proto": _SCRIPT_NOT_MODULE,
    "import_dynamic_uncaught": _DYNAMIC_IMPORT,
    "import_dynamic_caught": _DYNAMIC_IMPORT,
    "import_dynamic_self": _DYNAMIC_IMPORT,
    "import_dynamic_non_string": _DYNAMIC_IMPORT,
    "globals_shape_content": _JS_HELPER_SOURCE,
    "globals_shape_as_settled": _JS_HELPER_SOURCE,
    "globals_shape_stream_settled": _JS_HELPER_SOURCE,
    "content_bigint_member": _JS_HELPER_SOURCE,
    "content_getter_throws": _JS_HELPER_SOURCE,
    "content_circular_block": _JS_HELPER_SOURCE,
    "as_settled_not_iterable_uncaught": _JS_HELPER_SOURCE,
    "stream_settled_uncaught_rejection": _JS_HELPER_SOURCE,
    "err_custom_message_after_creation": _STACK_HOOK + ": the header uses the current message",
    "err_prepare_stack_trace": _STACK_HOOK + ": a user hook also sees internal frames",
}


def _param(case: dict[str, Any]) -> Any:
    reason = KNOWN_DIFFERENCES.get(case["name"])
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(case, id=case["name"], marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_reference_case(case: dict[str, Any], pool: ContextPool) -> None:
    tools = []
    handlers: dict[str, ToolHandler] = {}
    raw_names: dict[str, str] = {}
    for tool in case["tools"]:
        name = normalize_identifier(tool["name"])
        tools.append(
            RuntimeTool(name=name, description=tool["description"], kind=ToolKind(tool["kind"]))
        )
        handlers[name] = handler_for(tool["behavior"], tool["raw_name"])
        raw_names[name] = tool["raw_name"]
    source = case["program"][0]["source"]
    cell = LocalCell(
        CellSpec(cell_id="1", source=source, tools=tools, clock_ms=time.time() * 1000),
        pool,
        tools=handlers,
    )
    end = cell.wait(30)
    expected = case["responses"][0]
    assert isinstance(end, Finished)
    items = [event.item for event in cell.events if isinstance(event, OutputItem)]
    assert (items, end.error_text) == (expected["items"], expected["error_text"])
    calls = [
        {
            "runtime_tool_call_id": e.call_id,
            "name": raw_names.get(e.name, e.name),
            "kind": str(e.kind),
            "input": e.input,
        }
        for e in cell.events
        if isinstance(e, ToolCallRequested)
    ]
    assert calls == [
        {key: call[key] for key in ("runtime_tool_call_id", "name", "kind", "input")}
        for call in case["tool_calls"]
    ]
    notes = [e.text for e in cell.events if isinstance(e, NotificationSent)]
    assert notes == [note["text"] for note in case["notifications"]]

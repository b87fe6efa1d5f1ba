"""What fleet clients and cell workers say to each other through Redis streams.

A request goes to the inbox stream of the worker that serves its session (one entry,
field `m`: a JSON object); answers, notifications and closed cells go to the answers
stream of the client that asked (same shape). Every request carries an id that its
answers repeat. This module is the only code that knows these shapes.

| `op`        | fields                                                 | answers                 |
| ----------- | ------------------------------------------------------ | ----------------------- |
| `open`      | `config` (tools, registry, limits, label), `adopt`     | `opened`/`moved`/`full` |
| `execute`   | `call_id`, `source`, `yield_time_ms`, `max_output_tokens`, | `started`, `answer` |
|             | `mode`, `tools` (the cell's own: records, or absent)   |                         |
| `observe`   | `cell`, `mode`, `yield_time_ms`                        | `answer`                |
| `terminate` | `cell`                                                 | `answer`                |
| `yield_now` | `cell`                                                 | (none)                  |
| `drop`      | `of`: the request whose caller went away               | `dropped` (to `of`)     |
| `notified`  | `of`: a notification whose callback returned           | (none)                  |
| `shutdown`  | `timeout_s`                                            | `done`                  |
| `tool_outcome` | `delegate`, `key`, `result`, `error` (a `tool_call`'s) | (none)               |

A `drop` is answered (with the id `of`) `dropped` when it cancelled the request's
observer; else the request's own answer went out, or goes out, instead. An `execute` or
`observe` sent again after its drop carries `dropped: true`: it is answered from the log,
or `dropped`.

Any request may be answered `error` (`kind`, `message`: the model sees the message) or
`moved` (`owner`: send it there; None: find the owner from the session's lease). A
worker also tells a client `notify` (`call_id`, `cell`, `text`, `notification`: to
confirm with `notified` once the callback returned) and `closed` (`cell`)
for its sessions, and `moved` without an id when it handed a session over. A session
opened with `client_tools` in its config has its nested calls answered by its client
(Codex's host protocol): the worker tells it `tool_call` (`delegate`: the worker's id of
the call, `call`: the invocation, `owner`: the worker) and `tool_withdrawn` (`delegate`: a
call the cell no longer needs), in order with the session's answers; the client answers
a call with `tool_outcome` (`key`: its idempotency key, so that an answer to an earlier
owner's call of the same number is refused).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from cellfleet.broker.contract.responses import (
    CellAnswer,
    Pending,
    Result,
    Terminated,
    Yielded,
)
from cellfleet.broker.contract.tools import NamespaceInfo, ToolDefinition, ToolKind
from cellfleet.broker.tools.invocation import ToolInvocation

FIELD = b"m"  # the one stream field of every message


class WireError(ValueError):
    """A message that is not one of the shapes above."""


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def decode(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A stream entry's message; raises `WireError` for anything else."""
    raw = fields.get(FIELD)
    if raw is None:
        raise WireError(f"an entry without its `m` field: {sorted(fields)[:4]}")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise WireError(f"not JSON: {error}") from None
    if not isinstance(message, dict):
        raise WireError("not a JSON object")
    return message


# -- answers -----------------------------------------------------------------------------

_ANSWER_TYPES: dict[str, type[Any]] = {
    "yielded": Yielded,
    "terminated": Terminated,
    "result": Result,
    "pending": Pending,
}
_ANSWER_NAMES = {kind: name for name, kind in _ANSWER_TYPES.items()}


def encode_answer(answer: CellAnswer) -> dict[str, Any]:
    fields = {f.name: getattr(answer, f.name) for f in dataclasses.fields(answer)}
    return {"type": _ANSWER_NAMES[type(answer)], **fields}


def decode_answer(data: Any) -> CellAnswer:
    if not isinstance(data, dict) or data.get("type") not in _ANSWER_TYPES:
        raise WireError(f"not a cell's answer: {str(data)[:80]}")
    kind = _ANSWER_TYPES[data["type"]]
    names = {f.name for f in dataclasses.fields(kind)}
    try:
        answer: CellAnswer = kind(**{k: v for k, v in data.items() if k in names})
    except TypeError as error:
        raise WireError(f"a malformed answer: {error}") from None
    return answer


# -- a session's configuration -------------------------------------------------------------


def encode_tools(
    tools: list[ToolDefinition], namespaces: dict[str, NamespaceInfo]
) -> dict[str, Any]:
    return {
        "tools": [dataclasses.asdict(tool) for tool in tools],
        "namespaces": {key: dataclasses.asdict(info) for key, info in namespaces.items()},
    }


def decode_tools(data: Any) -> tuple[list[ToolDefinition], dict[str, NamespaceInfo]]:
    try:
        tools = [
            ToolDefinition(**{**tool, "kind": ToolKind(tool.get("kind", "function"))})
            for tool in data["tools"]
        ]
        namespaces = {key: NamespaceInfo(**info) for key, info in data["namespaces"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise WireError(f"malformed tool definitions: {error!r}") from None
    return tools, namespaces


# -- nested calls a client answers (`client_tools`) ------------------------------------------


def encode_invocation(invocation: ToolInvocation) -> dict[str, Any]:
    fields = dataclasses.asdict(invocation)
    del fields["session"]  # (the message names it)
    return fields


def decode_invocation(session: str, data: Any) -> ToolInvocation:
    try:
        return ToolInvocation(
            session=session,
            cell=str(data["cell"]),
            call_id=str(data["call_id"]),
            name=str(data["name"]),
            raw_name=str(data["raw_name"]),
            kind=ToolKind(data["kind"]),
            input=data.get("input"),
            namespace=None if data.get("namespace") is None else str(data["namespace"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"not a tool call: {error!r}") from None

"""cellfleet: a durable code-mode runtime (JavaScript cells in V8, event-sourced on Redis).

The product's top-level folders are its subpackages: `cellfleet.actors` (the session and
cell actors, the V8 runtime), `cellfleet.broker` (the model-facing contract and the wire),
`cellfleet.projections` (pure folds of the event log) and `cellfleet.ops` (the command
line, the in-process host, the embedded Redis, benchmarks). Here they are links to those
folders, so that everything imports under this one name.

What a harness needs is here, loaded on first use (so that importing one part, say
`cellfleet.projections`, loads nothing else):

    from cellfleet import Host, ToolRegistry

    host = Host(redis_url, tools=registry)
    session = host.open_session()
    tools_for_the_model = session.tool_specs()   # `exec` and `wait`
    output = session.exec(call_id, model_input)  # what the model gets back

or, with cells on a fleet of `cellfleet worker` processes, the same sessions through
`FleetClient(redis_url, tools=registry)` (or `connect(redis_url)`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cellfleet.broker.client import Session
    from cellfleet.broker.contract.render import ToolOutput
    from cellfleet.broker.contract.tools import NamespaceInfo, ToolDefinition, ToolKind
    from cellfleet.broker.fleet.client import FleetClient, NoWorkerError, connect
    from cellfleet.broker.tools.registry import (
        RetryPolicy,
        ToolCallError,
        ToolContext,
        ToolRegistry,
    )
    from cellfleet.ops.host import Host

_PUBLIC = {
    "Host": "cellfleet.ops.host",
    "Session": "cellfleet.broker.client",
    "FleetClient": "cellfleet.broker.fleet.client",
    "NoWorkerError": "cellfleet.broker.fleet.client",
    "connect": "cellfleet.broker.fleet.client",
    "ToolOutput": "cellfleet.broker.contract.render",
    "NamespaceInfo": "cellfleet.broker.contract.tools",
    "ToolDefinition": "cellfleet.broker.contract.tools",
    "ToolKind": "cellfleet.broker.contract.tools",
    "RetryPolicy": "cellfleet.broker.tools.registry",
    "ToolCallError": "cellfleet.broker.tools.registry",
    "ToolContext": "cellfleet.broker.tools.registry",
    "ToolRegistry": "cellfleet.broker.tools.registry",
}

__all__ = [
    "FleetClient",
    "Host",
    "NamespaceInfo",
    "NoWorkerError",
    "RetryPolicy",
    "Session",
    "ToolCallError",
    "ToolContext",
    "ToolDefinition",
    "ToolKind",
    "ToolOutput",
    "ToolRegistry",
    "connect",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'cellfleet' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

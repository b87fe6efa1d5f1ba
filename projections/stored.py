"""The session's stored values (spec §5.1) as a pure fold over its events.

Only a winning completion commits: a cell's `CellCompleted` merges its `stored_writes`
key by key into the map (a later completion overwrites a key an earlier one wrote) if
it is the cell's first terminal event. `CellTerminated` never contributes, and a
completion after the cell's termination, a repeated completion, or a completion of a
cell that was never admitted changes nothing. This mirrors `broker/redis/lua/finish_cell.lua`,
which merges the same writes into the `stored` hash together with the terminal event.

`version` counts the merges (winning completions that wrote something). A cell starts
from the values of the version its `CellAdmitted` names (`stored_version`): the values
when the cell was created, which its admission may be recorded after (`values_at`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cellfleet.broker.events import AnyEvent, CellAdmitted, CellCompleted, CellTerminated
from cellfleet.projections.ports import Projection

OPEN = "open"
COMPLETED = "completed"
TERMINATED = "terminated"


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return mapping if isinstance(mapping, MappingProxyType) else MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class StoredValues:
    """`values`: stored key -> JSON text; `cells`: cell id -> open/completed/terminated;
    `version`: how many completions merged writes."""

    values: Mapping[str, str] = field(default_factory=dict)
    cells: Mapping[str, str] = field(default_factory=dict)
    version: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _frozen(self.values))
        object.__setattr__(self, "cells", _frozen(self.cells))


INITIAL = StoredValues()


def _admitted(state: StoredValues, event: CellAdmitted) -> StoredValues:
    if not event.cell or event.cell in state.cells:
        return state
    return StoredValues(state.values, {**state.cells, event.cell: OPEN}, state.version)


def _completed(state: StoredValues, event: CellCompleted) -> StoredValues:
    if state.cells.get(event.cell) != OPEN:
        return state
    cells = {**state.cells, event.cell: COMPLETED}
    if not event.stored_writes:
        return StoredValues(state.values, cells, state.version)
    return StoredValues({**state.values, **event.stored_writes}, cells, state.version + 1)


def _terminated(state: StoredValues, event: CellTerminated) -> StoredValues:
    if state.cells.get(event.cell) != OPEN:
        return state
    return StoredValues(state.values, {**state.cells, event.cell: TERMINATED}, state.version)


_HANDLERS: Mapping[type[AnyEvent], Callable[[StoredValues, Any], StoredValues]] = {
    CellAdmitted: _admitted,
    CellCompleted: _completed,
    CellTerminated: _terminated,
}


def apply(state: StoredValues, event: AnyEvent) -> StoredValues:
    """The state after `event`; events other than admission and terminal ones are ignored."""
    handler = _HANDLERS.get(type(event))
    return state if handler is None else handler(state, event)


def fold(events: Iterable[AnyEvent], state: StoredValues = INITIAL) -> StoredValues:
    """The state after applying `events` in order to `state`."""
    for event in events:
        state = apply(state, event)
    return state


def values_at(events: Iterable[AnyEvent], version: int) -> Mapping[str, str]:
    """The stored values after the first `version` merges of `events` (a session's log
    from its start): what a cell admitted with `stored_version=version` started from."""
    state = INITIAL
    for event in events:
        if state.version == version:
            break
        state = apply(state, event)
    if state.version != version:
        raise ValueError(f"the events hold {state.version} merges, not {version}")
    return state.values


def to_data(state: StoredValues) -> dict[str, Any]:
    """`state` as plain JSON data."""
    return {"values": dict(state.values), "cells": dict(state.cells), "version": state.version}


def to_json(state: StoredValues) -> str:
    """`state` as JSON text."""
    return json.dumps(to_data(state), separators=(",", ":"))


def from_json(text: str | bytes) -> StoredValues:
    """The state `to_json` wrote."""
    data: dict[str, Any] = json.loads(text)
    return StoredValues(data["values"], data["cells"], data.get("version", 0))


PROJECTION: Projection[StoredValues] = Projection(
    name="stored",
    version=1,
    initial=INITIAL,
    fold=fold,
    to_json=to_json,
    from_json=from_json,
)

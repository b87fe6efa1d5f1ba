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
from collections.abc import Collection, Iterable, Mapping
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


class _Folding:
    """The fold's working state: mutated in place, one dict update per event (folding
    a frozen state per event copied every map each time: quadratic in the cells)."""

    def __init__(self, state: StoredValues) -> None:
        self.values = dict(state.values)
        self.cells = dict(state.cells)
        self.version = state.version

    def apply(self, event: AnyEvent) -> bool:
        """Fold `event` in; True if it merged writes (a new version)."""
        cls = type(event)
        if cls is CellAdmitted:
            if event.cell and event.cell not in self.cells:
                self.cells[event.cell] = OPEN
        elif cls is CellCompleted or cls is CellTerminated:
            if self.cells.get(event.cell) != OPEN:
                return False  # not admitted, or it already ended: changes nothing
            if cls is CellTerminated:
                self.cells[event.cell] = TERMINATED
                return False
            self.cells[event.cell] = COMPLETED
            writes = event.stored_writes  # type: ignore[union-attr]
            if writes:
                self.values.update(writes)
                self.version += 1
                return True
        return False

    def state(self) -> StoredValues:
        return StoredValues(self.values, self.cells, self.version)


def apply(state: StoredValues, event: AnyEvent) -> StoredValues:
    """The state after `event`; events other than admission and terminal ones are ignored."""
    if type(event) not in (CellAdmitted, CellCompleted, CellTerminated):
        return state
    folding = _Folding(state)
    folding.apply(event)
    return folding.state()


def fold(events: Iterable[AnyEvent], state: StoredValues = INITIAL) -> StoredValues:
    """The state after applying `events` in order to `state`."""
    folding = _Folding(state)
    for event in events:
        folding.apply(event)
    return folding.state()


def values_at_versions(
    events: Iterable[AnyEvent], versions: Collection[int]
) -> dict[int, Mapping[str, str]]:
    """The stored values after each of `versions` merges of `events` (a session's log
    from its start), for those the events reach: what a cell admitted with that
    `stored_version` started from. One pass; only the asked versions are copied."""
    wanted = set(versions)
    folding = _Folding(INITIAL)
    found: dict[int, Mapping[str, str]] = {0: {}} if 0 in wanted else {}
    for event in events:
        if folding.apply(event) and folding.version in wanted:
            found[folding.version] = dict(folding.values)
    return found


def values_at(events: Iterable[AnyEvent], version: int) -> Mapping[str, str]:
    """The stored values after the first `version` merges of `events`."""
    listed = list(events)
    found = values_at_versions(listed, {version})
    if version not in found:
        merges = fold(listed).version
        raise ValueError(f"the events hold {merges} merges, not {version}")
    return found[version]


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

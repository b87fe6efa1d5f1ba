"""A session's stored values as its process knows them (actors/session/store.py)."""

from __future__ import annotations

from cellfleet.actors.session.store import Layers, SessionStore
from cellfleet.broker.journal import FinishOutcome


def _store(values: dict[str, str] | None = None) -> SessionStore:
    return SessionStore(values or {}, 0, lambda: ({}, 0))


def test_a_snapshot_never_changes_and_later_commits_are_seen_by_later_snapshots() -> None:
    store = _store({"a": "1"})
    first, version = store.snapshot()
    for n in range(100):  # beyond Layers.MAX_LAYERS: merged on the way
        store.commit({"a": str(n), f"k{n}": "x"}, lambda: FinishOutcome.COMPLETED)
    assert (dict(first), version) == ({"a": "1"}, 0)
    last, version = store.snapshot()
    assert version == 100
    assert (last["a"], last.get("k0"), last.get("k99"), last.get("nope")) == ("99", "x", "x", None)
    assert len(last) == 101
    assert dict(last) == {"a": "99", **{f"k{n}": "x" for n in range(100)}}


def test_a_commit_that_loses_changes_nothing() -> None:
    store = _store({"a": "1"})
    store.commit({"a": "2"}, lambda: FinishOutcome.TERMINATED)
    assert store.snapshot()[1] == 0
    assert dict(store.snapshot()[0]) == {"a": "1"}


def test_layers_are_merged_once_there_are_too_many() -> None:
    values = Layers(({"a": "0"},))
    for n in range(Layers.MAX_LAYERS + 1):
        values = values.with_layer({"a": str(n + 1)})
    assert len(values._layers) <= Layers.MAX_LAYERS
    assert values["a"] == str(Layers.MAX_LAYERS + 1)

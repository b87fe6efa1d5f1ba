"""A session's stored values (spec §5.1) as the process that owns the session knows them.

The log's `finish_cell` script merges a winning completion's writes into the `stored`
hash and counts the merge (`stored_version`). This copy follows it under the session's
store lock: a completion with writes runs its script holding the lock and merges the
same writes here before anyone sees its answer, so a cell created afterwards starts
from them. A cell's snapshot is taken without a round trip to Redis; its `CellAdmitted`
records the version it names.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

from cellfleet.broker.journal import FinishOutcome

MAX_STORED_BYTES = 64 * 1024 * 1024  # a session's stored keys and values (see `_entry`)
KEY_OVERHEAD_BYTES = 64  # what a key costs besides its text (Redis's and this copy's)

Snapshot = tuple[Mapping[str, str], int]  # (stored key -> JSON text, version)


class OverBudget(Exception):  # noqa: N818 - a refusal, handled by the cell actor
    """A completion's writes would take the session's values beyond their budget."""


class SessionStore:
    """The stored values and their version; thread-safe (cells commit concurrently)."""

    def __init__(
        self, values: Mapping[str, str], version: int, reload: Callable[[], Snapshot]
    ) -> None:
        self._lock = threading.Lock()
        self._values = Layers((dict(values),))
        self._bytes = _size(values)
        self._version = version
        self._reload = reload
        self._unsure = False  # a commit failed midway: the log knows better than we do

    def snapshot(self) -> Snapshot:
        """The current values (never changed afterwards) and their version."""
        with self._lock:
            if self._unsure:
                values, self._version = self._reload()
                self._values = Layers((dict(values),))
                self._bytes = _size(values)
                self._unsure = False
            return self._values, self._version

    def commit(
        self, writes: Mapping[str, str], finish: Callable[[], FinishOutcome]
    ) -> FinishOutcome:
        """Run `finish`, the terminal script that merges `writes` if its completion wins
        (it returns the kind that holds), and follow the merge here.

        Raises `OverBudget` (without running `finish`) if the values would grow beyond
        `MAX_STORED_BYTES` with `writes` merged: checked under the lock that the merge
        holds, so that two cells that each fit cannot together go beyond.
        """
        if not writes:
            return finish()
        with self._lock:
            values = self._values
            replaced = 0
            for key in writes:
                old = values.get(key)
                if old is not None:
                    replaced += _entry(key, old)
            after = self._bytes - replaced + _size(writes)
            if after > MAX_STORED_BYTES and after > self._bytes:  # shrinking always fits
                raise OverBudget
            try:
                won = finish()
            except BaseException:
                self._unsure = True
                raise
            if won is FinishOutcome.COMPLETED:
                self._values = values.with_layer(dict(writes))
                self._bytes = after
                self._version += 1
            return won


class Layers(Mapping[str, str]):
    """Stored values as layers of writes, the newest last, never changed once made: a
    commit adds a layer (it copied every value: 0.3 s per commit at 870,000 keys), and
    every `MAX_LAYERS` layers are merged into one (their cost spread over the commits)."""

    MAX_LAYERS = 32
    __slots__ = ("_layers",)

    def __init__(self, layers: tuple[dict[str, str], ...]) -> None:
        self._layers = layers

    def with_layer(self, layer: dict[str, str]) -> Layers:
        layers = (*self._layers, layer)
        if len(layers) > self.MAX_LAYERS:
            merged: dict[str, str] = {}
            for each in layers:
                merged.update(each)
            layers = (merged,)
        return Layers(layers)

    def __getitem__(self, key: str) -> str:
        for layer in reversed(self._layers):
            value = layer.get(key)
            if value is not None:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())

    def _merged(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for layer in self._layers:
            merged.update(layer)
        return merged


def _size(values: Mapping[str, str]) -> int:
    return sum(_entry(key, value) for key, value in values.items())


def _entry(key: str, value: str) -> int:
    """What one stored value costs: its key and JSON text in UTF-8, as Redis holds them
    (an astral character is 4 bytes, not 1), and a key's overhead (400,000 keys of a
    few characters took 368 MiB, not the 2 MB their text is)."""
    return _utf8_len(key) + _utf8_len(value) + KEY_OVERHEAD_BYTES


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))

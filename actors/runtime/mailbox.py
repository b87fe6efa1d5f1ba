"""The shared-memory log through which a cell's JavaScript reports what it does.

JavaScript appends records to an ArrayBuffer that Python reads directly through a
memoryview, so Python sees a cell's output even while its JavaScript is busy and
never needs a round trip into V8 to collect it (layout: actors/runtime/prelude.js).

Only committed records are read: JavaScript publishes the log length with
`Atomics.store` after writing a record. The log is reset (length 0) only while
JavaScript cannot write: during its synchronous `post()` callback, or while the
isolate is idle between inputs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import orjson

HEADER_BYTES = 16
_MORE = 0x80000000


class Mailbox:
    """Reads the records of one context's log; `drain` is safe from any thread."""

    def __init__(self, buffer: memoryview) -> None:
        self._buffer = buffer
        self._length = buffer[0:4].cast("i")
        self._read = 0  # in UTF-16 units
        self._partial: list[str] = []
        self._lock = threading.Lock()

    def drain_into(
        self, consumer: Callable[[list[list[Any]]], None], *, reset: bool, always: bool = False
    ) -> None:
        """Hand the records committed since the last drain to `consumer`, in log order.

        `consumer` runs under the mailbox lock, so records drained by different threads
        reach it in the order JavaScript wrote them. Pass `reset=True` (empty the log)
        only while JavaScript cannot be writing.
        """
        with self._lock:
            end = self._length[0]
            start = self._read
            records: list[list[Any]] = []
            if end > start:
                raw = bytes(self._buffer[HEADER_BYTES + 2 * start : HEADER_BYTES + 2 * end])
                self._parse(raw, records)
            self._read = end
            if reset:
                self._length[0] = 0
                self._read = 0
            if records or always:
                consumer(records)

    def _parse(self, raw: bytes, records: list[list[Any]]) -> None:
        offset = 0
        while offset < len(raw):
            length = int.from_bytes(raw[offset : offset + 4], "little")
            more = bool(length & _MORE)
            count = length & ~_MORE
            text = raw[offset + 4 : offset + 4 + 2 * count].decode("utf-16-le", "surrogatepass")
            offset += 4 + 2 * count
            if more:
                self._partial.append(text)
                continue
            if self._partial:
                text = "".join(self._partial) + text
                self._partial.clear()
            try:
                records.append(loads(text))
            except ValueError:  # not JSON: the runtime refuses it as an unknown record
                records.append([None])


def loads(text: str) -> Any:
    """Parse JSON from JavaScript; lone surrogates become U+FFFD (as the reference does)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _well_formed(json.loads(text))


def _well_formed(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_well_formed(item) for item in value]
    if isinstance(value, dict):
        return {_well_formed(k): _well_formed(v) for k, v in value.items()}
    return value

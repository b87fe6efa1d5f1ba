"""The shared-memory log through which a cell's JavaScript reports what it does.

JavaScript appends records to an ArrayBuffer that Python reads directly through a
memoryview, so Python sees a cell's output even while its JavaScript is busy and
never needs a round trip into V8 to collect it (layout: actors/runtime/prelude.js).

Only committed records are read: JavaScript publishes the log length with
`Atomics.store` after writing a record. The log is reset (length 0) only while
JavaScript cannot write: during its synchronous `post()` callback, or while the
isolate is idle between inputs.

The same buffer carries the one question JavaScript asks Python and waits for:
`load(key)` of a stored value the cell has not seen yet (stored values stay in Python
until a cell loads them, so a cell's start costs nothing for the values it never
loads). With the log drained and empty, JavaScript writes the key where records go,
sets header[1] to `REQUEST_LOAD` and calls `post()`; Python answers in the same place,
a part at a time (header[2] = units in this part, header[3] = 1 while more follow;
JavaScript asks for the next with `REQUEST_MORE`), or sets header[1] to `ANSWER_NONE`
for a key that is not stored. A key longer than the log comes in parts the same way
(`REQUEST_KEY_PART`, then `REQUEST_LOAD` with its last part).

The buffer's last `INBOX_BYTES` are the host's inbox: `INBOX_SLOTS` slots, where the
cell's owner leaves its inputs (a tool's result or error, a timer), input n in slot
n % INBOX_SLOTS, for the prelude's `take()`, which empties the slot (`leave_input`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import orjson

from cellfleet.broker import codec

HEADER_BYTES = 16
_MORE = 0x80000000

MAX_STRING_UNITS = 2**29 - 24  # V8's longest string, in UTF-16 units

# header[1] (prelude.js has the same numbers).
REQUEST_NONE = 0
REQUEST_KEY_PART = 1
REQUEST_LOAD = 2
REQUEST_MORE = 3
ANSWER_NONE = -1

# The inbox (prelude.js has the same numbers): per slot a header of 32 bytes (Int32 kind,
# staged, text length in units; Float64 clock and id at byte 16), then the slots' texts.
INBOX_SLOTS = 8
SLOT_UNITS = 2048
_SLOT_HEADER = 32
INBOX_BYTES = INBOX_SLOTS * (_SLOT_HEADER + 2 * SLOT_UNITS)
INPUT_NONE = 0
INPUT_RESOLVE = 1
INPUT_REJECT = 2
INPUT_FIRE = 3


class Mailbox:
    """Reads the records of one context's log; `drain` is safe from any thread."""

    def __init__(self, buffer: memoryview, max_units: int = MAX_STRING_UNITS) -> None:
        inbox_at = len(buffer) - INBOX_BYTES
        self._buffer = buffer[:inbox_at]  # the log
        inbox = buffer[inbox_at:]
        texts_at = INBOX_SLOTS * _SLOT_HEADER
        # Per slot: its kind, staged flag and text length; its clock and id; its text.
        self._slots: list[tuple[memoryview[int], memoryview[float], memoryview[int]]] = []
        for k in range(INBOX_SLOTS):
            at, text_at = k * _SLOT_HEADER, texts_at + 2 * SLOT_UNITS * k
            self._slots.append(
                (
                    inbox[at : at + 12].cast("i"),
                    inbox[at + 16 : at + 32].cast("d"),
                    inbox[text_at : text_at + 2 * SLOT_UNITS],
                )
            )
        # No record or key the prelude writes is longer than a string the cell's heap can
        # hold: past that, parts that say "more follows" are not the prelude's.
        self._max_units = max_units
        self._partial_units = 0
        self._length = buffer[0:4].cast("i")
        self._read = 0  # in UTF-16 units
        self._partial: list[str] = []
        # (reentrant: what the consumer of a drain does may drain again, `drain_into`)
        self._lock = threading.RLock()
        self._header = buffer[0:HEADER_BYTES].cast("i")
        self._key_parts: list[bytes] = []
        self._key_units = 0
        self._answer = b""  # the value being handed over, UTF-16-LE
        self._answered = 0  # bytes of it handed over so far

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

    def answer_request(self, lookup: Callable[[str], str | None]) -> None:
        """Answer the question JavaScript asked before its `post()`, if any (V8 thread,
        JavaScript waiting, log drained): `lookup(key)` gives a stored value's JSON text."""
        header = self._header
        request = header[1]
        if request == REQUEST_NONE:
            return
        if request in (REQUEST_KEY_PART, REQUEST_LOAD):
            count = min(max(header[2], 0), (len(self._buffer) - HEADER_BYTES) // 2)
            self._key_units += count
            if self._key_units <= self._max_units:  # else not the prelude's: not stored
                self._key_parts.append(bytes(self._buffer[HEADER_BYTES : HEADER_BYTES + 2 * count]))
            if request == REQUEST_KEY_PART:
                header[1] = REQUEST_NONE
                return
            too_long = self._key_units > self._max_units
            # Decoded whole (a pair may straddle two parts); a lone surrogate becomes
            # U+FFFD, as in the keys of the records that stored the values.
            key = b"".join(self._key_parts).decode("utf-16-le", "replace")
            self._key_parts.clear()
            self._key_units = 0
            value = None if too_long else lookup(key)
            if value is None:
                header[1] = ANSWER_NONE
                return
            self._answer = value.encode("utf-16-le", "surrogatepass")
            self._answered = 0
        part = self._answer[self._answered : self._answered + len(self._buffer) - HEADER_BYTES]
        self._buffer[HEADER_BYTES : HEADER_BYTES + len(part)] = part
        self._answered += len(part)
        more = self._answered < len(self._answer)
        if not more:
            self._answer = b""
        header[2] = len(part) // 2
        header[3] = int(more)
        header[1] = REQUEST_NONE

    def leave_input(
        self, slot: int, kind: int, ident: int, clock_ms: float, text: str = ""
    ) -> bool:
        """Leave an input in inbox slot `slot` for the prelude's `take()` (owner thread;
        the slot's last input was taken: at most `INBOX_SLOTS` are in flight). False if
        its text is too long for the slot: the prelude must then be given it first
        (`stage`), before its `take()`."""
        header, numbers, units = self._slots[slot]
        if header[0] != INPUT_NONE:
            raise RuntimeError(f"inbox slot {slot} is still taken")
        data = text.encode("utf-16-le", "surrogatepass")
        fits = len(data) <= len(units)
        if fits:
            units[: len(data)] = data
        header[1] = int(not fits)
        header[2] = len(data) // 2 if fits else 0
        numbers[0] = clock_ms
        numbers[1] = ident
        header[0] = kind  # last: the input is whole before `take()` can see it
        return fits

    def _parse(self, raw: bytes, records: list[list[Any]]) -> None:
        offset = 0
        while offset < len(raw):
            length = int.from_bytes(raw[offset : offset + 4], "little")
            more = bool(length & _MORE)
            count = length & ~_MORE
            text = raw[offset + 4 : offset + 4 + 2 * count].decode("utf-16-le", "surrogatepass")
            offset += 4 + 2 * count
            if self._partial_units + count > self._max_units:  # not the prelude's
                self._partial.clear()
                self._partial_units = 0
                records.append([None])  # refused as an unknown record; the cell ends
                continue
            if more:
                self._partial.append(text)
                self._partial_units += count
                continue
            if self._partial:
                text = "".join(self._partial) + text
                self._partial.clear()
                self._partial_units = 0
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
        return codec.well_formed(value)
    if isinstance(value, list):
        return [_well_formed(item) for item in value]
    if isinstance(value, dict):
        return {_well_formed(k): _well_formed(v) for k, v in value.items()}
    return value

"""Framing of Codex's code-mode host protocol: a u32 little-endian payload length, then
that many bytes of UTF-8 JSON (at most `MAX_FRAME_BYTES`)."""

from __future__ import annotations

import struct
import threading
from typing import Any, BinaryIO

import orjson

MAX_FRAME_BYTES = 64 * 1024 * 1024
_LENGTH = struct.Struct("<I")


class FrameError(ValueError):
    """The stream does not hold a frame here (cut off, or too long)."""


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame's payload; None at the end of the stream (between frames)."""
    head = _read_exactly(stream, _LENGTH.size)
    if not head:
        return None
    if len(head) < _LENGTH.size:
        raise FrameError("the stream ended inside a frame's length")
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    payload = _read_exactly(stream, length)
    if len(payload) < length:
        raise FrameError(f"the stream ended {length - len(payload)} bytes short of a frame")
    return payload


def _read_exactly(stream: BinaryIO, count: int) -> bytes:
    chunks, needed = [], count
    while needed:
        chunk = stream.read(needed)
        if not chunk:
            break
        chunks.append(chunk)
        needed -= len(chunk)
    return b"".join(chunks)


class FrameWriter:
    """Writes whole frames, one at a time, from any thread."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False  # the reader is gone: later frames are dropped

    def write(self, message: Any) -> None:
        payload = orjson.dumps(message)
        if len(payload) > MAX_FRAME_BYTES:
            raise FrameError(f"an answer of {len(payload)} bytes exceeds the frame limit")
        with self._lock:
            if self.closed:
                return
            try:
                data = memoryview(_LENGTH.pack(len(payload)) + payload)
                while data:  # (an unbuffered write may take only part of it)
                    written = self._stream.write(data)
                    data = data[written or 0 :]
                self._stream.flush()
            except (ValueError, OSError):  # the reader left (a broken pipe): stop writing
                self.closed = True

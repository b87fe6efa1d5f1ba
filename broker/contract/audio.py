"""WAV audio in content items: how long a clip is, by the two rules that use it.

One reader of RIFF/WAVE data (`read_wav`) serves both rules, which follow the
reference's two places that measure audio:
* `clip_duration_ms`: the runtime replaces a clip shorter than 25 ms by a text
  (any base64 data URL; the length of the data present, at the format's byte rate);
* `wav_duration_seconds`: the output budget counts 10 tokens per second of audio
  (WAV media types and strict base64 only; whole frames, formats whose frames are
  `block_align` bytes).
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Final

WAV_MIME_TYPES: Final = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"})
# WAVE format tags whose frame count is `data bytes / block_align` (PCM, IEEE float,
# A-law, µ-law, extensible).
FRAME_ALIGNED_FORMATS: Final = frozenset({0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE})


@dataclass(frozen=True, slots=True)
class WavInfo:
    """The `fmt ` fields of a WAVE file and the size of its `data` chunk."""

    format_tag: int
    channels: int
    sample_rate: int
    byte_rate: int
    block_align: int
    data_size: int  # as its chunk header declares it
    data_present: int  # how much of it the file holds


def read_wav(data: bytes) -> WavInfo | None:
    """The format and data size of a RIFF/WAVE file; None if it is not one, or if its
    `data` chunk comes before a complete `fmt ` chunk (or never)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position = 12
    fmt: tuple[int, int, int, int, int] | None = None
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        body = data[position + 8 : position + 8 + size]
        if chunk_id == b"fmt " and len(body) >= 16:
            fmt = struct.unpack_from("<HHIIH", body)
        elif chunk_id == b"data":
            if fmt is None:
                return None
            tag, channels, sample_rate, byte_rate, block_align = fmt
            return WavInfo(tag, channels, sample_rate, byte_rate, block_align, size, len(body))
        position += 8 + size + (size & 1)
    return None


def clip_duration_ms(audio_url: str) -> float | None:
    """How long a clip plays (the runtime's rule), None if that cannot be told."""
    head, comma, payload = audio_url.partition(",")
    if not comma or not head.lower().endswith(";base64"):
        return None
    try:
        info = read_wav(base64.b64decode(payload, validate=False))
    except ValueError:
        return None
    if info is None or not info.byte_rate:
        return None
    return float(min(info.data_size, info.data_present) * 1000 / info.byte_rate)


def wav_duration_seconds(audio_url: str) -> float | None:
    """How long a WAV data URL plays (the output budget's rule), None if not one."""
    metadata, comma, payload = audio_url.partition(",")
    if not comma or len(metadata) < len("data:"):
        return None
    mime, *parameters = metadata[len("data:") :].split(";")
    if mime.lower() not in WAV_MIME_TYPES or not any(p.lower() == "base64" for p in parameters):
        return None
    try:
        info = read_wav(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):
        return None
    if (
        info is None
        or info.format_tag not in FRAME_ALIGNED_FORMATS
        or not info.sample_rate
        or not info.block_align
    ):
        return None
    return (info.data_size // info.block_align) / info.sample_rate

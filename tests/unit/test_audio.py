"""WAV clips (`broker/contract/audio.py`): one reader, the runtime's and the budget's rule."""

from __future__ import annotations

import base64
import io
import struct
import wave

from cellfleet.broker.contract.audio import clip_duration_ms, read_wav, wav_duration_seconds


def wav(frames: int, rate: int = 8000, width: int = 2, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(b"\0" * frames * width * channels)
    return buffer.getvalue()


def url(data: bytes, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_both_rules_agree_on_a_plain_clip() -> None:
    clip = wav(frames=4000, rate=8000, channels=2)  # half a second
    info = read_wav(clip)
    assert info is not None
    assert (info.sample_rate, info.channels, info.block_align) == (8000, 2, 4)
    assert clip_duration_ms(url(clip)) == 500.0
    assert wav_duration_seconds(url(clip)) == 0.5


def test_the_runtime_measures_what_is_there_the_budget_what_is_declared() -> None:
    truncated = wav(frames=8000)[:-8000]  # the data chunk declares 1 s, holds 0.5 s
    assert clip_duration_ms(url(truncated)) == 500.0
    assert wav_duration_seconds(url(truncated)) == 1.0


def test_the_budget_takes_wav_media_types_only_the_runtime_any_base64() -> None:
    clip = wav(frames=80)
    assert clip_duration_ms(url(clip, "audio/mpeg")) == 10.0
    assert wav_duration_seconds(url(clip, "audio/mpeg")) is None


def test_what_is_not_a_wav_has_no_duration() -> None:
    clip = wav(frames=80)
    fmt_cut = clip[:12] + b"fmt " + struct.pack("<I", 16) + clip[20:28]  # a truncated fmt
    data_first = b"RIFF\0\0\0\0WAVE" + b"data" + struct.pack("<I", 4) + b"\0" * 4 + clip[12:36]
    for data in (b"", b"RIFF", b"not a wav at all", fmt_cut, data_first):
        assert read_wav(data) is None
        assert clip_duration_ms(url(data)) is None
        assert wav_duration_seconds(url(data)) is None
    assert clip_duration_ms("data:audio/wav,plain") is None
    assert wav_duration_seconds("data:audio/wav;base64,@@@") is None

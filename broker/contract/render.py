"""Turn a cell's `RuntimeResponse` into the `exec` / `wait` tool output (spec §1.4, §1.5).

A port of Codex's adapter (`core/src/tools/code_mode`: `handle_runtime_response`,
`truncate_code_mode_result`) and of its truncation helpers
(`utils/output-truncation`, `utils/string/src/truncate.rs`):

1. image items get the `high` detail when they have none (and `original` becomes `high`
   when the model cannot ask for original detail);
2. a failed `Result` gets a `Script error:\\n{error}` text item;
3. the items are truncated to the token budget (tokens ≈ UTF-8 bytes / 4);
4. the status header `{status}\\nWall time {s:.1} seconds\\nOutput:\\n` goes first.

Only the runtime's response is rendered here; images are not re-encoded (a host feature).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cellfleet.broker.contract import texts
from cellfleet.broker.contract.audio import wav_duration_seconds
from cellfleet.broker.contract.responses import (
    ContentItem,
    Result,
    RuntimeResponse,
    Terminated,
    Yielded,
)
from cellfleet.broker.contract.rust.text import rust_lines

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "ToolOutput",
    "approx_token_count",
    "estimate_audio_token_count",
    "failure_output",
    "format_header",
    "formatted_truncate_text",
    "render_response",
    "script_status",
    "truncate_code_mode_result",
    "truncate_middle_with_token_budget",
]

DEFAULT_MAX_OUTPUT_TOKENS: Final = 10_000
APPROX_BYTES_PER_TOKEN: Final = 4
AUDIO_TOKENS_PER_SECOND: Final = 10.0
DEFAULT_IMAGE_DETAIL: Final = "high"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutput:
    """What the model gets back from `exec` / `wait`: content items and a success flag."""

    items: list[ContentItem]
    success: bool
    plain: bool = False  # a failure with no header: sent to the model as a plain string
    running_cell_id: str | None = None  # the cell still runs (it yielded): `wait` on it

    @property
    def text(self) -> str:
        """The plain failure's message."""
        return self.items[0]["text"]


def _text(text: str) -> ContentItem:
    return {"type": "input_text", "text": text}


def failure_output(message: str) -> ToolOutput:
    """A plain failed tool output: just the message, no header (pragma errors, …)."""
    return ToolOutput(items=[_text(message)], success=False, plain=True)


def script_status(response: RuntimeResponse) -> str:
    """The first header line for a response."""
    if isinstance(response, Yielded):
        return texts.script_running(response.cell_id)
    if isinstance(response, Terminated):
        return texts.SCRIPT_TERMINATED
    return texts.SCRIPT_COMPLETED if response.error_text is None else texts.SCRIPT_FAILED


def _f32(value: float) -> float:
    """Round to the nearest IEEE single (what an `f32` operation stores)."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def format_header(status: str, wall_time_s: float) -> str:
    """`{status}\\nWall time {s:.1} seconds\\nOutput:\\n`, with Codex's `f32` rounding.

    Codex computes `((elapsed.as_secs_f32() * 10.0).round() / 10.0)` and prints it with
    one decimal; every step is reproduced in single precision.
    """
    whole = math.floor(max(wall_time_s, 0.0))
    nanos = round((max(wall_time_s, 0.0) - whole) * 1e9)
    seconds = _f32(_f32(whole) + _f32(_f32(nanos) / _f32(1e9)))
    scaled = _f32(seconds * 10.0)
    rounded = _f32(math.floor(scaled + 0.5))  # `f32::round`: half away from zero
    return texts.header(status, _f32(rounded / 10.0))


def _convert_item(item: ContentItem, can_request_original_detail: bool) -> ContentItem:
    if item.get("type") != "input_image":
        return dict(item)
    converted = dict(item)
    detail = converted.get("detail") or DEFAULT_IMAGE_DETAIL
    if detail == "original" and not can_request_original_detail:
        detail = DEFAULT_IMAGE_DETAIL
    converted["detail"] = detail
    return converted


def render_response(
    response: RuntimeResponse,
    *,
    wall_time_s: float,
    max_output_tokens: int | None,
    can_request_original_detail: bool = True,
) -> ToolOutput:
    """The tool output for a runtime response (`handle_runtime_response`).

    `wall_time_s` is the time since the handler started; `max_output_tokens` the budget
    (`None`: 10 000 tokens) — the pragma's for `exec`, `max_tokens` for `wait`.
    """
    items = [_convert_item(item, can_request_original_detail) for item in response.content_items]
    success = True
    if isinstance(response, Result) and response.error_text is not None:
        items.append(_text(texts.script_error(response.error_text)))
        success = False
    items = truncate_code_mode_result(items, max_output_tokens)
    items.insert(0, _text(format_header(script_status(response), wall_time_s)))
    running = response.cell_id if isinstance(response, Yielded) else None
    return ToolOutput(items=items, success=success, running_cell_id=running)


# ---------------------------------------------------------------------- truncation


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def approx_token_count(text: str) -> int:
    """Tokens of a text: its UTF-8 length / 4, rounded up."""
    return -(-len(_utf8(text)) // APPROX_BYTES_PER_TOKEN)


def _floor_char_boundary(data: bytes, index: int) -> int:
    index = min(index, len(data))
    while 0 < index < len(data) and data[index] & 0xC0 == 0x80:
        index -= 1
    return index


def _ceil_char_boundary(data: bytes, index: int) -> int:
    while index < len(data) and data[index] & 0xC0 == 0x80:
        index += 1
    return index


def _truncate_to_bytes(text: str, max_bytes: int) -> str:
    """`truncate_with_byte_estimate` with the token marker: keep head and tail bytes."""
    data = _utf8(text)
    if max_bytes == 0:
        return f"…{-(-len(data) // APPROX_BYTES_PER_TOKEN)} tokens truncated…"
    if len(data) <= max_bytes:
        return text
    left = max_bytes // 2
    prefix_end = _floor_char_boundary(data, left)
    suffix_start = max(_ceil_char_boundary(data, len(data) - (max_bytes - left)), prefix_end)
    removed = -(-(len(data) - max_bytes) // APPROX_BYTES_PER_TOKEN)
    head = data[:prefix_end].decode("utf-8", "surrogatepass")
    tail = data[suffix_start:].decode("utf-8", "surrogatepass")
    return f"{head}…{removed} tokens truncated…{tail}"


def truncate_middle_with_token_budget(text: str, max_tokens: int) -> tuple[str, int | None]:
    """Keep the start and end of `text` within `max_tokens`; also the original token count."""
    if not text:
        return "", None
    max_bytes = max_tokens * APPROX_BYTES_PER_TOKEN
    if max_tokens > 0 and len(_utf8(text)) <= max_bytes:
        return text, None
    truncated = _truncate_to_bytes(text, max_bytes)
    return truncated, (None if truncated == text else approx_token_count(text))


def formatted_truncate_text(content: str, max_tokens: int) -> str:
    """`content`, or a middle-truncated copy under a `Warning: truncated output` header."""
    if len(_utf8(content)) <= max_tokens * APPROX_BYTES_PER_TOKEN:
        return content
    return (
        f"Warning: truncated output (original token count: {approx_token_count(content)})\n"
        f"Total output lines: {len(rust_lines(content))}\n\n"
        f"{truncate_middle_with_token_budget(content, max_tokens)[0]}"
    )


def _truncate_text_items(items: list[ContentItem], max_tokens: int) -> list[ContentItem]:
    """All-text output: over budget, the joined text becomes one truncated item."""
    if not items:
        return items
    # Codex appends `\n` + text to a non-empty accumulator: texts join with newlines,
    # leading empty ones leave no trace. (Joined once: appending is quadratic.)
    texts = [item["text"] for item in items]
    first = next((index for index, text in enumerate(texts) if text), len(texts))
    combined = "\n".join(texts[first:])
    if len(_utf8(combined)) <= max_tokens * APPROX_BYTES_PER_TOKEN:
        return items
    return [_text(formatted_truncate_text(combined, max_tokens))]


def _truncate_mixed_items(items: list[ContentItem], max_tokens: int) -> list[ContentItem]:
    """Output with images / audio: spend the budget item by item, count what is dropped."""
    out: list[ContentItem] = []
    remaining = max_tokens
    omitted_text = omitted_audio = 0
    for item in items:
        kind = item.get("type")
        if kind == "input_text":
            if not item["text"]:
                continue  # no content, only an array slot
            kept, remaining = _spend_on_text(item, remaining)
            if kept is None:
                omitted_text += 1
            else:
                out.append(kept)
        elif kind == "input_audio":
            cost = estimate_audio_token_count(item.get("audio_url", ""))
            if cost <= remaining:
                out.append(item)
                remaining -= cost
            else:
                omitted_audio += 1
        else:
            out.append(item)  # images cost nothing here
    if omitted_text:
        out.append(_text(f"[omitted {omitted_text} text items ...]"))
    if omitted_audio:
        out.append(_text(f"[omitted {omitted_audio} audio items ...]"))
    return out


def _spend_on_text(item: ContentItem, remaining: int) -> tuple[ContentItem | None, int]:
    """Keep a text item whole, or cut it to the rest of the budget (which is then 0)."""
    if remaining == 0:
        return None, 0
    text = item["text"]
    cost = approx_token_count(text)
    if cost <= remaining:
        return item, remaining - cost
    snippet = truncate_middle_with_token_budget(text, remaining)[0]
    return (_text(snippet) if snippet else None), 0


def truncate_code_mode_result(
    items: Sequence[ContentItem], max_output_tokens: int | None
) -> list[ContentItem]:
    """Apply the token budget (`None`: 10 000) the way Codex's adapter does (spec §1.5)."""
    max_tokens = DEFAULT_MAX_OUTPUT_TOKENS if max_output_tokens is None else max_output_tokens
    items = list(items)
    if all(item.get("type") == "input_text" for item in items):
        return _truncate_text_items(items, max_tokens)
    return _truncate_mixed_items(items, max_tokens)


# ---------------------------------------------------------------------- audio cost


def estimate_audio_token_count(audio_url: str) -> int:
    """Audio cost: 10 tokens per second of a decodable WAV, else the URL's text cost.

    Codex measures the duration with symphonia for WAV, MP3, MP4, WebM and Ogg; this port
    measures WAV only and uses the fallback (`ceil(len(url) / 4)`) for the others.
    """
    duration = wav_duration_seconds(audio_url)
    if duration is None:
        return approx_token_count(audio_url)
    return math.ceil(duration * AUDIO_TOKENS_PER_SECOND)

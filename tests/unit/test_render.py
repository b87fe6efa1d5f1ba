"""Tool output of `exec` / `wait` (spec §1.4) and its truncation (spec §1.5)."""

from __future__ import annotations

import base64
import io
import math
import re
import wave

import pytest

from cellfleet.broker.contract.render import (
    ToolOutput,
    approx_token_count,
    estimate_audio_token_count,
    failure_output,
    format_header,
    formatted_truncate_text,
    render_response,
    truncate_code_mode_result,
    truncate_middle_with_token_budget,
)
from cellfleet.broker.contract.responses import ContentItem, Result, Terminated, Yielded


def text(value: str) -> ContentItem:
    return {"type": "input_text", "text": value}


def image(url: str = "data:image/png;base64,AAAA", detail: str | None = None) -> ContentItem:
    item = {"type": "input_image", "image_url": url}
    if detail is not None:
        item["detail"] = detail
    return item


def wav_url(seconds: float, rate: int = 8000, mime: str = "audio/wav") -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\0\0" * round(seconds * rate))
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def audio(url: str) -> ContentItem:
    return {"type": "input_audio", "audio_url": url}


HEADER = re.compile(r"\A(?P<status>.*)\nWall time \d+\.\d seconds\nOutput:\n\Z")


# ---------------------------------------------------------------- §1.4 header and status


@pytest.mark.parametrize(
    ("response", "status", "success", "running"),
    [
        (Yielded(cell_id="12"), "Script running with cell ID 12", True, "12"),
        (Terminated(cell_id="3"), "Script terminated", True, None),
        (Result(cell_id="3"), "Script completed", True, None),
        (Result(cell_id="3", error_text="Error: boom"), "Script failed", False, None),
    ],
)
def test_status_header_and_success(
    response: Yielded | Terminated | Result, status: str, success: bool, running: str | None
) -> None:
    output = render_response(response, wall_time_s=0.0, max_output_tokens=None)
    match = HEADER.match(output.items[0]["text"])
    assert match is not None
    assert match["status"] == status
    assert output.items[0]["type"] == "input_text"
    assert output.success is success
    assert output.running_cell_id == running  # what a harness reads instead of the text


def test_completed_cell_with_no_output_has_only_the_header() -> None:
    output = render_response(Result(cell_id="1"), wall_time_s=1.24, max_output_tokens=None)
    assert output == ToolOutput(
        items=[text("Script completed\nWall time 1.2 seconds\nOutput:\n")], success=True
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "0.0"),
        (0.04, "0.0"),
        (0.05, "0.1"),  # f32: 0.5 rounds half away from zero
        (0.15, "0.2"),  # f64 formatting would show 0.1
        (1.25, "1.3"),
        (2.55, "2.6"),  # f64 formatting would show 2.5
        (12.349, "12.3"),
        (30.96, "31.0"),
    ],
)
def test_wall_time_uses_codex_f32_rounding(seconds: float, shown: str) -> None:
    assert format_header("S", seconds) == f"S\nWall time {shown} seconds\nOutput:\n"


def test_failed_script_items_in_order() -> None:
    response = Result(
        cell_id="1",
        content_items=[text("before crash"), text("still before crash")],
        error_text="Error: boom\n    at exec_main.mjs:3:7",
    )
    output = render_response(response, wall_time_s=0.2, max_output_tokens=None)
    assert output.success is False
    assert output.items == [
        text("Script failed\nWall time 0.2 seconds\nOutput:\n"),
        text("before crash"),
        text("still before crash"),
        text("Script error:\nError: boom\n    at exec_main.mjs:3:7"),
    ]


def test_wait_on_unknown_cell_is_a_failed_result() -> None:
    response = Result(cell_id="999999", error_text="exec cell 999999 not found")
    output = render_response(response, wall_time_s=0.0, max_output_tokens=None)
    assert output.items[1:] == [text("Script error:\nexec cell 999999 not found")]
    assert output.items[0]["text"].startswith("Script failed\n")
    assert output.success is False


def test_failure_output_is_plain_text_without_header() -> None:
    output = failure_output("exec cell 7 already has an active observer")
    assert output == ToolOutput(
        items=[text("exec cell 7 already has an active observer")], success=False, plain=True
    )
    assert output.text == "exec cell 7 already has an active observer"


def test_image_detail_defaults_and_original_downgrade() -> None:
    items = [image(), image(detail="original"), image(detail="low"), text("t")]
    response = Yielded(cell_id="1", content_items=items)
    allowed = render_response(response, wall_time_s=0, max_output_tokens=None).items[1:]
    assert [item.get("detail") for item in allowed] == ["high", "original", "low", None]
    denied = render_response(
        response, wall_time_s=0, max_output_tokens=None, can_request_original_detail=False
    ).items[1:]
    assert [item.get("detail") for item in denied] == ["high", "high", "low", None]
    assert "detail" not in items[0]  # the runtime's items are not modified


# ---------------------------------------------------------------- §1.5 token helpers


def test_token_helpers() -> None:
    assert approx_token_count("") == 0
    assert approx_token_count("abcd") == 1
    assert approx_token_count("abcde") == 2
    assert approx_token_count("é") == 1  # 2 bytes
    assert truncate_middle_with_token_budget("", 0) == ("", None)
    assert truncate_middle_with_token_budget("abcd", 1) == ("abcd", None)
    assert truncate_middle_with_token_budget("abcdefgh", 1) == ("ab…1 tokens truncated…gh", 2)
    assert truncate_middle_with_token_budget("abc", 0) == ("…1 tokens truncated…", 1)
    assert formatted_truncate_text("abcd", 1) == "abcd"


# ---------------------------------------------------------------- §1.5 all-text path


def test_spec_example_budget_5_tokens_40_chars() -> None:
    items = truncate_code_mode_result([text("0123456789" * 4)], 5)
    assert items == [
        text(
            "Warning: truncated output (original token count: 10)\nTotal output lines: 1\n\n"
            "0123456789…5 tokens truncated…0123456789"
        )
    ]


def test_text_within_budget_is_unchanged_and_the_join_counts_newlines() -> None:
    assert truncate_code_mode_result([text("a"), text("b")], 1) == [text("a"), text("b")]
    assert truncate_code_mode_result([text("ab"), text("cd")], 1) == [
        text(
            "Warning: truncated output (original token count: 2)\nTotal output lines: 2\n\n"
            "ab…1 tokens truncated…cd"
        )
    ]
    assert truncate_code_mode_result([], 0) == []


@pytest.mark.parametrize(
    ("texts", "joined"),
    [
        (["", "", "abcdef"], "abcdef"),  # leading empty texts leave no trace
        (["abc", "", "def"], "abc\n\ndef"),  # later ones leave their newline
        (["abcdef", ""], "abcdef\n"),
    ],
)
def test_the_joined_text_follows_codexs_accumulator(texts: list[str], joined: str) -> None:
    """Codex appends `\n` + text to a non-empty accumulator (a quadratic loop once)."""
    [item] = truncate_code_mode_result([text(t) for t in texts], 1)
    assert item["text"].startswith(
        f"Warning: truncated output (original token count: {-(-len(joined) // 4)})\n"
        f"Total output lines: {len(joined.splitlines()) or 1}\n\n"
    )


def test_many_text_items_are_joined_once() -> None:
    """60,000 items render as one truncated text (the join is linear; the time it takes
    is in `cellfleet bench hostile`)."""
    items = [text("x" * 200) for _ in range(60_000)]
    [item] = truncate_code_mode_result(items, None)
    assert item["text"].startswith(
        "Warning: truncated output (original token count: 3015000)\nTotal output lines: 60000"
    )


def test_default_budget_is_10000_tokens() -> None:
    fits = [text("x" * 40_000)]
    assert truncate_code_mode_result(fits, None) == fits
    [item] = truncate_code_mode_result([text("x" * 40_001)], None)
    assert item["text"].startswith(
        "Warning: truncated output (original token count: 10001)\nTotal output lines: 1\n\n"
    )
    assert item["text"].endswith("x" * 20_000)
    assert "…1 tokens truncated…" in item["text"]


def test_line_count_follows_rust_lines() -> None:
    [item] = truncate_code_mode_result([text("a\nb\n\nc\n"), text("d")], 1)
    assert item["text"].split("\n\n")[0].endswith("Total output lines: 6")
    [item] = truncate_code_mode_result([text("line1\r\nline2\r\n" * 3)], 1)
    assert "Total output lines: 6\n" in item["text"]


def test_empty_leading_texts_add_no_separator() -> None:
    [item] = truncate_code_mode_result([text(""), text("abcdefghij")], 1)
    assert item == text(
        "Warning: truncated output (original token count: 3)\nTotal output lines: 1\n\n"
        "ab…2 tokens truncated…ij"
    )


def test_zero_budget_leaves_only_the_marker() -> None:
    assert truncate_code_mode_result([text("abc")], 0) == [
        text(
            "Warning: truncated output (original token count: 1)\nTotal output lines: 1\n\n"
            "…1 tokens truncated…"
        )
    ]


def test_cuts_fall_on_utf8_boundaries() -> None:
    [item] = truncate_code_mode_result([text("éa" * 5)], 1)
    assert item["text"].endswith("\n\né…3 tokens truncated…a")
    assert "original token count: 4" in item["text"]


def test_error_item_is_truncated_with_the_output() -> None:
    response = Result(cell_id="1", content_items=[text("x" * 30)], error_text="boom")
    output = render_response(response, wall_time_s=0, max_output_tokens=2)
    assert output.items[1:] == [
        text(
            "Warning: truncated output (original token count: 13)\nTotal output lines: 3\n\n"
            "xxxx…11 tokens truncated…boom"
        )
    ]


# ---------------------------------------------------------------- §1.5 mixed path


def test_mixed_items_spend_the_budget_in_order() -> None:
    items = [image(), text("0123456789" * 4), text("later"), image("data:image/png;base64,BB")]
    assert truncate_code_mode_result(items, 5) == [
        image(),
        text("0123456789…5 tokens truncated…0123456789"),
        image("data:image/png;base64,BB"),
        text("[omitted 1 text items ...]"),
    ]


def test_mixed_text_that_fits_exactly_uses_up_the_budget() -> None:
    items = [text("abcdefgh"), image(), text("x"), text("y")]
    assert truncate_code_mode_result(items, 2) == [
        text("abcdefgh"),
        image(),
        text("[omitted 2 text items ...]"),
    ]


def test_mixed_empty_texts_are_dropped_silently() -> None:
    assert truncate_code_mode_result([image(), text(""), text("ok")], 5) == [image(), text("ok")]


def test_single_over_budget_audio_item() -> None:
    output = render_response(
        Result(cell_id="1", content_items=[audio(wav_url(1.0))]), wall_time_s=0, max_output_tokens=5
    )
    assert output.items[1:] == [text("[omitted 1 audio items ...]")]


def test_audio_that_fits_is_kept_and_charged() -> None:
    half_second = audio(wav_url(0.5))  # 5 tokens
    items = [half_second, text("abcd"), text("efgh")]
    assert truncate_code_mode_result(items, 6) == [
        half_second,
        text("abcd"),
        text("[omitted 1 text items ...]"),
    ]
    assert truncate_code_mode_result([text("abcd"), half_second, audio(wav_url(0.1))], 5) == [
        text("abcd"),
        audio(wav_url(0.1)),
        text("[omitted 1 audio items ...]"),
    ]


def test_both_omission_notes_text_first() -> None:
    items = [text("x" * 8), audio(wav_url(1.0)), text("late")]
    assert truncate_code_mode_result(items, 2)[-2:] == [
        text("[omitted 1 text items ...]"),
        text("[omitted 1 audio items ...]"),
    ]


# ---------------------------------------------------------------- audio cost


def test_audio_token_estimate() -> None:
    assert estimate_audio_token_count(wav_url(1.05)) == 11
    assert estimate_audio_token_count(wav_url(0.5, rate=16_000)) == 5
    assert estimate_audio_token_count(wav_url(0.5, mime="AUDIO/X-WAV")) == 5
    for url in [
        "data:audio/mpeg;base64,SUQzBAAAAAAA",  # measured by Codex, estimated by size here
        "data:audio/wav;base64,not base64!",
        wav_url(2.0).replace(";base64", ""),
        "data:audio/wav;base64,UklGRgAAAABXQVZF",  # RIFF/WAVE without chunks
        "no comma",
    ]:
        assert estimate_audio_token_count(url) == math.ceil(len(url.encode()) / 4)

"""What a cell answers an observer with (spec §1.4, `RuntimeResponse`).

Content items stay in their model-facing JSON shape from the moment JavaScript
produces them: `{"type": "input_text", "text": ...}`,
`{"type": "input_image", "image_url": ..., "detail": ...}`,
`{"type": "input_audio", "audio_url": ...}`. They cross V8, the event log and the
adapter as plain dicts, so nothing converts them back and forth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeAlias

ContentItem: TypeAlias = dict[str, str]


class ObserveMode(StrEnum):
    """How an observer waits (spec §4.7): until a yield or the end (`wait`, `exec`),
    or until the next pending frontier (`execute_to_pending`, `wait_to_pending`)."""

    YIELD = "yield"
    PENDING = "pending"


@dataclass(frozen=True, slots=True, kw_only=True)
class Yielded:
    """The cell is still running; these are the items produced since the last answer."""

    cell_id: str
    content_items: list[ContentItem] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Terminated:
    """The cell was stopped by `wait {terminate: true}` or session shutdown."""

    cell_id: str
    content_items: list[ContentItem] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """The cell finished on its own; `error_text` is set when the script failed."""

    cell_id: str
    content_items: list[ContentItem] = field(default_factory=list)
    error_text: str | None = None
    # The cell does not exist (any more): `exec cell N not found`. The model sees the
    # same as for any failure; Codex's host protocol calls it `MissingCell`.
    missing: bool = field(default=False, compare=False)


RuntimeResponse: TypeAlias = Yielded | Terminated | Result


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """Pending-frontier answer (library API): nothing runnable; the runtime is frozen."""

    cell_id: str
    content_items: list[ContentItem] = field(default_factory=list)
    pending_tool_call_ids: list[str] = field(default_factory=list)


CellAnswer: TypeAlias = RuntimeResponse | Pending

"""Errors of the session runtime; their texts are the spec's (§4.11)."""

from __future__ import annotations


class ActorError(Exception):
    """Root of the actors' errors."""


class CellBusyError(ActorError):
    def __init__(self, cell_id: str) -> None:
        super().__init__(f"exec cell {cell_id} already has an active observer")


class CellAlreadyTerminatingError(ActorError):
    def __init__(self, cell_id: str) -> None:
        super().__init__(f"exec cell {cell_id} is already terminating")


def cell_not_found_text(cell_id: str) -> str:
    return f"exec cell {cell_id} not found"


RUNTIME_ENDED_TEXT = "exec runtime ended unexpectedly"

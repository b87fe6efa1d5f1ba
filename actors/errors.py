"""Errors of the session runtime; the texts that reach the model are in
`broker/contract/texts.py` (spec §4.11)."""

from __future__ import annotations

from cellfleet.broker.contract import texts


class ActorError(Exception):
    """Root of the actors' errors."""


class CellBusyError(ActorError):
    def __init__(self, cell_id: str) -> None:
        super().__init__(texts.cell_busy(cell_id))


class CellAlreadyTerminatingError(ActorError):
    def __init__(self, cell_id: str) -> None:
        super().__init__(texts.cell_already_terminating(cell_id))

"""Errors of the broker. Texts that reach the model are the spec's (§4.11)."""

from __future__ import annotations


class BrokerError(Exception):
    """Root of the broker's errors; `retryable` says whether trying again may help."""

    retryable = False


class AdmissionRefusedError(BrokerError):
    """The log refused to admit a cell: the cell never existed."""


class SessionShuttingDownError(AdmissionRefusedError):
    def __init__(self) -> None:
        super().__init__("code mode session is shutting down")


class CellIdSpaceExhaustedError(AdmissionRefusedError):
    def __init__(self) -> None:
        super().__init__("code mode session exhausted its cell ID space")


class CellAlreadyExistsError(AdmissionRefusedError):
    def __init__(self, cell_id: str) -> None:
        super().__init__(f"exec cell {cell_id} already exists")


class SessionOwnedElsewhereError(AdmissionRefusedError):
    """Another process admitted cells of this session (a session has one owner)."""

    def __init__(self, session: str) -> None:
        super().__init__(f"code mode session {session} is owned by another process")


class JournalUnavailableError(BrokerError):
    """Redis could not be reached (after retries); nothing was half-written."""

    retryable = True

    def __init__(self, detail: str) -> None:
        super().__init__(f"cellfleet event log is unavailable: {detail}")

"""Errors of the broker; the texts that reach the model are in `contract/texts.py`."""

from __future__ import annotations

from cellfleet.broker.contract import texts


class BrokerError(Exception):
    """Root of the broker's errors; `retryable` says whether trying again may help."""

    retryable = False


class AdmissionRefusedError(BrokerError):
    """The log refused to admit a cell: the cell never existed."""


class SessionShuttingDownError(AdmissionRefusedError):
    def __init__(self) -> None:
        super().__init__(texts.SESSION_SHUTTING_DOWN)


class CellIdSpaceExhaustedError(AdmissionRefusedError):
    def __init__(self) -> None:
        super().__init__(texts.CELL_ID_SPACE_EXHAUSTED)


class SessionOwnedElsewhereError(AdmissionRefusedError):
    """Another process admitted cells of this session (a session has one owner)."""

    def __init__(self, session: str, owner: str | None = None) -> None:
        super().__init__(texts.session_owned_elsewhere(session))
        self.owner = owner  # the process that holds its lease, when known


class SessionFencedError(BrokerError):
    """This process's lease on the session was taken over by a newer owner (its fencing
    token is stale): the log refuses its writes, and it must stop serving the session."""

    def __init__(self, session: str) -> None:
        super().__init__(texts.session_fenced(session))
        self.session = session


class CellLostError(BrokerError):
    """The cell's process stopped while it ran; the session's new owner ended it (it
    could not recover it by replay, if `unrecoverable`)."""

    def __init__(self, cell_id: str, *, unrecoverable: bool = False) -> None:
        text = texts.cell_unrecoverable if unrecoverable else texts.cell_lost
        super().__init__(text(cell_id))


class JournalUnavailableError(BrokerError):
    """Redis could not be reached (after retries); nothing was half-written."""

    retryable = True

    def __init__(self, detail: str) -> None:
        super().__init__(texts.log_unavailable(detail))

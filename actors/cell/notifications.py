"""A cell's notifications on their way to the harness (spec §4.8).

`notify()` must not hold the cell up: each notification is handed to the harness's
callback on a shared executor while the cell actor goes on, one at a time per cell and
in order. At the cell's end they are drained (natural completion: every one is
delivered before the result) or cancelled and drained (termination: those not started
yet are dropped, one already in the callback finishes) before the terminal answer. A
callback that fails is logged only.

The cell actor records the outcomes (`NotificationDelivered`, `NotificationCancelled`):
`on_settled` tells it when there is one to take.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from enum import Enum

from cellfleet.broker.threads import OnDemandThreads

log = logging.getLogger(__name__)

# (exec call id, cell id, text, notification id: 1, 2, … in the cell, as its log numbers them)
Notify = Callable[[str, str, str, int], None]
DRAIN_TIMEOUT_S = 10.0  # how long a cell's end waits for the harness's notify callback


class DeliveryThreads(OnDemandThreads):
    """The threads that hand notifications to harnesses' `notify` callbacks. A callback
    that never returns holds its thread alone: with a fixed pool, as many hung callbacks
    as threads held back every other cell's notifications."""

    def __init__(self) -> None:
        super().__init__("notify", "notifications are no longer delivered: the host closed")


class Outcome(Enum):
    DELIVERED = "delivered"
    FAILED = "failed"  # the callback raised (logged)
    CANCELLED = "cancelled"  # never handed over: the cell was terminated first


class Notifications:
    """The notifications of one cell; thread-safe."""

    def __init__(
        self,
        executor: Executor,
        notify: Notify,
        call_id: str,
        cell_id: str,
        on_settled: Callable[[], None],
    ) -> None:
        self._executor = executor
        self._notify = notify
        self._call_id = call_id
        self._cell_id = cell_id
        self._on_settled = on_settled
        self._cond = threading.Condition()
        self._queued: deque[tuple[int, str]] = deque()
        self._running = False
        self._settled: list[tuple[int, Outcome]] = []  # not yet taken by the actor

    def send(self, notification_id: int, text: str) -> None:
        """Queue `text` behind the cell's earlier notifications; `start` hands them over
        (the actor first sends the answers decided meanwhile: a yield before the
        `notify()` reaches the harness before the notification)."""
        with self._cond:
            self._queued.append((notification_id, text))

    @property
    def pending(self) -> bool:
        """Some are queued or in the harness's callback."""
        with self._cond:
            return self._running or bool(self._queued)

    def start(self) -> None:
        """Hand what is queued to the harness, in order (unless it is on its way)."""
        with self._cond:
            if self._running or not self._queued:
                return
            self._running = True
        self._executor.submit(self._deliver_queued)

    def take_settled(self) -> list[tuple[int, Outcome]]:
        """The outcomes since the last call, in order."""
        with self._cond:
            settled, self._settled = self._settled, []
        return settled

    def drain(self, *, cancel: bool = False) -> list[tuple[int, Outcome]]:
        """Wait until nothing is queued or in the callback (first dropping what is
        queued, if `cancel`); returns the outcomes not taken yet.

        A callback that has not returned within `DRAIN_TIMEOUT_S` does not hold the cell
        any longer: what is still queued behind it is dropped (cancelled), and the one
        in the callback is left to finish on its own.
        """
        if cancel:
            self.cancel()
        else:
            self.start()
        with self._cond:
            if not self._cond.wait_for(lambda: not self._running, DRAIN_TIMEOUT_S):
                log.warning(
                    "cell %s: a notify callback has not returned in %s s; the cell goes on",
                    self._cell_id,
                    DRAIN_TIMEOUT_S,
                )
                self._settled += [(nid, Outcome.CANCELLED) for nid, _ in self._queued]
                self._queued.clear()
            settled, self._settled = self._settled, []
        return settled

    def cancel(self) -> None:
        """Drop what is queued: those notifications are never handed over."""
        with self._cond:
            self._settled += [(nid, Outcome.CANCELLED) for nid, _ in self._queued]
            self._queued.clear()

    def _deliver_queued(self) -> None:  # executor thread
        while True:
            with self._cond:
                if not self._queued:
                    self._running = False
                    self._cond.notify_all()
                    return
                notification_id, text = self._queued.popleft()
            outcome = Outcome.DELIVERED
            try:
                self._notify(self._call_id, self._cell_id, text, notification_id)
            except Exception:  # spec §4.8: a failed delivery is logged only
                log.exception(
                    "cell %s: notification %d not delivered", self._cell_id, notification_id
                )
                outcome = Outcome.FAILED
            with self._cond:
                self._settled.append((notification_id, outcome))
            self._on_settled()

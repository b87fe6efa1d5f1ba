"""What cellfleet's actors share on top of pykka's threading actor."""

from __future__ import annotations

import queue
from typing import Any

import pykka


class Actor(pykka.ThreadingActor):
    """A pykka threading actor on a daemon thread (a harness that exits without shutting
    its sessions down must not hang: to the log that is a worker that died, which it is
    built to survive), whose inbox is a `queue.SimpleQueue`: pykka's `queue.Queue` wakes
    its reader through a Condition written in Python, with the GIL held, for every
    message (pykka only puts, gets and asks whether it is empty)."""

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()

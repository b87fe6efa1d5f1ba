"""The `cellfleet tools` process: one tool-dispatch worker until SIGTERM or Ctrl-C.

It prints one line to standard output once it takes calls, and nothing else there.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from cellfleet.broker.keys import DEFAULT_KEYS, Keys
from cellfleet.broker.redis.connect import connect_redis
from cellfleet.broker.tools.registry import ToolRegistry
from cellfleet.broker.tools.worker import ToolWorker

log = logging.getLogger(__name__)

READY_LINE = "cellfleet tools: worker "  # how the line that says it takes calls starts
# How long after SIGTERM (or Ctrl-C) the process may live beyond its stop grace: the
# loops' ends, closing, the interpreter's exit. Past it the kernel ends the process
# (SIGALRM's default action), whatever held it: a thread the exit waits for (a handler
# the worker lost track of, one a tools file started), a Redis call without a timeout.
STOP_SLACK_S = 5.0


def start_tools_process(
    args: Sequence[str], env: Mapping[str, str], keys: Keys = DEFAULT_KEYS
) -> subprocess.Popen[bytes]:
    """Start `cellfleet tools ARGS` on `keys` and return once it takes calls."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cellfleet.ops.cli", "--key-prefix", keys.prefix, "tools", *args],
        env=dict(env),
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    ready = process.stdout.readline().decode()  # its only line on standard output
    if not ready.startswith(READY_LINE):
        process.kill()
        process.wait()
        raise RuntimeError(f"cellfleet tools did not start (exit {process.returncode})")
    return process


def run_worker(
    url: str,
    registry: ToolRegistry,
    *,
    concurrency: int = 8,
    lease_s: float = 5.0,
    max_deliveries: int = 3,
    stop_grace_s: float = 30.0,
    keys: Keys = DEFAULT_KEYS,
) -> None:
    """Serve `registry`'s tools until interrupted or terminated; then let running
    calls finish for up to `stop_grace_s`; the process is gone `STOP_SLACK_S` later."""
    # The handler only notes the signal and arms the deadline: a system call, no lock.
    # (It called `worker.request_stop()`, whose `Event.set` takes the lock the
    # interrupted main thread may hold inside `Event.wait`: the worker hung for good.
    # Ctrl-C's KeyboardInterrupt, raised there, could leave that lock taken as well.)
    # Installed before `start`, which may take `LISTEN_WITHIN_S` and more: a signal
    # meanwhile stops the worker once it started, and the deadline runs already.
    signalled: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if not signalled:
            signal.setitimer(signal.ITIMER_REAL, stop_grace_s + STOP_SLACK_S)
        signalled.append(signum)

    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the deadline ends the process
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    client = connect_redis(url)
    worker = ToolWorker(
        client,
        registry,
        concurrency=concurrency,
        lease_s=lease_s,
        max_deliveries=max_deliveries,
        stop_grace_s=stop_grace_s,
        keys=keys,
    ).start()
    # One line when calls are being taken (what scripts and tests wait for).
    names = ", ".join(sorted(registry.handlers)) or "no tools"
    print(f"{READY_LINE}{worker.name} serves {names}", flush=True)
    try:
        while not signalled and not worker.wait(0.1):  # (noticed within 0.1 s)
            pass
    finally:
        worker.stop()
        client.close()
        signal.setitimer(signal.ITIMER_REAL, 0)  # (the program's exit has its own deadline)
    if worker.unfinished:  # their threads would hold the exit; other workers take over
        log.warning(
            "%d tool call(s) still running after %.0f s: left to other workers",
            worker.unfinished,
            stop_grace_s,
        )
        logging.shutdown()
        os._exit(0)

"""Child `cellfleet` processes of benchmarks and chaos runs: waiting for a worker to
serve, and stopping a group of them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

from cellfleet.ops.worker import WORKER_READY_LINE

STOP_WAIT_S = 30.0  # how long a stopped process gets to exit before it is killed


def worker_ready(process: subprocess.Popen[bytes]) -> str:
    """Wait until a `cellfleet worker` child serves (its first line); its worker id.
    Raises `RuntimeError` (the child killed) if it says anything else or exits."""
    assert process.stdout is not None
    line = process.stdout.readline().decode()  # "cellfleet worker ID ..." once serving
    if not line.startswith(WORKER_READY_LINE):
        process.kill()
        raise RuntimeError(f"cellfleet worker did not start: {line!r}")
    return line.split()[2]


def stop_processes(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each (all at once, then wait: they drain together), kill any that has not
    exited `STOP_WAIT_S` later."""
    listed = list(processes)
    for process in listed:
        if process.poll() is None:
            process.terminate()
    for process in listed:
        try:
            process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

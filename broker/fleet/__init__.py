"""The fleet: cell workers that serve sessions (`ops.worker`), and the client that
reaches them through Redis alone."""

from cellfleet.broker.fleet.client import FleetClient, NoWorkerError, connect

__all__ = ["FleetClient", "NoWorkerError", "connect"]

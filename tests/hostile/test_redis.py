"""Hostile probes, family "Redis faults": the log going away mid-cell gives plain errors
that name no local path, and the host serves again once Redis is back."""

from __future__ import annotations

from pathlib import Path

from cellfleet.ops.host import Host
from cellfleet.ops.redis_server import start_redis
from tests.integration.session_support import TIMEOUT_S, Gates, handlers


def test_terminating_a_cell_while_redis_is_down_names_no_path(tmp_path: Path) -> None:
    """With a tool call outstanding, the termination's cancellation met the outage, and
    the model read `exec cell 1 failed: Error 2 connecting to /tmp/.../redis.sock`."""
    server = start_redis(tmp_path / "redis")
    gates = Gates()
    host = Host(server.url, handlers=handlers(gates))
    restarted = None
    try:
        session = host.open_session()
        cell_id, _ = session.backend.execute("c", "await tools.gate({})", 60_000, None)
        gates.wait_entered()
        server.stop()
        answer = session.backend.terminate(cell_id)
        error = answer.exception(TIMEOUT_S)
        text = str(error) if error is not None else repr(answer.result(TIMEOUT_S))
        assert str(tmp_path) not in text, text
        assert "Error 2" not in text, text
        restarted = start_redis(tmp_path / "redis", port=server.port)
        output = session.exec("d", "text('back')")
        assert output.items[-1] == {"type": "input_text", "text": "back"}
    finally:
        gates.open_all()
        if restarted is None:
            restarted = start_redis(tmp_path / "redis", port=server.port)
        host.close()
        restarted.stop()

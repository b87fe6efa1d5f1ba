"""`cellfleet host` answers every scenario of Codex's host protocol frame for frame as the
reference host did (`recorded.json`, written by `python -m tests.host.record`), durations
aside; and, where the reference binary is at hand, the reference still answers so."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellfleet.ops.bench.host import reference_binary
from cellfleet.ops.processes import stop_processes, worker_ready
from tests.host.record import RECORDED
from tests.host.scenarios import SCENARIOS, answered, execute, load_recorded, op, start
from tests.host.wire import run_scenario
from tests.integration.cli_support import run_cellfleet

REPO = Path(__file__).parents[2]
RECORDINGS = load_recorded(RECORDED)


def _compared(run: dict[str, Any]) -> dict[str, Any]:
    return {"frames": run["frames"], "status": run["status"], "stderr_head": run["stderr_head"]}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_cellfleet_host_answers_as_the_reference(name: str, redis_url: str) -> None:
    recorded = RECORDINGS[name]
    assert recorded["steps"] == SCENARIOS[name], "stale recording: python -m tests.host.record"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CELLFLEET_KEY_PREFIX": f"h{uuid.uuid4().hex[:8]}",
        "PYTHONPATH": str(REPO),
    }
    run = run_scenario([sys.executable, "-m", "cellfleet.ops.cli", "host"], SCENARIOS[name], env)
    assert _compared(run) == _compared(recorded)


def _worker_of_its_own(url: str, *options: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """A `cellfleet worker` serving a key prefix of its own; the environment of a host
    that runs its cells there."""
    env = {**os.environ, "REDIS_URL": url, "PYTHONPATH": str(REPO),
           "CELLFLEET_KEY_PREFIX": f"hf{uuid.uuid4().hex[:8]}"}  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "cellfleet.ops.cli", "worker", *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    worker_ready(worker)
    return worker, env


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    url = request.config.getoption("--redis-url") or request.getfixturevalue("redis_server").url
    worker, env = _worker_of_its_own(url)
    yield env
    stop_processes([worker])


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_cellfleet_host_on_the_fleet_answers_as_the_reference(
    name: str, fleet: dict[str, str]
) -> None:
    """The same frames when the cells run on a fleet worker (`host --fleet`): their
    nested calls reach the client through this host's own tool worker."""
    command = [sys.executable, "-m", "cellfleet.ops.cli", "host", "--fleet"]
    run = run_scenario(command, SCENARIOS[name], fleet)
    assert _compared(run) == _compared(RECORDINGS[name])


def test_an_install_for_the_fleet_starts_its_host_on_the_fleet(
    redis_url: str, tmp_path: Path
) -> None:
    codex = tmp_path / "codex"
    codex.write_text("#!/bin/sh\n")
    for extra, fleet in (([], False), (["--fleet"], True)):
        folder = tmp_path / f"cf-{fleet}"
        args = ["host", "--install-next-to", str(codex), "--into", str(folder), *extra]
        installed = run_cellfleet(args, tmp_path, redis_url, env={"CELLFLEET_FLEET": ""})
        assert installed.returncode == 0, installed.stderr
        launcher = (folder / "codex-code-mode-host").read_text()
        assert ("cellfleet.ops.cli host --fleet " in launcher) is fleet


def test_an_open_that_waits_for_room_holds_up_no_other_session(redis_url: str) -> None:
    """On the fleet an open may wait for a worker with room (here: none, for 5 s);
    meanwhile the client's other frames are read and answered."""
    worker, env = _worker_of_its_own(redis_url, "--capacity", "1")
    try:
        env["CELLFLEET_PLACEMENT_TIMEOUT_S"] = "5"
        steps = [
            *start(),
            ["send", op(2, "session/open", sessionId="s2")],  # (no room: waits)
            execute(3, "text('s1 goes on')"),
            answered(3, "execute/initialResponse"),
            answered(2),  # (then: no worker had room)
        ]
        command = [sys.executable, "-m", "cellfleet.ops.cli", "host", "--fleet"]
        run = run_scenario(command, steps, env)
    finally:
        stop_processes([worker])
    kinds = [(f["type"], f.get("id")) for f in run["frames"]]
    assert kinds.index(("execute/initialResponse", 3)) < kinds.index(("operation/response", 2))
    assert "no cellfleet worker with room" in run["frames"][-1]["result"]["message"]


def test_with_no_fleet_worker_an_open_says_how_to_start_one(redis_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO),
           "CELLFLEET_KEY_PREFIX": f"hn{uuid.uuid4().hex[:8]}",
           "CELLFLEET_PLACEMENT_TIMEOUT_S": "0.3"}  # fmt: skip
    command = [sys.executable, "-m", "cellfleet.ops.cli", "host", "--fleet"]
    run = run_scenario(command, start(), env)
    assert run["status"] == 0
    assert run["frames"][-1] == {
        "type": "operation/response",
        "id": 1,
        "result": {
            "status": "error",
            "message": "no cellfleet worker with room answered within 0.3 s: start one with"
            " `cellfleet worker` (same REDIS_URL), or more of them",
        },
    }


@pytest.mark.skipif(reference_binary() is None, reason="no reference host binary here")
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_reference_still_answers_as_recorded(name: str) -> None:
    binary = reference_binary()
    assert binary is not None
    assert _compared(run_scenario([binary], SCENARIOS[name])) == _compared(RECORDINGS[name])


def test_closing_the_input_still_sends_what_was_due(redis_url: str) -> None:
    """The client closes its end right after an answer: the cell's `cell/closed`, due
    then, still goes out (the reference sends it too, unless it is slow to)."""
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO),
           "CELLFLEET_KEY_PREFIX": f"h{uuid.uuid4().hex[:8]}"}  # fmt: skip
    steps = [*start(), execute(2, "text('done')"), answered(2, "execute/initialResponse")]
    run = run_scenario([sys.executable, "-m", "cellfleet.ops.cli", "host"], steps, env)
    assert run["status"] == 0
    assert run["frames"][-1] == {"type": "cell/closed", "sessionId": "s1", "cellId": "1"}


def test_the_host_command_refuses_what_it_cannot_do(redis_url: str, tmp_path: Path) -> None:
    """Codex starts its host with `--listen grpc+stdio://` unless told otherwise: the
    refusal says how; an install next to a missing binary names it."""
    grpc = run_cellfleet(["host", "--listen", "grpc+stdio://"], tmp_path, redis_url)
    assert grpc.returncode == 2
    assert grpc.stdout == ""  # (nothing but frames on standard output, and no frame)
    assert "--disable code_mode_host_grpc" in grpc.stderr
    missing = run_cellfleet(
        ["host", "--install-next-to", str(tmp_path / "codex")], tmp_path, redis_url
    )
    assert missing.returncode == 2
    assert f"{tmp_path / 'codex'}: no such file" in missing.stderr

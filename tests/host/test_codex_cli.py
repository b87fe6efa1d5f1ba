"""End to end with the real Codex CLI (0.169.0): a fake model makes Codex run cells
through `cellfleet host` (installed next to it by `cellfleet host --install-next-to`) and
through its own host; what Codex sends back to the model is the same.

Needs the `codex` binary (`tests/host/fetch-codex`) and the reference host
(`../shared/reference/fetch-codex-host`) in their cache; skipped without them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from cellfleet.broker.contract.description import build_exec_tool_description
from cellfleet.broker.contract.inventory import build_inventory
from cellfleet.broker.contract.tools import ToolDefinition, ToolKind
from cellfleet.broker.events import CellAdmitted, ToolSetDefined, admitted_tools
from cellfleet.broker.journal import RedisJournal
from cellfleet.broker.keys import Keys
from cellfleet.ops.bench.host import REFERENCE_CACHE, reference_binary
from cellfleet.ops.processes import stop_processes, worker_ready
from tests.host.codex_cli import codex_folder, exec_call, run_codex, wait_call
from tests.integration.cli_support import REPO, run_cellfleet

CODEX = next(iter(sorted(REFERENCE_CACHE.expanduser().glob("codex-*/codex"))), None)
pytestmark = pytest.mark.skipif(
    CODEX is None or reference_binary() is None,
    reason="no Codex CLI or reference host here (tests/host/fetch-codex)",
)

TURNS = [
    [exec_call("c1", "text('hello'); image('data:image/png;base64,iVBORw0KGgo=')")],
    [exec_call("c2", "const r = await tools.exec_command({cmd: 'echo nested'});"
                     " text(JSON.stringify(r))")],
    [exec_call("c3", "notify('note'); text('after')")],
    [exec_call("c4", '// @exec: {"yield_time_ms": 100}\ntext(\'before\');'
                     " await new Promise((r) => setTimeout(r, 400)); text('after')")],
    [wait_call("w1", {"cell_id": "4", "yield_time_ms": 5000})],
    [exec_call("c5", "text('partial'); throw new Error('boom')")],
    [exec_call("c6", '// @exec: {"yield_time_ms": 100}\ntext(\'spin\'); while (true) {}')],
    [wait_call("w2", {"cell_id": "6", "terminate": True})],
    [exec_call("c7", "store('k', {n: 1}); text('stored')")],
    [exec_call("c8", "text(JSON.stringify(load('k')))")],
]  # fmt: skip
_VARYING = [
    (re.compile(r"Wall time \d+(\.\d+)? seconds"), "Wall time N seconds"),
    (re.compile(r'\\"chunk_id\\":\\"\w+\\"'), r'\\"chunk_id\\":\\"X\\"'),
    (re.compile(r'\\"wall_time_seconds\\":[\d.e-]+'), r'\\"wall_time_seconds\\":0'),
]


def _normalized(outputs: list[dict[str, Any]]) -> list[Any]:
    text = json.dumps([{k: v for k, v in item.items() if k != "id"} for item in outputs])
    for pattern, replacement in _VARYING:
        text = pattern.sub(replacement, text)
    return list(json.loads(text))


def test_codex_runs_its_code_mode_on_cellfleet_as_on_its_own_host(
    redis_url: str, tmp_path: Path
) -> None:
    assert CODEX is not None
    reference = reference_binary()
    assert reference is not None
    prefix = f"e{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO),
           "CELLFLEET_KEY_PREFIX": prefix}  # fmt: skip
    installed = run_cellfleet(
        ["host", "--install-next-to", str(CODEX), "--into", str(tmp_path / "cf")],
        tmp_path,
        redis_url,
    )
    assert installed.returncode == 0, installed.stderr
    assert f"{tmp_path / 'cf'}/codex --enable code_mode" in installed.stdout
    theirs_dir, ours_dir = tmp_path / "ref-run", tmp_path / "cf-run"
    theirs_dir.mkdir()
    ours_dir.mkdir()
    their_codex = codex_folder(CODEX, Path(reference), tmp_path / "ref")
    theirs, their_run = run_codex(their_codex, TURNS, theirs_dir, env)
    ours, our_run = run_codex(tmp_path / "cf" / "codex", TURNS, ours_dir, env)
    assert their_run.returncode == 0, their_run.stderr
    assert our_run.returncode == 0, our_run.stderr
    expected = _normalized(theirs.outputs())
    assert len(expected) == len(TURNS) + 1  # (and the notification)
    assert _normalized(ours.outputs()) == expected

    # Durable: the session and its cells are in Redis, with the tools Codex gave them.
    journal = RedisJournal.from_url(redis_url, Keys(prefix))
    try:
        (session,) = journal.newest_sessions(1)
        events = [event for _, event in journal.read(session)]
    finally:
        journal.close()
    admitted = [event for event in events if isinstance(event, CellAdmitted)]
    assert [event.cell for event in admitted] == [str(n) for n in range(1, 9)]
    sets = {e.digest: e.tools for e in events if isinstance(e, ToolSetDefined)}
    assert len(sets) == 1  # (every execute brought the same tools: recorded once)
    tools = admitted_tools(admitted[0], sets)
    assert tools is not None

    # The `exec` description cellfleet writes for the same tools is the one Codex sent.
    direct = {tool.get("name") for tool in theirs.requests[0]["tools"]}
    definitions = [
        ToolDefinition(
            name=str(record["name"]),
            namespace=record.get("namespace"),  # type: ignore[arg-type]
            kind=ToolKind(record["kind"]),
            deferred=record["global_name"] not in direct,
        )
        for record in tools
    ]
    assert any(definition.deferred for definition in definitions)
    ours_text = build_exec_tool_description(
        build_inventory(definitions), default_exec_yield_time_ms=30_000, code_mode_only=False
    )
    assert ours_text == theirs.exec_description()


def test_codex_runs_its_code_mode_on_a_cellfleet_fleet(redis_url: str, tmp_path: Path) -> None:
    """The same turns with the cells on a `cellfleet worker` (`host --fleet`, here set
    by $CELLFLEET_FLEET as a launcher started with no arguments takes it): what Codex
    sends back to the model is the same as with its own host."""
    assert CODEX is not None
    reference = reference_binary()
    assert reference is not None
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO),
           "CELLFLEET_KEY_PREFIX": f"e{uuid.uuid4().hex[:8]}", "CELLFLEET_FLEET": "1"}  # fmt: skip
    installed = run_cellfleet(
        ["host", "--install-next-to", str(CODEX), "--into", str(tmp_path / "cf")],
        tmp_path,
        redis_url,
    )
    assert installed.returncode == 0, installed.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "cellfleet.ops.cli", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        worker_ready(worker)
        (tmp_path / "ref-run").mkdir()
        (tmp_path / "cf-run").mkdir()
        their_codex = codex_folder(CODEX, Path(reference), tmp_path / "ref")
        theirs, their_run = run_codex(their_codex, TURNS, tmp_path / "ref-run", env)
        ours, our_run = run_codex(tmp_path / "cf" / "codex", TURNS, tmp_path / "cf-run", env)
    finally:
        stop_processes([worker])
    assert their_run.returncode == 0, their_run.stderr
    assert our_run.returncode == 0, our_run.stderr
    assert _normalized(ours.outputs()) == _normalized(theirs.outputs())
    keys = Keys(env["CELLFLEET_KEY_PREFIX"])
    journal = RedisJournal.from_url(redis_url, keys)
    try:
        (session,) = journal.newest_sessions(1)
        served_by_a_worker = journal.client.hget(keys.session(session).meta, "fleet")
    finally:
        journal.close()
    assert served_by_a_worker is not None  # (a worker's takeover record: not in-process)

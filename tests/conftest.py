"""Shared fixtures: real V8 contexts and a real redis-server started by the suite."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from cellfleet.actors.runtime.local import LocalCell, ToolError, ToolHandler
from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.actors.runtime.protocol import CellSpec, Finished, OutputItem, RuntimeTool, Stopped
from cellfleet.broker.contract.tools import JsonValue, ToolKind
from cellfleet.broker.tools.invocation import ToolInvocation
from cellfleet.ops.redis_server import (
    RedisClusterProcess,
    RedisProcess,
    start_redis,
    start_redis_cluster,
)
from cellfleet.ops.replay_corpus import CORPUS_ENVIRONMENT

# V8 takes the time zone and the locale from the environment once, when it starts (not
# yet: nothing has run). The suite runs in those the replay corpus was recorded in, on
# any machine; tests that need others run a `cellfleet` process with them.
os.environ.update(CORPUS_ENVIRONMENT)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--redis-url", default=None, help="use this Redis instead of starting one")
    parser.addoption("--slow", action="store_true", help="run the slow hostile probes too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow probes run only with `--slow` (`cellfleet bench hostile`): CI stays fast."""
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="a slow probe: `cellfleet bench hostile` runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pool() -> Iterator[ContextPool]:
    pool = ContextPool(2)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = start_redis(Path(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    """A real Redis Cluster of 3 masters, for the tests that run on one as well."""
    cluster = start_redis_cluster(Path(tmp_path_factory.mktemp("redis-cluster")))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    explicit: str | None = request.config.getoption("--redis-url")
    if explicit:
        return explicit
    server: RedisProcess = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    # Tests block on lists and streams with timeouts of their own, longer than
    # redis-py's default socket timeout (5 s).
    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    yield client
    client.close()


def _fail(value: JsonValue) -> JsonValue:
    message = value.get("message") if isinstance(value, dict) else value
    raise ToolError(str(message or "tool failed"))


def _sleep(value: JsonValue) -> JsonValue:
    ms = value.get("ms", 10) if isinstance(value, dict) else 10
    assert isinstance(ms, int | float)
    threading.Event().wait(ms / 1000)  # what this tool does: take `ms` to answer
    return {"slept_ms": ms}


DEFAULT_TOOLS: Mapping[str, ToolHandler] = {
    "echo": lambda value: value,
    "fail": _fail,
    "sleep": _sleep,
}


def tool_invocation(session: str, name: str = "echo") -> ToolInvocation:
    """Cell 1's nested call `tool-1` of the function `name` (the log's tests)."""
    return ToolInvocation(
        session=session,
        cell="1",
        call_id="tool-1",
        name=name,
        raw_name=name,
        kind=ToolKind.FUNCTION,
        input={},
    )


def runtime_tools(names: Sequence[str], kind: ToolKind = ToolKind.FUNCTION) -> list[RuntimeTool]:
    return [RuntimeTool(name=name, description="", kind=kind) for name in names]


RunCell = Callable[..., LocalCell]


@pytest.fixture
def start_cell(pool: ContextPool) -> Iterator[RunCell]:
    """Start a cell with the default tools; returns the running LocalCell."""
    cells: list[LocalCell] = []

    def start(
        source: str, *, handlers: Mapping[str, ToolHandler] | None = None, **spec: Any
    ) -> LocalCell:
        handlers = DEFAULT_TOOLS if handlers is None else handlers
        spec.setdefault("tools", runtime_tools(list(handlers)))
        spec.setdefault("clock_ms", time.time() * 1000)
        cell = LocalCell(
            CellSpec(cell_id=str(len(cells) + 1), source=source, **spec), pool, tools=handlers
        )
        cells.append(cell)
        return cell

    yield start
    for cell in cells:
        if not cell.runtime.done:
            cell.terminate()


@pytest.fixture
def run_cell(start_cell: RunCell) -> Callable[..., tuple[list[dict[str, str]], Finished | Stopped]]:
    """Run a cell to its end; returns (output items, final event)."""

    def run(
        source: str, timeout: float = 10.0, **kwargs: Any
    ) -> tuple[list[dict[str, str]], Finished | Stopped]:
        cell = start_cell(source, **kwargs)
        end = cell.wait(timeout)
        items = [event.item for event in cell.events if isinstance(event, OutputItem)]
        return items, end

    return run


def texts(items: list[dict[str, str]]) -> list[str]:
    return [item["text"] for item in items if item["type"] == "input_text"]

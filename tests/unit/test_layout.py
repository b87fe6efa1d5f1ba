"""The architecture's rules that a checker can hold: what each part may load, and the
one import namespace. Each check runs in a fresh interpreter, outside the checkout."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(statement: str, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path_factory.mktemp("outside"),  # not the checkout: the installed package
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(out.stdout.split())


def _top(modules: set[str]) -> set[str]:
    return {name.split(".", 1)[0] for name in modules}


def test_projections_load_event_types_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    loaded = _modules_after("import cellfleet.projections", tmp_path_factory)
    assert not {"redis", "tenacity", "pykka", "py_mini_racer"} & _top(loaded)
    ours = {name for name in loaded if name.startswith("cellfleet.")}
    assert {name for name in ours if not name.startswith("cellfleet.projections")} <= {
        "cellfleet.broker",
        "cellfleet.broker.events",
        "cellfleet.broker.contract",
        "cellfleet.broker.contract.responses",
        "cellfleet.broker.contract.tools",
    }


def test_the_v8_runtime_never_loads_the_actor_library(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    loaded = _modules_after(
        "import cellfleet.actors.runtime.runtime, cellfleet.actors.runtime.pool", tmp_path_factory
    )
    assert "pykka" not in _top(loaded)


@pytest.mark.parametrize("name", ["actors", "broker", "ops", "projections"])
def test_only_the_cellfleet_namespace_is_installed(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    loaded = _modules_after(
        f"import importlib.util; assert importlib.util.find_spec({name!r}) is None",
        tmp_path_factory,
    )
    assert "cellfleet" not in _top(loaded)


def test_the_lua_scripts_know_the_journals_largest_cell_id() -> None:
    from cellfleet.broker.journal import MAX_CELL_ID
    from cellfleet.broker.redis.scripts import script_source

    assert f"greater(cell, '{MAX_CELL_ID}')" in script_source("lib")


def test_the_public_names_load_on_first_use(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert "cellfleet.ops.host" not in _modules_after("import cellfleet", tmp_path_factory)
    loaded = _modules_after(
        "import cellfleet; [getattr(cellfleet, n) for n in cellfleet.__all__]", tmp_path_factory
    )
    assert "cellfleet.ops.host" in loaded


def test_the_tools_benchmark_finds_its_example_tools() -> None:
    from cellfleet.ops.bench import tools

    assert tools.TOOLS_FILE.is_file(), tools.TOOLS_FILE

"""The one loader of the Lua scripts that make the log's decisions atomic.

Each script in `lua/` says in its header what it guarantees. `lib.lua` holds helpers
(reading event batches from ARGV, comparing big decimal ids) that the scripts which
need them get in front of their own text.
"""

from __future__ import annotations

from importlib import resources


def script_source(name: str, *, lib: bool = False) -> str:
    """The text of `lua/{name}.lua`, with `lib.lua` in front when `lib`."""
    own = _read(name)
    return _read("lib") + own if lib else own


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(f"lua/{name}.lua").read_text("utf-8")

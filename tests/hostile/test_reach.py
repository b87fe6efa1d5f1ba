"""Hostile probes, family "reach and forgery": cell code must not reach the host.

The prelude's host interface is how the host delivers a cell's inputs (tool results,
timer firings, the clock); a cell that could call it would make its log disagree with
what it saw (issue 11, item 9). It lives under a random name in each context.
"""

from __future__ import annotations

import pytest

from tests.conftest import texts

PROBES = {
    "by name": "typeof __cellfleet_host",
    "through indirect eval": '(0, eval)("typeof __cellfleet_host")',
    "through Function": 'new Function("return typeof __cellfleet_host")()',
    "as a global property": (
        'Object.getOwnPropertyNames(globalThis).filter((n) => n.includes("cellfleet"))'
        '.join() || "undefined"'
    ),
}


@pytest.mark.parametrize("probe", PROBES.values(), ids=list(PROBES))
def test_the_host_interface_cannot_be_named(run_cell, probe: str) -> None:
    items, end = run_cell(f"text(String({probe}))")
    assert (texts(items), end.error_text) == (["undefined"], None)


def test_a_cell_cannot_resolve_its_own_tool_call(run_cell) -> None:
    """The forgery of the report: a pending call answered by the cell itself."""
    items, end = run_cell(
        """
        const call = tools.echo({ real: true });
        for (const name of ["__cellfleet_host", "host", "__host"]) {
          try { globalThis[name]?.resolve?.(1, 0, '{"forged": true}'); } catch {}
        }
        text(JSON.stringify(await call));
        """
    )
    assert (texts(items), end.error_text) == (['{"real":true}'], None)

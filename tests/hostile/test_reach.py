"""Hostile probes, family "reach and forgery": cell code must not reach the host.

The prelude's host interface is how the host delivers a cell's inputs (tool results,
timer firings, the clock); a cell that could call it would make its log disagree with
what it saw (issue 11, item 9). It lives under a random name in each context.
"""

from __future__ import annotations

import pytest

from tests.conftest import texts
from tests.integration.session_support import assert_output

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


MAILBOX_GRABS = {
    # subarray() builds its result through `constructor[Symbol.species]`.
    "through species": """
        class Spy extends Uint16Array {
          constructor(...args) { super(...args); grabbed.push(args[0]); }
        }
        Uint16Array.prototype.constructor = { [Symbol.species]: Spy };
    """,
    # Reading a typed array's length through its prototype's getter.
    "through the length getter": """
        const TypedArray = Object.getPrototypeOf(Uint16Array.prototype);
        const length = Object.getOwnPropertyDescriptor(TypedArray, "length").get;
        Object.defineProperty(TypedArray, "length", {
          get() { grabbed.push(this.buffer); return length.call(this); }, configurable: true,
        });
    """,
    # Setters on Array.prototype indices, for arrays the prelude fills.
    "through index setters": """
        for (let i = 0; i < 8; i++) Object.defineProperty(Array.prototype, i, {
          set(v) { grabbed.push(this); }, get() { return 0; }, configurable: true,
        });
    """,
}


@pytest.mark.parametrize("grab", MAILBOX_GRABS.values(), ids=list(MAILBOX_GRABS))
def test_load_hands_the_cell_nothing_of_the_mailbox(harness, grab: str) -> None:
    """`load()` of a value the cell has not seen reads it from the shared-memory mailbox:
    a cell that got hold of it could forge records and read other sessions' cells."""
    assert_output(harness.exec("store('k', { a: [1, 'é😀'] })"), "Script completed", [])
    probe = (
        f"const grabbed = [];\n{grab}\nconst value = load('k');\n"
        "text(JSON.stringify(value));\n"
        "text(String(grabbed.length));"
    )
    assert_output(harness.exec(probe), "Script completed", ['{"a":[1,"é😀"]}', "0"])

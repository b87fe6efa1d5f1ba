"""Hostile probes, family "reach and forgery": records the cell could forge (item 3).

The prelude writes a cell's records as JSON; `JSON.stringify` asks a `toJSON` on
`Array.prototype` or `Object.prototype` to stand in for a value, so a cell could make
any record it liked. The prelude now writes records without asking (`plainJSON`), and
the runtime refuses any record that is not of a known shape.
"""

from __future__ import annotations

from typing import Any

import pytest

from cellfleet.actors.runtime.protocol import Finished, NotificationSent, OutputItem
from cellfleet.actors.runtime.records import record_problem
from cellfleet.actors.runtime.runtime import CellRuntime
from cellfleet.broker.contract.texts import malformed_record
from cellfleet.broker.events import CellCompleted
from tests.integration.session_support import assert_output

FORGERIES = {
    "a remote image": (
        'Array.prototype.toJSON = function () { delete Array.prototype.toJSON; return ["i", '
        '{type: "input_image", image_url: "https://evil.example/x.png", detail: "bogus"}]; };'
    ),
    "a function call item": (
        'Array.prototype.toJSON = function () { return ["i", {type: "function_call", '
        'name: "shell", arguments: "rm -rf /"}]; };'
    ),
    "a text that is an object": (
        'Array.prototype.toJSON = function () { return ["i", {type: "input_text", '
        "text: {nested: true}}]; };"
    ),
    "a notify with an object": (
        'Array.prototype.toJSON = function () { return ["n", {not: "text"}]; };'
    ),
    "a stored value that is not JSON": (
        'Array.prototype.toJSON = function () { return ["s", "k", "{not json"]; };'
    ),
    "a record that is no array": "Object.prototype.toJSON = function () { return 42; };",
    "a toJSON chained into Array.prototype": (
        "Object.setPrototypeOf(Array.prototype, { toJSON() {"
        ' return ["i", {type: "input_text", text: "forged"}]; } });'
    ),
    "a toJSON chained into Object.prototype's place": (
        "const proto = Object.create(null); proto.toJSON = () => 42;"
        " Object.setPrototypeOf(Array.prototype, proto);"
    ),
    "a toJSON behind a getter": (
        'Object.defineProperty(Array.prototype, "toJSON", {get() { return () => ["x"]; }});'
    ),
}


@pytest.mark.parametrize("forge", FORGERIES.values(), ids=list(FORGERIES))
def test_a_cell_cannot_forge_its_records(start_cell, forge: str) -> None:
    """What the cell does reaches the host as it did it. (Its own values still serialise
    through its `toJSON`, as JavaScript says: that is the cell's business.)"""
    cell = start_cell(forge + '\ntext("real");\nnotify("note");\nstore("k", 5);')
    end = cell.wait()
    assert isinstance(end, Finished)
    assert (end.error_text, end.stored_writes) == (None, {"k": "5"})
    said = [
        (type(e).__name__, getattr(e, "item", None) or getattr(e, "text", None))
        for e in cell.events
        if isinstance(e, OutputItem | NotificationSent)
    ]
    assert said == [
        ("OutputItem", {"type": "input_text", "text": "real"}),
        ("NotificationSent", "note"),
    ]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (
            ["i", {"type": "input_image", "image_url": "https://x/y.png", "detail": "high"}],
            "bad ITEM record",
        ),
        (
            ["i", {"type": "input_image", "image_url": "data:,", "detail": "bogus"}],
            "bad ITEM record",
        ),
        (["i", {"type": "function_call", "name": "x"}], "bad ITEM record"),
        (["i", {"type": "input_text", "text": {"nested": True}}], "bad ITEM record"),
        (["i", {"type": "input_text", "text": "a", "extra": 1}], "bad ITEM record"),
        (["n", {"not": "text"}], "bad NOTIFY record"),
        (["s", "k", ["not", "text"]], "bad STORE record"),
        (["s", "k", "{not json"], "bad STORE record"),  # (every later load would throw)
        (["s", "k", "NaN"], "bad STORE record"),
        (["s", "k", '"\\ud800"'], None),  # (what JSON.stringify makes of a lone surrogate)
        (["s", "k", "1e400"], None),  # (JSON.parse takes it: Infinity)
        (["t", "1", "echo", {}], "bad TOOL record"),
        (["t", 1, "echo"], "TOOL record with 2 fields"),
        (["ts", 1, "soon", 0], "bad TIMER_SET record"),
        (["q"], "unknown record"),
        (42, "unknown record"),
        ([None], "unknown record"),  # what the log reader makes of text that is no JSON
    ],
)
def test_the_runtime_refuses_records_of_unknown_shapes(record: object, problem: str) -> None:
    assert record_problem(record) == problem


def test_a_forged_record_ends_its_cell_in_the_log_and_nothing_it_stored_is_kept(
    harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a record get past the prelude (here: put in front of the cell's own when
    it prints `forge`), the cell ends with the refusal, the log records that end, and
    its store() writes are not committed: the session's later loads still work."""
    forged = ["s", "k", "{not json"]
    process = CellRuntime._process_records

    def forging(runtime: CellRuntime, records: list[list[Any]]) -> None:
        if ["i", {"type": "input_text", "text": "forge"}] in records:
            records = [forged, *records]
        process(runtime, records)

    monkeypatch.setattr(CellRuntime, "_process_records", forging)
    harness.exec("store('k', 'kept')")
    output = harness.exec("store('k', 'replaced'); text('forge')")
    refusal = malformed_record("bad STORE record")
    assert output.items[0]["text"].startswith("Script failed")
    assert refusal in output.items[-1]["text"]
    (completed,) = [e for e in harness.cell_events("2") if isinstance(e, CellCompleted)]
    assert (completed.error_text, completed.stored_writes) == (refusal, {})
    assert_output(harness.exec("text(load('k'))"), "Script completed", ["kept"])


def test_records_the_prelude_writes_pass(run_cell) -> None:
    items, end = run_cell(
        'text("a"); image("data:image/png;base64,AAAA"); notify("n"); store("k", 1);'
        "setTimeout(() => {}, 0); await tools.echo({x: [1, null]}); exit();"
    )
    assert end.error_text is None
    assert [item["type"] for item in items] == ["input_text", "input_image"]


def test_the_refusal_is_the_cells_end_and_nothing_it_wrote_is_kept() -> None:
    assert malformed_record("bad ITEM record") == (
        "exec runtime refused a malformed record from the cell: bad ITEM record"
    )


def test_a_tool_record_for_a_tool_the_cell_was_not_given_ends_it(start_cell) -> None:
    """Should a record get past the prelude, it still cannot call a tool the session
    was not given: the runtime ends the cell."""
    cell = start_cell("text(typeof tools.secret);\nawait new Promise(() => {});")
    cell.wait_for(lambda events: any(isinstance(e, OutputItem) for e in events))
    cell.control(lambda runtime: runtime._process_records([["t", 1, "secret", "{}"]]))
    end = cell.wait()
    assert isinstance(end, Finished)
    assert end.error_text == (
        "exec runtime refused a malformed record from the cell: "
        "a TOOL record for a tool the cell was not given"
    )

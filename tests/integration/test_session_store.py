"""Stored values across the cells of a session (spec §5.1)."""

from __future__ import annotations

from cellfleet.broker.events import CellCompleted
from tests.integration.conftest import OpenSession
from tests.integration.session_support import Gates, Harness, assert_output, is_event


def test_stored_values_merge_by_the_keys_each_cell_wrote(harness: Harness, gates: Gates) -> None:
    """The spec's example: a=1,b=2; A stores a=3 and yields; B stores b=4 and completes;
    A completes -> {a:3, b:4}."""
    assert_output(harness.exec("store('a', 1);\nstore('b', 2)"), "Script completed", [])
    out = harness.exec("store('a', 3);\nyield_control();\nawait tools.gate({});\ntext('A done')")
    assert_output(out, "Script running with cell ID 2", [])
    assert_output(harness.exec("store('b', 4);\ntext('B done')"), "Script completed", ["B done"])
    gates.open()
    assert_output(harness.wait("2"), "Script completed", ["A done"])
    out = harness.exec("text(JSON.stringify({ a: load('a'), b: load('b') }))")
    assert_output(out, "Script completed", ['{"a":3,"b":4}'])
    assert harness.host.journal.stored_values(harness.id) == {"a": "3", "b": "4"}


def test_a_cell_sees_its_own_writes_at_once_and_others_only_from_its_snapshot(
    harness: Harness, gates: Gates
) -> None:
    assert_output(harness.exec("store('a', 1)"), "Script completed", [])
    out = harness.exec(
        "store('mine', 'm');\ntext('A start ' + load('b') + ' ' + load('mine'));\n"
        "yield_control();\nawait tools.gate({});\n"
        "text('A sees b=' + load('b') + ' a=' + load('a'))"
    )
    assert_output(out, "Script running with cell ID 2", ["A start undefined m"])
    assert_output(
        harness.exec("store('b', 2);\ntext('B stored')"), "Script completed", ["B stored"]
    )
    gates.open()
    assert_output(harness.wait("2"), "Script completed", ["A sees b=undefined a=1"])
    out = harness.exec("text('C sees a=' + load('a') + ' b=' + load('b') + ' ' + load('mine'))")
    assert_output(out, "Script completed", ["C sees a=1 b=2 m"])


def test_a_later_completion_overwrites_a_key_written_earlier(
    harness: Harness, gates: Gates
) -> None:
    out = harness.exec("store('k', 'A');\nyield_control();\nawait tools.gate({});\ntext('A done')")
    assert_output(out, "Script running with cell ID 1", [])
    assert_output(harness.exec("store('k', 'B')"), "Script completed", [])
    assert_output(harness.exec("text(load('k'))"), "Script completed", ["B"])
    gates.open()
    assert_output(harness.wait("1"), "Script completed", ["A done"])
    assert_output(harness.exec("text(load('k'))"), "Script completed", ["A"])


def test_a_running_cell_commits_nothing_before_it_completes(harness: Harness, gates: Gates) -> None:
    out = harness.exec("store('k', 'early');\nyield_control();\nawait tools.gate({})")
    assert_output(out, "Script running with cell ID 1", [])
    assert_output(harness.exec("text(String(load('k')))"), "Script completed", ["undefined"])
    gates.open()
    harness.wait_event(is_event(CellCompleted, "1"))
    assert_output(harness.exec("text(String(load('k')))"), "Script completed", ["early"])


def test_the_last_write_of_a_key_wins_within_a_cell(harness: Harness) -> None:
    assert_output(
        harness.exec("store('k', 1);\nstore('k', 2);\nstore('j', [1]);\nstore('k', 3)"),
        "Script completed",
        [],
    )
    assert harness.host.journal.stored_values(harness.id) == {"k": "3", "j": "[1]"}


def test_sessions_do_not_share_stored_values(open_session: OpenSession) -> None:
    first, second = open_session(), open_session()
    assert_output(first.exec("store('shared', 'first')"), "Script completed", [])
    out = second.exec("text(String(load('shared')))")
    assert_output(out, "Script completed", ["undefined"])

"""The record kinds: the prelude's `RECORD` table and `RecordKind` are the same table."""

from __future__ import annotations

import re
from importlib import resources

from cellfleet.actors.runtime.records import RecordKind

PRELUDE = resources.files("cellfleet.actors.runtime").joinpath("prelude.js").read_text("utf-8")


def test_the_prelude_and_python_know_the_same_record_kinds() -> None:
    table = re.search(r"const RECORD = Object\.freeze\(\{(?P<body>[^}]*)\}\);", PRELUDE)
    assert table is not None, "the prelude has no RECORD table"
    pairs = re.findall(r"^\s*([A-Z_]+): \"([a-z]+)\",$", table["body"], re.MULTILINE)
    assert dict(pairs) == {kind.name: kind.value for kind in RecordKind}
    assert len(pairs) == len(table["body"].strip().splitlines())  # nothing it did not read


def test_the_prelude_writes_records_only_through_the_table() -> None:
    """Every `send([...])` (or `write`) names its kind from RECORD, never a bare string."""
    sends = re.findall(r"(?:send(?:Urgent)?|write)\(\[([^,\]]+)", PRELUDE)
    assert sends, "no records written?"
    assert all(kind.startswith("RECORD.") for kind in sends), sends
    used = {kind.removeprefix("RECORD.") for kind in sends}
    assert used == {kind.name for kind in RecordKind}

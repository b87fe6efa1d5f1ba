"""The records a cell's JavaScript writes to its log (actors/runtime/prelude.js).

A record is a JSON array whose first element is its kind. The prelude's `RECORD`
table and `RecordKind` are the one definition of the kinds on each side;
tests/unit/test_records.py checks that they agree.

| kind          | record                           | what it is                                    |
| ------------- | -------------------------------- | --------------------------------------------- |
| `ITEM`        | `["i", item]`                    | a content item, in model-facing shape         |
| `YIELD`       | `["y"]`                          | `yield_control()`                             |
| `TOOL`        | `["t", seq, name, input]`        | a nested tool call (input: JSON, null if none)|
| `NOTIFY`      | `["n", text]`                    | `notify()`                                    |
| `STORE`       | `["s", key, jsonText]`           | a `store()` write                             |
| `TIMER_SET`   | `["ts", id, delayMs, clock]`     | `setTimeout()`                                |
| `TIMER_CLEAR` | `["tc", id]`                     | `clearTimeout()`                              |
| `DONE`        | `["d", errorText or null]`       | the module settled, or a timer callback threw |
| `EXIT`        | `["x"]`                          | `exit()`                                      |
| `DEFECT`      | `["b", message]`                 | a defect inside the prelude (never expected)  |
"""

from __future__ import annotations

from enum import StrEnum


class RecordKind(StrEnum):
    ITEM = "i"
    YIELD = "y"
    TOOL = "t"
    NOTIFY = "n"
    STORE = "s"
    TIMER_SET = "ts"
    TIMER_CLEAR = "tc"
    DONE = "d"
    EXIT = "x"
    DEFECT = "b"

"""The nested tools of the recovery tests, in a file of their own: a killed child process
and the test process that takes its session over load the same file, so that their
tool calls go to the same workers (the registry's fingerprint sees its text)."""

from __future__ import annotations

from cellfleet.broker.contract.tools import JsonValue

RUNS: list[JsonValue] = []  # every input `echo` ran with, in this process


def echo(value: JsonValue) -> JsonValue:
    RUNS.append(value)
    return value


HANDLERS = {"echo": echo}

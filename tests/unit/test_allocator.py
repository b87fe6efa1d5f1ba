"""The C allocator's settings (allocator.py): a process of ours caps its malloc arenas
unless its environment chose a number."""

from __future__ import annotations

from typing import Any

import pytest

from cellfleet.actors.runtime import allocator


class _Libc:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def mallopt(self, *args: int) -> int:
        self.calls.append(("mallopt", *args))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def libc(monkeypatch: pytest.MonkeyPatch) -> _Libc:
    fake = _Libc()
    monkeypatch.setattr(allocator, "_libc", lambda: fake)
    return fake


def test_arenas_are_capped(libc: _Libc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    allocator.limit_arenas()
    assert libc.calls == [("mallopt", -8, allocator.ARENAS)]


@pytest.mark.parametrize(
    ("name", "value"),
    [("MALLOC_ARENA_MAX", "8"), ("GLIBC_TUNABLES", "glibc.malloc.arena_max=8")],
)
def test_an_arena_count_chosen_by_the_environment_stays(
    libc: _Libc, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    allocator.limit_arenas()
    assert libc.calls == []


def test_free_memory_is_given_back(libc: _Libc) -> None:
    allocator.give_back_free_memory()
    assert libc.calls == [("malloc_trim", 0)]


def test_the_real_calls_work_here() -> None:
    """(glibc or not: never an error)"""
    allocator.give_back_free_memory()

"""The C allocator's share of a long-running process's memory (glibc's malloc).

Each thread that meets a busy malloc arena gets an arena of its own, up to 8 per core,
and memory freed in one arena serves only that arena: a worker whose pooled threads come
and go keeps growing a little with every new arena, and its RSS moves by megabytes with
which arenas its threads happened to use. Two arenas cost no measurable throughput here
(cells' allocations are mostly V8's own pages) and keep a worker's RSS flat and lower.
Elsewhere than glibc both calls do nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

ARENAS = 2  # unless MALLOC_ARENA_MAX says otherwise
_M_ARENA_MAX = -8  # (glibc's malloc.h)


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # (not glibc)
        return None
    return libc


def limit_arenas() -> None:
    """Cap the arenas made from now on at `ARENAS` (call it before the threads start),
    unless the environment chose a number (glibc reads it there itself)."""
    libc = _libc()
    chosen = "MALLOC_ARENA_MAX" in os.environ or "glibc.malloc.arena_max" in os.environ.get(
        "GLIBC_TUNABLES", ""
    )
    if libc is not None and not chosen:
        libc.mallopt(_M_ARENA_MAX, ARENAS)


def give_back_free_memory() -> None:
    """Return the free memory at the top and in the middle of every arena to the system
    (walks them all, holding each one's lock: for idle time)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)

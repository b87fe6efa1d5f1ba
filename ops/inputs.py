"""What the command line reads before anything starts; every failure is one clear line.

Each function raises `InputError`, whose message `cellfleet` prints after `cellfleet: `
before exiting with status 2: a missing or unreadable file, a file that is not UTF-8, a
tools file that does not load or defines no registry, a Redis that cannot be reached.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import IO

import redis

from cellfleet.broker.redis.connect import connect_redis
from cellfleet.broker.tools.registry import ToolRegistry, ToolsFileError, load_tools_file
from cellfleet.ops import durability
from cellfleet.ops.embedded import redis_url
from cellfleet.ops.redis_server import RedisUnavailableError

REDIS_CHECK_TIMEOUT_S = 2.0


class InputError(Exception):
    """An input of the command line is unusable; the message says which and why."""


def read_text(path: Path) -> str:
    """The whole UTF-8 text of `path`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"cannot read {path}: not UTF-8 text (invalid byte at offset {error.start})"
        ) from None


def open_text(path: Path) -> IO[str]:
    """`path` opened for reading UTF-8 lines (a transcript may be long: read lazily).

    A regular file is checked whole first, so that nothing starts on a bad one; a pipe
    (`<(...)`, a FIFO) can be read once only, so it is checked as it is read.
    """
    try:
        regular = path.is_file()
    except OSError:
        regular = False
    if regular:
        read_text(path)
    try:
        return path.open(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None


def load_tools(path: Path | None) -> ToolRegistry:
    """The `ToolRegistry` of a tools file (`--tools`), or an empty one without a file."""
    if path is None:
        return ToolRegistry()
    source = read_text(path)
    try:
        return load_tools_file(path, source)
    except ToolsFileError as error:
        raise InputError(str(error)) from None


def reachable_redis(data_dir: Path | None) -> str:
    """The URL of a Redis that answers: REDIS_URL, or the embedded server (started),
    with its append-only file as durable as `CELLFLEET_DURABILITY` asks (the embedded
    server is set so; another is checked, with a warning)."""
    try:
        level = durability.requested()
    except durability.DurabilityError as error:
        raise InputError(str(error)) from None
    try:
        url = redis_url(data_dir)
    except (RedisUnavailableError, OSError) as error:
        raise InputError(f"cannot start the embedded Redis: {error}") from None
    try:
        client = connect_redis(
            url,
            socket_connect_timeout=REDIS_CHECK_TIMEOUT_S,
            socket_timeout=REDIS_CHECK_TIMEOUT_S,
        )
    except ValueError as error:
        raise InputError(f"bad Redis URL {_redacted(url)}: {_redacted(url, str(error))}") from None
    try:
        client.ping()
        warning = durability.ensure(client, level, own=not os.environ.get("REDIS_URL"))
    except redis.RedisError as error:
        raise InputError(
            f"cannot reach Redis at {_redacted(url)}: {_redacted(url, str(error))}"
        ) from None
    finally:
        client.close()
    if warning is not None:
        print(f"cellfleet: warning: {_redacted(url, warning)}", file=sys.stderr)
    return url


def _redacted(url: str, text: str | None = None) -> str:
    """`text` (by default `url` itself) without `url`'s password, wherever it shows."""
    passwords = [
        *re.findall(r"//[^/@:]*:([^/@]+)@", url),
        *re.findall(r"[?&]password=([^&#]+)", url),
    ]
    shown = url if text is None else text
    for password in sorted(passwords, key=len, reverse=True):
        shown = shown.replace(password, "***")
    return shown

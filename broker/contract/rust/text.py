"""Rust standard-library text semantics that leak into model-visible strings.

Codex builds its model-facing texts with Rust's `str` methods and formatters, and a few
of their rules differ from Python's. Everything here reproduces the Rust behaviour:

| helper | Rust original |
| --- | --- |
| `rust_trim`, `rust_trim_start` | `str::trim`, `str::trim_start` (Unicode `White_Space` only) |
| `rust_lines` | `str::lines` (splits on `\\n`, drops one `\\r` before it, no empty last line) |
| `utf8_len` | `str::len` (bytes, not characters) |
| `ryu_format` | `ryu::Buffer::format` for `f64` (used by serde_json for floats) |
| `rust_debug_str` | `<str as Debug>::fmt` (used by serde's `Unexpected::Str`) |
"""

from __future__ import annotations

import math
import unicodedata
from decimal import Decimal

__all__ = [
    "RUST_WHITESPACE",
    "rust_debug_str",
    "rust_lines",
    "rust_trim",
    "rust_trim_start",
    "ryu_format",
    "utf8_len",
]

# Code points with the Unicode `White_Space` property (what `char::is_whitespace` tests).
# Python's `str.isspace` also accepts U+001C..U+001F, which Rust does not trim.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# `Other_Grapheme_Extend` code points (Unicode 15); with the `Mn` and `Me` categories they
# make up `Grapheme_Extend`, which `str`'s `Debug` escapes. Python's `unicodedata` may be a
# Unicode version older than Rust's tables: exotic code points can differ (documented).
_OTHER_GRAPHEME_EXTEND = frozenset(
    [
        0x09BE, 0x09D7, 0x0B3E, 0x0B57, 0x0BBE, 0x0BD7, 0x0CC2, 0x0CD5, 0x0CD6, 0x0D3E,
        0x0D57, 0x0DCF, 0x0DDF, 0x1B35, 0x200C, 0x302E, 0x302F, 0xFF9E, 0xFF9F, 0x1133E,
        0x11357, 0x114B0, 0x114BD, 0x115AF, 0x11930, 0x1D165, 0x1D16E, 0x1D16F, 0x1D170,
        0x1D171, 0x1D172,
    ]
)  # fmt: skip
_NON_PRINTABLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"})


def rust_trim(text: str) -> str:
    """`str::trim`: strip leading and trailing Unicode `White_Space`."""
    return text.strip(RUST_WHITESPACE)


def rust_trim_start(text: str) -> str:
    """`str::trim_start`: strip leading Unicode `White_Space`."""
    return text.lstrip(RUST_WHITESPACE)


def rust_lines(text: str) -> list[str]:
    """`str::lines`: split at `\\n` (dropping a `\\r` right before it); no empty last line."""
    if not text:
        return []
    pieces = text.split("\n")
    if text.endswith("\n"):
        pieces.pop()
        return [piece.removesuffix("\r") for piece in pieces]
    return [piece.removesuffix("\r") for piece in pieces[:-1]] + [pieces[-1]]


def utf8_len(text: str) -> int:
    """`str::len`: the length in UTF-8 bytes."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def ryu_format(value: float) -> str:  # noqa: PLR0911 - one return per ryu layout
    """`ryu::Buffer::format(f64)`: shortest round-trip digits in ryu's layout.

    `1.0` → `1.0`, `1e20` → `1e20`, `0.001234` → `0.001234`, `1e-7` → `1e-7`,
    `1.5e300` → `1.5e300`.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return f"{sign}0.0"
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(str(d) for d in digit_tuple).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len(digit_tuple) - len(digits)
    length = len(digits)
    kk = length + exponent  # 10^(kk-1) <= value < 10^kk
    if exponent >= 0 and kk <= 16:
        return f"{sign}{digits}{'0' * exponent}.0"
    if 0 < kk <= 16:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if -5 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    if length == 1:
        return f"{sign}{digits}e{kk - 1}"
    return f"{sign}{digits[0]}.{digits[1:]}e{kk - 1}"


def _is_grapheme_extended(char: str) -> bool:
    return unicodedata.category(char) in ("Mn", "Me") or ord(char) in _OTHER_GRAPHEME_EXTEND


def _is_printable(char: str) -> bool:
    if " " <= char <= "~":
        return True
    return unicodedata.category(char) not in _NON_PRINTABLE_CATEGORIES


_DEBUG_ESCAPES = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"'}


def rust_debug_str(text: str) -> str:
    """`format!("{:?}", text)`: double-quoted, with Rust's `escape_debug` rules."""
    out = ['"']
    for char in text:
        escaped = _DEBUG_ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif _is_grapheme_extended(char) or not _is_printable(char):
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)

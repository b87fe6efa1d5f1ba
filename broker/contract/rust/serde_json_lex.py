"""serde_json's lexer: the byte cursor, positions, error texts, numbers and strings.

A port of serde_json 1.0.14x `de.rs` / `read.rs` (`StrRead`, default features, so no
`float_roundtrip` and no `arbitrary_precision`). `broker.contract.rust.serde_json` builds values and
structs on top of it. Positions are serde_json's: 1-based line, and the column is the
number of bytes of that line before the position (so multi-byte characters count as
several columns).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "CONTROL_CHARACTER",
    "EOF_LIST",
    "EOF_OBJECT",
    "EOF_STRING",
    "EOF_VALUE",
    "EXPECTED_COLON",
    "EXPECTED_IDENT",
    "EXPECTED_LIST_COMMA_OR_END",
    "EXPECTED_OBJECT_COMMA_OR_END",
    "EXPECTED_VALUE",
    "INVALID_ESCAPE",
    "INVALID_NUMBER",
    "KEY_MUST_BE_A_STRING",
    "LONE_LEADING_SURROGATE",
    "NUMBER_OUT_OF_RANGE",
    "QUOTE",
    "RECURSION_LIMIT_EXCEEDED",
    "TRAILING_CHARACTERS",
    "TRAILING_COMMA",
    "U64_MAX",
    "UNEXPECTED_END_OF_HEX_ESCAPE",
    "Lexer",
    "SerdeJsonError",
    "is_digit",
]

U64_MAX: Final = (1 << 64) - 1
_I32_MAX: Final = (1 << 31) - 1
_RECURSION_LIMIT: Final = 128

# serde_json `ErrorCode` texts.
EOF_LIST: Final = "EOF while parsing a list"
EOF_OBJECT: Final = "EOF while parsing an object"
EOF_STRING: Final = "EOF while parsing a string"
EOF_VALUE: Final = "EOF while parsing a value"
EXPECTED_COLON: Final = "expected `:`"
EXPECTED_LIST_COMMA_OR_END: Final = "expected `,` or `]`"
EXPECTED_OBJECT_COMMA_OR_END: Final = "expected `,` or `}`"
EXPECTED_IDENT: Final = "expected ident"
EXPECTED_VALUE: Final = "expected value"
INVALID_ESCAPE: Final = "invalid escape"
INVALID_NUMBER: Final = "invalid number"
NUMBER_OUT_OF_RANGE: Final = "number out of range"
CONTROL_CHARACTER: Final = "control character (\\u0000-\\u001F) found while parsing a string"
KEY_MUST_BE_A_STRING: Final = "key must be a string"
LONE_LEADING_SURROGATE: Final = "lone leading surrogate in hex escape"
TRAILING_COMMA: Final = "trailing comma"
TRAILING_CHARACTERS: Final = "trailing characters"
UNEXPECTED_END_OF_HEX_ESCAPE: Final = "unexpected end of hex escape"
RECURSION_LIMIT_EXCEEDED: Final = "recursion limit exceeded"

_SPACE, _NL, _TAB, _CR = 0x20, 0x0A, 0x09, 0x0D
_WHITESPACE = frozenset((_SPACE, _NL, _TAB, _CR))
QUOTE, _BACKSLASH = 0x22, 0x5C
_ZERO, _NINE = 0x30, 0x39
_STRING_SPECIAL = re.compile(rb'["\\\x00-\x1f]')
_SIMPLE_ESCAPES = {
    ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("b"): b"\x08",
    ord("f"): b"\x0c", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t",
}  # fmt: skip
_POW10: Final = tuple(float(f"1e{exponent}") for exponent in range(309))


class SerdeJsonError(Exception):
    """A serde_json error; `str()` is serde_json's `Display` text.

    `line == 0` marks an error without a position (serde's custom errors before
    serde_json attaches one, and every `from_value` error).
    """

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line == 0:
            return self.message
        return f"{self.message} at line {self.line} column {self.column}"


def is_digit(byte: int) -> bool:
    """ASCII `0`..`9`."""
    return _ZERO <= byte <= _NINE


def _overflows(accumulated: int, digit: int, limit: int) -> bool:
    """serde_json's `overflow!(a * 10 + b, c)`."""
    return accumulated >= limit // 10 and (accumulated > limit // 10 or digit > limit % 10)


class Lexer:
    """The token layer of serde_json's `Deserializer<StrRead>` over the input's UTF-8 bytes."""

    def __init__(self, text: str) -> None:
        self.data = text.encode("utf-8", "surrogatepass")
        self.index = 0
        self.remaining_depth = _RECURSION_LIMIT

    # ------------------------------------------------------------------ cursor

    def peek(self) -> int | None:
        """The next byte without consuming it, or `None` at the end."""
        return self.data[self.index] if self.index < len(self.data) else None

    def peek_or_null(self) -> int:
        """The next byte, or 0 at the end."""
        return self.data[self.index] if self.index < len(self.data) else 0

    def eat(self) -> None:
        """Consume the peeked byte."""
        self.index += 1

    def next_byte(self) -> int | None:
        """Consume and return the next byte, or `None` at the end."""
        if self.index >= len(self.data):
            return None
        self.index += 1
        return self.data[self.index - 1]

    def _position(self, index: int) -> tuple[int, int]:
        start_of_line = self.data.rfind(b"\n", 0, index) + 1
        return 1 + self.data.count(b"\n", 0, start_of_line), index - start_of_line

    def error(self, message: str) -> SerdeJsonError:
        """An error at the position of the last consumed byte (`Deserializer::error`)."""
        return SerdeJsonError(message, *self._position(self.index))

    def peek_error(self, message: str) -> SerdeJsonError:
        """An error at the position of the peeked byte (`Deserializer::peek_error`)."""
        return SerdeJsonError(message, *self._position(min(len(self.data), self.index + 1)))

    def fix(self, err: SerdeJsonError) -> SerdeJsonError:
        """`Deserializer::fix_position`: give a position-less error the current one."""
        return self.error(err.message) if err.line == 0 else err

    def parse_whitespace(self) -> int | None:
        """Skip JSON whitespace; return the next byte without consuming it."""
        data, index = self.data, self.index
        while index < len(data) and data[index] in _WHITESPACE:
            index += 1
        self.index = index
        return data[index] if index < len(data) else None

    def end(self) -> None:
        """`Deserializer::end`: only whitespace may follow the value."""
        if self.parse_whitespace() is not None:
            raise self.peek_error(TRAILING_CHARACTERS)

    def parse_ident(self, ident: bytes) -> None:
        """Consume the rest of `null` / `true` / `false`."""
        for expected in ident:
            byte = self.next_byte()
            if byte is None:
                raise self.error(EOF_VALUE)
            if byte != expected:
                raise self.error(EXPECTED_IDENT)

    def enter(self) -> None:
        """`check_recursion!`: one more level of array / object nesting."""
        self.remaining_depth -= 1
        if self.remaining_depth == 0:
            raise self.peek_error(RECURSION_LIMIT_EXCEEDED)

    # ------------------------------------------------------------------ numbers

    def parse_integer(self, positive: bool) -> int | float:
        """Parse a number after its optional `-` (serde_json `ParserNumber`)."""
        byte = self.next_byte()
        if byte is None:
            raise self.error(EOF_VALUE)
        if byte == _ZERO:
            if is_digit(self.peek_or_null()):
                raise self.peek_error(INVALID_NUMBER)
            return self._parse_number(positive, 0)
        if not _ZERO < byte <= _NINE:
            raise self.error(INVALID_NUMBER)
        significand = byte - _ZERO
        while is_digit(byte := self.peek_or_null()):
            digit = byte - _ZERO
            if _overflows(significand, digit, U64_MAX):
                return self._parse_long_integer(positive, significand)
            self.eat()
            significand = significand * 10 + digit
        return self._parse_number(positive, significand)

    def _parse_number(self, positive: bool, significand: int) -> int | float:
        byte = self.peek_or_null()
        if byte == ord("."):
            return self._parse_decimal(positive, significand, 0)
        if byte in (ord("e"), ord("E")):
            return self._parse_exponent(positive, significand, 0)
        if positive:
            return significand
        # `-0` and values below `i64::MIN` become floats.
        if significand == 0 or significand > 1 << 63:
            return -float(significand)
        return -significand

    def _parse_decimal(self, positive: bool, significand: int, exponent_before: int) -> float:
        self.eat()
        exponent_after = 0
        while is_digit(byte := self.peek_or_null()):
            digit = byte - _ZERO
            if _overflows(significand, digit, U64_MAX):
                return self._parse_decimal_overflow(
                    positive, significand, exponent_before + exponent_after
                )
            self.eat()
            significand = significand * 10 + digit
            exponent_after -= 1
        if exponent_after == 0:
            if self.peek() is not None:
                raise self.peek_error(INVALID_NUMBER)
            raise self.peek_error(EOF_VALUE)
        exponent = exponent_before + exponent_after
        if self.peek_or_null() in (ord("e"), ord("E")):
            return self._parse_exponent(positive, significand, exponent)
        return self._f64_from_parts(positive, significand, exponent)

    def _parse_exponent(self, positive: bool, significand: int, starting_exp: int) -> float:
        self.eat()
        positive_exp = True
        sign = self.peek_or_null()
        if sign == ord("+"):
            self.eat()
        elif sign == ord("-"):
            self.eat()
            positive_exp = False
        byte = self.next_byte()
        if byte is None:
            raise self.error(EOF_VALUE)
        if not is_digit(byte):
            raise self.error(INVALID_NUMBER)
        exp = byte - _ZERO
        while is_digit(byte := self.peek_or_null()):
            self.eat()
            digit = byte - _ZERO
            if _overflows(exp, digit, _I32_MAX):
                return self._parse_exponent_overflow(positive, significand == 0, positive_exp)
            exp = exp * 10 + digit
        final = starting_exp + exp if positive_exp else starting_exp - exp
        final = max(-(1 << 31), min(_I32_MAX, final))  # i32 saturating arithmetic
        return self._f64_from_parts(positive, significand, final)

    def _parse_exponent_overflow(
        self, positive: bool, zero_significand: bool, positive_exp: bool
    ) -> float:
        if not zero_significand and positive_exp:
            raise self.error(NUMBER_OUT_OF_RANGE)
        while is_digit(self.peek_or_null()):
            self.eat()
        return 0.0 if positive else -0.0

    def _parse_long_integer(self, positive: bool, significand: int) -> float:
        exponent = 0
        while True:
            byte = self.peek_or_null()
            if is_digit(byte):
                self.eat()
                exponent += 1
            elif byte == ord("."):
                return self._parse_decimal(positive, significand, exponent)
            elif byte in (ord("e"), ord("E")):
                return self._parse_exponent(positive, significand, exponent)
            else:
                return self._f64_from_parts(positive, significand, exponent)

    def _parse_decimal_overflow(self, positive: bool, significand: int, exponent: int) -> float:
        while is_digit(self.peek_or_null()):
            self.eat()
        if self.peek_or_null() in (ord("e"), ord("E")):
            return self._parse_exponent(positive, significand, exponent)
        return self._f64_from_parts(positive, significand, exponent)

    def _f64_from_parts(self, positive: bool, significand: int, exponent: int) -> float:
        value = float(significand)
        while True:
            if abs(exponent) < len(_POW10):
                if exponent >= 0:
                    value *= _POW10[exponent]
                    if value == float("inf"):
                        raise self.error(NUMBER_OUT_OF_RANGE)
                else:
                    value /= _POW10[-exponent]
                break
            if value == 0.0:
                break
            if exponent >= 0:
                raise self.error(NUMBER_OUT_OF_RANGE)
            value /= 1e308
            exponent += 308
        return value if positive else -value

    # ------------------------------------------------------------------ strings

    def parse_str(self) -> str:
        """Parse a string body; the opening quote is already consumed."""
        data = self.data
        scratch = bytearray()
        start = self.index
        while True:
            match = _STRING_SPECIAL.search(data, self.index)
            if match is None:
                self.index = len(data)
                raise self.error(EOF_STRING)
            self.index = match.start()
            byte = data[self.index]
            if byte == QUOTE:
                scratch += data[start : self.index]
                self.index += 1
                return scratch.decode("utf-8", "surrogatepass")
            if byte == _BACKSLASH:
                scratch += data[start : self.index]
                self.index += 1
                self._parse_escape(scratch)
                start = self.index
            else:
                self.index += 1
                raise self.error(CONTROL_CHARACTER)

    def _next_or_eof(self) -> int:
        byte = self.next_byte()
        if byte is None:
            raise self.error(EOF_STRING)
        return byte

    def _peek_or_eof(self) -> int:
        byte = self.peek()
        if byte is None:
            raise self.error(EOF_STRING)
        return byte

    def _decode_hex_escape(self) -> int:
        digits = self.data[self.index : self.index + 4]
        if len(digits) < 4:
            self.index = len(self.data)
            raise self.error(EOF_STRING)
        self.index += 4
        if not all(chr(d) in "0123456789abcdefABCDEF" for d in digits):
            raise self.error(INVALID_ESCAPE)
        return int(digits, 16)

    def _parse_escape(self, scratch: bytearray) -> None:
        byte = self._next_or_eof()
        simple = _SIMPLE_ESCAPES.get(byte)
        if simple is not None:
            scratch += simple
        elif byte == ord("u"):
            scratch += chr(self._parse_unicode_escape()).encode("utf-8", "surrogatepass")
        else:
            raise self.error(INVALID_ESCAPE)

    def _parse_unicode_escape(self) -> int:
        first = self._decode_hex_escape()
        if 0xDC00 <= first <= 0xDFFF:
            raise self.error(LONE_LEADING_SURROGATE)
        if not 0xD800 <= first <= 0xDBFF:
            return first
        for expected in (_BACKSLASH, ord("u")):
            if self._peek_or_eof() != expected:
                self.eat()
                raise self.error(UNEXPECTED_END_OF_HEX_ESCAPE)
            self.eat()
        second = self._decode_hex_escape()
        if not 0xDC00 <= second <= 0xDFFF:
            raise self.error(LONE_LEADING_SURROGATE)
        return 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)

    def ignore_str(self) -> None:
        """Validate and skip a string body; the opening quote is already consumed."""
        data = self.data
        while True:
            match = _STRING_SPECIAL.search(data, self.index)
            if match is None:
                self.index = len(data)
                raise self.error(EOF_STRING)
            self.index = match.start()
            byte = data[self.index]
            if byte == QUOTE:
                self.index += 1
                return
            if byte != _BACKSLASH:
                raise self.error(CONTROL_CHARACTER)
            self.index += 1
            escape = self._next_or_eof()
            if escape == ord("u"):
                self._decode_hex_escape()
            elif escape not in _SIMPLE_ESCAPES:
                raise self.error(INVALID_ESCAPE)

    def ignore_integer(self) -> None:
        """Validate and skip a number (serde_json's laxer `ignore_integer`)."""
        byte = self.next_byte() or 0
        if byte == _ZERO:
            if is_digit(self.peek_or_null()):
                raise self.peek_error(INVALID_NUMBER)
        elif _ZERO < byte <= _NINE:
            while is_digit(self.peek_or_null()):
                self.eat()
        else:
            raise self.error(INVALID_NUMBER)
        byte = self.peek_or_null()
        if byte == ord("."):
            self.eat()
            if not is_digit(self.peek_or_null()):
                raise self.peek_error(INVALID_NUMBER)
            while is_digit(self.peek_or_null()):
                self.eat()
            byte = self.peek_or_null()
        if byte in (ord("e"), ord("E")):
            self.eat()
            if self.peek_or_null() in (ord("+"), ord("-")):
                self.eat()
            if not is_digit(self.next_byte() or 0):
                raise self.error(INVALID_NUMBER)
            while is_digit(self.peek_or_null()):
                self.eat()

"""The cell's source as V8 compiles it, and the texts of failures to compile it.

mini-racer evaluates classic scripts only, so a cell is an async function in strict
mode inside a script named `exec_main.mjs`: top-level `await` works, `this` is
undefined, top-level declarations stay off `globalThis`. Line 1 of the script is the
wrapper, so the model's line N is the script's line N + 1; the prelude's stack hook
shifts positions back. Static imports cannot be expressed in a script: they are found
here and reported as the module loader would (`Unsupported import in exec: x`).

Module-only syntax is handled the way a module loader would see it: a leading
hashbang is a comment; `export` keywords are dropped (nothing imports a cell's exports);
an `export ... from "m"` is an import. Syntax errors are reported with the message V8
gives for the source itself, not for the wrapper around it (`diagnose_compile_error`).

A top-level `return`, legal in the wrapper's function body, is found by a token scan
(`js_scan`) and reported as the module's early error. Known differences from a real ES
module, documented rather than hidden: top-level `arguments` is an empty arguments
object instead of a ReferenceError; `new.target`, `import.meta` and HTML-like comments
follow script rules.
"""

from __future__ import annotations

import json
import re

import orjson

from cellfleet.actors.runtime.js_scan import has_top_level_return
from cellfleet.actors.runtime.prelude import HUB
from cellfleet.broker.contract import texts

MAIN_FILE = "exec_main.mjs"
HOST_FILE = "cellfleet-host.js"

# A static import declaration at statement start: `import x from "m"`, `import "m"`,
# `import {a as b} from 'm'`, `import * as ns from "m"` (also with `with {...}`).
_STATIC_IMPORT = re.compile(
    r"""(?m)(?:^|(?<=[;}]))[ \t]*import\s*(?:[\w$*{}\s,]+?\s*from\s*)?(["'])((?:\\.|(?!\1).)*)\1"""
    r"""(?:\s*(?:with|assert)\s*\{[^}]*\})?"""
)


# `export {a, b};`, `export * from "m"`, `export {a} from "m"`: whole declarations.
_EXPORT_LIST = re.compile(
    r"""(?m)(?:^|(?<=[;}]))[ \t]*export\s*(?:\*(?:\s*as\s+[\w$]+)?|\{[^}]*\})\s*"""
    r"""(?:from\s*(["'])((?:\\.|(?!\1).)*)\1)?\s*;?"""
)
# `export` / `export default` in front of a declaration or expression.
_EXPORT_KEYWORD = re.compile(r"(?m)(?:^|(?<=[;}]))([ \t]*)export(\s+default)?\s")


def prepare(source: str) -> str:
    """The source as it is compiled: a leading hashbang becomes a line comment."""
    return "//" + source[2:] if source.startswith("#!") else source


def wrap(host: str, config_literal: str, source: str) -> str:
    """The start script: line 1 configures the cell and hands it the model's code;
    `host` is the context's name for the prelude's host interface."""
    return (
        f'{host}.start({config_literal})(async function () {{"use strict";\n'
        f"{source}\n}})\n//# sourceURL={MAIN_FILE}"
    )


def realm_wrap(host: str, config_literal: str, source: str) -> str:
    """The start script of a cell in a realm (`wrap`'s, run in the realm's hub): the
    model's code is compiled in the realm by the realm's `eval` (a script compiled by
    the hub would belong to the hub), into the same lines as `wrap`'s, as a function
    that nothing of the model's runs in until it is called with the cell's runner
    (code that closes the wrapper early runs after the start, as with `wrap`). Its
    value is the text of the SyntaxError if the code does not compile, else null.

    The code goes to V8 as a string literal, not as the script's UTF-8: a lone
    surrogate in it is first replaced as V8 decodes it in a script (each byte of its
    encoding, U+FFFD)."""
    source = source.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    code = (
        f'(function (run) {{ run(async function () {{"use strict";\n{source}\n}}) }})'
        f"\n//# sourceURL={MAIN_FILE}"
    )
    return (
        f"{{ const cell = {HUB}.compile({host}, {js_string(code)});"
        f' typeof cell === "string" ? cell : (cell({host}.start({config_literal})), null); }}'
        f"\n//# sourceURL={HOST_FILE}"
    )


def js_string(text: str) -> str:
    """`text` as a JavaScript string literal (lone surrogates too, which orjson refuses)."""
    try:
        return orjson.dumps(text).decode()
    except orjson.JSONEncodeError:
        return json.dumps(text)


def host_script(host: str, call: str) -> str:
    """A host input script; its frames never show in the model's stack traces."""
    return f"{host}.{call}\n//# sourceURL={HOST_FILE}"


# The script after each input: its answer comes once the input's promise reactions ran.
MARKER = "0"


def take_script(host: str) -> str:
    """The script that gives the cell the input left in its inbox (the same every time)."""
    return host_script(host, "take()")


def syntax_error_text(parse_error: str) -> str:
    """The model-facing text of V8's compile error: `SyntaxError: message`."""
    _location, sep, rest = parse_error.rpartition("\n\n")
    text = rest if sep else parse_error
    return text.removesuffix("\n")


def import_specifiers(source: str) -> list[str]:
    """Specifiers of the static imports and re-exports in `source`, in source order."""
    found = [(m.start(), m.group(2)) for m in _STATIC_IMPORT.finditer(source)]
    found += [(m.start(), m.group(2)) for m in _EXPORT_LIST.finditer(source) if m.group(2)]
    return [specifier for _, specifier in sorted(found)]


def without_module_syntax(source: str) -> str:
    """`source` without import/export declarations and `export` keywords (positions kept)."""
    blank = lambda match: " " * len(match.group(0))  # noqa: E731
    source = _STATIC_IMPORT.sub(blank, source)
    source = _EXPORT_LIST.sub(blank, source)
    return _EXPORT_KEYWORD.sub(
        lambda m: m.group(1) + " " * (len(m.group(0)) - len(m.group(1))), source
    )


def is_module_syntax_error(text: str) -> bool:
    return text in (texts.IMPORT_OUTSIDE_MODULE, texts.UNEXPECTED_EXPORT)


def diagnosis_script(source: str) -> str:
    """An unterminated function around `source`: compiling it finds the error a module
    parse would report, without the wrapper's closing brace in the way."""
    return f'async function __cellfleet_check() {{"use strict";\n{source}\n'


def diagnosed_error(diagnosis_error: str | None) -> str:
    """The model-facing SyntaxError from compiling `diagnosis_script(source)`."""
    if diagnosis_error is None:
        return "SyntaxError: Unexpected token '}'"  # the source closes the function early
    text = syntax_error_text(diagnosis_error)
    return "SyntaxError: Unexpected reserved word" if text == texts.AWAIT_OUTSIDE_ASYNC else text


_ILLEGAL_RETURN = "SyntaxError: Illegal return statement"


def module_compile_error(source: str) -> str | None:
    """The SyntaxError a module parse reports that the wrapper's compile does not.

    Only a top-level `return` (legal in the wrapper's function body, an early error in a
    module) is detected, by a token scan that errs towards None (`js_scan`).
    """
    return _ILLEGAL_RETURN if has_top_level_return(source) else None

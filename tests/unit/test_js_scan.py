"""`has_top_level_return`: a `return` outside every function is a module SyntaxError.

Every case's expected answer was checked against Codex's reference host (a real ES module
compiler: `SyntaxError: Illegal return statement` or not); `test_case_is_valid_js` checks
with V8 that each case compiles as cellfleet runs it, so the answers are meaningful.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from py_mini_racer import MiniRacer

from cellfleet.actors.runtime.js_scan import has_top_level_return
from cellfleet.actors.runtime.source import module_compile_error, prepare
from cellfleet.actors.runtime.v8 import create_isolate, free_isolate
from tests.reference.cases import CASES

TOP_LEVEL: dict[str, str] = {
    "bare": "return",
    "with_value": "return 1",
    "semicolon": "return;",
    "after_statements": "const x = 1;\ntext(String(x));\nreturn x;",
    "after_await": "const r = await Promise.resolve(1);\nreturn r",
    "in_if_block": "if (x) { return 1; }",
    "in_if_no_block": "if (x) return 1;",
    "in_else": "if (x) {} else { return 2 }",
    "in_else_no_block": "if (x) text('a'); else return;",
    "in_else_if": "if (a) {} else if (b) { return }",
    "in_for": "for (let i = 0; i < 3; i++) { return i }",
    "in_for_of": "for (const x of [1, 2]) return x",
    "in_for_await": "for await (const x of gen()) { return x }",
    "in_while": "while (true) { return }",
    "in_do_while": "do { return } while (false)",
    "in_do_no_block": "do return; while (false)",
    "in_switch": "switch (x) { case 1: return 1; default: return 2 }",
    "in_case_block": "switch (x) { case 1: { return } }",
    "in_try": "try { return 1 } catch (e) {}",
    "in_catch": "try { f() } catch (e) { return e }",
    "in_optional_catch": "try { f() } catch { return 0 }",
    "in_finally": "try { f() } finally { return }",
    "in_label_block": "outer: { return }",
    "after_label": "outer:\nreturn",
    "nested_blocks": "{ { { return } } }",
    "paren_value": "return (a + b) * 2",
    "paren_value_newline_block": "return (a)\n;{}",
    "after_asi_name": "let x = y\nreturn x",
    "after_asi_call": "f()\nreturn",
    "after_asi_postfix": "i++\nreturn",
    "after_function_decl": "function f() { return 1 }\nreturn f()",
    "after_arrow": "const f = () => { return 1 };\nreturn f()",
    "after_class": "class A { m() { return 1 } }\nreturn new A().m()",
    "after_object": "const o = { return: 1, f() { return 2 } };\nreturn o",
    "after_regex": "const re = /[/]}/g;\nreturn re",
    "after_division": "const x = a / b / c;\nreturn x",
    "after_template": "const s = `${ {a: `}`}.a }}`;\nreturn s",
    "after_string_braces": "const s = '{' + \"}\" + '\\'';\nreturn s",
    "after_comments": "// }\n/* { function () { */\nreturn",
    "return_object": "return { a: 1 }",
    "return_regex": "return /x/.test(s)",
    "return_template": "return `a${b}c`",
    "return_arrow": "return () => { return 1 }",
    "return_function": "return function () { return 1 }",
    "return_method_call": "return obj.return()",
    "in_static_block": "class A { static { return } }",
    "hashbang": "#!/usr/bin/env node\nreturn 1",
    "unicode_names": "const café = 1, π = 2;\nreturn café + π",
    "bigint_separators": "const n = 1_000n + 0xFFn + 1.5e-3;\nreturn n",
    "private_and_chaining": "class A { #x = 1; get() { return this.#x } }\nreturn a?.b?.[0]",
    "regex_after_cond_paren": "if (ok) /}/.test(s)\nreturn",
    "regex_after_block": "if (ok) { f() } /'/.test(s)\nreturn",
    "crlf": "const a = 1;\r\nif (a) {\r\n  return a;\r\n}\r\n",
    "after_async_iife": "await (async () => { return 1 })();\nreturn",
}

NOT_TOP_LEVEL: dict[str, str] = {
    "no_return": "text('hi')",
    "function_decl": "function f() { return 1 }",
    "function_expr": "const f = function () { return 1 }",
    "named_function_expr": "const f = function named() { return 1 }",
    "async_function": "async function f() { return await g() }",
    "generator": "function* g() { yield 1; return 2 }",
    "async_generator": "async function* g() { return }",
    "arrow_block": "const f = (a, b) => { return a + b }",
    "arrow_single_param": "const f = a => { return a }",
    "async_arrow": "const f = async (x) => { return x }",
    "arrow_destructured": "const f = ({ a, b }, [c]) => { return a + b + c }",
    "arrow_default_object": "const f = (o = { return: 1 }) => { return o }",
    "iife": "(function () { return 1 })()",
    "arrow_iife": "(() => { return 1 })()",
    "callback": "[1, 2].map(function (x) { return x * 2 })",
    "promise_catch": "p.then((r) => { return r }).catch((e) => { return null })",
    "promise_catch_function": "p.catch(function (e) { return e })",
    "object_method": "const o = { m() { return 1 } }",
    "object_async_method": "const o = { async m() { return 1 } }",
    "object_generator_method": "const o = { *m() { return 1 } }",
    "object_getter_setter": "const o = { get x() { return 1 }, set x(v) { return } }",
    "object_computed_method": "const o = { [k]() { return 1 }, ['a' + b]() { return 2 } }",
    "object_string_number_keys": "const o = { 'a b'() { return 1 }, 42() { return 2 } }",
    "object_keyword_methods": "const o = { if() { return }, for() { return }, catch(e) {} }",
    "object_catch_method": "const o = { catch(e) { return e } }",
    "object_return_key": "const o = { return: 1 }",
    "object_return_method": "const o = { return() { return 1 } }",
    "object_return_getter": "const o = { get return() { return 1 } }",
    "object_quoted_return": "const o = { 'return': 1, \"return\"() {} }",
    "object_arrow_value": "const o = { f: () => { return 1 } }",
    "object_function_value": "const o = { f: function () { return 1 } }",
    "nested_object": "const o = { a: { b: { c() { return 1 } } } }",
    "destructuring_return_key": "const { return: r } = obj",
    "class_method": "class A { m() { return 1 } }",
    "class_static_method": "class A { static m() { return 1 } }",
    "class_getter_setter": "class A { get x() { return 1 } set x(v) { return } }",
    "class_async_generator": "class A { async *m() { return } static async *n() { return } }",
    "class_constructor": "class A { constructor() { return } }",
    "class_private_method": "class A { #m() { return 1 } }",
    "class_computed_method": "class A { [Symbol.iterator]() { return 1 } }",
    "class_field_arrow": "class A { f = () => { return 1 } }",
    "class_field_function": "class A { f = function () { return 1 } }",
    "class_return_method": "class A { return() { return 1 } }",
    "class_return_field": "class A { return = 1; static return = 2 }",
    "class_keyword_methods": "class A { if() { return } while() { return } catch() { return } }",
    "class_expression": "const A = class { m() { return 1 } }",
    "class_extends_call": "class A extends mix(B, { m() { return 1 } }) { n() { return 2 } }",
    "class_in_function": "function f() { class A { static { x = 1 } } return A }",
    "nested_class": "class A { m() { class B { return() { return 1 } } return B } }",
    "static_block_function": "class A { static { const f = () => { return 1 } } }",
    "property_access": "const r = obj.return",
    "optional_chain_property": "const r = obj?.return",
    "property_call": "obj.return(1)",
    "iterator_return": "it.return?.()",
    "private_name": "class A { #return = 1; m() { return this.#return } }",
    "return_identifier_prefix": "const returnValue = 1, _return = 2, $return = 3",
    "string_return": "text('return 1'); text(\"return\")",
    "template_return": "text(`return ${'return'} return`)",
    "template_nested_function": "text(`${(() => { return 1 })()}`)",
    "template_nested_template": "text(`a${`b${(() => { return `}` })()}`}`)",
    "line_comment_return": "// return 1\ntext('x')",
    "block_comment_return": "/* return 1 */ text('x')",
    "regex_return": "const re = /return/g",
    "regex_class_slash": "const re = /[/]return[/]/",
    "regex_escaped_slash": "const re = /\\/ return \\//",
    "division_not_regex": "const x = a / b; function f() { return x / 2 / 1 }",
    "division_after_paren": "const x = (a) / 2 + f() / 3",
    "regex_after_paren_of_if": "if (x) /\\)/.test(s)\nfunction f() { return }",
    "if_in_function": "function f(x) { if (x) { return 1 } else { return 2 } }",
    "loops_in_function": "function f() { for (;;) { while (1) { return } } }",
    "switch_in_function": "function f(x) { switch (x) { case 1: return 1 } }",
    "try_in_arrow": "const f = async () => { try { return await g() } catch { return 0 } }",
    "getter_in_function": "function f() { return { get x() { return 1 } } }",
    "ternary_function": "const f = c ? function () { return 1 } : () => { return 2 }",
    "ternary_objects": "const o = c ? { return: 1 } : { return: 2 }",
    "new_function_string": "const f = new Function('a', 'return a')",
    "hashbang_return": "#!/usr/bin/env return\ntext('x')",
    "html_comment": "<!-- return 1\ntext('x')",
    "arrow_expression_body": "const f = (x) => x.return",
    "label_loop": "outer: for (const a of b) { for (const c of d) { if (c) continue outer } }",
}

MALFORMED: dict[str, str] = {
    "unterminated_string": "'abc\nreturn",
    "unterminated_template": "`abc ${x}\nreturn",
    "unterminated_comment": "return /* never closed",
    "unterminated_regex": "x = /abc\nreturn",
    "unbalanced_open": "{ return",
    "unbalanced_close": "return }",
    "mismatched": "(return]",
    "lone_backslash": "return \\",
}


@pytest.mark.parametrize("source", TOP_LEVEL.values(), ids=TOP_LEVEL.keys())
def test_top_level_return(source: str) -> None:
    assert has_top_level_return(source) is True
    assert module_compile_error(source) == "SyntaxError: Illegal return statement"


@pytest.mark.parametrize("source", NOT_TOP_LEVEL.values(), ids=NOT_TOP_LEVEL.keys())
def test_no_top_level_return(source: str) -> None:
    assert has_top_level_return(source) is False
    assert module_compile_error(source) is None


@pytest.mark.parametrize("source", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_source_is_false(source: str) -> None:
    assert has_top_level_return(source) is False


@pytest.fixture(scope="module")
def v8() -> Iterator[MiniRacer]:
    racer = create_isolate(MiniRacer)
    yield racer
    free_isolate(racer.close)


@pytest.mark.parametrize(
    "source",
    [*TOP_LEVEL.values(), *NOT_TOP_LEVEL.values()],
    ids=[*TOP_LEVEL.keys(), *NOT_TOP_LEVEL.keys()],
)
def test_case_is_valid_js(v8: MiniRacer, source: str) -> None:
    """Each case compiles the way cellfleet runs it (a top-level return is legal there)."""
    if source == TOP_LEVEL["in_static_block"]:
        pytest.skip("a return in a static block is illegal in the wrapper too")
    v8.eval(f'(async function () {{"use strict";\n{prepare(source)}\n}}); 0')


@pytest.mark.parametrize(
    "source",
    ["", " ", "\n", "{" * 5000, "(" * 5000 + "return", "return " + "a/" * 5000, "\\", "#", "`${"],
)
def test_never_raises(source: str) -> None:
    assert has_top_level_return(source) in (True, False)


def test_reference_corpus_has_only_the_known_top_level_return() -> None:
    sources = [
        (case.name, step["source"])
        for case in CASES
        for step in case.program()
        if step["op"] == "execute"
    ]
    started = time.perf_counter()
    found = [name for name, source in sources if has_top_level_return(source)]
    elapsed = time.perf_counter() - started
    assert found == ["mod_top_level_return"]
    assert elapsed < 1.0  # ~5 ms in practice for ~900 snippets

"""A small JavaScript token scanner: does a cell's source `return` at its top level?

cellfleet compiles a cell as the body of an async function (`source.py`), where a
top-level `return` is legal; in the ES module the cell stands for it is the early error
`SyntaxError: Illegal return statement`. `has_top_level_return` finds such a `return`
without a parser: one pass over the tokens, keeping a stack of open brackets, each `{`
labelled block, function body, object literal, class body or template substitution.

Heuristics:

* Tokens: line, block and HTML-like (`<!--`, line-leading `-->`) comments, a hashbang,
  quoted strings with escapes and line continuations, template literals with nested
  `${ ... }`, numbers (hex/octal/binary, separators, exponents, BigInt), identifiers
  (Unicode, `\\u` escapes, `#private`), maximal-munch punctuators (`?.`, `=>`, `??=`...).
* `/` starts a regular expression after an operator or punctuator, after `return`,
  `typeof`, `case`, `do`, `else`, `in`, `instanceof`, `new`, `delete`, `void`, `throw`,
  `yield`, `await`, at the start, after a `)` closing `if/for/while/with/switch/catch
  (...)` and after a `}` closing anything but an object literal; elsewhere it divides.
  A regex runs to its closing `/` (classes `[...]` may hold `/`) and its flags.
* A `{` opens a function body after `=>` or after any `)` except one closing the head
  of `if/for/while/with/switch/catch` (those open blocks); this covers declarations,
  expressions, generators, async functions, methods, accessors and computed keys without
  recognising them, and errs towards "function" (never a false top-level `return`).
  After `class ... ` the next `{` at the same depth is a class body; after an operator,
  `(`, `[`, `,`, `?`, an expression keyword or a property/ternary `:` a `{` is an object
  literal; at statement start (`;`, `{`, `}`, a case/label `:`, a plain word) a block.
* A word is a property name, never a keyword, after `.`/`?.` and where an object or
  class body expects a member name (after `{`, `,`, `;`, `}`, `*`, `get`/`set`/`static`/
  `async`/`accessor`): `obj.return`, `{ if() {} }`, `class { catch() {} }`.
* `return` counts when no function body is open, the innermost bracket is a plain
  block (a class `static { }` block is one: a `return` there is illegal too) or none, it
  is at statement start (after `;`, `{`, `}`, a case/label `:`, `else`, `do`, a
  condition's `)`, or a line break after a complete expression), and it is not a member
  name in disguise: not followed by `:` or `=`, nor by `(...)` and then `{`.

Known limits (each errs towards False, today's behaviour): anything malformed (an
unterminated string, comment, template or regex, unbalanced or mismatched brackets)
makes the whole answer False, and so does a wrong regex-or-division guess that runs a
regex into a line end, e.g. after a `}` ending a function *expression* that is divided
(`f = function () {} / 2`); a call ending a line before a block (`foo()`, then
`{ return }`) reads as a function body; `for (x of /re/)`, `class X extends {} {}` and
v-flag nested regex classes are not modelled. Code only a real parser could classify
(a block read as an object literal) can hide a `return`. Nothing here knows other
module-only errors (HTML-like comments, top-level `new.target`) that a module parse
would report first.
"""

from __future__ import annotations

import re

_LINE_TERMINATOR = re.compile(r"[\n\r\u2028\u2029]")
_SKIP = re.compile(r"(?:[\s\ufeff]+|//[^\n\r\u2028\u2029]*|/\*[\s\S]*?\*/)*")
_WORD = re.compile(r"(?:[\w$]|[^\x00-\x7f\s\ufeff]|\\u[0-9a-fA-F]{4}|\\u\{[0-9a-fA-F]+\})+")
_NUMBER = re.compile(
    r"0[xXoObB][\da-fA-F_]*n?|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?[\d_]+)?n?"
)
_STRING = {
    "'": re.compile(r"'(?:[^'\\\n\r]|\\(?:\r\n|[\s\S]))*'"),
    '"': re.compile(r'"(?:[^"\\\n\r]|\\(?:\r\n|[\s\S]))*"'),
}
_TEMPLATE_CHUNK = re.compile(r"(?:[^`\\$]|\\[\s\S]|\$(?!\{))*")
_REGEX = re.compile(
    r"/(?:[^/\\\[\n\r\u2028\u2029]|\\[^\n\r\u2028\u2029]"
    r"|\[(?:[^\]\\\n\r\u2028\u2029]|\\[^\n\r\u2028\u2029])*\])+/[\w$]*"
)
_PUNCT = re.compile(
    r">>>=|\.\.\.|===|!==|\*\*=|<<=|>>=|>>>|&&=|\|\|=|\?\?=|=>|\?\.(?!\d)|&&|\|\||\?\?"
    r"|\+\+|--|\*\*|<<|>>|[-+*/%&|^<>=!]=|[-+*/%&|^<>=!~?:;,.(){}\[\]@]"
)
_RETURN_WORD = re.compile(r"(?<![\w$\\])return(?![\w$])")

# Open-bracket kinds. A top-level `return` needs no _FUNC open and a _BLOCK (or nothing) innermost.
_BLOCK, _FUNC, _OBJ, _CLASS, _PAREN, _COND, _BRACKET, _TMPL = range(8)
# Token types of the previous significant token.
_PUNCTUATOR, _KEYWORD, _NAME, _LITERAL = range(4)

# Words after which an expression (so a regex or an object literal) is expected.
_EXPR_KEYWORDS = frozenset(
    {"return", "typeof", "case", "do", "else", "in", "instanceof", "new", "delete", "void"}
    | {"throw", "yield", "await"}
)
_OBJ_AFTER = (_EXPR_KEYWORDS - {"do", "else"}) | {"const", "let", "var", "of", "default"}
_COND_KEYWORDS = frozenset(("if", "for", "while", "with", "switch", "catch"))
_MODIFIERS = frozenset(("get", "set", "static", "async", "accessor"))
_NAME_BEFORE = frozenset(("{", ",", ";", "}", "*"))
_STATEMENT_BEFORE = frozenset(("start", ";", "{", "}", ":s", "cond)"))
_VALUE_END = frozenset((")", "]", "obj}", "++", "--"))


class _ScanError(Exception):
    """The scanner met something it does not understand."""


def has_top_level_return(source: str) -> bool:
    """Whether `source`, compiled as an ES module, has a `return` outside any function.

    Errs towards False: anything the scanner cannot follow answers False.
    """
    if not _RETURN_WORD.search(source):
        return False
    try:
        return _Scanner(source).run()
    except Exception:  # _ScanError, or a scanner bug: never break a cell over this check
        return False


class _Scanner:
    def __init__(self, source: str) -> None:
        self.src = source
        self.stack: list[int] = []
        self.ternaries = [0]  # pending `?` per nesting level (outermost first)
        self.functions = 0  # open function bodies
        self.prev = "start"
        self.ptype = _PUNCTUATOR
        self.cond_next = False  # the next `(` is the head of if/for/while/...
        self.class_depth = -1  # stack depth at which a class body `{` is due
        self.candidate = 0  # 1: after a `return`; 2: in its `(`; 3: after that `)`
        self.candidate_depth = 0
        self.found = False

    def run(self) -> bool:
        src, n = self.src, len(self.src)
        i = _line_end(src, 0) if src.startswith("#!") else 0
        newline = True
        while True:
            j = _SKIP.match(src, i).end()  # type: ignore[union-attr]  # always matches
            newline = newline or _LINE_TERMINATOR.search(src, i, j) is not None
            i = j
            if i >= n:
                break
            c = src[i]
            if src.startswith("<!--", i) or (newline and src.startswith("-->", i)):
                i = _line_end(src, i)
            elif src.startswith("/*", i):
                raise _ScanError  # an unterminated block comment
            elif c in "'\"":
                i = self.literal(_STRING[c].match(src, i))
            elif c == "`":
                self.settle("`")
                i = self.template(i + 1)
            elif "0" <= c <= "9" or (c == "." and src[i + 1 : i + 2].isdigit()):
                i = self.literal(_NUMBER.match(src, i))
            elif c == "/" and self.regex_allowed():
                i = self.literal(_REGEX.match(src, i))
            else:
                i = self.word_or_punct(i, newline)
            newline = False
        if self.stack:
            raise _ScanError
        return self.found or self.candidate in (1, 3)

    def settle(self, token: str) -> None:
        """Decide a pending `return` candidate on the token after it (or after its `(...)`)."""
        if self.candidate == 1:
            if token == "(":
                self.candidate, self.candidate_depth = 2, len(self.stack)
            else:  # `return: 1`, `return = 1` are member names, not statements
                self.candidate = 0
                self.found = self.found or token not in (":", "=")
        elif self.candidate == 3:  # `return(...) {` is a method named return
            self.candidate = 0
            self.found = self.found or token != "{"

    def literal(self, match: re.Match[str] | None) -> int:
        if match is None:
            raise _ScanError
        self.settle("lit")
        self.prev, self.ptype, self.cond_next = "lit", _LITERAL, False
        return match.end()

    def template(self, i: int) -> int:
        """Scan template characters from `i` up to the closing backtick or a `${`."""
        j = _TEMPLATE_CHUNK.match(self.src, i).end()  # type: ignore[union-attr]
        if self.src.startswith("`", j):
            self.prev, self.ptype, self.cond_next = "lit", _LITERAL, False
            return j + 1
        if not self.src.startswith("${", j):
            raise _ScanError
        self.push(_TMPL)
        self.prev, self.ptype, self.cond_next = "${", _PUNCTUATOR, False
        return j + 2

    def regex_allowed(self) -> bool:
        if self.ptype == _KEYWORD:
            return self.prev in _EXPR_KEYWORDS
        return self.ptype == _PUNCTUATOR and self.prev not in _VALUE_END

    def word_or_punct(self, i: int, newline: bool) -> int:
        src = self.src
        match = _WORD.match(src, i + 1 if src[i] == "#" else i)
        if match is not None:
            if src[i] == "#":
                self.settle("#")
                self.prev, self.ptype, self.cond_next = "#", _NAME, False
            else:
                self.word(match.group(), newline)
            return match.end()
        match = _PUNCT.match(src, i)
        if match is None:
            raise _ScanError
        token = match.group()
        self.settle(token)
        if token in "([{":
            self.open(token)
        elif token in ")]}":
            return self.close(token, i)
        else:
            self.operator(token)
        return match.end()

    def word(self, word: str, newline: bool) -> None:
        self.settle(word)
        prev, ptype = self.prev, self.ptype
        in_members = bool(self.stack) and self.stack[-1] in (_OBJ, _CLASS)
        if (ptype == _PUNCTUATOR and prev in (".", "?.")) or (
            in_members
            and (
                (ptype == _PUNCTUATOR and prev in _NAME_BEFORE)
                or (ptype != _PUNCTUATOR and prev in _MODIFIERS)
            )
        ):
            self.prev, self.ptype, self.cond_next = word, _NAME, False
            return
        if word == "return" and self.in_top_level_statements() and self.at_statement_start(newline):
            self.candidate = 1
        elif word == "class":
            self.class_depth = len(self.stack)
        self.cond_next = word in _COND_KEYWORDS or (
            word == "await" and prev == "for" and self.cond_next
        )
        self.prev, self.ptype = word, _KEYWORD

    def in_top_level_statements(self) -> bool:
        return self.functions == 0 and (not self.stack or self.stack[-1] == _BLOCK)

    def at_statement_start(self, newline: bool) -> bool:
        prev, ptype = self.prev, self.ptype
        if ptype == _PUNCTUATOR and prev in _STATEMENT_BEFORE:
            return True
        if ptype == _KEYWORD and prev in ("else", "do"):
            return True
        if not newline:  # otherwise only automatic semicolon insertion separates them
            return False
        if ptype == _KEYWORD:
            return prev not in _EXPR_KEYWORDS
        return ptype != _PUNCTUATOR or prev in _VALUE_END

    def operator(self, token: str) -> None:
        if token == "?":
            self.ternaries[-1] += 1
        elif token == ":":
            if self.ternaries[-1] > 0:
                self.ternaries[-1] -= 1
            elif not self.stack or self.stack[-1] in (_BLOCK, _FUNC):
                token = ":s"  # a case or label colon: a statement follows
        elif token == ";" and self.class_depth == len(self.stack):
            self.class_depth = -1
        self.prev, self.ptype, self.cond_next = token, _PUNCTUATOR, False

    def open(self, token: str) -> None:
        if token == "(":
            kind = _COND if self.cond_next else _PAREN
        elif token == "[":
            kind = _BRACKET
        else:
            kind = self.brace_kind()
        self.push(kind)
        self.prev, self.ptype, self.cond_next = token, _PUNCTUATOR, False

    def brace_kind(self) -> int:
        if self.class_depth == len(self.stack):
            self.class_depth = -1
            return _CLASS
        prev, ptype = self.prev, self.ptype
        if ptype == _PUNCTUATOR and prev in ("=>", ")"):
            return _FUNC
        top = self.stack[-1] if self.stack else _BLOCK
        if prev == "cond)" or (ptype == _NAME and prev == "static" and top == _CLASS):
            return _BLOCK  # a statement's body, or a class static block
        statement = (ptype == _PUNCTUATOR and prev in _STATEMENT_BEFORE) or (
            ptype == _KEYWORD and prev not in _OBJ_AFTER
        )
        return _BLOCK if statement and top in (_BLOCK, _FUNC) else _OBJ

    def push(self, kind: int) -> None:
        self.stack.append(kind)
        self.ternaries.append(0)
        self.functions += kind == _FUNC

    def close(self, token: str, i: int) -> int:
        if not self.stack:
            raise _ScanError
        kind = self.stack.pop()
        self.ternaries.pop()
        self.functions -= kind == _FUNC
        if (token == ")") != (kind in (_PAREN, _COND)) or (token == "]") != (kind == _BRACKET):
            raise _ScanError
        if self.class_depth > len(self.stack):
            self.class_depth = -1
        if self.candidate == 2 and len(self.stack) == self.candidate_depth:
            self.candidate = 3
        if kind == _TMPL:
            return self.template(i + 1)
        if kind == _COND:
            token = "cond)"
        elif kind == _OBJ:
            token = "obj}"
        self.prev, self.ptype, self.cond_next = token, _PUNCTUATOR, False
        return i + 1


def _line_end(src: str, i: int) -> int:
    match = _LINE_TERMINATOR.search(src, i)
    return match.start() if match else len(src)

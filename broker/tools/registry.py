"""Registering Python callables as nested tools: the API a `--tools FILE.py` uses.

    from cellfleet.broker.tools.registry import ToolContext, ToolRegistry

    tools = ToolRegistry()

    @tools.function(description="Add two numbers.")
    def add(a: float, b: float = 0) -> float:            # schema from the type hints
        return a + b

    @tools.function(input_schema={"type": "object", "properties": {"q": {"type": "string"}}})
    async def search(args: dict, ctx: ToolContext) -> dict:   # async, with a context
        ...

    @tools.freeform(description="Apply a patch.")
    def apply_patch(patch: str) -> str: ...

    @tools.function(local=True)                          # run by the cell's own process
    def now_iso() -> str: ...

A handler gets the call's input: a function tool with an explicit `input_schema` (or a
single `args` parameter) receives the JSON arguments object; otherwise the arguments
are passed as keyword arguments, checked against the schema derived from the type
hints. A freeform tool receives the raw string. A parameter annotated `ToolContext`
receives the call's idempotency key and cancellation signal. Raise `ToolCallError` to
fail the call with a message the JavaScript promise rejects with; `RetryableToolError`
asks for another attempt under the tool's `RetryPolicy`.

One registry feeds the model-facing side (`definitions`: `tools.*`, `ALL_TOOLS`, the
`exec` description) and the workers (`spec(name)`), so what the model is told and what
runs cannot drift apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import inspect
import linecache
import re
import threading
import traceback
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from cellfleet.broker.contract.tools import JsonValue, ToolDefinition, ToolKind
from cellfleet.broker.tools.invocation import ToolCallError

__all__ = [
    "RetryPolicy",
    "RetryableToolError",
    "ToolCallError",
    "ToolContext",
    "ToolRegistry",
    "ToolSpec",
    "ToolsFileError",
    "load_tools_file",
]


class RetryableToolError(ToolCallError):
    """A failure that another attempt may fix (network blip, rate limit, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how long a tool call is tried (retryable errors only)."""

    attempts: int = 1
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    start_to_close_s: float | None = None  # one attempt's time limit
    schedule_to_close_s: float | None = None  # all attempts together


@dataclass(slots=True)
class ToolContext:
    """What a handler may know about its call."""

    idempotency_key: str  # session/cell/call: the same on every delivery of this call
    attempt: int = 1
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A registered tool: its definition and how to call its handler."""

    definition: ToolDefinition
    handler: Callable[..., Any]
    retry: RetryPolicy
    mode: str  # "object" (one args parameter), "kwargs", or "string"
    context_parameter: str | None
    is_async: bool
    # Run in the process that runs the cell, not by a tool worker over Redis: no stream,
    # its request recorded with its outcome in one write after it ran. A crash before
    # that write runs it again when the cell is recovered: at least once, like a tool
    # worker's call (Temporal's local activities).
    local: bool = False

    def invoke(self, value: JsonValue, context: ToolContext) -> Any:
        """Call the handler (awaiting it if async) and return its result."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        if self.mode == "kwargs":
            if value is not None and not isinstance(value, dict):
                raise ToolCallError("arguments must be a JSON object")
            kwargs.update(value or {})
        else:  # spec §3.2: a function tool called without input gets `{}`
            args.append({} if value is None and self.mode == "object" else value)
        if self.context_parameter is not None:
            kwargs[self.context_parameter] = context
        try:
            result = self.handler(*args, **kwargs)
        except TypeError as error:
            if self.mode == "kwargs" and _is_call_mismatch(error, self.handler):
                raise ToolCallError(f"invalid arguments: {error}") from None
            raise
        if self.is_async:
            return asyncio.run(result)
        return result


class ToolRegistry:
    """Nested tools by raw name."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}
        self._fingerprint: str | None = None  # computed on first use, reset by `_add`

    def function(
        self,
        name: str | None = None,
        *,
        description: str = "",
        input_schema: JsonValue = None,
        output_schema: JsonValue = None,
        namespace: str | None = None,
        retry: RetryPolicy | None = None,
        local: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a function tool (JSON object arguments); `local`: see `ToolSpec`."""
        return partial(
            self._add,
            kind=ToolKind.FUNCTION,
            name=name,
            description=description,
            input_schema=input_schema,
            output_schema=output_schema,
            namespace=namespace,
            retry=retry or RetryPolicy(),
            local=local,
        )

    def freeform(
        self,
        name: str | None = None,
        *,
        description: str = "",
        namespace: str | None = None,
        retry: RetryPolicy | None = None,
        local: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a freeform tool (one raw string input); `local`: see `ToolSpec`."""
        return partial(
            self._add,
            kind=ToolKind.FREEFORM,
            name=name,
            description=description,
            input_schema=None,
            output_schema=None,
            namespace=namespace,
            retry=retry or RetryPolicy(),
            local=local,
        )

    def _add(
        self,
        handler: Callable[..., Any],
        *,
        kind: ToolKind,
        name: str | None,
        description: str,
        input_schema: JsonValue,
        output_schema: JsonValue,
        namespace: str | None,
        retry: RetryPolicy,
        local: bool,
    ) -> Callable[..., Any]:
        signature = inspect.signature(handler)
        hints = typing.get_type_hints(handler)
        context_parameter = next(
            (p for p, hint in hints.items() if hint is ToolContext and p != "return"), None
        )
        values = [p for p in signature.parameters if p != context_parameter]
        if kind is ToolKind.FREEFORM:
            mode = "string"
        elif input_schema is not None or values == ["args"]:
            mode = "object"
        else:
            mode = "kwargs"
            input_schema = schema_from_signature(signature, hints, context_parameter)
        definition = ToolDefinition(
            name=name or handler.__name__,
            namespace=namespace,
            description=description or inspect.cleandoc(handler.__doc__ or ""),
            kind=kind,
            input_schema=input_schema,
            output_schema=output_schema,
        )
        if definition.name in self._tools:
            raise ValueError(f"tool `{definition.name}` is registered twice")
        self._tools[definition.name] = ToolSpec(
            definition,
            handler,
            retry,
            mode,
            context_parameter,
            inspect.iscoroutinefunction(handler),
            local,
        )
        self._fingerprint = None
        return handler

    @classmethod
    def from_handlers(
        cls, handlers: Mapping[str, Callable[[JsonValue], JsonValue]]
    ) -> ToolRegistry:
        """A registry of plain `input -> result` callables, each receiving the input as is."""
        registry = cls()
        for name, handler in handlers.items():
            registry.function(name=name, input_schema={"type": "object"})(handler)
        return registry

    @property
    def definitions(self) -> list[ToolDefinition]:
        return [spec.definition for spec in self._tools.values()]

    def spec(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    @property
    def fingerprint(self) -> str:
        """What tells this set of tools from any other: 16 hex digits.

        Nested calls are routed by it (`Keys.tool_calls`): a call reaches only workers
        whose registry has the same fingerprint. So processes share workers only if they
        load the same tools files (the same text: the path or name it is read under does
        not count, a pipe's text matches the file's), and a host is never answered by a
        worker whose tools' code differs in anything the fingerprint sees.

        It sees, for each tool, its definition (name, namespace, kind, description,
        schemas), its `RetryPolicy`, and its handler: the source text of the whole file
        that defines the handler (so the helpers, constants and imports written there
        count), the handler's qualified name, its default argument values and what a
        `functools.partial` binds. A tools file run from text (`load_tools_file(path,
        source)`) counts by that text. Source text rather than bytecode, so that Python
        versions and `-O` agree; only a handler that has no source (typed at a REPL,
        `exec`uted from a string) is known by its bytecode instead, which differs between
        Python versions.

        It cannot see what lies outside that file: the other modules it imports (a
        library upgraded, a sibling module edited), data files it reads, the environment
        (variables, services, the clock), values held by closures or by callable objects,
        nor what a default value's repr does not show. Tools that differ only there look
        alike: run the same versions of everything everywhere, or give such tools
        different names or descriptions. A module's file is read when the fingerprint is
        first asked for (once per registry, again only after a tool is added): a file
        edited after it was imported counts as edited.
        """
        fingerprint = self._fingerprint
        if fingerprint is None:
            sources: dict[str, str | None] = {}  # file name -> digest, read once each
            described = sorted(
                (
                    d.name,
                    d.namespace or "",
                    str(d.kind),
                    d.description,
                    d.input_schema,
                    d.output_schema,
                    _stable_repr(spec.retry),
                    _code_identity(spec.handler, sources),
                    *(["local"] if spec.local else []),
                )
                for spec in self._tools.values()
                for d in (spec.definition,)
            )
            digest = hashlib.sha256(orjson.dumps(described, option=orjson.OPT_SORT_KEYS))
            fingerprint = self._fingerprint = digest.hexdigest()[:16]
        return fingerprint

    @property
    def handlers(self) -> Mapping[str, Callable[[JsonValue], JsonValue]]:
        """Plain `input -> result` callables (for in-process dispatch)."""
        return {name: _plain(spec) for name, spec in self._tools.items()}


_SOURCE_DIGEST = "__cellfleet_source_sha256__"  # set by `load_tools_file` in the module


def _code_identity(
    handler: Callable[..., Any], sources: dict[str, str | None] | None = None
) -> list[str]:
    """A handler's code: the digest of its file's source text, its qualified name, its
    defaults and bound arguments; the same in every process, Python version and
    optimization level that loads the same file. A handler without source is known by
    its module, name and bytecode instead; a builtin by its name.

    `sources` caches the files' digests by file name (handlers share their files).
    """
    function: Any = inspect.unwrap(handler)
    bound: list[str] = []
    while isinstance(function, partial):
        bound.append(_stable_repr((function.args, function.keywords)))
        function = inspect.unwrap(function.func)
    code = getattr(function, "__code__", None)
    if code is None and hasattr(type(function).__call__, "__code__"):  # an object: its class
        function = type(function).__call__
        code = function.__code__
    qualname = str(getattr(function, "__qualname__", ""))
    where = f"{getattr(function, '__module__', '')}.{qualname}"
    if not isinstance(code, types.CodeType):  # a builtin
        return [where, *bound]
    defaults = _stable_repr(
        (getattr(function, "__defaults__", None), getattr(function, "__kwdefaults__", None))
    )
    namespace = getattr(function, "__globals__", {})
    source = _source_digest(code, namespace, {} if sources is None else sources)
    if source is not None:  # the module's name does not count: a pipe's text is the file's
        return [f"source:{source}", qualname, defaults, *bound]
    digest = hashlib.sha256()
    _hash_code(digest, code)
    return [f"code:{digest.hexdigest()}", where, defaults, *bound]


def _source_digest(
    code: types.CodeType, namespace: Mapping[str, Any], sources: dict[str, str | None]
) -> str | None:
    """The digest of the source text `code` was compiled from, or None without one.

    A tools file run by `load_tools_file` left its text's digest in its namespace (a
    pipe cannot be read again, and the path may hold other text by now); a module's
    file is read (through its loader if need be: a zip file). Code compiled from a
    string (`<string>`, `<stdin>`) has no file.
    """
    filename = code.co_filename
    loaded = namespace.get(_SOURCE_DIGEST)
    if isinstance(loaded, str) and namespace.get("__file__") == filename:
        return loaded
    if filename not in sources:
        lines = linecache.getlines(filename, dict(namespace))
        sources[filename] = _text_digest("".join(lines)) if lines else None
    return sources[filename]


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _hash_code(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:  # nested functions' code, recursively
        if isinstance(const, types.CodeType):
            _hash_code(digest, const)
        else:
            digest.update(_stable_repr(const).encode())


_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")


def _stable_repr(value: object, depth: int = 0) -> str:
    """A value's repr, the same in every process: sets iterate in hash order and string
    hashes differ between processes, so sets and dicts are sorted; functions and
    classes are named; an object's address is left out (a default repr shows only its
    type then). Deeply nested values are cut short (a list may hold itself)."""
    if depth > 20:
        return "..."
    inner = depth + 1
    if isinstance(value, frozenset | set):
        items = ",".join(sorted(_stable_repr(item, inner) for item in value))
        return f"{type(value).__name__}({items})"
    if isinstance(value, tuple | list):
        items = ",".join(_stable_repr(item, inner) for item in value)
        return f"({items})" if isinstance(value, tuple) else f"[{items}]"
    if isinstance(value, dict):
        pairs = (f"{_stable_repr(k, inner)}:{_stable_repr(v, inner)}" for k, v in value.items())
        return "{" + ",".join(sorted(pairs)) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (
            f"{f.name}={_stable_repr(getattr(value, f.name), inner)}"
            for f in dataclasses.fields(value)
        )
        return f"{type(value).__qualname__}({','.join(fields)})"
    return _object_repr(value)


_TOOLS_MODULE_PREFIX = "cellfleet_tools"
_TOOLS_MODULE = re.compile(rf"\b{_TOOLS_MODULE_PREFIX}_\w*")


def _object_repr(value: object) -> str:
    """`_stable_repr` of a value that holds no others (as far as it knows)."""
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType):
        text = f"<{getattr(value, '__module__', '')}.{value.__qualname__}>"
    else:
        try:
            text = _ADDRESS.sub("", repr(value))
        except Exception:  # a repr that fails: its type, at least
            text = f"<{type(value).__module__}.{type(value).__qualname__}>"
    # A tools file's module is named after the file (`load_tools_file`): the same text
    # read under another name (a symlink, a pipe) must look the same.
    return _TOOLS_MODULE.sub(_TOOLS_MODULE_PREFIX, text)


def _plain(spec: ToolSpec) -> Callable[[JsonValue], JsonValue]:
    def call(value: JsonValue) -> JsonValue:
        result: JsonValue = spec.invoke(value, ToolContext(idempotency_key=""))
        return result

    return call


# -- JSON Schema from type hints ------------------------------------------------------

_SCALARS: Mapping[Any, JsonValue] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
}


def schema_from_signature(
    signature: inspect.Signature, hints: Mapping[str, Any], skip: str | None
) -> JsonValue:
    """A JSON Schema object for the handler's keyword parameters."""
    properties: dict[str, JsonValue] = {}
    required: list[JsonValue] = []
    for name, parameter in signature.parameters.items():
        if name == skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        properties[name] = schema_for(hints.get(name, Any))
        if parameter.default is parameter.empty:
            required.append(name)
    schema: dict[str, JsonValue] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def schema_for(hint: Any) -> JsonValue:
    """A JSON Schema for one type hint (unknown hints give the empty schema)."""
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [schema_for(arg) for arg in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple, set):
        item = schema_for(args[0]) if args else {}
        return {"type": "array", "items": item}
    if origin is dict or hint is dict:
        value = schema_for(args[1]) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": value}
    return {}


def _is_call_mismatch(error: TypeError, handler: Callable[..., Any]) -> bool:
    name = getattr(handler, "__name__", "")
    return f"{name}()" in str(error) and "argument" in str(error)


class ToolsFileError(ValueError):
    """A tools file that cannot be used: the message says which file and why."""


def load_tools_file(path: Path, source: str | None = None) -> ToolRegistry:
    """Run a tools file and return its `ToolRegistry` (the first one it defines).

    `source` is the file's text if the caller read it already: a file that can be read
    once only (a pipe, `<(...)`) is read once.
    """
    if source is None:
        try:
            source = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ToolsFileError(f"bad tools file {path}: {error}") from error
    module = types.ModuleType(f"{_TOOLS_MODULE_PREFIX}_{path.stem}")
    module.__file__ = str(path)
    # what `ToolRegistry.fingerprint` knows the file by: this text, not what `path` holds
    setattr(module, _SOURCE_DIGEST, _text_digest(source))
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except SyntaxError as error:
        raise ToolsFileError(f"bad tools file {path}: line {error.lineno}: {error.msg}") from error
    except Exception as error:  # the file's own code failed while loading
        raise ToolsFileError(f"bad tools file {path}: {_failure_in(path, error)}") from error
    for value in vars(module).values():
        if isinstance(value, ToolRegistry):
            return value
    raise ToolsFileError(f"bad tools file {path}: it defines no ToolRegistry")


def _failure_in(path: Path, error: Exception) -> str:
    """`line N: Error: message`, N being the file's last line on the traceback."""
    described = f"{type(error).__name__}: {error}"
    target = path.resolve()
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if Path(frame.filename).resolve() == target
    ]
    return f"line {lines[-1]}: {described}" if lines else described

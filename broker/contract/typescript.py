"""Render a JSON Schema as the TypeScript type shown in tool declarations (spec §1.3.3).

A port of Codex's `render_json_schema_to_typescript`
(`code-mode-protocol/src/json_schema_types.rs`, local `$ref` support of PR #38664).
The output is model-visible, so every rule is kept as is, including its quirks:

* keyword precedence `$ref` → `const` → `enum` → `anyOf`/`oneOf` → `allOf` → `type` →
  object keywords → array keywords → `unknown`;
* objects list properties sorted by name; a property description anywhere switches the
  object to the multi-line form, whose nested objects are *not* re-indented (a nested
  multi-line object keeps its own two-space indentation);
* local `$ref`s (`#`, `#/…`, percent-decoded JSON pointers) expand at most twice per
  pointer on one path and 32 times in total; refs under a nested `$id` stay `unknown`;
* all intermediate strings are charged to a 64 000-byte work budget and the result is
  capped at 16 000 bytes; running out of either gives `unknown`.
"""

from __future__ import annotations

from typing import Final

from cellfleet.broker.contract.rust.serde_json import quote, to_string
from cellfleet.broker.contract.rust.text import rust_lines, rust_trim, utf8_len
from cellfleet.broker.contract.tools import JsonValue

__all__ = [
    "MAX_LOCAL_REF_EXPANSIONS_PER_PATH",
    "MAX_RENDERED_SCHEMA_BYTES",
    "MAX_RENDER_WORK_BYTES",
    "MAX_TOTAL_LOCAL_REF_EXPANSIONS",
    "render_json_schema_to_typescript",
]

MAX_LOCAL_REF_EXPANSIONS_PER_PATH: Final = 2
MAX_TOTAL_LOCAL_REF_EXPANSIONS: Final = 32
MAX_RENDERED_SCHEMA_BYTES: Final = 16_000
MAX_RENDER_WORK_BYTES: Final = MAX_RENDERED_SCHEMA_BYTES * 4

UNKNOWN: Final = "unknown"
_RENDERABLE_KEYWORDS: Final = (
    "const", "enum", "anyOf", "oneOf", "allOf", "type", "properties",
    "additionalProperties", "required", "items", "prefixItems",
)  # fmt: skip
_HEX_DIGITS: Final = "0123456789abcdefABCDEF"

Schema = dict[str, JsonValue]


def render_json_schema_to_typescript(schema: JsonValue) -> str:
    """The TypeScript type for `schema` (`unknown` when it cannot be rendered in budget)."""
    try:
        rendered = _Renderer(schema).render(schema)
    except RecursionError:  # deeper than any schema serde_json would have parsed
        return UNKNOWN
    return UNKNOWN if utf8_len(rendered) > MAX_RENDERED_SCHEMA_BYTES else rendered


def normalize_identifier(name: str) -> str:
    """`normalize_code_mode_identifier`: map every non-identifier character to `_`."""
    chars = [
        char
        if char in "_$" or (char.isascii() and (char.isalpha() or (index and char.isdigit())))
        else "_"
        for index, char in enumerate(name)
    ]
    return "".join(chars) or "_"


class _Renderer:
    """One rendering: the root (for `$ref`s) and the budgets (`JsonSchemaTypeRenderer`)."""

    def __init__(self, root: JsonValue) -> None:
        self.root = root
        self.nested_schema_resource_depth = 0
        self.active_local_ref_expansions: dict[str, int] = {}
        self.remaining_local_ref_expansions = MAX_TOTAL_LOCAL_REF_EXPANSIONS
        self.remaining_render_work_bytes = MAX_RENDER_WORK_BYTES
        self.exhausted = False

    def render(self, schema: JsonValue) -> str:
        if self.exhausted:
            return UNKNOWN
        # A nested `$id` starts a new schema resource: fragment-only refs below it are
        # scoped to that resource, not to the document root.
        enters_nested = schema is not self.root and isinstance(schema, dict) and "$id" in schema
        if enters_nested:
            self.nested_schema_resource_depth += 1
        if isinstance(schema, bool):
            rendered = UNKNOWN if schema else "never"
        elif isinstance(schema, dict):
            rendered = self.render_map(schema)
        else:
            rendered = UNKNOWN
        if enters_nested:
            self.nested_schema_resource_depth -= 1
        return rendered if self.consume(utf8_len(rendered)) else UNKNOWN

    def render_map(self, schema: Schema) -> str:
        if self.exhausted:
            return UNKNOWN
        # Keyword precedence: the first step that applies decides the type.
        for step in (self._by_ref, self._by_const, self._by_enum, self._by_combinator,
                     self._by_type, self._by_shape):  # fmt: skip
            rendered = step(schema)
            if rendered is not None:
                return rendered
        return UNKNOWN

    def _by_ref(self, schema: Schema) -> str | None:
        return self.render_ref(schema) if "$ref" in schema else None

    def _by_const(self, schema: Schema) -> str | None:
        return self.render_literal(schema["const"]) if "const" in schema else None

    def _by_enum(self, schema: Schema) -> str | None:
        values = schema.get("enum")
        if not isinstance(values, list) or not values:
            return None
        literals = []
        for value in values:
            literal = self.render_literal(value)
            if self.exhausted or not self.consume(utf8_len(literal)):
                return UNKNOWN
            literals.append(literal)
        return " | ".join(literals)

    def _by_combinator(self, schema: Schema) -> str | None:
        for keyword, separator in (("anyOf", " | "), ("oneOf", " | "), ("allOf", " & ")):
            variants = schema.get(keyword)
            if isinstance(variants, list) and variants:
                return self.render_variants(variants, separator)
        return None

    def _by_type(self, schema: Schema) -> str | None:
        schema_type = schema.get("type")
        if isinstance(schema_type, str):
            return self.render_type_keyword(schema, schema_type)
        if not isinstance(schema_type, list):
            return None
        rendered = []
        for name in schema_type:
            if isinstance(name, str):
                if self.exhausted:
                    return UNKNOWN
                rendered.append(self.render_type_keyword(schema, name))
        return " | ".join(rendered) if rendered else None

    def _by_shape(self, schema: Schema) -> str | None:
        if any(key in schema for key in ("properties", "additionalProperties", "required")):
            return self.render_object(schema)
        if "items" in schema or "prefixItems" in schema:
            return self.render_array(schema)
        return None

    def render_variants(self, variants: list[JsonValue], separator: str) -> str:
        rendered = []
        for variant in variants:
            if self.exhausted:
                return UNKNOWN
            text = self.render(variant)
            if separator == " & " and " | " in text:
                text = f"({text})"
            rendered.append(text)
        return separator.join(rendered)

    def render_ref(self, schema: Schema) -> str:
        referenced = None
        reference = schema.get("$ref")
        if self.nested_schema_resource_depth == 0 and isinstance(reference, str):
            pointer = _local_json_pointer(reference)
            if pointer is not None:
                referenced = self.expand(pointer)
        referenced_type = UNKNOWN if referenced is None else referenced
        if self.exhausted:
            return UNKNOWN
        siblings = {k: v for k, v in schema.items() if k not in ("$ref", "$defs", "definitions")}
        if not any(keyword in siblings for keyword in _RENDERABLE_KEYWORDS):
            return referenced_type
        sibling_type = self.render_map(siblings)
        if referenced_type == UNKNOWN:
            return sibling_type
        if sibling_type == UNKNOWN:
            return referenced_type
        return f"({referenced_type}) & ({sibling_type})"

    def expand(self, pointer: str) -> str | None:
        """Render the target of a local ref (`None`: dangling, which costs nothing)."""
        active = self.active_local_ref_expansions.get(pointer, 0)
        if active >= MAX_LOCAL_REF_EXPANSIONS_PER_PATH or self.remaining_local_ref_expansions == 0:
            return UNKNOWN
        found, target = _resolve_pointer(self.root, pointer)
        if not found:
            return None
        self.remaining_local_ref_expansions -= 1
        self.active_local_ref_expansions[pointer] = active + 1
        rendered = self.render(target)
        if active == 0:
            del self.active_local_ref_expansions[pointer]
        else:
            self.active_local_ref_expansions[pointer] = active
        return rendered

    def render_type_keyword(self, schema: Schema, schema_type: str) -> str:
        simple = {"string": "string", "number": "number", "integer": "number",
                  "boolean": "boolean", "null": "null"}  # fmt: skip
        if schema_type in simple:
            return simple[schema_type]
        if schema_type == "array":
            return self.render_array(schema)
        if schema_type == "object":
            return self.render_object(schema)
        return UNKNOWN

    def render_array(self, schema: Schema) -> str:
        if "items" in schema:
            item_type = self.render(schema["items"])
            return UNKNOWN if self.exhausted else f"Array<{item_type}>"
        prefix_items = schema.get("prefixItems")
        if isinstance(prefix_items, list) and prefix_items:
            item_types = []
            for item in prefix_items:
                if self.exhausted:
                    return UNKNOWN
                item_types.append(self.render(item))
            return f"[{', '.join(item_types)}]"
        return "unknown[]"

    def render_object(self, schema: Schema) -> str:
        required_list = schema.get("required")
        required = (
            [name for name in required_list if isinstance(name, str)]
            if isinstance(required_list, list)
            else []
        )
        properties_value = schema.get("properties")
        properties = properties_value if isinstance(properties_value, dict) else {}
        names = sorted(properties)
        if any(_has_description(properties[name]) for name in names):
            return self.render_multiline_object(schema, properties, names, required)
        lines: list[str] = []
        for name in names:
            rendered = self.render_property(name, properties[name], required)
            if self.exhausted or not self.push_line(lines, rendered):
                return UNKNOWN
        if not self.append_additional_properties(lines, schema, properties, ""):
            return UNKNOWN
        return f"{{ {' '.join(lines)} }}" if lines else "{}"

    def render_multiline_object(
        self, schema: Schema, properties: Schema, names: list[str], required: list[str]
    ) -> str:
        lines: list[str] = []
        if not self.push_line(lines, "{"):
            return UNKNOWN
        for name in names:
            description = _description(properties[name])
            for line in filter(None, map(rust_trim, rust_lines(description or ""))):
                # Rust checks the line against the budget before formatting it, and that
                # check does not mark the budget exhausted.
                fits = utf8_len(line) + 5 <= self.remaining_render_work_bytes
                if not fits or not self.push_line(lines, f"  // {line}"):
                    return UNKNOWN
            rendered = self.render_property(name, properties[name], required)
            if self.exhausted or not self.push_line(lines, f"  {rendered}"):
                return UNKNOWN
        closed = self.append_additional_properties(lines, schema, properties, "  ")
        if not closed or not self.push_line(lines, "}"):
            return UNKNOWN
        return "\n".join(lines)

    def render_property(self, name: str, value: JsonValue, required: list[str]) -> str:
        if utf8_len(name) > self.remaining_render_work_bytes:
            self.exhausted = True
            return UNKNOWN
        optional = "" if name in required else "?"
        property_name = name if normalize_identifier(name) == name else quote(name)
        property_type = self.render(value)
        if self.exhausted:
            return UNKNOWN
        return f"{property_name}{optional}: {property_type};"

    def append_additional_properties(
        self, lines: list[str], schema: Schema, properties: Schema, prefix: str
    ) -> bool:
        if "additionalProperties" in schema:
            additional = schema["additionalProperties"]
            if additional is False:
                return True
            value_type = UNKNOWN if additional is True else self.render(additional)
            return self.push_line(lines, f"{prefix}[key: string]: {value_type};")
        if not properties:
            return self.push_line(lines, f"{prefix}[key: string]: unknown;")
        return True

    def render_literal(self, value: JsonValue) -> str:
        if _literal_upper_bound(value) > self.remaining_render_work_bytes:
            self.exhausted = True
            return UNKNOWN
        return to_string(value)

    def consume(self, size: int) -> bool:
        if size > self.remaining_render_work_bytes:
            self.exhausted = True
            return False
        self.remaining_render_work_bytes -= size
        return True

    def push_line(self, lines: list[str], line: str) -> bool:
        if not self.consume(utf8_len(line)):
            return False
        lines.append(line)
        return True


def _description(value: JsonValue) -> str | None:
    description = value.get("description") if isinstance(value, dict) else None
    return description if isinstance(description, str) else None


def _has_description(value: JsonValue) -> bool:
    return bool(_description(value))


def _local_json_pointer(reference: str) -> str | None:
    """The JSON pointer of a local (`#…`) reference, percent-decoded; else `None`."""
    if not reference.startswith("#"):
        return None
    fragment = reference[1:].encode("utf-8", "surrogatepass")
    decoded = bytearray()
    index = 0
    while index < len(fragment):
        if fragment[index] == ord("%"):
            digits = fragment[index + 1 : index + 3].decode("latin-1")
            if len(digits) < 2 or any(digit not in _HEX_DIGITS for digit in digits):
                return None
            decoded.append(int(digits, 16))
            index += 3
        else:
            decoded.append(fragment[index])
            index += 1
    try:
        pointer = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return pointer if not pointer or pointer.startswith("/") else None


def _resolve_pointer(root: JsonValue, pointer: str) -> tuple[bool, JsonValue]:
    """`Value::pointer`: `(found, target)` of a JSON pointer (`""` is the root)."""
    target: JsonValue = root
    for raw_token in pointer.split("/")[1:]:
        token = raw_token.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and token in target:
            target = target[token]
        elif isinstance(target, list) and _is_array_index(token) and int(token) < len(target):
            target = target[int(token)]
        else:
            return False, None
    return True, target


def _is_array_index(token: str) -> bool:
    """serde_json's `parse_index`: plain decimal digits, no sign, no leading zero."""
    if token.startswith("0") and len(token) != 1:
        return False
    return token.isascii() and token.isdigit()


def _literal_upper_bound(value: JsonValue) -> int:
    """`json_literal_serialization_upper_bound`: bytes `to_string(value)` may need."""
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if isinstance(value, int | float):
        return len(to_string(value))
    if isinstance(value, str):
        return utf8_len(value) * 6 + 2
    if isinstance(value, list):
        return 2 + sum(1 + _literal_upper_bound(item) for item in value)
    return 2 + sum(
        4 + utf8_len(key) * 6 + _literal_upper_bound(item) for key, item in value.items()
    )

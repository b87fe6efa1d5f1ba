"""JSON Schema → TypeScript rendering (spec §1.3.3), including Codex's own test cases."""

from __future__ import annotations

from typing import Any

import pytest

from cellfleet.broker.contract.typescript import (
    MAX_RENDER_WORK_BYTES,
    MAX_RENDERED_SCHEMA_BYTES,
    MAX_TOTAL_LOCAL_REF_EXPANSIONS,
    _Renderer,
    render_json_schema_to_typescript,
)

render = render_json_schema_to_typescript


def test_budget_constants() -> None:
    assert MAX_RENDERED_SCHEMA_BYTES == 16_000
    assert MAX_RENDER_WORK_BYTES == 64_000
    assert MAX_TOTAL_LOCAL_REF_EXPANSIONS == 32


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (True, "unknown"),
        (False, "never"),
        (None, "unknown"),
        (5, "unknown"),
        ("string", "unknown"),
        ([{"type": "string"}], "unknown"),
        ({}, "unknown"),
        ({"description": "only words"}, "unknown"),
    ],
)
def test_non_object_and_empty_schemas(schema: Any, expected: str) -> None:
    assert render(schema) == expected


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"const": "a", "type": "number"}, '"a"'),
        ({"const": None}, "null"),
        ({"const": {"b": [True, 1.0], "a": "x\n"}}, '{"a":"x\\n","b":[true,1.0]}'),
        ({"enum": ["a", 1, None, False]}, '"a" | 1 | null | false'),
        ({"enum": [], "type": "string"}, "string"),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, "string | null"),
        ({"anyOf": [], "oneOf": [{"type": "integer"}, {"const": 1}]}, "number | 1"),
        ({"oneOf": [{"type": "boolean"}], "type": "string"}, "boolean"),
        (
            {"allOf": [{"anyOf": [{"type": "string"}, {"type": "number"}]}, {"type": "null"}]},
            "(string | number) & null",
        ),
        ({"anyOf": [{"type": "string"}], "allOf": [{"type": "number"}]}, "string"),
        ({"type": ["string", "null"]}, "string | null"),
        ({"type": ["integer", 7]}, "number"),
        ({"type": [7], "properties": {}}, "{ [key: string]: unknown; }"),
        ({"type": "integer"}, "number"),
        ({"type": "boolean"}, "boolean"),
        ({"type": "null"}, "null"),
        ({"type": "date"}, "unknown"),
    ],
)
def test_precedence_literals_unions_and_types(schema: Any, expected: str) -> None:
    assert render(schema) == expected


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "array", "items": {"type": "string"}}, "Array<string>"),
        ({"items": {"type": "number"}}, "Array<number>"),
        ({"type": "array"}, "unknown[]"),
        ({"type": "array", "prefixItems": []}, "unknown[]"),
        ({"prefixItems": [{"type": "string"}, {"type": "number"}]}, "[string, number]"),
        ({"type": "array", "items": True}, "Array<unknown>"),
    ],
)
def test_arrays(schema: Any, expected: str) -> None:
    assert render(schema) == expected


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {"type": "object", "properties": {"message": {"type": "string"},
             "env_var": {"type": "string"}}, "required": ["message"]},
            "{ env_var?: string; message: string; }",
        ),
        ({"type": "object", "properties": {}, "additionalProperties": False}, "{}"),
        ({"type": "object"}, "{ [key: string]: unknown; }"),
        ({"required": ["x"]}, "{ [key: string]: unknown; }"),
        ({"additionalProperties": True}, "{ [key: string]: unknown; }"),
        ({"additionalProperties": {"type": "number"}}, "{ [key: string]: number; }"),
        ({"additionalProperties": 3}, "{ [key: string]: unknown; }"),
        ({"properties": {"a": {}}, "additionalProperties": {"type": "string"}},
         "{ a?: unknown; [key: string]: string; }"),
        ({"properties": {"foo-bar": {}, "1st": {}, "é": {}, 'a"b': {}, "$ok": {}, "_x1": {}}},
         '{ $ok?: unknown; "1st"?: unknown; _x1?: unknown; "a\\"b"?: unknown; '
         '"foo-bar"?: unknown; "é"?: unknown; }'),
        ({"properties": {"a": {"description": ""}}}, "{ a?: unknown; }"),
        ({"properties": {"a": {"description": 5}}}, "{ a?: unknown; }"),
    ],
)  # fmt: skip
def test_objects_single_line(schema: Any, expected: str) -> None:
    assert render(schema) == expected


def test_object_multi_line_form_with_description_comments() -> None:
    schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Local filesystem path to an image file."}
        },
        "required": ["path"],
    }
    assert render(schema) == "{\n  // Local filesystem path to an image file.\n  path: string;\n}"


def test_multi_line_description_lines_are_trimmed_and_blank_ones_dropped() -> None:
    schema = {
        "properties": {
            "b": {"type": "number"},
            "a": {"type": "string", "description": "  first line \r\n\n   \n\tsecond\n"},
        },
        "additionalProperties": {"type": "boolean"},
    }
    assert render(schema) == (
        "{\n  // first line\n  // second\n  a?: string;\n  b?: number;\n"
        "  [key: string]: boolean;\n}"
    )


def test_codex_weather_example_and_nested_multi_line_indentation() -> None:
    weather = {
        "type": "object",
        "properties": {
            "weather": {
                "type": "array",
                "description": "look up weather for a given list of locations",
                "items": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"],
                },
            }
        },
        "required": ["weather"],
    }
    assert render(weather) == (
        "{\n  // look up weather for a given list of locations\n"
        "  weather: Array<{ location: string; }>;\n}"
    )
    # A nested multi-line object is not re-indented (Codex keeps its own two spaces).
    nested = {
        "properties": {
            "outer": {
                "description": "outer",
                "properties": {"inner": {"type": "string", "description": "inner"}},
            }
        }
    }
    assert render(nested) == "{\n  // outer\n  outer?: {\n  // inner\n  inner?: string;\n};\n}"


# ---------------------------------------------------------------- $ref


def test_codex_recursive_refs_with_escaped_pointer_segments() -> None:
    clause_ref = {"$ref": "#/$defs/Boolean~1Clause~0v1"}
    schema = {
        "type": "object",
        "properties": {"clauses": {"type": "array", "items": clause_ref}},
        "$defs": {
            "Boolean/Clause~v1": {
                "type": "object",
                "properties": {"query": {"$ref": "#/$defs/Query"}},
            },
            "Query": {
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "object",
                        "properties": {"clauses": {"type": "array", "items": clause_ref}},
                    },
                ]
            },
        },
    }
    assert render(schema) == (
        "{ clauses?: Array<{ query?: string | { clauses?: Array<{ query?: string | "
        "{ clauses?: Array<unknown>; }; }>; }; }>; }"
    )


def test_codex_ref_siblings_fragments_and_all_of_precedence() -> None:
    defs_label = {"Label": {"type": "string"}}
    assert (
        render({"$ref": "#/$defs/Label", "enum": ["A"], "$defs": defs_label}) == '(string) & ("A")'
    )
    assert (
        render({"$ref": "#/$defs/Foo%20Bar", "$defs": {"Foo Bar": {"type": "string"}}}) == "string"
    )
    schema = {
        "allOf": [
            {"$ref": "#/$defs/Choice"},
            {"type": "object", "properties": {"value": {"type": "string"}}},
        ],
        "$defs": {"Choice": {"oneOf": [{"type": "string"}, {"type": "number"}]}},
    }
    assert render(schema) == "(string | number) & { value?: string; }"


def test_codex_refs_under_nested_id_stay_unknown() -> None:
    schema = {
        "$defs": {"Choice": {"type": "string"}},
        "type": "object",
        "properties": {
            "nested": {
                "$id": "urn:nested",
                "$defs": {"Choice": {"type": "number"}},
                "type": "object",
                "properties": {"value": {"$ref": "#/$defs/Choice"}},
            }
        },
    }
    assert render(schema) == "{ nested?: { value?: unknown; }; }"


def test_root_ref_expands_twice_per_path() -> None:
    schema = {"type": "object", "properties": {"child": {"$ref": "#"}}}
    assert render(schema) == "{ child?: { child?: { child?: unknown; }; }; }"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("#/$defs/a%2Fb", "number"),  # %2F decodes to "/", a path separator
        ("#/$defs/a~1b", "boolean"),
        ("#/$defs/list/1", "null"),
        ("#/$defs/list/01", "unknown"),
        ("#/$defs/list/+1", "unknown"),
        ("#/$defs/list/9", "unknown"),
        ("#/$defs/missing", "unknown"),
        ("#/$defs/%zz", "unknown"),
        ("#/$defs/%e", "unknown"),
        ("#/$defs/%C3%A9", "string"),
        ("#/$defs/%FF", "unknown"),  # not UTF-8
        ("#anchor", "unknown"),
        ("other.json#/$defs/a~1b", "unknown"),
        ("https://example.com/s#/x", "unknown"),
    ],
)
def test_ref_pointer_forms(reference: str, expected: str) -> None:
    schema = {
        "$ref": reference,
        "$defs": {
            "a": {"b": {"type": "number"}},
            "a/b": {"type": "boolean"},
            "list": [{"type": "string"}, {"type": "null"}],
            "é": {"type": "string"},
        },
    }
    assert render(schema) == expected


@pytest.mark.parametrize(
    ("siblings", "expected"),
    [
        ({"description": "words only", "title": "t"}, "number"),
        ({"type": "string"}, "(number) & (string)"),
        ({"type": "date"}, "number"),  # sibling renders unknown: the ref wins
        ({"$defs": {}, "definitions": {}}, "number"),
    ],
)
def test_ref_siblings(siblings: dict[str, Any], expected: str) -> None:
    assert render({"$ref": "#/$defs/N", **siblings, "$defs": {"N": {"type": "number"}}}) == expected


def test_unresolvable_ref_lets_the_siblings_win() -> None:
    assert render({"$ref": "#/nowhere", "type": "string"}) == "string"
    assert render({"$ref": 5, "type": "string"}) == "string"


def test_codex_expansion_cap_does_not_charge_dangling_refs() -> None:
    properties: dict[str, Any] = {
        f"a_missing_{index}": {"$ref": f"#/$defs/Missing{index}"}
        for index in range(MAX_TOTAL_LOCAL_REF_EXPANSIONS)
    }
    properties["z_valid"] = {"$ref": "#/$defs/Valid"}
    rendered = render(
        {"type": "object", "properties": properties, "$defs": {"Valid": {"type": "string"}}}
    )
    assert "z_valid?: string;" in rendered

    properties = {f"p{index:02}": {"$ref": "#/$defs/Item"} for index in range(34)}
    rendered = render(
        {"type": "object", "properties": properties, "$defs": {"Item": {"type": "string"}}}
    )
    assert rendered.count("string") == 32
    assert rendered.count("unknown") == 2
    assert rendered.endswith("p31?: string; p32?: unknown; p33?: unknown; }")


# ---------------------------------------------------------------- budgets


def test_codex_repeated_large_ref_expansions_exhaust_the_work_budget() -> None:
    schema = {
        "type": "object",
        "properties": {f"property_{i}": {"$ref": "#/$defs/Item"} for i in range(32)},
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {"value": {"type": "string", "description": "x" * 8000}},
            }
        },
    }
    renderer = _Renderer(schema)
    assert renderer.render(schema) == "unknown"
    assert renderer.exhausted


def test_codex_oversized_ref_literal_exhausts_the_work_budget() -> None:
    schema = {"$ref": "#/$defs/Value", "$defs": {"Value": {"const": "x" * MAX_RENDER_WORK_BYTES}}}
    renderer = _Renderer(schema)
    assert renderer.render(schema) == "unknown"
    assert renderer.exhausted


def _described(description: str) -> dict[str, Any]:
    # Renders as "{\n  // D\n  v?: string;\n}": len(D) + 23 bytes.
    return {"type": "object", "properties": {"v": {"type": "string", "description": description}}}


def test_result_cap_is_16000_bytes() -> None:
    assert render(_described("x" * 15977)) == "{\n  // " + "x" * 15977 + "\n  v?: string;\n}"
    assert len(render(_described("x" * 15977))) == 16000
    assert render(_described("x" * 15978)) == "unknown"
    assert render(_described("x" * MAX_RENDERED_SCHEMA_BYTES)) == "unknown"


def test_result_cap_counts_utf8_bytes() -> None:
    assert render(_described("é" * 7988)) != "unknown"  # 15976 + 23 bytes
    assert render(_described("é" * 7989)) == "unknown"  # 15978 + 23 bytes


def test_enum_literals_count_against_the_work_budget() -> None:
    assert render({"enum": ["y" * 10_000]}) == '"' + "y" * 10_000 + '"'
    assert render({"enum": ["y" * 11_000]}) == "unknown"  # 6 bytes per byte, upper bound


def test_absurdly_deep_schema_is_unknown_not_a_crash() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "array", "items": schema}
    assert render(schema) == "unknown"

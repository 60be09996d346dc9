"""StructuredLimits: constraints too big to compile quickly are refused up front (pure Python,
fast), each with a message naming the limit; ordinary schemas pass."""

from __future__ import annotations

import json
import time

import pytest

from heron.structured import (
    StructuredLimits,
    StructuredOutputError,
    StructuredOutputsParams,
    required_tools_schema,
)

LIMITS = StructuredLimits()


def refused(params: StructuredOutputsParams, limit: str, limits: StructuredLimits = LIMITS) -> str:
    with pytest.raises(StructuredOutputError) as err:
        limits.check(params)
    message = str(err.value)
    assert limit in message, message
    assert err.value.param == "structured_outputs"
    return message


def test_the_200k_enum_is_refused_fast():
    schema = {"type": "string", "enum": [f"value-{i}" for i in range(200_000)]}
    start = time.perf_counter()
    params = StructuredOutputsParams(json=schema)
    refused(params, "max_schema_bytes")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("schema", "limit"),
    [
        ({"enum": list(range(LIMITS.max_enum_values + 1))}, "max_enum_values"),
        ({"anyOf": [{"const": i} for i in range(LIMITS.max_enum_values + 1)]}, "max_enum_values"),
        ({"type": "object", "properties": {f"p{i}": {} for i in range(LIMITS.max_properties + 1)},
          "required": [f"p{i}" for i in range(LIMITS.max_properties + 1)]}, "max_properties"),
        ({"type": "object", "properties": {f"p{i}": {} for i in range(65)}}, "max_object_optional_properties"),
        ({"anyOf": [{"type": "object", "properties": {f"p{i}": {} for i in range(61)}} for _ in range(17)]},
         "(max_optional_properties)"),
        ({"type": "string", "enum": ["x" * 1000] * 33}, "max_literal_chars"),
        ({"type": "object", "properties": {"k" * 40_000: {}}}, "max_literal_chars"),
        ({"type": "string", "pattern": "a" * 40_000}, "max_literal_chars"),
    ],
    ids=["enum", "const", "properties", "optional_in_one_object", "optional_in_all", "enum_chars",
         "property_name", "pattern"],
)
def test_schema_bounds(schema, limit):
    refused(StructuredOutputsParams(json=schema), limit)


def test_nesting_depth():
    deep: dict = {"type": "string"}
    for _ in range(LIMITS.max_nesting_depth):
        deep = {"type": "array", "items": deep}
    message = refused(StructuredOutputsParams(json=deep), "max_nesting_depth")
    assert "levels of nesting" in message


def test_nesting_too_deep_to_parse_is_a_structured_error_not_a_crash():
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(StructuredOutputError, match="nested too deeply"):
        StructuredOutputsParams(json='{"enum": ' + text + "}")


def test_regex_grammar_and_choice_bounds():
    refused(StructuredOutputsParams(regex="a" * (LIMITS.max_regex_chars + 1)), "max_regex_chars")
    refused(StructuredOutputsParams(grammar="root ::= " + '"a" ' * LIMITS.max_grammar_chars), "max_grammar_chars")
    refused(StructuredOutputsParams(choice=[str(i) for i in range(LIMITS.max_enum_values + 1)]), "max_enum_values")
    refused(StructuredOutputsParams(choice=["y" * 20_000, "z" * 20_000]), "max_literal_chars")


def test_custom_limits_and_their_checks():
    small = StructuredLimits(max_enum_values=2)
    refused(StructuredOutputsParams(choice=["a", "b", "c"]), "max_enum_values", small)
    small.check(StructuredOutputsParams(choice=["a", "b"]))
    for field in ("max_schema_bytes", "compile_timeout_s"):
        with pytest.raises(ValueError, match=field):
            StructuredLimits(**{field: 0})


def test_error_message_is_one_sentence_with_the_sizes():
    message = refused(StructuredOutputsParams(regex="a" * 20_000), "max_regex_chars")
    assert message == "The regex has 20,000 characters, over the limit of 16,384 (max_regex_chars); simplify it."


# Schemas in the shape of OpenAI's structured-output documentation examples, and a large tool set.
MATH = {"type": "object", "properties": {
    "steps": {"type": "array", "items": {"type": "object", "properties": {
        "explanation": {"type": "string"}, "output": {"type": "string"}},
        "required": ["explanation", "output"], "additionalProperties": False}},
    "final_answer": {"type": "string"}}, "required": ["steps", "final_answer"], "additionalProperties": False}
UI = {"type": "object", "properties": {
    "type": {"type": "string", "enum": ["div", "button", "header", "section", "field", "form"]},
    "label": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}},
    "attributes": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "value": {"type": "string"}}, "required": ["name", "value"]}}},
    "required": ["type", "label", "children", "attributes"], "additionalProperties": False}
COUNTRIES = {"type": "object", "properties": {"country": {"type": "string", "enum": [
    f"Country number {i}" for i in range(250)]}, "population": {"type": "integer", "minimum": 0}}}


def _tools(n: int, params: int) -> list[dict]:
    return [{"type": "function", "function": {"name": f"tool_{t}", "description": "d" * 500, "parameters": {
        "type": "object", "properties": {f"argument_{a}": {"type": "string", "description": "x" * 200}
                                         for a in range(params)}, "required": ["argument_0"]}}}
            for t in range(n)]


@pytest.mark.parametrize("schema", [MATH, UI, COUNTRIES, required_tools_schema(_tools(128, 8))],
                         ids=["math_steps", "recursive_ui", "enum_250", "tools_128x8"])
def test_ordinary_schemas_pass(schema):
    params = StructuredOutputsParams(json=json.dumps(schema))
    LIMITS.check(params)

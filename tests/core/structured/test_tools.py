"""Tool-call schemas for tool_choice required / named validate good calls and reject bad ones."""

from __future__ import annotations

import json

import jsonschema
import pytest

from heron.structured import (
    StructuredOutputError,
    named_tool_schema,
    required_tools_schema,
    tool_calls_from_json,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
NOW = {"type": "function", "function": {"name": "now", "description": "The time."}}
ROUTE = {
    "type": "function",
    "function": {
        "name": "route",
        "parameters": {
            "type": "object",
            "properties": {"start": {"$ref": "#/$defs/place"}, "end": {"$ref": "#/$defs/place"}},
            "required": ["start", "end"],
            "$defs": {
                "place": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}},
                    "required": ["lat"],
                }
            },
        },
    },
}
TOOLS = [WEATHER, NOW, ROUTE]


def valid(instance, schema) -> bool:
    try:
        jsonschema.validate(instance, schema)
    except jsonschema.ValidationError:
        return False
    return True


def test_named_tool_schema_is_the_arguments_schema():
    schema = named_tool_schema(TOOLS, "get_weather")
    assert schema == WEATHER["function"]["parameters"]
    assert valid({"city": "Paris", "unit": "celsius"}, schema)
    assert not valid({"unit": "celsius"}, schema)
    assert not valid({"city": "Paris", "unit": "kelvin"}, schema)
    assert named_tool_schema(TOOLS, "now") == {"type": "object"}
    assert valid({}, named_tool_schema(TOOLS, "now"))
    assert not valid([], named_tool_schema(TOOLS, "now"))


def test_named_tool_must_exist():
    with pytest.raises(
        StructuredOutputError, match="'nope', which is not in 'tools'.*get_weather"
    ) as e:
        named_tool_schema(TOOLS, "nope")
    assert e.value.param == "tool_choice"


def test_required_tools_schema_accepts_calls_to_any_tool():
    schema = required_tools_schema(TOOLS, parallel=True)
    one = [{"name": "get_weather", "parameters": {"city": "Oslo"}}]
    many = one + [
        {"name": "now", "parameters": {}},
        {"name": "route", "parameters": {"start": {"lat": 1.5}, "end": {"lat": 2}}},
    ]
    assert valid(one, schema) and valid(many, schema)
    assert not valid([], schema)  # at least one call
    assert not valid([{"name": "nope", "parameters": {}}], schema)
    assert not valid([{"name": "get_weather", "parameters": {"unit": "celsius"}}], schema)
    assert not valid([{"name": "get_weather"}], schema)
    assert not valid({"name": "now", "parameters": {}}, schema)
    # the $defs of route moved to the top, where its references point
    assert "place" in schema["$defs"]
    assert not valid(
        [{"name": "route", "parameters": {"start": {"lat": "x"}, "end": {"lat": 2}}}], schema
    )


def test_required_tools_schema_single_call_when_not_parallel():
    schema = required_tools_schema(TOOLS, parallel=False)
    call = {"name": "now", "parameters": {}}
    assert valid([call], schema) and not valid([call, call], schema)
    assert schema["maxItems"] == 1 and "maxItems" not in required_tools_schema(TOOLS)


def test_required_tools_errors():
    with pytest.raises(StructuredOutputError, match="at least one function") as e:
        required_tools_schema([])
    assert e.value.param == "tool_choice"
    clash = {
        "type": "function",
        "function": {
            "name": "other",
            "parameters": {"type": "object", "$defs": {"place": {"type": "string"}}},
        },
    }
    with pytest.raises(StructuredOutputError, match=r"\$defs/place' differently") as e:
        required_tools_schema([ROUTE, clash])
    assert e.value.param == "tools"


def test_tool_calls_from_json():
    text = json.dumps(
        [
            {"name": "get_weather", "parameters": {"city": "Zürich"}},
            {"name": "now", "parameters": {}},
        ]
    )
    assert tool_calls_from_json(text) == [("get_weather", '{"city": "Zürich"}'), ("now", "{}")]
    with pytest.raises(ValueError):
        tool_calls_from_json('[{"name": "now", "parameters": {')
    with pytest.raises(ValueError):
        tool_calls_from_json('{"name": "now"}')

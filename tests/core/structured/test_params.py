"""StructuredOutputsParams: exactly one constraint, shape checks, content cache keys."""

from __future__ import annotations

import pydantic
import pytest

from heron.structured import StructuredOutputError, StructuredOutputsParams


def test_exactly_one_constraint():
    with pytest.raises(StructuredOutputError, match="exactly one of json, regex, choice.*got none"):
        StructuredOutputsParams()
    with pytest.raises(ValueError, match="got json, regex"):
        StructuredOutputsParams(json={"type": "object"}, regex="a+")
    with pytest.raises(ValueError, match="got choice, json_object"):
        StructuredOutputsParams(choice=["a"], json_object=True)
    for kind, value in [
        ("json", {}),
        ("regex", "a"),
        ("choice", ["a"]),
        ("grammar", 'root ::= "a"'),
    ]:
        assert StructuredOutputsParams(**{kind: value}).kind == kind
    assert StructuredOutputsParams(json_object=True).kind == "json_object"


def test_shape_errors_name_the_problem():
    with pytest.raises(StructuredOutputError, match="not valid JSON"):
        StructuredOutputsParams(json="{not json")
    with pytest.raises(StructuredOutputError, match="must be a JSON object, not list"):
        StructuredOutputsParams(json="[1, 2]")
    with pytest.raises(StructuredOutputError, match="not JSON-serializable"):
        StructuredOutputsParams(json={"default": object()})
    with pytest.raises(StructuredOutputError, match="non-empty list"):
        StructuredOutputsParams(choice=[])
    with pytest.raises(StructuredOutputError, match="strings only"):
        StructuredOutputsParams(choice=["a", 1])
    with pytest.raises(StructuredOutputError, match="'regex' must be a string"):
        StructuredOutputsParams(regex=5)


def test_error_carries_the_param_to_blame():
    err = StructuredOutputError("bad")
    assert err.param == "structured_outputs" and isinstance(err, ValueError)
    moved = err.for_param("response_format")
    assert moved.param == "response_format" and str(moved) == "bad"


def test_key_is_content_based_and_hashable():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}
    as_dict = StructuredOutputsParams(json=schema)
    as_text = StructuredOutputsParams(
        json='{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}'
    )
    assert as_dict.key() == as_text.key()
    assert hash(as_dict.key()) == hash(as_text.key())
    # property order is the generation order, so it is part of the key
    swapped = {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}
    assert StructuredOutputsParams(json=swapped).key() != as_dict.key()
    compact = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
    assert compact.key() != as_dict.key()
    # whitespace does not matter to non-JSON constraints
    assert (
        StructuredOutputsParams(regex="a+", disable_any_whitespace=True).key()
        == StructuredOutputsParams(regex="a+").key()
    )
    assert (
        StructuredOutputsParams(choice=["a", "b"]).key()
        != StructuredOutputsParams(choice=["ab"]).key()
    )
    assert StructuredOutputsParams(regex="a").key() != StructuredOutputsParams(grammar="a").key()


def test_pydantic_model_becomes_its_schema():
    class Point(pydantic.BaseModel):
        x: int
        y: int

    params = StructuredOutputsParams(json=Point)
    assert params.json["required"] == ["x", "y"]
    assert params.schema_text().startswith('{"properties":{"x":')

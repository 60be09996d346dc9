"""The vendored OpenAI schemas (tests/openai_schemas) accept what OpenAI sends and reject what it never would."""

from __future__ import annotations

import copy

import pytest

from tests.openai_schemas import SCHEMA_NAMES, SOURCE, validate, validate_event

MESSAGE = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "Paris.", "annotations": [], "logprobs": []}]}
REASONING = {"type": "reasoning", "id": "rs_1", "summary": [], "status": "completed",
             "content": [{"type": "reasoning_text", "text": "Easy."}]}
CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
        "arguments": '{"city": "Paris"}', "status": "completed"}
TOOL = {"type": "function", "name": "get_weather", "description": None, "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False}}
RESPONSE = {
    "id": "resp_1", "object": "response", "created_at": 1700000000, "completed_at": 1700000001, "status": "completed",
    "error": None, "incomplete_details": None, "instructions": None, "model": "heron", "output": [REASONING, MESSAGE, CALL],
    "tools": [TOOL], "tool_choice": "auto", "parallel_tool_calls": True, "metadata": {}, "temperature": 0.7,
    "top_p": 1.0, "max_output_tokens": 16, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
    "store": True, "text": {"format": {"type": "text"}}, "truncation": "disabled", "background": False,
    "service_tier": "auto", "top_logprobs": 0,
    "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
              "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 8},
}
DELTA = {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
         "delta": "Par", "sequence_number": 4, "logprobs": []}


def _fails(obj, schema_name: str, *words: str) -> str:
    with pytest.raises(AssertionError) as info:
        validate(obj, schema_name)
    text = str(info.value)
    assert all(w in text for w in words), text
    return text


def test_bundle_names_its_source_and_roots():
    assert SOURCE["repository"] == "openai/openai-openapi" and SOURCE["commit"] == "f85dbe2"
    assert {"Response", "ResponseStreamEvent", "ResponseItemList", "Error", "ErrorResponse"} <= set(SCHEMA_NAMES)


def test_valid_response_passes_in_several_shapes():
    validate(RESPONSE, "Response")
    named = copy.deepcopy(RESPONSE)
    named["tool_choice"] = {"type": "function", "name": "get_weather"}
    named["text"] = {"format": {"type": "json_schema", "name": "city", "strict": True,
                                "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    named["status"], named["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
    validate(named, "Response")


def test_response_missing_a_required_field_fails():
    for field in ("model", "output", "tool_choice", "parallel_tool_calls"):
        broken = {k: v for k, v in RESPONSE.items() if k != field}
        _fails(broken, "Response", f"'{field}' is a required property")


def test_wrong_output_item_fails_and_names_the_item():
    broken = copy.deepcopy(RESPONSE)
    broken["output"][1]["type"] = "assistant_message"
    _fails(broken, "Response", ".output[1]", "'assistant_message'")
    # the right type but a missing field: reported through the matching branch, not as a union soup
    broken = copy.deepcopy(RESPONSE)
    del broken["output"][1]["content"][0]["annotations"]
    text = _fails(broken, "Response", ".output[1].content[0]", "'annotations' is a required property")
    assert "audio" not in text, text
    # a function call needs its arguments as a string
    broken = copy.deepcopy(RESPONSE)
    broken["output"][2]["arguments"] = {"city": "Paris"}
    _fails(broken, "Response", ".output[2].arguments")


def test_usage_needs_token_details():
    broken = copy.deepcopy(RESPONSE)
    del broken["usage"]["input_tokens_details"]
    _fails(broken, "Response", "'input_tokens_details' is a required property")


def test_stream_events():
    validate_event(DELTA)
    validate_event({"type": "response.created", "sequence_number": 0, "response": {**RESPONSE, "status": "in_progress"}})
    validate_event({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
                    "item": {**MESSAGE, "status": "in_progress", "content": []}})
    validate_event({"type": "response.function_call_arguments.done", "sequence_number": 9, "item_id": "fc_1",
                    "output_index": 2, "name": "get_weather", "arguments": "{}"})
    validate_event({"type": "response.reasoning_text.delta", "sequence_number": 2, "item_id": "rs_1",
                    "output_index": 0, "content_index": 0, "delta": "Ea"})
    without = {k: v for k, v in DELTA.items() if k != "logprobs"}
    with pytest.raises(AssertionError, match="'logprobs' is a required property"):
        validate_event(without)
    with pytest.raises(AssertionError, match="no anyOf branch has type 'response.output_text.delt'"):
        validate_event({**DELTA, "type": "response.output_text.delt"})
    with pytest.raises(AssertionError, match="needs a type"):
        validate_event({"sequence_number": 0})


def test_item_list_and_errors():
    user = {"type": "message", "id": "msg_0", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": "Hi"}]}
    validate({"object": "list", "data": [user, MESSAGE], "first_id": "msg_0", "last_id": "msg_1", "has_more": False},
             "ResponseItemList")
    _fails({"object": "list", "data": [user], "has_more": False}, "ResponseItemList", "'first_id' is a required")
    validate({"error": {"message": "no", "type": "invalid_request_error", "param": "tools", "code": None}}, "ErrorResponse")
    _fails({"error": {"message": "no", "type": "invalid_request_error"}}, "ErrorResponse", "'param' is a required")
    with pytest.raises(KeyError, match="no vendored schema"):
        validate({}, "NotASchema")

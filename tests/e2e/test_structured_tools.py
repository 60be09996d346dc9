"""Structured outputs and forced tool calls through the OpenAI SDK against a real ``heron serve``.

SmolLM2-135M at temperature 1.0 rambles freely; under a constraint every finished output must
still parse and validate (``finish_reason == "length"`` is the only excuse, and it is counted).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jsonschema
import openai
import pytest

from heron import SamplingParams, StructuredOutputsParams
from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"
ASK = [{"role": "user", "content": "Describe a person, a list of things and a number as JSON."}]
SAMPLES = 20

SCHEMAS = {
    "nested": {
        "type": "object",
        "properties": {
            "person": {"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 24},
                "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                            "required": ["city"], "additionalProperties": False}},
                "required": ["name", "address"], "additionalProperties": False},
        },
        "required": ["person"], "additionalProperties": False,
    },
    "array_enum": {
        "type": "object",
        "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                                  "minItems": 1, "maxItems": 4},
                       "mood": {"type": "string", "enum": ["happy", "sad"]}},
        "required": ["colors", "mood"], "additionalProperties": False,
    },
    "bounded_numbers": {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120},
                       "score": {"type": "number", "minimum": -1, "maximum": 1},
                       "ok": {"type": "boolean"}},
        "required": ["age", "score", "ok"], "additionalProperties": False,
    },
    "string_pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                       "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3}},
        "required": ["code", "tags"], "additionalProperties": False,
    },
}

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 30},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                                                        "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
                       "required": ["a", "b"], "additionalProperties": False}}},
]
SCHEMA_OF = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module")
def server(request) -> ServerProcess:
    have_default_model()
    with running_server(request, "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                        "--max-num-seqs", "32") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=300)


def _texts(client, stream: bool, n: int, max_tokens: int, temperature: float = 1.0, **extra) -> list[tuple[str, str]]:
    """(text, finish_reason) of ``n`` samples, streamed or whole; seeded, so every run sees the same samples."""
    extra.setdefault("seed", 1 if stream else 0)
    kwargs = dict(model=MODEL, messages=ASK, n=n, temperature=temperature, max_tokens=max_tokens, **extra)
    if not stream:
        resp = client.chat.completions.create(**kwargs)
        return [(c.message.content or "", c.finish_reason) for c in sorted(resp.choices, key=lambda c: c.index)]
    texts, finish = [""] * n, [None] * n
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            finish[c.index] = c.finish_reason or finish[c.index]
    return list(zip(texts, finish, strict=True))


def _check_all(samples, check) -> None:
    cut = [t for t, f in samples if f == "length"]
    assert len(cut) <= 1, f"{len(cut)} of {len(samples)} samples hit max_tokens: {cut}"
    for text, finish in samples:
        assert finish in ("stop", "length")
        if finish == "stop":
            check(text)


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_json_schema_samples_validate(client, name):
    schema = SCHEMAS[name]
    fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    samples = _texts(client, False, SAMPLES // 2, 200, response_format=fmt)
    samples += _texts(client, True, SAMPLES // 2, 200, response_format=fmt)
    _check_all(samples, lambda text: jsonschema.validate(json.loads(text), schema))


def test_json_object_samples_parse(client):
    # "any JSON object" has no bound on its size: at temperature 1 a 135M model may ramble on, so
    # cut outputs are allowed here; every output that ended by itself must parse as an object
    samples = _texts(client, True, 10, 160, response_format={"type": "json_object"}, temperature=0.7)
    finished = [t for t, f in samples if f == "stop"]
    assert len(finished) >= 3, samples
    for text in finished:
        assert isinstance(json.loads(text), dict), text


def test_regex_and_choice_hold(client):
    pattern = r"[A-Z][a-z]{2,6} (likes|hates) [0-9]{1,3} (cats|dogs)\."
    samples = _texts(client, False, SAMPLES, 40, extra_body={"structured_outputs": {"regex": pattern}})
    _check_all(samples, lambda text: re.fullmatch(pattern, text) or pytest.fail(text))
    choices = ["yes", "no", "it depends"]
    samples = _texts(client, True, SAMPLES, 10, extra_body={"guided_choice": choices})
    _check_all(samples, lambda text: text in choices or pytest.fail(text))


def test_ebnf_grammar(client):
    grammar = 'root ::= "The answer is " number "."\nnumber ::= [1-9] [0-9]?'
    samples = _texts(client, False, 8, 20, extra_body={"structured_outputs": {"grammar": grammar}})
    _check_all(samples, lambda text: re.fullmatch(r"The answer is [1-9][0-9]?\.", text) or pytest.fail(text))


def test_completions_endpoint_is_constrained_too(client):
    resp = client.completions.create(model=MODEL, prompt="Pick a colour:", n=5, temperature=1.0, max_tokens=10,
                                     extra_body={"structured_outputs": {"choice": ["red", "blue"]}})
    assert all(c.text in ("red", "blue") for c in resp.choices)


def test_invalid_constraints_are_400s_naming_the_field(client):
    bad = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
         "response_format"),
        ({"extra_body": {"structured_outputs": {"regex": "(unclosed"}}}, "structured_outputs"),
        ({"extra_body": {"guided_grammar": "root ::= missing_rule"}}, "guided_grammar"),
    ]
    for kwargs, param in bad:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, **kwargs)
        assert err.value.body["param"] == param, err.value.body
    assert client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=3).choices[0].message.content


def _calls(client, stream: bool, **kwargs) -> tuple[list[tuple[str, str]], str]:
    args = dict(model=MODEL, messages=[{"role": "user", "content": "What's the weather in Paris? Also add 2 and 3."}],
                tools=TOOLS, temperature=0.7, max_tokens=300, **kwargs)
    if not stream:
        choice = client.chat.completions.create(**args).choices[0]
        return [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []], choice.finish_reason
    calls: dict[int, list] = {}
    finish = None
    for chunk in client.chat.completions.create(stream=True, **args):
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for tc in c.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, [None, ""])
                if tc.function and tc.function.name:
                    slot[0] = tc.function.name
                slot[1] += (tc.function.arguments or "") if tc.function else ""
    return [tuple(calls[i]) for i in sorted(calls)], finish


@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice_required_and_named_give_valid_calls(client, stream):
    for seed in range(3):  # seeded: the same samples every run
        calls, finish = _calls(client, stream, tool_choice="required", seed=seed)
        # a 135M model may repeat calls until max_tokens: the completed ones still come back
        assert finish in ("tool_calls", "length") and calls
        for name, arguments in calls:
            jsonschema.validate(json.loads(arguments), SCHEMA_OF[name])
        calls, finish = _calls(client, stream, tool_choice={"type": "function", "function": {"name": "add"}}, seed=seed)
        assert finish == "tool_calls" and [n for n, _ in calls] == ["add"]
        jsonschema.validate(json.loads(calls[0][1]), SCHEMA_OF["add"])
        calls, finish = _calls(client, stream, tool_choice="required", parallel_tool_calls=False, seed=seed)
        assert len(calls) == 1 and finish == "tool_calls"
        jsonschema.validate(json.loads(calls[0][1]), SCHEMA_OF[calls[0][0]])


def test_multi_turn_with_a_tool_result(client):
    first = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=60, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                             "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "clear"}'},
    ]
    final = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, tool_choice="none",
                                           max_tokens=30, temperature=0)
    choice = final.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.message.content
    assert not choice.message.tool_calls


def test_unknown_tool_parser_exits_at_once_naming_the_installed_ones():
    proc = subprocess.run([sys.executable, "-m", "heron.cli", "serve", "--enable-auto-tool-choice",
                           "--tool-call-parser", "hermez"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "hermes" in proc.stderr and "llama3_json" in proc.stderr, proc.stderr
    assert "Did you mean 'hermes'" in proc.stderr or "closest" in proc.stderr.lower() or "hermes?" in proc.stderr


def test_mixing_constrained_requests_leaves_greedy_outputs_alone(llm32, chat_prompts):
    plain = SamplingParams(temperature=0, max_tokens=32)
    alone = llm32.generate([{"prompt_token_ids": p} for p in chat_prompts[:4]], plain, use_tqdm=False)
    constrained = SamplingParams(temperature=1.0, seed=3, max_tokens=48,
                                 structured_outputs=StructuredOutputsParams(json=SCHEMAS["array_enum"]))
    mixed = llm32.generate(
        [{"prompt_token_ids": p} for p in chat_prompts[:4] + chat_prompts[4:8]],
        [plain] * 4 + [constrained] * 4, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in mixed[:4]] == [o.outputs[0].token_ids for o in alone]
    for o in mixed[4:]:
        if o.outputs[0].finish_reason == "stop":
            jsonschema.validate(json.loads(o.outputs[0].text), SCHEMAS["array_enum"])
